"""A report of the runs in a results folder: learning curves with confidence bands, the area under the
budget curve, labels needed to reach target accuracies, a paired comparison of every strategy with
random, timings and the class balance of the acquired labels.

:func:`write_report` reads ``<results>/activelab.sqlite`` (through :class:`~activelab.store.Store`) and
writes, into one folder, PNG figures, CSV files of every number and ``index.html``, a single page with
the figures embedded, which opens without a server or a network. The report is derived from the store and
never edits it; the statistics are in :mod:`activelab.stats`.

Runs are grouped by dataset, model, initial labels (``n_train_images``), labels per round
(``al_samples_per_iter``) and any other setting that changes results and differs between runs (learning
rate, training mode, ...); within a group, a strategy with different options (``--strategy-option``) is
a strategy of its own, and the seeds of one strategy are its repetitions.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import numbers
import re
import textwrap
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from activelab import stats
from activelab.config import RESUMABLE_CHANGES
from activelab.errors import ConfigError, StateError, UserError
from activelab.io import atomic_write_bytes
from activelab.store import STORE_NAME, Store

#: The baseline every strategy is compared with.
BASELINE = "random"
#: Accuracies whose label cost is reported unless others are asked for.
DEFAULT_TARGETS = (0.7, 0.8, 0.9)
#: Size of every figure in inches and its resolution: each PNG is 800 x 500 pixels.
FIGURE_INCHES = (8.0, 5.0)
FIGURE_DPI = 100
#: The curves' metrics: store column and the name figures and tables give it.
METRICS = {"test_accuracy": "test accuracy", "test_macro_f1": "test macro-F1"}
#: The timed steps of a round (store column ``seconds_<step>``).
STEPS = ("train", "evaluate", "score", "select")
#: The colour of the random baseline in every figure.
BASELINE_COLOUR = "#404040"
#: Colours given to the other strategies in sorted order: tab10 and its light tab20 partners, greys left
#: out so that only random is grey.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf",
           "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5")
#: Configuration fields that do not define a group: the strategy and seed vary within one, the rest do
#: not change results (where output goes, how many workers, how many rounds were asked for).
NOT_GROUPING = frozenset({"seed", "sampling_method", "strategy_kwargs", "data_class", "model_class", "n_train_images",
                          "al_samples_per_iter", "gpus", "mc_samples", "pool_subset"}) | RESUMABLE_CHANGES
#: Settings of how a strategy chooses (MC dropout passes, the pool subset it scores): they do not split a
#: group, but a strategy run with several values of one is a strategy per value (``bald(mc_samples=20)``).
STRATEGY_SETTINGS = ("mc_samples", "pool_subset")
#: The columns that identify a group in every CSV file.
GROUP_COLUMNS = ("group", "dataset", "model", "n_train_images", "al_samples_per_iter", "settings")


@dataclass
class RunData:
    """One run as the report needs it: its identity, evaluated points, round timings and acquired labels."""

    run_id: str
    dataset: str
    strategy: str
    model: str
    seed: int
    status: str
    created: str
    config: dict
    strategy_name: str = ""
    run_dir: str = ""
    rounds: list[dict] = field(default_factory=list)
    selections: dict[int, list[int]] = field(default_factory=dict)

    def points(self, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """Label counts and values of ``metric`` at the rounds where it was measured (a later round wins)."""
        by_labels = {row["n_labelled"]: row[metric] for row in self.rounds if row[metric] is not None}
        labels = np.array(sorted(by_labels), dtype=float)
        return labels, np.array([by_labels[key] for key in sorted(by_labels)], dtype=float)


@dataclass
class Group:
    """Runs comparable with each other: same dataset, model, budget and other settings."""

    dataset: str
    model: str
    n_train_images: int | None
    al_samples_per_iter: int | None
    settings: dict
    runs: list[RunData] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    slug: str = ""
    complete: set[str] = field(default_factory=set)  # ids of the runs that reached the group's budget

    @property
    def settings_text(self) -> str:
        return ", ".join(f"{key}={_plain(value)}" for key, value in sorted(self.settings.items()))

    @property
    def title(self) -> str:
        budget = f"{_plain(self.n_train_images)} initial + {_plain(self.al_samples_per_iter)} per round"
        extra = f" ({self.settings_text})" if self.settings else ""
        return f"{self.dataset} · {self.model} · {budget}{extra}"

    def default_slug(self) -> str:
        """A file-name-safe name of the group (made unique by :func:`group_runs`)."""
        text = f"{self.dataset}_{self.model}_{_plain(self.n_train_images)}+{_plain(self.al_samples_per_iter)}"
        if self.settings:
            text += "_" + self.settings_text
        return re.sub(r"[^A-Za-z0-9._+=-]+", "-", text).strip("-")[:100] or "group"

    @property
    def columns(self) -> dict:
        return {"group": self.slug, "dataset": self.dataset, "model": self.model,
                "n_train_images": self.n_train_images, "al_samples_per_iter": self.al_samples_per_iter,
                "settings": self.settings_text}

    @property
    def strategies(self) -> list[str]:
        return sorted({run.strategy for run in self.runs})


@dataclass
class Report:
    """Every table of the report, as lists of CSV-ready rows (one list per CSV file), and the groups."""

    results_dir: Path
    groups: list[Group]
    targets: tuple[float, ...]
    confidence: float
    n_resamples: int
    seed: int
    tables: dict[str, list[dict]]


def write_report(results_dir: Path, out: Path, *, targets: Sequence[float] = DEFAULT_TARGETS,
                 confidence: float = 0.95, n_resamples: int = 9999, seed: int = 0, diagnostics: bool = False) -> Path:
    """Write the report of the runs in ``results_dir`` into the folder ``out``; return ``out/index.html``.

    Parameters
    ----------
    results_dir : Path
        A results folder (``activelab run --out``), holding ``activelab.sqlite``.
    out : Path
        The folder for the report (created if missing; files of an earlier report are replaced).
    targets : sequence of float
        Test accuracies whose label cost is reported.
    confidence : float
        Level of every interval (t intervals over seeds, bootstrap intervals of paired differences).
    n_resamples, seed : int
        Bootstrap resamples and the seed of their generator (and of the typicality reference sample), so
        the report is reproducible.
    diagnostics : bool
        Also load every complete run's last model and images, for the class recall of the model and the
        typicality of the acquired images (:mod:`activelab.diagnostics`; seconds per run).

    Returns
    -------
    Path
        ``out/index.html``.

    Raises
    ------
    ConfigError
        The folder holds no runs, or an option is out of range.
    """
    report = build_report(results_dir, targets=targets, confidence=confidence, n_resamples=n_resamples, seed=seed,
                          diagnostics=diagnostics)
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise StateError(f"could not create the report folder {out} ({error.strerror or error}).") from None
    csv_names = []
    for name, rows in report.tables.items():
        atomic_write_bytes(out / f"{name}.csv", _csv_bytes(rows, {**TABLE_COLUMNS, **DIAGNOSTIC_COLUMNS}[name]))
        csv_names.append(f"{name}.csv")
    figures = _figures(report)
    for name, png in figures.items():
        atomic_write_bytes(out / name, png)
    index = out / "index.html"
    atomic_write_bytes(index, _html(report, figures, csv_names).encode("utf-8"))
    return index


def build_report(results_dir: Path, *, targets: Sequence[float] = DEFAULT_TARGETS, confidence: float = 0.95,
                 n_resamples: int = 9999, seed: int = 0, diagnostics: bool = False) -> Report:
    """Read the runs of ``results_dir`` and compute every table of the report (no files are written)."""
    targets = tuple(_check_targets(targets))
    if isinstance(confidence, bool) or not isinstance(confidence, numbers.Real) or not 0 < confidence < 1:
        raise ConfigError(f"`confidence`={confidence!r} must be a number between 0 and 1.")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int) or n_resamples < 100:
        raise ConfigError(f"`n_resamples`={n_resamples!r} must be an integer of at least 100.")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"`seed`={seed!r} must be a non-negative integer.")
    confidence = float(confidence)
    results_dir = Path(results_dir)
    groups = group_runs(load_runs(results_dir))
    tables: dict[str, list[dict]] = {name: [] for name in TABLE_COLUMNS}
    if diagnostics:
        tables.update({name: [] for name in DIAGNOSTIC_COLUMNS})
    cache: dict = {}
    for group in groups:
        _analyse(group, tables, targets, confidence, n_resamples, seed)
        if diagnostics:
            _diagnose(group, tables, confidence, seed, cache)
    return Report(results_dir=results_dir, groups=groups, targets=targets, confidence=confidence,
                  n_resamples=n_resamples, seed=seed, tables=tables)


def load_runs(results_dir: Path) -> list[RunData]:
    """Every run of the results store in ``results_dir`` with its rounds and acquired labels."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        problem = "is not a folder" if results_dir.exists() else "does not exist"
        raise ConfigError(f"the results folder {results_dir} {problem}.")
    store = Store(results_dir / STORE_NAME)
    rows = store._query("SELECT run_id, dataset, strategy, model, seed, status, created, config, run_dir FROM runs "
                        "ORDER BY created, run_id")
    if not rows:
        raise ConfigError(f"{results_dir} holds no activelab runs (no runs in {STORE_NAME}); "
                          f"run `activelab run --out {results_dir}` first.")
    runs = {}
    for row in rows:
        try:
            config = json.loads(row["config"])
        except (TypeError, json.JSONDecodeError):
            config = {}
        runs[row["run_id"]] = RunData(run_id=row["run_id"], dataset=row["dataset"],
                                      strategy=strategy_label(row["strategy"], config.get("strategy_kwargs")),
                                      model=row["model"], seed=int(row["seed"]), status=row["status"],
                                      created=row["created"], config=config, strategy_name=row["strategy"],
                                      run_dir=row["run_dir"])
    for row in store.rounds():
        if row["run_id"] in runs:
            runs[row["run_id"]].rounds.append(row)
    for row in store._query("SELECT run_id, round, label FROM selections WHERE label IS NOT NULL "
                            "ORDER BY run_id, round, rank"):
        if row["run_id"] in runs:
            runs[row["run_id"]].selections.setdefault(int(row["round"]), []).append(int(row["label"]))
    return list(runs.values())


def strategy_label(name: str, options: dict | None) -> str:
    """A strategy's name in the report: its name, with its options when it has any (``power_bald(beta=2)``)."""
    if not options:
        return name
    return f"{name}({', '.join(f'{key}={_plain(value)}' for key, value in sorted(options.items()))})"


def group_runs(runs: Iterable[RunData]) -> list[Group]:
    """Runs grouped by dataset, model, budget and every other result-changing setting that differs.

    A strategy run twice with one seed in a group (for example under two run names) keeps the run with
    more evaluated rounds (then the newer one); the others are named in the group's notes.
    """
    base: dict[tuple, list[RunData]] = defaultdict(list)
    for run in runs:
        budget = (run.config.get("n_train_images"), run.config.get("al_samples_per_iter"))
        base[(run.dataset, run.model, *budget)].append(run)
    groups = []
    for (dataset, model, n_train, per_iter), members in sorted(base.items(), key=lambda item: _sort_key(item[0])):
        settings = {run.run_id: {key: value for key, value in run.config.items() if key not in NOT_GROUPING}
                    for run in members}
        keys = sorted({key for values in settings.values() for key in values})
        varying = [key for key in keys
                   if len({json.dumps(values.get(key), sort_keys=True) for values in settings.values()}) > 1]
        split: dict[str, list[RunData]] = defaultdict(list)
        for run in members:
            split[json.dumps({key: settings[run.run_id].get(key) for key in varying}, sort_keys=True)].append(run)
        for key in sorted(split):
            _label_strategy_settings(split[key])
            group = Group(dataset=dataset, model=model, n_train_images=n_train, al_samples_per_iter=per_iter,
                          settings=json.loads(key))
            group.runs, group.notes = _one_run_per_seed(split[key])
            groups.append(group)
    taken: set[str] = set()
    for group in groups:  # unique slugs: they name files and HTML anchors
        slug, number = group.default_slug(), 2
        while slug.lower() in taken:
            slug, number = f"{group.default_slug()}-{number}", number + 1
        group.slug = slug
        taken.add(slug.lower())
    return groups


def _label_strategy_settings(runs: list[RunData]) -> None:
    """Name a strategy's :data:`STRATEGY_SETTINGS` in its label when its runs differ in one of them."""
    by_strategy: dict[str, list[RunData]] = defaultdict(list)
    for run in runs:
        by_strategy[run.strategy].append(run)
    for members in by_strategy.values():
        varying = [key for key in STRATEGY_SETTINGS
                   if len({json.dumps(run.config.get(key)) for run in members}) > 1]
        for run in members if varying else []:
            options = {**(run.config.get("strategy_kwargs") or {}), **{key: run.config.get(key) for key in varying}}
            run.strategy = strategy_label(run.strategy_name or run.strategy, options)


def _one_run_per_seed(runs: list[RunData]) -> tuple[list[RunData], list[str]]:
    chosen: dict[tuple[str, int], list[RunData]] = defaultdict(list)
    for run in runs:
        chosen[(run.strategy, run.seed)].append(run)
    kept, notes = [], []
    for (strategy, seed), candidates in sorted(chosen.items()):
        candidates.sort(key=lambda run: (len(run.points("test_accuracy")[0]), run.created, run.run_id))
        kept.append(candidates[-1])
        if len(candidates) > 1:
            left = ", ".join(run.run_id for run in candidates[:-1])
            notes.append(f"{strategy} seed {seed} has {len(candidates)} runs; {candidates[-1].run_id} is used "
                         f"and {left} left out.")
    return kept, notes


# ---------------------------------------------------------------------------------------------- analysis

#: The columns of each CSV file, after the group columns.
TABLE_COLUMNS = {
    "curves": (*GROUP_COLUMNS, "strategy", "metric", "n_labelled", "n_seeds", "mean", "ci_low", "ci_high"),
    "curves_runs": (*GROUP_COLUMNS, "strategy", "seed", "run_id", "round", "n_labelled", "test_accuracy",
                    "test_macro_f1"),
    "aubc_runs": (*GROUP_COLUMNS, "strategy", "seed", "run_id", "complete", "label_start", "label_end",
                  "aubc_test_accuracy", "aubc_test_macro_f1"),
    "aubc": (*GROUP_COLUMNS, "strategy", "metric", "n_seeds", "label_start", "label_end", "mean", "ci_low",
             "ci_high"),
    "paired": (*GROUP_COLUMNS, "strategy", "baseline", "metric", "n_pairs", "seeds", "mean_difference", "ci_low",
               "ci_high", "wilcoxon_p", "smallest_possible_p", "holm_p", "d_z", "rank_biserial", "wins", "ties",
               "losses"),
    "labels_to_target_runs": (*GROUP_COLUMNS, "strategy", "seed", "run_id", "target", "labels"),
    "labels_to_target": (*GROUP_COLUMNS, "strategy", "target", "n_seeds", "n_reached", "mean_labels",
                         "min_labels", "max_labels"),
    "timing": (*GROUP_COLUMNS, "strategy", "n_runs", "n_rounds", *(f"seconds_{step}" for step in STEPS),
               "seconds_round", "n_complete_runs", "seconds_run"),
    "class_balance_runs": (*GROUP_COLUMNS, "strategy", "seed", "run_id", "round", "class", "acquired",
                           "acquired_so_far"),
    "class_balance": (*GROUP_COLUMNS, "strategy", "round", "class", "n_seeds", "mean_acquired",
                      "mean_acquired_so_far"),
    "class_imbalance": (*GROUP_COLUMNS, "strategy", "round", "n_seeds", "mean_acquired_so_far", "ratio_mean",
                        "ratio_min", "ratio_max"),
}
#: The tables of ``--diagnostics`` (see :mod:`activelab.diagnostics`), in the same form.
DIAGNOSTIC_COLUMNS = {
    "class_recall_runs": (*GROUP_COLUMNS, "strategy", "seed", "run_id", "class", "class_name", "test_items",
                          "recall"),
    "class_recall": (*GROUP_COLUMNS, "strategy", "class", "class_name", "n_seeds", "mean_recall", "min_recall",
                     "max_recall"),
    "diagnostics_runs": (*GROUP_COLUMNS, "strategy", "seed", "run_id", "n_acquired", "acquired_distance",
                         "reference_distance", "typicality", "shortfall", "shortfall_class"),
    "diagnostics": (*GROUP_COLUMNS, "strategy", "n_seeds", "typicality_mean", "typicality_ci_low",
                    "typicality_ci_high", "n_pairs", "shortfall_mean", "shortfall_ci_low", "shortfall_ci_high",
                    "shortfall_class", "shortfall_class_seeds"),
}


def _analyse(group: Group, tables: dict[str, list[dict]], targets: tuple[float, ...], confidence: float,
             n_resamples: int, seed: int) -> None:
    """Append the group's rows to every table and its remarks to ``group.notes``."""
    columns = group.columns
    by_strategy: dict[str, list[RunData]] = defaultdict(list)
    for run in group.runs:
        by_strategy[run.strategy].append(run)

    # Learning curves: mean and t interval over seeds at every label count.
    for strategy in group.strategies:
        for run in by_strategy[strategy]:
            for row in run.rounds:
                tables["curves_runs"].append({**columns, "strategy": strategy, "seed": run.seed, "run_id": run.run_id,
                                              "round": row["round"], "n_labelled": row["n_labelled"],
                                              "test_accuracy": row["test_accuracy"],
                                              "test_macro_f1": row["test_macro_f1"]})
        for metric in METRICS:
            values: dict[float, list[float]] = defaultdict(list)
            for run in by_strategy[strategy]:
                for labels, value in zip(*run.points(metric)):
                    values[labels].append(value)
            for labels in sorted(values):
                mean, low, high = stats.t_interval(values[labels], confidence)
                tables["curves"].append({**columns, "strategy": strategy, "metric": metric,
                                         "n_labelled": _count(labels), "n_seeds": len(values[labels]), "mean": mean,
                                         "ci_low": low, "ci_high": high})

    # The budget: the most labels any run of the group was evaluated with; only runs that reached it
    # (complete runs) enter AUBC, labels-to-target and the paired tests, so that all cover one label range.
    ends = {run.run_id: run.points("test_accuracy")[0] for run in group.runs}
    evaluated = [labels for labels in ends.values() if labels.size]
    budget = max(float(labels[-1]) for labels in evaluated) if evaluated else math.nan
    complete = {run_id for run_id, labels in ends.items() if labels.size and labels[-1] == budget}
    group.complete = complete
    no_test = sorted(run.run_id for run in group.runs if not ends[run.run_id].size)
    if no_test:
        group.notes.append(f"{len(no_test)} run(s) have no round with a test accuracy: {', '.join(no_test)}.")
    short = sorted(run.run_id for run in group.runs if ends[run.run_id].size and run.run_id not in complete)
    if short:
        group.notes.append(f"{len(short)} run(s) did not reach the group's budget of {_plain(budget)} labels and are "
                           f"left out of AUBC, labels-to-target and the paired tests: {', '.join(short)}.")

    aubc: dict[str, dict[str, dict[int, float]]] = {metric: defaultdict(dict) for metric in METRICS}
    for strategy in group.strategies:
        for run in by_strategy[strategy]:
            accuracy_labels = ends[run.run_id]
            row = {**columns, "strategy": strategy, "seed": run.seed, "run_id": run.run_id,
                   "complete": run.run_id in complete,
                   "label_start": _count(accuracy_labels[0]) if accuracy_labels.size else None,
                   "label_end": _count(accuracy_labels[-1]) if accuracy_labels.size else None}
            for metric in METRICS:
                labels, values = run.points(metric)
                value = stats.aubc(labels, values) if labels.size else None
                row[f"aubc_{metric}"] = value
                if value is not None and run.run_id in complete:
                    aubc[metric][strategy][run.seed] = value
            tables["aubc_runs"].append(row)
        for metric in METRICS:
            per_seed = aubc[metric][strategy]
            if not per_seed:
                continue
            starts = [float(ends[run.run_id][0]) for run in by_strategy[strategy] if run.run_id in complete]
            mean, low, high = stats.t_interval(list(per_seed.values()), confidence)
            tables["aubc"].append({**columns, "strategy": strategy, "metric": metric, "n_seeds": len(per_seed),
                                   "label_start": _count(min(starts)), "label_end": _count(budget), "mean": mean,
                                   "ci_low": low, "ci_high": high})

    # Paired comparison with random over the seeds both have; Holm over the strategies of the group.
    if BASELINE not in by_strategy:
        group.notes.append("the group has no random runs, so no strategy is compared with random.")
    else:
        for metric in METRICS:
            baseline = aubc[metric][BASELINE]
            rows = []
            for strategy in group.strategies:
                if strategy == BASELINE:
                    continue
                seeds = sorted(set(aubc[metric][strategy]) & set(baseline))
                result = stats.compare_paired([aubc[metric][strategy][s] for s in seeds],
                                              [baseline[s] for s in seeds], confidence=confidence,
                                              n_resamples=n_resamples, seed=seed)
                rows.append({**columns, "strategy": strategy, "baseline": BASELINE, "metric": metric,
                             "n_pairs": result.n_pairs, "seeds": " ".join(str(s) for s in seeds),
                             "mean_difference": result.mean_difference, "ci_low": result.ci_low,
                             "ci_high": result.ci_high, "wilcoxon_p": result.p_value,
                             "smallest_possible_p": result.smallest_p, "d_z": result.d_z,
                             "rank_biserial": result.rank_biserial, "wins": result.wins, "ties": result.ties,
                             "losses": result.losses})
            for row, adjusted in zip(rows, stats.holm([row["wilcoxon_p"] for row in rows])):
                row["holm_p"] = adjusted
            tables["paired"].extend(rows)
        mine = [row for row in tables["paired"] if row["group"] == group.slug]
        unpaired = sorted({row["strategy"] for row in mine if row["n_pairs"] == 0})
        if unpaired:
            group.notes.append(f"{', '.join(unpaired)} share(s) no seed with random among the runs that reached the "
                               f"budget, so there is no paired comparison for it.")
        few = sorted({row["strategy"] for row in mine if 0 < row["n_pairs"] < 6})
        if few:
            group.notes.append(f"{', '.join(few)} share(s) fewer than 6 seeds with random: with n pairs the "
                               f"Wilcoxon test cannot give a p-value below 2/2^n (0.0625 for 5 pairs).")

    # Labels needed to reach each target accuracy (complete runs only).
    for strategy in group.strategies:
        runs = [run for run in by_strategy[strategy] if run.run_id in complete]
        for target in targets:
            reached = []
            for run in runs:
                labels = stats.labels_to_reach(*run.points("test_accuracy"), target)
                tables["labels_to_target_runs"].append({**columns, "strategy": strategy, "seed": run.seed,
                                                        "run_id": run.run_id, "target": target,
                                                        "labels": None if labels is None else _count(labels)})
                if labels is not None:
                    reached.append(labels)
            if runs:
                tables["labels_to_target"].append({
                    **columns, "strategy": strategy, "target": target, "n_seeds": len(runs), "n_reached": len(reached),
                    "mean_labels": float(np.mean(reached)) if reached else None,
                    "min_labels": _count(min(reached)) if reached else None,
                    "max_labels": _count(max(reached)) if reached else None})

    # Seconds per round of each step, and per whole run.
    for strategy in group.strategies:
        runs = by_strategy[strategy]
        rounds = [row for run in runs for row in run.rounds]
        row = {**columns, "strategy": strategy, "n_runs": len(runs), "n_rounds": len(rounds)}
        for step in STEPS:
            times = [r[f"seconds_{step}"] for r in rounds if r[f"seconds_{step}"] is not None]
            row[f"seconds_{step}"] = float(np.mean(times)) if times else None
        totals = [sum(r[f"seconds_{step}"] or 0.0 for step in STEPS) for r in rounds]
        row["seconds_round"] = float(np.mean(totals)) if totals else None
        run_totals = [sum(sum(r[f"seconds_{step}"] or 0.0 for step in STEPS) for r in run.rounds)
                      for run in runs if run.run_id in complete]
        row["n_complete_runs"] = len(run_totals)
        row["seconds_run"] = float(np.mean(run_totals)) if run_totals else None
        tables["timing"].append(row)

    # Class balance of the acquired labels (the selections; the initial labelled set is not in the store).
    classes = sorted({label for run in group.runs for labels in run.selections.values() for label in labels})
    if not classes:
        return
    for strategy in group.strategies:
        so_far_by_round: dict[int, list[np.ndarray]] = defaultdict(list)
        acquired_by_round: dict[int, list[np.ndarray]] = defaultdict(list)
        for run in by_strategy[strategy]:
            so_far = np.zeros(len(classes))
            for round_index in sorted(run.selections):
                acquired = np.array([run.selections[round_index].count(label) for label in classes], dtype=float)
                so_far = so_far + acquired
                so_far_by_round[round_index].append(so_far)
                acquired_by_round[round_index].append(acquired)
                for position, label in enumerate(classes):
                    tables["class_balance_runs"].append({
                        **columns, "strategy": strategy, "seed": run.seed, "run_id": run.run_id, "round": round_index,
                        "class": label, "acquired": int(acquired[position]),
                        "acquired_so_far": int(so_far[position])})
        for round_index in sorted(so_far_by_round):
            counts = np.array(so_far_by_round[round_index])
            means, means_so_far = np.mean(acquired_by_round[round_index], axis=0), counts.mean(axis=0)
            for position, label in enumerate(classes):
                tables["class_balance"].append({
                    **columns, "strategy": strategy, "round": round_index, "class": label, "n_seeds": len(counts),
                    "mean_acquired": float(means[position]), "mean_acquired_so_far": float(means_so_far[position])})
            ratios = np.array([stats.imbalance_ratio(row) for row in counts])
            ratios = ratios[~np.isnan(ratios)]
            tables["class_imbalance"].append({
                **columns, "strategy": strategy, "round": round_index, "n_seeds": len(counts),
                "mean_acquired_so_far": float(counts.sum(axis=1).mean()),
                "ratio_mean": float(ratios.mean()) if ratios.size else None,
                "ratio_min": float(ratios.min()) if ratios.size else None,
                "ratio_max": float(ratios.max()) if ratios.size else None})


def _diagnose(group: Group, tables: dict[str, list[dict]], confidence: float, seed: int, cache: dict) -> None:
    """Class recall of the last model and typicality of the acquired images of the group's complete runs, and
    each run's largest shortfall in the recall of one class against random's last model on the same seed."""
    from activelab.diagnostics import diagnose_run

    columns = group.columns
    found = {}
    ordered = sorted((run for run in group.runs if run.run_id in group.complete),
                     key=lambda run: (run.strategy, run.seed))
    for run in ordered:
        try:
            found[run.run_id] = diagnose_run(Path(run.run_dir), cache=cache, seed=seed)
        except UserError as error:
            group.notes.append(f"no diagnostics for {run.run_id}: {error}")
    runs = [run for run in ordered if run.run_id in found]
    random_recall = {run.seed: found[run.run_id].class_recall for run in runs if run.strategy == BASELINE}
    for strategy in group.strategies:
        mine = [run for run in runs if run.strategy == strategy]
        if not mine:
            continue
        names = found[mine[0].run_id].class_names
        shortfalls, missed = [], []
        for run in mine:
            result = found[run.run_id]
            for label, name in enumerate(names):
                tables["class_recall_runs"].append({
                    **columns, "strategy": strategy, "seed": run.seed, "run_id": run.run_id, "class": label,
                    "class_name": name, "test_items": int(result.class_test_items[label]),
                    "recall": float(result.class_recall[label])})
            row = {**columns, "strategy": strategy, "seed": run.seed, "run_id": run.run_id,
                   "n_acquired": result.n_acquired, "acquired_distance": result.acquired_distance,
                   "reference_distance": result.reference_distance, "typicality": result.typicality}
            if strategy != BASELINE and run.seed in random_recall:
                gap = random_recall[run.seed] - result.class_recall
                if not np.isnan(gap).all():
                    label = int(np.nanargmax(gap))
                    row.update(shortfall=float(gap[label]), shortfall_class=names[label])
                    shortfalls.append(float(gap[label]))
                    missed.append(names[label])
            tables["diagnostics_runs"].append(row)
        per_class = np.array([found[run.run_id].class_recall for run in mine])
        for label, name in enumerate(names):
            values = per_class[:, label][~np.isnan(per_class[:, label])]
            tables["class_recall"].append({
                **columns, "strategy": strategy, "class": label, "class_name": name, "n_seeds": len(mine),
                "mean_recall": float(values.mean()) if values.size else None,
                "min_recall": float(values.min()) if values.size else None,
                "max_recall": float(values.max()) if values.size else None})
        typicality = [found[run.run_id].typicality for run in mine if not math.isnan(found[run.run_id].typicality)]
        typical = stats.t_interval(typicality, confidence) if typicality else (None, None, None)
        shortfall = stats.t_interval(shortfalls, confidence) if shortfalls else (None, None, None)
        tables["diagnostics"].append({
            **columns, "strategy": strategy, "n_seeds": len(mine), "typicality_mean": typical[0],
            "typicality_ci_low": typical[1], "typicality_ci_high": typical[2], "n_pairs": len(shortfalls),
            "shortfall_mean": shortfall[0], "shortfall_ci_low": shortfall[1], "shortfall_ci_high": shortfall[2],
            "shortfall_class": max(set(missed), key=lambda name: (missed.count(name), name)) if missed else None,
            "shortfall_class_seeds": max(missed.count(name) for name in missed) if missed else None})


# ----------------------------------------------------------------------------------------------- figures

def strategy_colours(strategies: Iterable[str]) -> dict[str, str]:
    """A colour per strategy, fixed by the sorted names: random is always grey, the others take the palette."""
    colours, others = {}, sorted(set(strategies) - {BASELINE})
    for position, name in enumerate(others):
        colours[name] = PALETTE[position % len(PALETTE)]
    colours[BASELINE] = BASELINE_COLOUR
    return colours


def _new_figure():
    try:
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - matplotlib is a dependency of the report
        raise ConfigError("activelab report draws its figures with matplotlib, which is not installed "
                          "(pip install matplotlib).") from None
    figure = Figure(figsize=FIGURE_INCHES, dpi=FIGURE_DPI, layout="constrained")
    return figure, figure.add_subplot()


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=FIGURE_DPI, metadata={"Software": None})
    return buffer.getvalue()


def _style(strategy: str, colours: dict[str, str]) -> dict:
    dashed = strategy == BASELINE
    return {"color": colours[strategy], "linestyle": "--" if dashed else "-",
            "linewidth": 2.0 if dashed else 1.5, "label": _mpl_text(strategy)}


def _finish(figure, axes, group: Group, what: str, xlabel: str, ylabel: str, *, legend: bool = True) -> None:
    """Titles (the group above, what is shown below it), axis labels, a grid and the legend right of the plot."""
    figure.suptitle(_mpl_text(textwrap.shorten(group.title, width=110, placeholder=" ...")), fontsize="medium")
    axes.set_title(_mpl_text(what), fontsize="small")
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(True, alpha=0.3)
    if legend and axes.get_legend_handles_labels()[0]:
        figure.legend(loc="outside right upper", fontsize="small", title="strategy")


def _figures(report: Report) -> dict[str, bytes]:
    """Every figure of the report as PNG bytes, by file name."""
    colours = strategy_colours(run.strategy for group in report.groups for run in group.runs)
    level = f"{report.confidence:.0%}"
    figures = {}
    for group in report.groups:
        rows = [row for row in report.tables["curves"] if row["group"] == group.slug]
        for metric, name in METRICS.items():
            figure, axes = _new_figure()
            for strategy in group.strategies:
                points = [row for row in rows if row["strategy"] == strategy and row["metric"] == metric]
                if not points:
                    continue
                x = np.array([row["n_labelled"] for row in points], dtype=float)
                mean = np.array([row["mean"] for row in points], dtype=float)
                low = np.array([_nan(row["ci_low"]) for row in points], dtype=float)
                high = np.array([_nan(row["ci_high"]) for row in points], dtype=float)
                axes.plot(x, mean, marker="o", markersize=3, **_style(strategy, colours))
                axes.fill_between(x, low, high, color=colours[strategy], alpha=0.15, linewidth=0)
            _finish(figure, axes, group, f"{name}: mean over seeds, {level} t interval", "labelled images", name)
            figures[f"{group.slug}_{metric}.png"] = _png(figure)

        aubc = [row for row in report.tables["aubc"] if row["group"] == group.slug and row["metric"] == "test_accuracy"]
        if aubc:
            figure, axes = _intervals_figure(aubc, "mean", "ci_low", "ci_high", colours)
            _finish(figure, axes, group, f"AUBC of test accuracy: mean over seeds, {level} t interval",
                    "normalised area under the budget curve (test accuracy)", "strategy", legend=False)
            figures[f"{group.slug}_aubc.png"] = _png(figure)

        diagnosed = [row for row in report.tables.get("diagnostics", []) if row["group"] == group.slug
                     and row["typicality_mean"] is not None]
        if diagnosed:
            figure, axes = _intervals_figure(diagnosed, "typicality_mean", "typicality_ci_low", "typicality_ci_high",
                                             colours)
            axes.axvline(1.0, color=BASELINE_COLOUR, linewidth=1, linestyle=":")
            _finish(figure, axes, group, f"typicality of the acquired images (1: like a random pick, above: "
                    f"atypical): mean over seeds, {level} t interval",
                    "mean distance to the nearest pool images: acquired / random images", "strategy", legend=False)
            figures[f"{group.slug}_typicality.png"] = _png(figure)
        recall = [row for row in report.tables.get("class_recall", []) if row["group"] == group.slug]
        if recall:
            figures[f"{group.slug}_class_recall.png"] = _class_recall_figure(group, recall)

        imbalance = [row for row in report.tables["class_imbalance"] if row["group"] == group.slug]
        if imbalance:
            figure, axes = _new_figure()
            from matplotlib.ticker import MaxNLocator

            for strategy in group.strategies:
                points = [row for row in imbalance if row["strategy"] == strategy]
                x = np.array([row["round"] for row in points], dtype=float)
                y = np.array([_nan(row["ratio_mean"]) for row in points], dtype=float)
                y[~np.isfinite(y)] = np.nan  # a class not acquired yet: an infinite ratio, shown as a gap
                if points:
                    axes.plot(x, y, marker="o", markersize=3, **_style(strategy, colours))
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
            _finish(figure, axes, group, "class imbalance of the labels acquired up to each round (a gap: a class "
                    "not acquired yet)", "round", "largest / smallest class count (mean over seeds)")
            figures[f"{group.slug}_class_imbalance.png"] = _png(figure)
    return figures


def _intervals_figure(rows: list[dict], mean: str, low: str, high: str, colours: dict[str, str]):
    """One row per strategy: its mean as a dot with the interval ``[low, high]`` as error bars."""
    figure, axes = _new_figure()
    for position, row in enumerate(rows):
        error = [[row[mean] - _nan(row[low])], [_nan(row[high]) - row[mean]]]
        axes.errorbar([row[mean]], [position], xerr=error, fmt="o", capsize=4,
                      **{key: value for key, value in _style(row["strategy"], colours).items() if key != "linestyle"})
    axes.set_yticks(range(len(rows)), [_mpl_text(row["strategy"]) for row in rows])
    axes.invert_yaxis()
    return figure, axes


def _class_recall_figure(group: Group, rows: list[dict]) -> bytes:
    """Mean recall of every class (columns) by the last model of every strategy (rows), as a heat map."""
    strategies = sorted({row["strategy"] for row in rows}, key=lambda name: (name != BASELINE, name))
    classes = sorted({(row["class"], row["class_name"]) for row in rows})
    values = np.full((len(strategies), len(classes)), np.nan)
    for row in rows:
        values[strategies.index(row["strategy"]), classes.index((row["class"], row["class_name"]))] = \
            _nan(row["mean_recall"])
    figure, axes = _new_figure()
    image = axes.imshow(values, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    if values.size <= 400:  # the numbers stay readable up to about 20 x 20 cells
        for (y, x), value in np.ndenumerate(values):
            if not math.isnan(value):
                axes.text(x, y, f"{value:.2f}", ha="center", va="center", fontsize="x-small",
                          color="black" if value > 0.6 else "white")
    axes.set_yticks(range(len(strategies)), [_mpl_text(name) for name in strategies])
    axes.set_xticks(range(len(classes)), [_mpl_text(name) for _, name in classes], rotation=45, ha="right",
                    fontsize="small")
    figure.colorbar(image, ax=axes, label="recall")
    _finish(figure, axes, group, "recall of each class by the last model (mean over seeds)", "class", "strategy",
            legend=False)
    axes.grid(False)
    return _png(figure)


def _mpl_text(text: str) -> str:
    """Text matplotlib shows as it is: ``$`` would start mathtext, a leading ``_`` hides a legend entry."""
    text = text.replace("$", r"\$")
    return " " + text if text.startswith("_") else text


# -------------------------------------------------------------------------------------------- CSV and HTML

def _csv_bytes(rows: list[dict], columns: Sequence[str]) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _csv_value(row.get(key)) for key in columns})
    return buffer.getvalue().encode("utf-8")


def _csv_value(value: object) -> object:
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return repr(value)  # every digit, so the CSV holds the numbers exactly
    return value


METHODS = """
<h2>How the numbers are made</h2>
<ul>
<li><b>Groups.</b> Runs are compared only with runs of the same dataset, model, initial labels, labels per
round and other settings; within a group each strategy (with its options) has one run per seed.</li>
<li><b>Learning curves.</b> Test accuracy and macro-F1 against the number of labelled images: the mean over
seeds at each label count, with a {level} Student t interval over seeds (none with a single seed).</li>
<li><b>AUBC.</b> The normalised area under the budget curve of a run: the trapezoid-rule area under its test
accuracy (or macro-F1) plotted against the number of labels, divided by the label range, so it is the mean
accuracy over the budget (for a single point, the value itself). Only runs that reached the group's budget
(the most labels any of its runs was evaluated with) enter AUBC, labels-to-target and the paired tests.</li>
<li><b>Paired comparison with random.</b> For each seed that a strategy and random both have, the difference of
their AUBC. Reported: the mean difference, a percentile bootstrap {level} interval of it ({n_resamples} resamples,
seed {seed}), the two-sided Wilcoxon signed-rank p-value (scipy; zero differences dropped, all zero gives 1),
the smallest p-value that test can give with that many pairs (2/2<sup>n</sup>: fewer than 6 seeds can never
reach 0.05), Holm's adjustment over the strategies of the group (for accuracy and macro-F1 separately),
d<sub>z</sub> (mean difference / standard deviation of the differences) and the matched-pairs rank-biserial
correlation (+1: better on every seed).</li>
<li><b>Labels to reach a target.</b> The label count of the first evaluated round whose test accuracy is at least
the target (no interpolation); the mean over the seeds that reached it, and how many did.</li>
<li><b>Time.</b> Mean seconds per round of training, evaluation, scoring the pool and selecting; a round's total
is their sum, a run's total the sum over its rounds.</li>
<li><b>Class balance.</b> Labels of the selected images per round (the initial labelled set is not included);
the imbalance ratio is the largest class count of the labels acquired up to and including a round divided by
the smallest (1 is balanced, &infin; while a class has none), over the classes acquired in the group.</li>
{diagnostics}</ul>
"""

DIAGNOSTICS_METHOD = """<li><b>Diagnostics.</b> For every run that reached the budget, the recall of each class by
its last model on its test items, and the typicality of the images it acquired: their mean distance to their
{neighbours} nearest neighbours among a random sample of up to {reference:,} images of the run's pool (seed
{seed}), divided by the same mean for the sample's own images. Distances are taken between the images' pixels,
average-pooled to at most {side} &times; {side} and projected on their first {components} principal components, a
space no strategy's model shapes. The shortfall of a run is the largest amount by which its last model's recall
of one class falls below the recall of random's last model on the same seed (the class a strategy stopped
asking about shows here).</li>
"""

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f2f2f2; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; display: block; margin: 0.5em 0; }
.note { color: #8a4b00; }
"""


def _html(report: Report, figures: dict[str, bytes], csv_names: list[str]) -> str:
    level = f"{report.confidence:.0%}"
    n_runs = sum(len(group.runs) for group in report.groups)
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>activelab report: {_e(str(report.results_dir))}</title>", f"<style>{CSS}</style></head><body>",
             f"<h1>activelab report</h1><p>Results folder <code>{_e(str(report.results_dir))}</code>: {n_runs} runs "
             f"in {len(report.groups)} group(s). Every number is also in the CSV files: "
             + ", ".join(f'<a href="{_e(name)}">{_e(name)}</a>' for name in csv_names) + ".</p>"]
    parts.append("<h2>Contents</h2><ul>" + "".join(
        f'<li><a href="#{_e(group.slug)}">{_e(group.title)}</a> ({len(group.runs)} runs: '
        f'{_e(", ".join(group.strategies))})</li>' for group in report.groups) + "</ul>")
    for group in report.groups:
        parts.append(_group_html(report, group, figures, level))
    diagnostics = ""
    if "diagnostics" in report.tables:
        from activelab.diagnostics import COMPONENTS, NEIGHBOURS, POOLED_SIDE, REFERENCE_SIZE

        diagnostics = DIAGNOSTICS_METHOD.format(neighbours=NEIGHBOURS, reference=REFERENCE_SIZE, seed=report.seed,
                                                side=POOLED_SIDE, components=COMPONENTS)
    parts.append(METHODS.format(level=level, n_resamples=report.n_resamples, seed=report.seed,
                                diagnostics=diagnostics))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _group_html(report: Report, group: Group, figures: dict[str, bytes], level: str) -> str:
    slug = group.slug
    rows = {name: [row for row in table if row["group"] == slug] for name, table in report.tables.items()}
    parts = [f'<h2 id="{_e(slug)}">{_e(group.title)}</h2>']
    seeds = {strategy: ", ".join(str(run.seed) for run in sorted(group.runs, key=lambda run: run.seed)
                                 if run.strategy == strategy) for strategy in group.strategies}
    parts.append("<p>Strategies and seeds: "
                 + "; ".join(f"{_e(strategy)} ({seeds[strategy]})" for strategy in group.strategies) + ".</p>")
    if group.notes:
        parts.append("<ul>" + "".join(f'<li class="note">{_e(note)}</li>' for note in group.notes) + "</ul>")
    for suffix, alt in (("test_accuracy", "learning curves of test accuracy"),
                        ("test_macro_f1", "learning curves of test macro-F1")):
        parts.append(_img(figures, f"{slug}_{suffix}.png", f"{group.title}: {alt}"))

    parts.append(f"<h3>Area under the budget curve (mean over seeds, {level} t interval)</h3>")
    aubc = {(row["strategy"], row["metric"]): row for row in rows["aubc"]}
    parts.append(_table(["strategy", "seeds", "labels", "AUBC test accuracy", "AUBC test macro-F1"], [
        [strategy, _n(aubc, strategy, "n_seeds"),
         _label_range(aubc.get((strategy, "test_accuracy"))),
         _interval(aubc.get((strategy, "test_accuracy"))), _interval(aubc.get((strategy, "test_macro_f1")))]
        for strategy in group.strategies if any((strategy, metric) in aubc for metric in METRICS)]))
    parts.append(_img(figures, f"{slug}_aubc.png", f"{group.title}: AUBC per strategy"))

    if rows["paired"]:
        parts.append("<h3>Paired comparison with random (AUBC difference, strategy − random, over shared seeds)</h3>")
        parts.append(_table(
            ["strategy", "metric", "pairs", "mean difference", f"{level} bootstrap CI", "Wilcoxon p",
             "smallest possible p", "Holm p", "d_z", "rank-biserial", "wins / ties / losses"],
            [[row["strategy"], METRICS[row["metric"]], row["n_pairs"], _f(row["mean_difference"], 4),
              _ci(row["ci_low"], row["ci_high"], 4), _p(row["wilcoxon_p"]), _p(row["smallest_possible_p"]),
              _p(row["holm_p"]), _f(row["d_z"], 2), _f(row["rank_biserial"], 2),
              f"{row['wins']} / {row['ties']} / {row['losses']}"] for row in rows["paired"]]))

    if rows["labels_to_target"]:
        parts.append("<h3>Labels needed to reach a test accuracy (mean over the seeds that reached it)</h3>")
        cells = {(row["strategy"], row["target"]): row for row in rows["labels_to_target"]}
        parts.append(_table(["strategy", *(f"accuracy ≥ {target:g}" for target in report.targets)], [
            [strategy, *(_reached(cells.get((strategy, target))) for target in report.targets)]
            for strategy in group.strategies if any((strategy, target) in cells for target in report.targets)]))

    parts.append("<h3>Time (mean seconds per round of each step; per run)</h3>")
    parts.append(_table(["strategy", "runs", "rounds", *STEPS, "round", "run"], [
        [row["strategy"], row["n_runs"], row["n_rounds"], *(_f(row[f"seconds_{step}"], 2) for step in STEPS),
         _f(row["seconds_round"], 2), _f(row["seconds_run"], 1)] for row in rows["timing"]]))

    if rows["class_imbalance"]:
        parts.append("<h3>Class balance of the acquired labels</h3>")
        last = {}
        for row in rows["class_imbalance"]:
            last[row["strategy"]] = row  # rows are in round order
        classes = sorted({row["class"] for row in rows["class_balance"]})
        counts = {(row["strategy"], row["round"], row["class"]): row["mean_acquired_so_far"]
                  for row in rows["class_balance"]}
        worst: dict[str, float] = {}
        for row in rows["class_imbalance"]:
            if row["ratio_max"] is not None:
                worst[row["strategy"]] = max(worst.get(row["strategy"], 0.0), row["ratio_max"])
        parts.append("<p>Mean count per class of the labels acquired up to the last round, and the largest / "
                     "smallest class count (mean, min–max over seeds) at that round and the worst over all "
                     "rounds.</p>")
        parts.append(_table(["strategy", "last round", "seeds", *(f"class {label}" for label in classes),
                             "ratio (last round)", "worst ratio"], [
            [strategy, row["round"], row["n_seeds"],
             *(_f(counts.get((strategy, row["round"], label)), 1) for label in classes),
             f"{_f(row['ratio_mean'], 2)} ({_f(row['ratio_min'], 2)}–{_f(row['ratio_max'], 2)})",
             _f(worst.get(strategy), 2)] for strategy, row in last.items()]))
        parts.append(_img(figures, f"{slug}_class_imbalance.png", f"{group.title}: class imbalance per round"))

    if rows.get("diagnostics"):
        parts.append("<h3>Why: the classes the last models miss, and how typical the acquired images are</h3>")
        parts.append(f"<p>Over the runs that reached the budget ({level} t intervals over seeds): the "
                     f"typicality of the acquired images (1: like random picks, above 1: atypical), and the "
                     f"shortfall, on each seed, of the class whose recall by the last model falls furthest below "
                     f"random's on the same seed, with the class most often so.</p>")
        parts.append(_table(["strategy", "seeds", "typicality", "shortfall (pairs)", "class most short of random"], [
            [row["strategy"], row["n_seeds"], _interval(_prefixed(row, "typicality")),
             "—" if not row["n_pairs"] else f"{_interval(_prefixed(row, 'shortfall'))} ({row['n_pairs']})",
             "—" if row["shortfall_class"] is None else
             f"{row['shortfall_class']} ({row['shortfall_class_seeds']}/{row['n_pairs']} seeds)"]
            for row in rows["diagnostics"]]))
        parts.append(_img(figures, f"{slug}_typicality.png", f"{group.title}: typicality of the acquired images"))
        parts.append(_img(figures, f"{slug}_class_recall.png", f"{group.title}: recall of each class"))
    return "\n".join(parts)


def _img(figures: dict[str, bytes], name: str, alt: str) -> str:
    if name not in figures:
        return ""
    data = base64.b64encode(figures[name]).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}" title="{_e(name)}">'


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    if not rows:
        return "<p>No data.</p>"
    head = "".join(f"<th>{_e(str(header))}</th>" for header in headers)
    body = "".join("<tr>" + "".join(f"<td>{_e(str(cell))}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _nan(value: object) -> float:
    return math.nan if value is None else float(value)


def _f(value: object, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float) and math.isinf(value):
        return "∞" if value > 0 else "−∞"
    return f"{value:.{digits}f}"


def _p(value: object) -> str:
    if value is None or math.isnan(value):
        return "—"
    return f"{value:.4g}"


def _ci(low: object, high: object, digits: int) -> str:
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return "—"
    return f"[{_f(low, digits)}, {_f(high, digits)}]"


def _interval(row: dict | None) -> str:
    if row is None:
        return "—"
    interval = _ci(row["ci_low"], row["ci_high"], 4)
    return _f(row["mean"], 4) + ("" if interval == "—" else f" {interval}")


def _prefixed(row: dict, prefix: str) -> dict:
    """``prefix_mean``, ``prefix_ci_low`` and ``prefix_ci_high`` of ``row`` as ``mean``, ``ci_low``, ``ci_high``."""
    return {key: row[f"{prefix}_{key}"] for key in ("mean", "ci_low", "ci_high")}


def _label_range(row: dict | None) -> str:
    return "—" if row is None else f"{_plain(row['label_start'])}–{_plain(row['label_end'])}"


def _n(rows: dict, strategy: str, key: str) -> object:
    row = rows.get((strategy, "test_accuracy")) or rows.get((strategy, "test_macro_f1"))
    return row[key] if row else "—"


def _reached(row: dict | None) -> str:
    if row is None:
        return "—"
    if not row["n_reached"]:
        return f"not reached (0/{row['n_seeds']} seeds)"
    return f"{_plain(round(row['mean_labels'], 1))} ({row['n_reached']}/{row['n_seeds']} seeds)"


def _count(value: float) -> int | float:
    """A label count as an integer when it is one (they always are in a store written by activelab)."""
    value = float(value)
    return int(value) if value.is_integer() else value


def _plain(value: object) -> str:
    """A number without a needless ``.0``; anything else as text."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _sort_key(key: tuple) -> tuple:
    """Sorts names as text and sizes as numbers, missing values last."""
    return tuple((value is None, value if isinstance(value, (int, float)) else 0, str(value)) for value in key)


def _check_targets(targets: Sequence[float]) -> list[float]:
    try:
        values = [float(target) for target in targets]
    except (TypeError, ValueError):
        raise ConfigError(f"`targets`={targets!r} must be a list of accuracies between 0 and 1.") from None
    if not values or any(not 0 <= value <= 1 for value in values):
        raise ConfigError(f"`targets`={targets!r} must be a list of accuracies between 0 and 1.")
    return sorted(set(values))
