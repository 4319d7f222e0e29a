"""The resumable round loop.

Round k: train on the labelled ids (or load the round's saved weights) -> evaluate on the test split ->
score the pool -> select -> ask the oracle -> add the labels. The final acquired batch is trained on and
evaluated too. After every step the run directory holds what is needed to continue (ledger, weights of
the trained round, the pending selection), so a run killed at any point and started again with the same
command continues where it stopped and ends with the same result: every random choice of round k is
seeded from ``(seed, k, purpose)``, never from what ran before in the process.

Run directory: ``config.json``, ``environment.json``, ``state.json`` (the ledger), ``models/round_KKK.pt``,
``lock``; the results store is ``<out>/activelab.sqlite``.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from activelab import environment
from activelab.auxiliary import discriminator_unlabelled, transfer_wrongness
from activelab.config import CONFIG_FILE, RunConfig
from activelab.data.base import UNLABELLED, Dataset
from activelab.data.sources import get_source
from activelab.data.transforms import augment_batch
from activelab.data.state import LabelState
from activelab.faults import crash_point
from activelab.errors import BudgetExceededError, ConfigError, StateError, UnlabelledDataError
from activelab.inference import POOL_OUTPUTS, embed, pool_outputs
from activelab.io import atomic_write_bytes, atomic_write_json
from activelab.models import build_model, check_model
from activelab.models.heads import ActiveModel
from activelab.records import RoundRecord
from activelab.runlock import RunLock
from activelab.store import Store
from activelab.strategies import Strategy, get_strategy
from activelab.training import TrainSettings, evaluate, fit

log = logging.getLogger(__name__)

STORE_NAME = "activelab.sqlite"
_TRAIN, _SELECT, _MC = 1, 2, 3


def stream_seed(seed: int, round_index: int, purpose: int) -> int:
    """A 32-bit seed for one purpose in one round, independent of everything else the process did."""
    return int(np.random.SeedSequence([seed, round_index, purpose]).generate_state(1)[0])


@dataclass
class Experiment:
    """Everything a run works with, resolved from its config."""

    config: RunConfig
    dataset: Dataset
    strategy: Strategy
    state: LabelState
    store: Store
    settings: TrainSettings

    @property
    def run_dir(self) -> Path:
        return self.config.run_dir

    def weights_path(self, round_index: int) -> Path:
        return self.run_dir / "models" / f"round_{round_index:03d}.pt"

    def save_state(self) -> None:
        self.state.save(self.run_dir / "state.json")


def run_experiment(config: RunConfig, *, on_round: Callable[[RoundRecord], None] | None = None,
                   on_start: Callable[[], None] | None = None) -> LabelState:
    """Run (or resume) the experiment ``config`` describes and return its final ledger.

    ``on_start`` is called once the inputs are checked, before the first training or replayed round (the
    CLI prints the run's title there). ``on_round`` is called with each round's record as soon as it is
    evaluated (the CLI prints it); a resumed run first replays the records of the rounds it had already
    evaluated. Progress ("round 3/10: train") is logged at INFO level by this module's logger.
    Raises a :class:`~activelab.errors.UserError` for anything the user can fix.
    """
    config = config.validated()
    strategy = get_strategy(config.sampling_method)
    source = get_source(config.data_class)
    data_dir = Path(config.data_dir) if config.data_dir else None
    dataset = source.load(data_dir, **config.source_options())
    check_model(config.model_class, dataset.input_shape, pretrained=config.pretrained,
                weights=Path(config.weights) if config.weights else None)
    run_dir = _prepare_run_dir(config)
    with RunLock(run_dir):
        state = _load_or_create_state(config, dataset, strategy, run_dir)
        settings = TrainSettings(max_epochs=config.max_epochs, lr=config.lr, batch_size=config.batch_size,
                                 patience=config.patience, gpus=config.gpus, num_workers=config.num_workers,
                                 progress=config.progress, augment=augment_batch if config.augment else None,
                                 min_steps=config.min_steps, monitor=config.monitor)
        store = Store(Path(config.out) / STORE_NAME)
        store.record_run(config.name, created=_now(), dataset=dataset.name, strategy=strategy.name,
                         model=config.model_class, seed=config.seed, run_dir=run_dir.resolve(),
                         config=config.to_dict(), environment=json.loads((run_dir / "environment.json").read_text()))
        experiment = Experiment(config, dataset, strategy, state, store, settings)
        if on_start is not None:
            on_start()
        for round_index, record in enumerate(state.rounds):
            _record_in_store(experiment, round_index)  # the store may lag the ledger after a crash
            if on_round is not None:
                on_round(record)
        _run_rounds(experiment, on_round)
        store.finish_run(config.name, _now())
        return state


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _prepare_run_dir(config: RunConfig) -> Path:
    out, run_dir = Path(config.out), config.run_dir
    if out.exists() and not out.is_dir():
        raise ConfigError(f"the output path {out} exists and is not a directory.")
    try:
        (run_dir / "models").mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"cannot create the run directory {run_dir} ({error.strerror}).") from None
    saved = run_dir / CONFIG_FILE
    if saved.exists():
        changed = RunConfig.load_saved(run_dir).differences(config)
        if changed:
            raise StateError(f"{run_dir} holds a run with a different configuration ({', '.join(changed)}); "
                             "use another --run-name or --out to start a new run.")
    else:
        probe = run_dir / ".write-test"
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as error:
            raise ConfigError(f"the output directory {run_dir} is not writable ({error.strerror}).") from None
        atomic_write_json(run_dir / "environment.json", environment.describe())
        atomic_write_json(saved, config.to_dict())
    return run_dir


def _load_or_create_state(config: RunConfig, dataset: Dataset, strategy: Strategy, run_dir: Path) -> LabelState:
    path = run_dir / "state.json"
    if path.exists():
        state = LabelState.load(path)
        if state.dataset_fingerprint != dataset.fingerprint():
            raise StateError(f"{path} was made from different data than {dataset.name} has now; "
                             "it is left untouched.")
        return state
    state = LabelState.create(dataset.labels, seed=config.seed, dataset_fingerprint=dataset.fingerprint(),
                              predefined_test=dataset.predefined_test, n_val=config.n_val, n_test=config.n_test,
                              n_holdout=config.n_holdout, pool_size=config.pool_size)
    if "p_wrong_N" in strategy.needs and state.holdout_ids.size < 2:
        raise ConfigError(f"strategy '{strategy.name}' needs a holdout split of at least 2 items, got "
                          f"{state.holdout_ids.size}; set --n-holdout.")
    budget = config.n_train_images + config.al_iter * config.al_samples_per_iter
    if budget > state.train_ids.size:
        raise BudgetExceededError(
            f"the labelling budget n_train_images + al_iter * al_samples_per_iter = {budget} must be <= "
            f"the pool size {state.train_ids.size}.")
    initial = state.acquire_initial_ids(config.n_train_images, dataset.labels, balanced=config.initial == "balanced")
    state.add(initial, dataset.labels[initial], 0)
    state.save(path)
    crash_point("state-created")
    return state


def _oracle(experiment: Experiment, ids: np.ndarray) -> np.ndarray:
    """Labels of ``ids``: the dataset's own, else the latest a person gave; a clear stop when neither exists."""
    labels = experiment.dataset.labels[ids].copy()
    missing = labels == UNLABELLED
    labels[missing] = experiment.state.human_label_of(ids[missing])
    unlabelled = ids[labels == UNLABELLED]
    if unlabelled.size:
        run_dir = experiment.run_dir
        raise UnlabelledDataError(
            f"{unlabelled.size} selected item(s) (first: id {int(unlabelled[0])}, "
            f"{experiment.dataset.key(int(unlabelled[0]))}) have no label in the dataset; the selection is saved "
            f"in {run_dir / 'state.json'}, so label them with `activelab label {run_dir} --labels FILE.csv` "
            "(columns id,label) and run again.")
    return labels


def _run_rounds(experiment: Experiment, on_round: Callable[[RoundRecord], None] | None) -> None:
    config, state = experiment.config, experiment.state
    while True:
        evaluated = len(state.rounds)
        if evaluated and not state.rounds[-1].acquired and evaluated - 1 < config.al_iter:
            _acquire(experiment, evaluated - 1)
            continue
        if evaluated > config.al_iter:
            return
        record = _train_and_evaluate(experiment, evaluated)
        if on_round is not None:
            on_round(record)


def _train_and_evaluate(experiment: Experiment, round_index: int) -> RoundRecord:
    state, dataset = experiment.state, experiment.dataset
    model, fit_record = _trained_model(experiment, round_index)
    start = time.perf_counter()
    _progress(experiment, round_index, "evaluate")
    metrics = evaluate(model, dataset, state.test_ids, experiment.settings) if state.test_ids.size else {}
    record = RoundRecord(round_index, state.n_labelled, **fit_record, **metrics,
                         seconds_evaluate=time.perf_counter() - start)
    state.rounds.append(record)
    experiment.save_state()
    crash_point("round-evaluated")
    _record_in_store(experiment, round_index)
    return record


def _record_in_store(experiment: Experiment, round_index: int) -> None:
    """Write round ``round_index`` of the ledger (metrics and, once labelled, its selection) to the store."""
    state, run_id = experiment.state, experiment.config.name
    record = state.rounds[round_index]
    experiment.store.record_round(run_id, record)
    if record.acquired:
        acquired = state.labelled_rounds == round_index + 1
        experiment.store.record_selection(run_id, round_index, state.labelled_ids[acquired].tolist(),
                                          record.selection_scores, state.labelled_labels[acquired].tolist())


def _progress(experiment: Experiment, round_index: int, step: str) -> None:
    log.info("round %d/%d: %s", round_index, experiment.config.al_iter, step)


def _new_model(experiment: Experiment, round_index: int) -> ActiveModel:
    config, dataset = experiment.config, experiment.dataset
    torch.manual_seed(stream_seed(config.seed, round_index, _TRAIN))
    return build_model(config.model_class, dataset.input_shape, dataset.num_classes,
                       pretrained=config.pretrained, weights=Path(config.weights) if config.weights else None)


def _trained_model(experiment: Experiment, round_index: int) -> tuple[ActiveModel, dict]:
    """The round's trained model: loaded from its saved weights when they exist, else trained and saved.

    A warm start begins from the previous round's saved weights; otherwise training starts from the
    seeded initialisation (or the pretrained weights).
    """
    path = experiment.weights_path(round_index)
    model = _new_model(experiment, round_index)
    if path.exists():
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(checkpoint["model"])
        return model.eval(), checkpoint["fit"]
    if experiment.config.warm_start and round_index > 0:
        model.load_state_dict(_load_weights(experiment.weights_path(round_index - 1)))
    state = experiment.state
    _progress(experiment, round_index, f"train on {state.n_labelled} labels")
    result = fit(model, experiment.dataset, state.labelled_ids, state.labelled_labels, state.val_ids,
                 experiment.settings, seed=stream_seed(experiment.config.seed, round_index, _TRAIN))
    fit_record = {"val_accuracy": result.best_val_accuracy, "epochs": result.epochs, "steps": result.steps,
                  "seconds_train": result.seconds}
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "fit": fit_record}, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    crash_point("weights-saved")
    return model, fit_record


def _load_weights(path: Path) -> dict:
    if not path.exists():
        raise StateError(f"{path} is missing, so the warm start cannot continue; the run directory is incomplete.")
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def _acquire(experiment: Experiment, round_index: int) -> None:
    """Select with round ``round_index``'s model (unless a selection is pending), label, record."""
    state = experiment.state
    if state.pending is None or state.pending["round"] != round_index:
        model, _ = _trained_model(experiment, round_index)
        state.pending = _select(experiment, model, round_index)
        experiment.save_state()
        crash_point("selection-saved")
    pending = state.pending
    ids = np.asarray(pending["ids"], dtype=np.int64)
    labels = _oracle(experiment, ids)
    state.add(ids, labels, round_index + 1)
    record = state.rounds[round_index]
    record.acquired = True
    record.seconds_score, record.seconds_select = pending["seconds_score"], pending["seconds_select"]
    record.selection_scores = pending["scores"]
    state.pending = None
    experiment.save_state()
    crash_point("labels-saved")
    _record_in_store(experiment, round_index)
    crash_point("round-recorded")


def _select(experiment: Experiment, model: ActiveModel, round_index: int) -> dict:
    config, state, strategy = experiment.config, experiment.state, experiment.strategy
    pool = state.pool_ids
    if config.al_samples_per_iter > pool.size:
        raise BudgetExceededError(f"`al_samples_per_iter`={config.al_samples_per_iter} must be <= the "
                                  f"remaining pool size {pool.size}.")
    start = time.perf_counter()
    _progress(experiment, round_index, f"score {pool.size} pool items")
    inputs = _strategy_inputs(experiment, model, round_index, pool)
    scored = time.perf_counter()
    _progress(experiment, round_index, f"select {config.al_samples_per_iter} with {strategy.name}")
    rng = np.random.default_rng([config.seed, round_index, _SELECT])
    selection = strategy(config.al_samples_per_iter, rng=rng, n_pool=pool.size, **inputs,
                         **config.strategy_options())
    done = time.perf_counter()
    scores = [float(score) if np.isfinite(score) else None for score in selection.scores]
    return {"round": round_index, "strategy": strategy.name, "ids": pool[selection.positions].tolist(),
            "scores": scores, "seconds_score": scored - start, "seconds_select": done - scored}


def _strategy_inputs(experiment: Experiment, model: ActiveModel, round_index: int, pool: np.ndarray) -> dict:
    """Compute the arrays the strategy declared it needs, in one pass over the pool where possible."""
    config, state, dataset, settings = experiment.config, experiment.state, experiment.dataset, experiment.settings
    needs = set(experiment.strategy.needs)
    wanted = {need for need in needs if need in POOL_OUTPUTS}
    if needs & {"p_wrong_N", "p_unlabelled_N"}:
        wanted.add("emb_N_D")
    options = dict(batch_size=256, device=settings.device, num_workers=settings.num_workers,
                   seed=stream_seed(config.seed, round_index, _MC))
    inputs = dict(pool_outputs(model, dataset, pool, wanted, mc_samples=config.mc_samples,
                               progress=config.progress, **options)) if wanted else {}
    if "labelled_emb_M_D" in needs:
        inputs["labelled_emb_M_D"] = embed(model, dataset, state.labelled_ids, **options)
    helper_seed = stream_seed(config.seed, round_index, _SELECT)
    if "p_wrong_N" in needs:
        holdout = state.holdout_ids
        outputs = pool_outputs(model, dataset, holdout, {"probs_N_C", "emb_N_D"}, **options)
        correct = outputs["probs_N_C"].argmax(1) == dataset.labels[holdout]
        inputs["p_wrong_N"] = transfer_wrongness(outputs["emb_N_D"], correct, inputs["emb_N_D"], helper_seed)
    if "p_unlabelled_N" in needs:
        inputs["p_unlabelled_N"] = discriminator_unlabelled(embed(model, dataset, state.labelled_ids, **options),
                                                            inputs["emb_N_D"], helper_seed)
    return inputs
