"""Experiment trackers through Lightning's own loggers: CSV, TensorBoard, MLflow and Weights & Biases.

One set of loggers serves a whole run. :func:`make_loggers` opens them and records the run's configuration
as hyperparameters; each round's training passes :func:`round_loggers` views of them to its
``pl.Trainer``; :func:`log_round` records what the round measured; :func:`finalize` closes them.

What a tracker shows
--------------------
``round/...``
    One point per round with the **number of labels** as the x-axis (``step = n_labelled``): test
    accuracy and macro-F1, validation accuracy, epochs, seconds per step (train, evaluate, score, select)
    and the class balance of the labelled set (``round/labels_per_class/<class>``, ``round/class_imbalance``
    = most / fewest labels of a class, ``round/classes_without_labels``). These are the learning curves to
    compare strategies on.
``round_KKK/...``
    Round ``KKK``'s training curves (``round_003/train_loss``, ``round_003/val_acc``, ...), with Lightning's
    optimiser step as the x-axis. Lightning counts steps from 0 in every fit, so every round has keys of its
    own instead of sharing ``train_loss``: in TensorBoard each round is a section of its own (type
    ``train_loss`` in the tag filter to see the rounds side by side), in MLflow and W&B each round's curve is a
    metric of its own, and nothing is drawn backwards when a new round starts again at step 0. The prefix
    needs no state, so a resumed run names its rounds the same way (a round trained again after a crash
    logs its curve a second time under the same key).

Where the files go
------------------
``csv``
    ``<run_dir>/csv/version_N/metrics.csv`` and ``hparams.yaml`` (Lightning's CSVLogger; a resumed run
    writes the next ``version_N``, the earlier file is kept). The ``step`` column is the number of labels
    in rows with ``round/`` values and the optimiser step in rows with ``round_KKK/`` values.
``tensorboard``
    ``<run_dir>/tensorboard/`` (event files; ``tensorboard --logdir <out>`` shows every run of a results
    folder, one run each, with the configuration in the HParams tab).
``mlflow``
    ``MLFLOW_TRACKING_URI`` when it is set, else a local SQLite store ``<out>/mlflow.db`` shared by the runs
    of a results folder (MLflow 3 refuses its old ``file:`` store unless ``MLFLOW_ALLOW_FILE_STORE=true``),
    experiment ``MLFLOW_EXPERIMENT_NAME`` or ``activelab``, one MLflow run per activelab run, continued on
    resume. See it with ``mlflow ui --backend-store-uri sqlite:///<out>/mlflow.db``.
``wandb``
    ``<run_dir>/wandb/``, project ``WANDB_PROJECT`` or ``activelab``, one W&B run per activelab run (its id
    is derived from the run directory, so a resumed run continues it). Without an API key (no
    ``WANDB_API_KEY`` and no ``.netrc`` entry for the W&B host) and without ``WANDB_MODE``, the run is
    written offline and a warning says how to upload it later with ``wandb sync``.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import json
import logging
import math
import netrc
import os
import re
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence
from urllib.parse import urlsplit

import numpy as np

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # emitted by Lightning's own import on new torch
    from pytorch_lightning.loggers import CSVLogger, Logger, MLFlowLogger, TensorBoardLogger, WandbLogger

from activelab.config import TRACKERS
from activelab.errors import ConfigError
from activelab.records import METRIC_COLUMNS, RoundRecord

log = logging.getLogger(__name__)


#: The modules each tracker needs (any one of each tuple), beyond Lightning itself.
_MODULES: dict[str, tuple[tuple[str, ...], ...]] = {
    "csv": (),
    "tensorboard": (("tensorboard",),),
    "mlflow": (("mlflow",),),
    "wandb": (("wandb",),),
}
#: MLflow's local SQLite store also needs SQLAlchemy and Alembic (they come with ``mlflow``, not ``mlflow-skinny``).
_SQLITE_MODULES = (("sqlalchemy",), ("alembic",))

#: Prefix of the round-level metrics, logged with ``step = n_labelled``.
ROUND_PREFIX = "round"
#: Metrics of the round record that TensorBoard's HParams tab shows next to the configuration.
_HPARAM_METRICS = ("test_accuracy", "test_macro_f1", "val_accuracy")
#: How :func:`finalize` statuses map onto MLflow's run statuses.
_MLFLOW_STATUS = {"success": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}
_RUN_DIR_TAG = "activelab.run_dir"
#: make_loggers opens the trackers that can refuse (a bad store, W&B settings) before the ones that cannot.
_OPEN_ORDER = ("mlflow", "wandb", "tensorboard", "csv")
_DEFAULT_WANDB_HOST = "https://api.wandb.ai"


def make_loggers(names: Sequence[str], run_dir: Path, run_name: str, config: Mapping[str, Any]) -> list[Logger]:
    """Open the trackers ``names`` for the run in ``run_dir`` and record ``config`` as hyperparameters.

    Parameters
    ----------
    names : sequence of str
        Tracker names from :data:`TRACKERS` (case-insensitive; a repeated name counts once).
    run_dir : Path
        The run directory; files of the CSV, TensorBoard and W&B loggers go below it, MLflow's default
        store beside it (``run_dir.parent / "mlflow.db"``).
    run_name : str
        The run's name, shown by MLflow and W&B.
    config : mapping
        The run's configuration (``RunConfig.to_dict()``); nested mappings become ``outer/inner`` keys.

    Returns
    -------
    list of pytorch_lightning.loggers.Logger
        One logger per tracker, in the order of ``names``.

    Raises
    ------
    ConfigError
        For an unknown tracker name, a tracker whose package is not installed, an MLflow tracking store
        that cannot be opened, or a W&B run that cannot start (``WANDB_MODE=online`` without a key). Names
        and packages are checked before anything is written; MLflow and W&B are opened before the others.
    """
    wanted = _check_names(names)
    run_dir = Path(run_dir)
    mlflow_uri = _mlflow_tracking_uri(run_dir) if "mlflow" in wanted else None
    for name in wanted:
        extra = _SQLITE_MODULES if name == "mlflow" and mlflow_uri.startswith("sqlite:") else ()
        for choices in _MODULES[name] + extra:
            if not any(importlib.util.find_spec(module) is not None for module in choices):
                raise ConfigError(f"the {name} tracker needs the package {choices[0]}, which is not installed; "
                                  "install it with pip install 'activelab[trackers]'.")
    if not wanted:
        return []
    params = _flat_params(config)
    run_dir.mkdir(parents=True, exist_ok=True)
    opened: dict[str, Logger] = {}
    try:
        for name in sorted(wanted, key=_OPEN_ORDER.index):  # the ones that can refuse first
            if name == "csv":
                logger: Logger = CSVLogger(save_dir=run_dir, name="csv")
                logger.log_hyperparams(params)
            elif name == "tensorboard":
                logger = TensorBoardLogger(save_dir=run_dir / "tensorboard", name="", version="",
                                           default_hp_metric=False)
                logger.log_hyperparams(params)
                _tensorboard_hparams(logger, params)
            elif name == "mlflow":
                logger = _mlflow_logger(mlflow_uri, run_dir, run_name, params)
            else:
                logger = _wandb_logger(run_dir, run_name, params)
            opened[name] = logger
    except BaseException:
        finalize(list(opened.values()), "failed")
        raise
    return [opened[name] for name in wanted]


def round_loggers(loggers: Sequence[Logger], round_index: int) -> list[Logger]:
    """Views of ``loggers`` for the ``pl.Trainer`` that trains round ``round_index``.

    A view logs every metric the Trainer sends under ``round_KKK/`` (``train_loss`` becomes
    ``round_003/train_loss``) and leaves the run open when the fit ends: the Trainer's ``finalize`` only
    flushes, and its ``log_hyperparams`` (the module's empty hyperparameters) is ignored, since
    :func:`make_loggers` recorded the run's configuration once.
    """
    return [RoundLogger(logger, round_index) for logger in loggers]


def log_every_n_steps(n_batches: int, every: int = 50) -> int:
    """A ``Trainer(log_every_n_steps=...)`` that logs the training loss at least once per epoch.

    Lightning's default of 50 logs nothing when an epoch has fewer batches, as early rounds do.
    """
    return max(1, min(every, int(n_batches)))


def log_round(loggers: Sequence[Logger], record: RoundRecord, class_counts: Mapping[str, int] | None = None,
              *, fields: Iterable[str] | None = None) -> None:
    """Log a round's metrics under ``round/`` with the number of labels as the step.

    Parameters
    ----------
    loggers : sequence of Logger
        The loggers of :func:`make_loggers`.
    record : RoundRecord
        The round's record. Its columns (:data:`activelab.records.METRIC_COLUMNS`) that are not None are
        logged as ``round/<column>`` (``round`` itself as ``round/index``); ``round/n_labelled`` is always
        logged, as the x-axis W&B plots the round metrics against.
    class_counts : mapping of str to int, optional
        Labels per class in the labelled set the round trained on (see :func:`count_classes`), logged as
        ``round/labels_per_class/<class>``, ``round/class_imbalance`` (most / fewest labels of a class;
        left out while a class has none) and ``round/classes_without_labels``.
    fields : iterable of str, optional
        Only these record columns (for instance ``("seconds_score", "seconds_select")`` once a selection
        is labelled, when the rest was logged after evaluation). Default: every column.
    """
    metrics = _round_metrics(record, class_counts, fields)
    step = int(record.n_labelled)
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            for key in metrics:
                if key != f"{ROUND_PREFIX}/n_labelled":
                    logger.experiment.define_metric(key, step_metric=f"{ROUND_PREFIX}/n_labelled")
        logger.log_metrics(metrics, step=step)
        logger.save()


def count_classes(labels: np.ndarray, class_names: Sequence[str]) -> dict[str, int]:
    """Labels per class, for :func:`log_round`: ``{class name: count}`` over every class, zeros included."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(class_names))
    return {str(name): int(count) for name, count in zip(class_names, counts)}


def finalize(loggers: Sequence[Logger], status: str = "success") -> None:
    """Flush and close the loggers: the CSV file written, TensorBoard's writer closed, the MLflow run ended
    with the matching status, the W&B run finished.

    ``status`` is ``"success"``, ``"failed"`` or ``"interrupted"`` (a run that stopped to wait for labels,
    or was stopped by the user). A logger that fails to close is reported as a warning and the others are
    still closed, so this can run in a ``finally`` block without hiding the error that ended the run.
    """
    if status not in _MLFLOW_STATUS:
        raise ValueError(f"status must be one of {', '.join(_MLFLOW_STATUS)}, got {status!r}")
    for logger in loggers:
        try:
            if isinstance(logger, MLFlowLogger):
                logger.finalize(_MLFLOW_STATUS[status])
            else:
                logger.finalize(status)
            if isinstance(logger, WandbLogger):
                logger.experiment.finish(exit_code=0 if status == "success" else 1)
        except Exception as error:  # noqa: BLE001 - closing the others matters more than this one
            log.warning("the %s logger could not be closed (%s: %s)", type(logger).__name__,
                        type(error).__name__, error)


class RoundLogger(Logger):
    """One round's view of a run's logger: metric keys prefixed ``round_KKK/``, the run left open.

    Everything else (name, version, directory, experiment object, checkpoint hook) is the wrapped
    logger's, so ``self.logger.experiment`` in a LightningModule reaches the real tracker.
    """

    def __init__(self, logger: Logger, round_index: int) -> None:
        super().__init__()
        self.logger = logger
        self.round_index = int(round_index)
        self.prefix = f"round_{self.round_index:03d}"

    @property
    def name(self) -> str | None:
        return self.logger.name

    @property
    def version(self) -> int | str | None:
        return self.logger.version

    @property
    def save_dir(self) -> str | None:
        return self.logger.save_dir

    @property
    def experiment(self) -> Any:
        return self.logger.experiment

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.logger.log_metrics({f"{self.prefix}/{key}": value for key, value in metrics.items()}, step=step)

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Ignored: the run's configuration is recorded once, by :func:`make_loggers`."""

    def save(self) -> None:
        self.logger.save()

    def finalize(self, status: str) -> None:
        """Flush only: the run goes on with the next round; :func:`finalize` closes it."""
        self.logger.save()

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        self.logger.after_save_checkpoint(checkpoint_callback)


# ------------------------------------------------------------------------------------------ helpers


def _check_names(names: Sequence[str]) -> list[str]:
    if isinstance(names, str):
        names = [names]
    wanted: list[str] = []
    for raw in names:
        name = str(raw).strip().lower()
        if name not in TRACKERS:
            close = difflib.get_close_matches(name, TRACKERS, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]}? " if close else ""
            raise ConfigError(f"unknown tracker '{raw}'; {hint}the trackers are {', '.join(TRACKERS)}.")
        if name not in wanted:
            wanted.append(name)
    return wanted


def _flat_params(config: Mapping[str, Any], parent: str = "") -> dict[str, int | float | str | bool]:
    """``config`` as one level of scalars: nested keys joined with ``/``, other values as JSON text."""
    params: dict[str, int | float | str | bool] = {}
    for key, value in config.items():
        name = f"{parent}/{key}" if parent else str(key)
        if isinstance(value, Mapping):
            params.update(_flat_params(value, name))
        elif isinstance(value, (bool, int, float, str)):
            params[name] = value
        elif isinstance(value, np.generic):
            params[name] = value.item()
        else:
            params[name] = json.dumps(value, default=str)
    return params


def _tensorboard_hparams(logger: TensorBoardLogger, params: Mapping[str, Any]) -> None:
    """The configuration in TensorBoard's HParams tab, with the round metrics as its metric columns.

    Lightning's ``log_hyperparams`` writes this summary only together with metric values, which do not
    exist before the first round; the tab reads the metrics from the run's ``round/`` scalars.
    """
    from torch.utils.tensorboard.summary import hparams

    metric_tags = {f"{ROUND_PREFIX}/{name}": 0.0 for name in _HPARAM_METRICS}
    writer = logger.experiment._get_file_writer()  # as Lightning's own log_hyperparams does
    for summary in hparams(dict(params), metric_tags):
        writer.add_summary(summary)
    logger.experiment.flush()


def _mlflow_tracking_uri(run_dir: Path) -> str:
    """``MLFLOW_TRACKING_URI`` when set, else the SQLite store ``mlflow.db`` beside the run directory."""
    return _mlflow_env_uri() or "sqlite:///" + (run_dir.parent / "mlflow.db").resolve().as_posix()


def _mlflow_env_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI", "").strip()


def _mlflow_logger(uri: str, run_dir: Path, run_name: str, params: Mapping[str, Any]) -> MLFlowLogger:
    """An MLFlowLogger on ``uri``, continuing the MLflow run of ``run_dir`` when one exists."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    experiment_name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "").strip() or "activelab"
    run_dir_tag = str(run_dir.resolve())
    try:
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name(experiment_name)
        if experiment is None or experiment.lifecycle_stage == "deleted":
            # the default store keeps artifacts beside it too; a server chooses its own place
            artifacts = None if _mlflow_env_uri() else (run_dir.parent / "mlartifacts").resolve().as_uri()
            experiment_id = client.create_experiment(experiment_name, artifact_location=artifacts)
        else:
            experiment_id = experiment.experiment_id
        quote = '"' if "'" in run_dir_tag else "'"
        earlier = client.search_runs([experiment_id], f"tags.`{_RUN_DIR_TAG}` = {quote}{run_dir_tag}{quote}",
                                     max_results=1)
        run_id = earlier[0].info.run_id if earlier else None
        logger = MLFlowLogger(experiment_name=experiment_name, run_name=run_name, tracking_uri=uri,
                              tags={_RUN_DIR_TAG: run_dir_tag}, run_id=run_id)
        if run_id is not None:
            client.update_run(run_id, status="RUNNING")
            recorded = client.get_run(run_id).data.params
            params = {key: value for key, value in params.items() if key not in recorded}  # params are immutable
        logger.log_hyperparams(dict(params))
    except MlflowException as error:
        message = str(getattr(error, "message", error)).strip().split(". ")[0].rstrip(".")
        hint = ("; set MLFLOW_ALLOW_FILE_STORE=true or use a sqlite:/// URI"
                if "MLFLOW_ALLOW_FILE_STORE" in str(error) else "")
        raise ConfigError(f"MLflow cannot use the tracking store {uri} ({message}){hint}.") from None
    return logger


def _wandb_logger(run_dir: Path, run_name: str, params: Mapping[str, Any]) -> WandbLogger:
    """A WandbLogger writing below ``run_dir``; offline (with a warning) when W&B has no credentials."""
    offline = not os.environ.get("WANDB_MODE") and not _wandb_credentials()
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", run_name).strip("-")[:40] or "run"
    run_id = f"{slug}-{hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:8]}"
    options = {"mode": "offline"} if offline else {}
    logger = WandbLogger(name=run_name, save_dir=str(run_dir), id=run_id,
                         project=os.environ.get("WANDB_PROJECT", "").strip() or "activelab", **options)
    import wandb

    try:
        logger.log_hyperparams(dict(params))  # starts the W&B run
    except wandb.errors.Error as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0].rstrip(".")
        raise ConfigError(f"W&B cannot start the run ({first_line}); check WANDB_MODE and `wandb login`.") from None
    if offline:
        where = getattr(getattr(logger.experiment, "settings", None), "sync_dir", None) or run_dir / "wandb"
        log.warning("W&B has no API key on this machine, so the run is written offline to %s; upload it later "
                    "with `wandb login` and then `wandb sync %s`.", where, where)
    return logger


def _wandb_credentials() -> bool:
    """Whether W&B can authenticate: an API key or identity token in the environment, or a ``.netrc`` entry."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlsplit(os.environ.get("WANDB_BASE_URL") or _DEFAULT_WANDB_HOST).netloc
    path = Path(os.environ["NETRC"]).expanduser() if os.environ.get("NETRC") else Path("~/.netrc").expanduser()
    try:
        entry = netrc.netrc(path).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(entry and entry[2])


def _round_metrics(record: RoundRecord, class_counts: Mapping[str, int] | None,
                   fields: Iterable[str] | None) -> dict[str, float]:
    columns = METRIC_COLUMNS if fields is None else tuple(fields)
    unknown = [name for name in columns if name not in METRIC_COLUMNS]
    if unknown:
        raise ValueError(f"not RoundRecord metric columns: {', '.join(unknown)}")
    metrics: dict[str, float] = {f"{ROUND_PREFIX}/n_labelled": int(record.n_labelled)}
    for name in columns:
        value = getattr(record, name, None)
        if value is not None and math.isfinite(float(value)):
            metrics[f"{ROUND_PREFIX}/{'index' if name == 'round' else name}"] = value
    if class_counts:
        used: set[str] = set()
        for name, count in class_counts.items():
            key = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)).strip("_") or "class"
            unique, copy = key, 2
            while unique in used:
                unique, copy = f"{key}_{copy}", copy + 1
            used.add(unique)
            metrics[f"{ROUND_PREFIX}/labels_per_class/{unique}"] = int(count)
        counts = [int(count) for count in class_counts.values()]
        metrics[f"{ROUND_PREFIX}/classes_without_labels"] = sum(count == 0 for count in counts)
        if min(counts) > 0:
            metrics[f"{ROUND_PREFIX}/class_imbalance"] = max(counts) / min(counts)
    return metrics
