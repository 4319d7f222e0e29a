"""Training with PyTorch Lightning and evaluation with torchmetrics.

Each round trains on the labelled ids, stops early on the validation split (best validation accuracy,
restored at the end via Lightning's ``ModelCheckpoint``) and never sees the test split. Evaluation on the
test split reports accuracy and macro-F1. Seeds, deterministic algorithms and a seeded shuffling order
make a round's weights reproducible on the CPU.

Lightning's epoch bars are written to standard error, so standard output carries results only; its
informational log lines and its advice about loader workers are silenced during a fit, and only there.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # emitted by Lightning's own import on new torch
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
    from pytorch_lightning.loggers import Logger
    from pytorch_lightning.tuner import Tuner
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from activelab.config import MONITORS
from activelab.data.base import Dataset
from activelab.data.loading import Augment, make_loader
from activelab.faults import crash_point
from activelab.inference import predict_probs
from activelab.models.heads import ActiveModel
from activelab.models.modes import trainable_parameters
from activelab.trackers import log_every_n_steps

log = logging.getLogger(__name__)

_LIGHTNING_LOGGERS = ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric")
_LIGHTNING_ADVICE = (".*does not have many workers.*", ".*GPU available but not used.*", ".*LeafSpec.*",
                     ".*module\\(s\\) in eval mode.*", ".*no `val_dataloader`.*")


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Within the block: Lightning's bars on stderr, its info lines and loader advice silenced."""
    loggers = [logging.getLogger(name) for name in _LIGHTNING_LOGGERS]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        for message in _LIGHTNING_ADVICE:
            warnings.filterwarnings("ignore", message=message)
        for logger in loggers:
            logger.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


@dataclass(frozen=True)
class TrainSettings:
    """How one round trains: optimiser, epochs, early stopping, hardware, loaders."""

    max_epochs: int = 20
    lr: float = 1e-3
    batch_size: int = 64
    patience: int = 5
    gpus: int = 0
    num_workers: int = 0
    progress: bool = True
    augment: Augment | None = None
    min_steps: int = 0
    monitor: str = "val_acc"
    auto_lr: bool = False

    @property
    def min_batches_per_epoch(self) -> int:
        """Batches an epoch must hold so that ``max_epochs`` epochs reach ``min_steps`` optimiser steps."""
        return max(1, -(-self.min_steps // self.max_epochs))

    @property
    def device(self) -> torch.device:
        """The device inference runs on: the first GPU when ``gpus > 0`` and one exists, else the CPU."""
        return torch.device("cuda:0" if self.gpus > 0 and torch.cuda.is_available() else "cpu")


class Classifier(pl.LightningModule):
    """A LightningModule around an :class:`ActiveModel`: cross-entropy, Adam, validation accuracy."""

    def __init__(self, model: ActiveModel, num_classes: int, lr: float):
        super().__init__()
        self.model = model
        self.lr = lr
        self.loss = nn.CrossEntropyLoss()
        self.val_accuracy = MulticlassAccuracy(num_classes=num_classes, average="micro")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def training_step(self, batch, batch_index):
        images, labels = batch
        loss = self.loss(self.model(images), labels)
        self.log("train_loss", loss, batch_size=labels.numel(), prog_bar=True)
        return loss

    def validation_step(self, batch, batch_index):
        images, labels = batch
        logits = self.model(images)
        self.val_accuracy.update(logits, labels)
        self.log("val_loss", self.loss(logits, labels), batch_size=labels.numel())
        self.log("val_acc", self.val_accuracy, batch_size=labels.numel(), prog_bar=True)

    def on_train_epoch_end(self) -> None:
        crash_point("train-epoch")

    def configure_optimizers(self):
        return torch.optim.Adam(trainable_parameters(self.model), lr=self.lr)


class _ValidationHistory(pl.Callback):
    """Keeps every epoch's validation accuracy and loss, to report the accuracy of the epoch kept."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []

    def on_validation_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.epochs.append({name: float(trainer.callback_metrics[name]) for name in MONITORS})

    def accuracy_at_best(self, monitor: str) -> float:
        """Validation accuracy of the first epoch with the best ``monitor`` value (the one checkpointed)."""
        values = [epoch[monitor] for epoch in self.epochs]
        best = int(np.argmax(values) if MONITORS[monitor] == "max" else np.argmin(values))
        return self.epochs[best]["val_acc"]


@dataclass(frozen=True)
class FitResult:
    """What training a round produced: best validation accuracy, epochs and optimiser steps run, seconds."""

    best_val_accuracy: float | None
    epochs: int
    steps: int
    lr: float
    seconds: float


def fit(model: ActiveModel, dataset: Dataset, train_ids: np.ndarray, train_labels: np.ndarray,
        val_ids: np.ndarray, settings: TrainSettings, *, seed: int, loggers: Sequence[Logger] = ()) -> FitResult:
    """Train ``model`` in place on ``train_ids`` and keep the weights of the best validation epoch.

    With no validation ids, trains for ``max_epochs`` and keeps the last weights. With
    ``settings.min_steps``, each epoch repeats the labelled set until ``max_epochs`` epochs can reach that
    many optimiser steps, and early stopping cannot end training before them. ``loggers`` receive the
    training curves (see :func:`activelab.trackers.round_loggers`). With ``settings.auto_lr``, Lightning's
    learning-rate finder picks the rate first (a short range test from the same initial weights).
    """
    start = time.perf_counter()
    pl.seed_everything(seed, workers=True, verbose=False)
    classifier = Classifier(model, dataset.num_classes, settings.lr)
    train_loader = make_loader(dataset, train_ids, labels=train_labels, batch_size=settings.batch_size,
                               shuffle_seed=seed, num_workers=settings.num_workers, augment=settings.augment,
                               min_batches=settings.min_batches_per_epoch)
    has_val = len(val_ids) > 0
    val_loader = (make_loader(dataset, val_ids, labels=dataset.labels[val_ids], batch_size=256,
                              num_workers=settings.num_workers) if has_val else None)
    checkpoints = Path(tempfile.mkdtemp(prefix="activelab-ckpt-"))
    callbacks = []
    history = _ValidationHistory()
    if has_val:
        mode = MONITORS[settings.monitor]
        best = ModelCheckpoint(dirpath=checkpoints, filename="best", monitor=settings.monitor, mode=mode,
                               save_top_k=1, save_weights_only=True, enable_version_counter=False)
        callbacks = [EarlyStopping(monitor=settings.monitor, mode=mode, patience=settings.patience), best, history]
    use_gpu = settings.gpus > 0 and torch.cuda.is_available()
    try:
        with _quiet_lightning():
            trainer = pl.Trainer(
                max_epochs=settings.max_epochs, min_steps=settings.min_steps or None, accelerator="gpu" if use_gpu else "cpu",
                devices=settings.gpus if use_gpu else 1, deterministic=True, callbacks=callbacks,
                logger=list(loggers) or False, log_every_n_steps=log_every_n_steps(len(train_loader)),
                enable_checkpointing=has_val, enable_progress_bar=settings.progress,
                enable_model_summary=False, use_distributed_sampler=False, num_sanity_val_steps=0,
                limit_val_batches=1.0 if has_val else 0)
            if settings.auto_lr:
                _find_lr(classifier, train_loader, settings)
            trainer.fit(classifier, train_loader, val_loader)
        best_accuracy = None
        if has_val and best.best_model_path:
            state = torch.load(best.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
            classifier.load_state_dict(state)
            best_accuracy = history.accuracy_at_best(settings.monitor)
    finally:
        shutil.rmtree(checkpoints, ignore_errors=True)
    model.cpu().eval()
    return FitResult(best_accuracy, int(trainer.current_epoch), int(trainer.global_step), float(classifier.lr),
                     time.perf_counter() - start)


def _find_lr(classifier: Classifier, train_loader, settings: TrainSettings) -> None:
    """Set ``classifier.lr`` by Lightning's learning-rate range test (100 steps from the current weights,
    which it restores afterwards). Its own trainer has no epoch limit, so a labelled set of one batch still
    gets its 100 steps; when the test finds no clear rate, the configured one stays."""
    finder = pl.Trainer(max_epochs=-1, accelerator="gpu" if settings.device.type == "cuda" else "cpu", devices=1,
                        logger=False, enable_checkpointing=False, enable_progress_bar=settings.progress,
                        enable_model_summary=False, use_distributed_sampler=False, num_sanity_val_steps=0,
                        limit_val_batches=0)
    result = Tuner(finder).lr_find(classifier, train_loader, update_attr=False)
    suggestion = None if result is None else result.suggestion()
    if suggestion is None:
        log.warning("the learning-rate finder found no clear rate; training with lr=%g", classifier.lr)
    else:
        classifier.lr = float(suggestion)


def evaluate(model: ActiveModel, dataset: Dataset, ids: np.ndarray, settings: TrainSettings, *,
             labels: np.ndarray | None = None) -> dict[str, float]:
    """Accuracy and macro-F1 of ``model`` on ``ids`` (the test split), with torchmetrics.

    ``labels`` are the true classes of ``ids`` when they are not the dataset's own (a person's test labels).
    """
    probs = predict_probs(model, dataset, ids, batch_size=256, device=settings.device,
                          num_workers=settings.num_workers)
    predictions = torch.from_numpy(probs).argmax(1)
    targets = torch.from_numpy(np.asarray(dataset.labels[ids] if labels is None else labels, dtype=np.int64))
    classes = dataset.num_classes
    accuracy = MulticlassAccuracy(num_classes=classes, average="micro")(predictions, targets)
    macro_f1 = MulticlassF1Score(num_classes=classes, average="macro")(predictions, targets)
    return {"test_accuracy": float(accuracy), "test_macro_f1": float(macro_f1)}
