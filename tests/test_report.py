"""activelab.report on a fabricated results store (no training): known curves, known selections, so every
number of the report has an answer computed by hand."""

from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from activelab import stats
from activelab.config import RunConfig
from activelab.errors import ConfigError
from activelab.records import RoundRecord
from activelab.report import BASELINE_COLOUR, PALETTE, build_report, strategy_colours, write_report
from activelab.store import Store

LABELS = [100, 200, 300, 400, 500]
SCRIPT = "<script>alert(1)</script>"
TARGETS = (0.68, 0.805, 0.95)


def add_run(store: Store, strategy: str, seed: int, accuracy: list[float], *, selections: dict | None = None,
            dataset: str = "fashion-mnist", model: str = "cnn", labels: list[int] = LABELS, seconds: float = 1.0,
            **config) -> str:
    """Record a fake run: one round per point of ``accuracy`` (macro-F1 is accuracy - 0.05)."""
    settings = {"sampling_method": strategy, "data_class": dataset, "model_class": model, "seed": seed,
                "n_train_images": labels[0], "al_samples_per_iter": labels[1] - labels[0] if len(labels) > 1 else 100,
                **config}
    run_id = f"{dataset}-{strategy}-{model}-seed{seed}-{len(store.runs())}"
    store.record_run(run_id, created=f"2024-01-01T00:00:{len(store.runs()):02d}", dataset=dataset, strategy=strategy,
                     model=model, seed=seed, run_dir=Path("/nowhere") / run_id,
                     config=RunConfig(**settings).to_dict(), environment={})
    for index, (n, value) in enumerate(zip(labels, accuracy)):
        last = index == len(accuracy) - 1
        store.record_round(run_id, RoundRecord(
            round=index, n_labelled=n, test_accuracy=value, test_macro_f1=value - 0.05, val_accuracy=value,
            epochs=3, seconds_train=seconds, seconds_evaluate=seconds / 2, seconds_score=None if last else seconds / 4,
            seconds_select=None if last else seconds / 8))
    for round_index, classes in (selections or {}).items():
        store.record_selection(run_id, round_index, list(range(1000 * round_index, 1000 * round_index + len(classes))),
                               [0.5] * len(classes), list(classes))
    return run_id


def random_curve(seed: int) -> list[float]:
    """0.60, 0.65, ..., 0.80 raised by 0.01 * (seed % 3): AUBC 0.70 + 0.01 * (seed % 3)."""
    return [0.60 + 0.05 * k + 0.01 * (seed % 3) for k in range(5)]


BALANCED = {0: [0, 1, 2, 0, 1, 2], 1: [0, 1, 2], 2: [2, 1, 0], 3: [0, 1, 2]}
# Acquired so far per class: [4, 1, 1], [6, 3, 3], [7, 6, 5]: ratios 4, 2, 1.4.
MARGIN_SELECTIONS = {0: [0, 0, 0, 0, 1, 2], 1: [0, 0, 1, 1, 2, 2], 2: [1, 1, 1, 2, 2, 0]}
SCRIPT_SELECTIONS = {0: [0, 1, 0, 1, 0, 1], 1: [2, 2, 2]}  # class 2 missing, then balanced: inf, 1


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """Random, margin (better on 8 of 8 seeds), least_confidence (identical to random), a strategy named like
    a script (worse on 3 seeds), an unfinished margin run, and a second group with another batch size."""
    folder = tmp_path_factory.mktemp("results")
    store = Store(folder / "activelab.sqlite")
    for seed in range(8):
        add_run(store, "random", seed, random_curve(seed), selections=BALANCED, seconds=1.0)
        add_run(store, "margin", seed, [value + 0.02 + 0.001 * seed for value in random_curve(seed)],
                selections=MARGIN_SELECTIONS, seconds=2.0)
        add_run(store, "least_confidence", seed, random_curve(seed), seconds=3.0)
    for seed in range(3):
        add_run(store, SCRIPT, seed, [value - 0.1 for value in random_curve(seed)], selections=SCRIPT_SELECTIONS)
    add_run(store, "margin", 8, [0.9, 0.9, 0.9])  # stopped after 300 labels
    add_run(store, "random", 0, [0.5, 0.6, 0.7], labels=[20, 70, 120])  # another group: 20 + 50 per round
    return folder


@pytest.fixture(scope="module")
def report_dir(results, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "report"
    index = write_report(results, out, targets=TARGETS, n_resamples=2000, seed=0)
    assert index == out / "index.html"
    return out


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def main_group(rows: list[dict]) -> list[dict]:
    return [row for row in rows if row["al_samples_per_iter"] == "100"]


# ----------------------------------------------------------------------------------------- no runs

def test_a_folder_without_runs_is_one_sentence_and_writes_nothing(tmp_path):
    out = tmp_path / "report"
    for folder in (tmp_path / "missing", tmp_path):
        with pytest.raises(ConfigError) as error:
            write_report(folder, out)
        assert error.value.args[0].count(". ") == 0 and error.value.args[0].endswith(".")
    Store(tmp_path / "activelab.sqlite").rounds()  # a store file without runs
    (tmp_path / "activelab.sqlite").touch()
    with pytest.raises(ConfigError, match="no activelab runs"):
        write_report(tmp_path, out)
    assert not out.exists()


@pytest.mark.parametrize("options", [{"targets": [1.5]}, {"targets": []}, {"confidence": 1.0},
                                     {"n_resamples": 10}, {"seed": -1}])
def test_bad_options_are_refused(results, tmp_path, options):
    with pytest.raises(ConfigError):
        write_report(results, tmp_path / "report", **options)
    assert not (tmp_path / "report").exists()


# ------------------------------------------------------------------------------------------ groups

def test_runs_are_grouped_by_budget_and_differing_settings(results, tmp_path):
    report = build_report(results, n_resamples=200)
    assert [(group.n_train_images, group.al_samples_per_iter) for group in report.groups] == [(20, 50), (100, 100)]
    main = report.groups[1]
    assert main.strategies == sorted(["random", "margin", "least_confidence", SCRIPT])
    assert any("did not reach the group's budget of 500 labels" in note and "seed8" in note for note in main.notes)

    store = Store(tmp_path / "activelab.sqlite")
    add_run(store, "random", 0, random_curve(0), lr=1e-3)
    add_run(store, "random", 0, random_curve(0), lr=1e-2)
    add_run(store, "power_bald", 0, random_curve(0), lr=1e-2, strategy_kwargs={"beta": 2})
    groups = build_report(tmp_path, n_resamples=200).groups
    assert [group.settings for group in groups] == [{"lr": 0.001}, {"lr": 0.01}]
    assert groups[1].strategies == ["power_bald(beta=2)", "random"]
    assert "lr=0.01" in groups[1].title and groups[0].slug != groups[1].slug


def test_mc_samples_names_a_strategy_only_when_its_runs_differ(tmp_path):
    store = Store(tmp_path / "activelab.sqlite")
    add_run(store, "random", 0, random_curve(0))
    add_run(store, "bald", 0, random_curve(0), mc_samples=20)
    add_run(store, "bald", 1, random_curve(1), mc_samples=20)
    [group] = build_report(tmp_path, n_resamples=200).groups  # random keeps its default of 10: one group
    assert group.strategies == ["bald", "random"]
    add_run(store, "bald", 0, random_curve(0), mc_samples=5)
    [group] = build_report(tmp_path, n_resamples=200).groups
    assert group.strategies == ["bald(mc_samples=20)", "bald(mc_samples=5)", "random"]


def test_a_pool_subset_names_a_strategy_compared_with_random_in_the_same_group(tmp_path):
    store = Store(tmp_path / "activelab.sqlite")
    add_run(store, "random", 0, random_curve(0))
    add_run(store, "bald", 0, random_curve(0))
    add_run(store, "bald", 0, random_curve(0), pool_subset=2000)
    [group] = build_report(tmp_path, n_resamples=200).groups
    assert group.strategies == ["bald(pool_subset=2000)", "bald(pool_subset=None)", "random"]


def test_a_seed_run_twice_is_counted_once(tmp_path):
    store = Store(tmp_path / "activelab.sqlite")
    add_run(store, "random", 0, random_curve(0)[:3])
    add_run(store, "random", 0, random_curve(0))
    group = build_report(tmp_path, n_resamples=200).groups[0]
    assert len(group.runs) == 1 and len(group.runs[0].rounds) == 5
    assert any("random seed 0 has 2 runs" in note for note in group.notes)


# ------------------------------------------------------------------------------------ the CSV numbers

def test_curves_are_the_mean_and_t_interval_over_seeds(report_dir):
    rows = [row for row in main_group(read_csv(report_dir / "curves.csv"))
            if row["strategy"] == "random" and row["metric"] == "test_accuracy"]
    assert [float(row["n_labelled"]) for row in rows] == LABELS
    first = [random_curve(seed)[0] for seed in range(8)]
    mean, low, high = stats.t_interval(first)
    assert float(rows[0]["mean"]) == pytest.approx(np.mean(first))
    assert (float(rows[0]["ci_low"]), float(rows[0]["ci_high"])) == pytest.approx((low, high))
    assert rows[0]["n_seeds"] == "8"
    margin_300 = [row for row in main_group(read_csv(report_dir / "curves.csv"))
                  if row["strategy"] == "margin" and row["metric"] == "test_accuracy" and row["n_labelled"] == "300"]
    assert margin_300[0]["n_seeds"] == "9"  # the unfinished run counts where it has points
    f1 = [row for row in main_group(read_csv(report_dir / "curves.csv"))
          if row["strategy"] == "random" and row["metric"] == "test_macro_f1"]
    assert float(f1[0]["mean"]) == pytest.approx(np.mean(first) - 0.05)


def test_aubc_per_run_and_per_strategy(report_dir):
    runs = main_group(read_csv(report_dir / "aubc_runs.csv"))
    for row in runs:
        if row["strategy"] == "random":
            seed = int(row["seed"])
            assert float(row["aubc_test_accuracy"]) == pytest.approx(0.70 + 0.01 * (seed % 3), abs=1e-12)
    unfinished = [row for row in runs if row["strategy"] == "margin" and row["seed"] == "8"]
    assert unfinished[0]["complete"] == "False" and float(unfinished[0]["aubc_test_accuracy"]) == pytest.approx(0.9)

    summary = {(row["strategy"], row["metric"]): row for row in main_group(read_csv(report_dir / "aubc.csv"))}
    random_values = [0.70 + 0.01 * (seed % 3) for seed in range(8)]
    mean, low, high = stats.t_interval(random_values)
    row = summary[("random", "test_accuracy")]
    assert float(row["mean"]) == pytest.approx(mean, abs=1e-12)
    assert (float(row["ci_low"]), float(row["ci_high"])) == pytest.approx((low, high), abs=1e-12)
    assert (row["label_start"], row["label_end"]) == ("100", "500")
    assert summary[("margin", "test_accuracy")]["n_seeds"] == "8"  # the unfinished seed is left out
    assert float(summary[("random", "test_macro_f1")]["mean"]) == pytest.approx(mean - 0.05, abs=1e-12)


def test_paired_comparison_with_random(report_dir):
    rows = {row["strategy"]: row for row in main_group(read_csv(report_dir / "paired.csv"))
            if row["metric"] == "test_accuracy"}
    assert set(rows) == {"margin", "least_confidence", SCRIPT}

    margin = rows["margin"]
    assert margin["n_pairs"] == "8" and margin["seeds"] == "0 1 2 3 4 5 6 7"
    assert float(margin["wilcoxon_p"]) == 2 / 256 == 0.0078125
    assert float(margin["mean_difference"]) == pytest.approx(0.02 + 0.001 * 3.5, abs=1e-12)
    assert 0 < float(margin["ci_low"]) < float(margin["mean_difference"]) < float(margin["ci_high"])
    assert float(margin["rank_biserial"]) == 1.0 and (margin["wins"], margin["losses"]) == ("8", "0")
    assert float(margin["d_z"]) > 0

    same = rows["least_confidence"]
    assert float(same["wilcoxon_p"]) == 1.0 and same["ties"] == "8"
    assert float(same["ci_low"]) <= 0 <= float(same["ci_high"])
    assert same["rank_biserial"] == "" and same["d_z"] == ""  # undefined: no difference at all

    worse = rows[SCRIPT]
    assert worse["n_pairs"] == "3" and float(worse["wilcoxon_p"]) == 0.25
    assert float(worse["smallest_possible_p"]) == 0.25 and float(worse["mean_difference"]) < 0

    # Holm over the three: sorted p 2/256, 0.25, 1 -> 3 * 2/256, 2 * 0.25, 1.
    assert float(margin["holm_p"]) == pytest.approx(3 * 2 / 256)
    assert float(worse["holm_p"]) == pytest.approx(0.5)
    assert float(same["holm_p"]) == 1.0


def test_pairs_are_only_the_seeds_both_strategies_have(tmp_path):
    store = Store(tmp_path / "activelab.sqlite")
    for seed in range(8):
        add_run(store, "random", seed, random_curve(seed))
    for seed in range(3, 10):
        add_run(store, "entropy", seed, [value + 0.01 for value in random_curve(seed)])
    paired = build_report(tmp_path, n_resamples=200).tables["paired"]
    [row] = [row for row in paired if row["metric"] == "test_accuracy"]
    assert row["n_pairs"] == 5 and row["seeds"] == "3 4 5 6 7"
    assert row["wilcoxon_p"] == row["smallest_possible_p"] == 0.0625
    assert row["mean_difference"] == pytest.approx(0.01, abs=1e-12)

    add_run(store, "margin", 11, random_curve(11))  # no random run with seed 11
    report = build_report(tmp_path, n_resamples=200)
    [row] = [row for row in report.tables["paired"] if row["metric"] == "test_accuracy" and row["strategy"] == "margin"]
    assert row["n_pairs"] == 0 and math.isnan(row["wilcoxon_p"]) and math.isnan(row["holm_p"])
    assert any("margin share(s) no seed with random" in note for note in report.groups[0].notes)


def test_labels_to_target(report_dir):
    rows = {(row["strategy"], row["target"]): row for row in main_group(read_csv(report_dir / "labels_to_target.csv"))}
    assert (rows[("random", "0.68")]["n_reached"], float(rows[("random", "0.68")]["mean_labels"])) == ("8", 300.0)
    # 0.805: seeds with seed % 3 in {1, 2} end at 0.81 / 0.82 and reach it at 500; seeds 0, 3, 6 end at 0.80.
    assert rows[("random", "0.805")]["n_reached"] == "5" and float(rows[("random", "0.805")]["mean_labels"]) == 500
    assert rows[("random", "0.95")]["n_reached"] == "0" and rows[("random", "0.95")]["mean_labels"] == ""
    per_run = [row for row in main_group(read_csv(report_dir / "labels_to_target_runs.csv"))
               if row["strategy"] == "random" and row["target"] == "0.805"]
    assert sorted(int(row["seed"]) for row in per_run if row["labels"] == "") == [0, 3, 6]


def test_timing_per_step(report_dir):
    rows = {row["strategy"]: row for row in main_group(read_csv(report_dir / "timing.csv"))}
    margin = rows["margin"]  # 8 complete runs of 5 rounds (2 s per round's training) and one of 3 rounds (1 s)
    assert margin["n_runs"] == "9" and margin["n_rounds"] == "43" and margin["n_complete_runs"] == "8"
    assert float(margin["seconds_train"]) == pytest.approx((40 * 2 + 3 * 1) / 43)
    random = rows["random"]  # 1 s train, 0.5 s evaluate, 0.25 s score and 0.125 s select in 4 of 5 rounds
    assert (float(random["seconds_train"]), float(random["seconds_evaluate"])) == (1.0, 0.5)
    assert (float(random["seconds_score"]), float(random["seconds_select"])) == (0.25, 0.125)
    assert float(random["seconds_round"]) == pytest.approx((5 * 1.5 + 4 * 0.375) / 5)
    assert float(random["seconds_run"]) == pytest.approx(5 * 1.5 + 4 * 0.375)


def test_class_balance_of_the_acquired_labels(report_dir):
    ratios = {(row["strategy"], row["round"]): row for row in main_group(read_csv(report_dir / "class_imbalance.csv"))}
    assert [float(ratios[("margin", str(r))]["ratio_mean"]) for r in range(3)] == pytest.approx([4.0, 2.0, 1.4])
    assert [float(ratios[("random", str(r))]["ratio_max"]) for r in range(4)] == [1.0] * 4
    assert ratios[(SCRIPT, "0")]["ratio_mean"] == "inf" and float(ratios[(SCRIPT, "1")]["ratio_mean"]) == 1.0
    assert ratios[("margin", "2")]["mean_acquired_so_far"] == "18.0"

    counts = {(row["strategy"], row["round"], row["class"]): row
              for row in main_group(read_csv(report_dir / "class_balance.csv"))}
    assert counts[("margin", "0", "0")]["mean_acquired"] == "4.0"
    assert counts[("margin", "1", "0")]["mean_acquired_so_far"] == "6.0"
    assert counts[("margin", "0", "0")]["n_seeds"] == "8"
    per_run = [row for row in main_group(read_csv(report_dir / "class_balance_runs.csv"))
               if row["strategy"] == SCRIPT and row["seed"] == "0" and row["round"] == "0"]
    assert [(row["class"], row["acquired"]) for row in per_run] == [("0", "3"), ("1", "3"), ("2", "0")]


# -------------------------------------------------------------------------------------- HTML and PNG

def test_html_is_self_contained_names_every_strategy_and_escapes(report_dir):
    page = (report_dir / "index.html").read_text(encoding="utf-8")
    for strategy in ("random", "margin", "least_confidence"):
        assert strategy in page
    assert SCRIPT not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script" not in page
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page)  # nothing fetched from a network
    assert page.count('src="data:image/png;base64,') == len(list(report_dir.glob("*.png")))
    assert "not reached (0/8 seeds)" in page and "0.007812" in page


def test_png_figures_are_real_images_of_the_fixed_size(report_dir):
    names = sorted(path.name for path in report_dir.glob("*.png"))
    for suffix in ("test_accuracy", "test_macro_f1", "aubc", "class_imbalance"):
        assert any(name.endswith(f"100+100_{suffix}.png") for name in names), suffix
    assert len(names) >= 7  # the small group has no selections, so no class-imbalance figure
    for name in names:
        with Image.open(report_dir / name) as image:
            assert image.format == "PNG" and image.size == (800, 500)
            pixels = np.asarray(image.convert("L"))
        assert pixels.min() < 100 and pixels.max() > 200  # drawn on, not blank


def test_every_csv_is_written_with_a_header(report_dir):
    for name in ("curves", "curves_runs", "aubc", "aubc_runs", "paired", "labels_to_target", "labels_to_target_runs",
                 "timing", "class_balance", "class_balance_runs", "class_imbalance"):
        text = (report_dir / f"{name}.csv").read_text()
        header = next(csv.reader(io.StringIO(text)))
        assert header[:3] == ["group", "dataset", "model"] and len(text.splitlines()) > 1, name


def test_strategy_colours_are_fixed_by_sorted_names_and_random_is_grey():
    colours = strategy_colours(["random", "margin", "bald", "entropy"])
    assert colours == {"bald": PALETTE[0], "entropy": PALETTE[1], "margin": PALETTE[2], "random": BASELINE_COLOUR}
    assert strategy_colours(["margin", "random"])["random"] == BASELINE_COLOUR
    assert len(set(strategy_colours([f"s{i}" for i in range(18)]).values())) == 19


def test_the_report_is_reproducible(results, tmp_path):
    first = write_report(results, tmp_path / "a", n_resamples=500, seed=1).parent
    second = write_report(results, tmp_path / "b", n_resamples=500, seed=1).parent
    for name in ("paired.csv", "aubc.csv", "class_imbalance.csv"):
        assert (first / name).read_bytes() == (second / name).read_bytes()
    assert math.isfinite(float(read_csv(first / "paired.csv")[0]["ci_low"]))


def test_the_report_command_writes_the_page_or_says_why_not(results, tmp_path, capsys):
    from cli_helpers import assert_one_sentence, run_cli

    code, out, _ = run_cli(capsys, "report", results, "--out", tmp_path / "page", "--target", "0.6")
    assert code == 0 and out.strip() == f"report: {tmp_path / 'page' / 'index.html'}"
    assert "labels_to_target.csv" in {path.name for path in (tmp_path / "page").iterdir()}
    assert_one_sentence(*run_cli(capsys, "report", tmp_path / "empty", "--out", tmp_path / "none"),
                        "does not exist")
    assert not (tmp_path / "none").exists()
