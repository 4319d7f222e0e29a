"""A labelling-app project: one folder with the uploaded images, their manifest and a step-wise Run.

Layout of the project folder ``DIR`` (``activelab serve --project DIR``)::

    project.json      the manifest: settings and one entry per image (activelab.data.sources.app_project)
    images/           the images, stored once under the SHA-256 of their bytes
    run/              the Run: config.json, state.json (the ledger), models/round_KKK.pt, csv/
    activelab.sqlite  the results store of the run
    job.json          the background job (activelab.app.jobs)
    lock              held while the manifest changes

The project is created empty; images come later and are appended to the manifest, and
:meth:`activelab.run.Run.refresh` puts them into the ledger's pool under new ids. A crash between the two
loses nothing: an image file written but not listed is listed again at its next upload (same name), and a
listed image the ledger does not know yet is added to the pool when the run is opened.

Splits. The test set is drawn at random from the person's unlabelled images (:meth:`Project.draw_test`,
the size chosen at creation) and labelled by the person; the strategy never sees those items and the
model's accuracy is measured on the ones labelled. There is no validation split (a person's few labels
are better spent on training and test), so every round trains a fixed budget: ``epochs`` epochs of at
least ``train_steps`` optimiser steps in all, with no early stopping, keeping the last weights.

Reads (pages, exports) load the ledger from disk without the lock: it is replaced atomically, so a
reader sees one state or the next. Changes go through the Run's steps (lock per step).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import shutil
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from activelab.callbacks import Callback
from activelab.config import check_model_name, lookup_strategy
from activelab.data.base import UNLABELLED
from activelab.data.sources.app_project import FORMAT, IMAGES, MANIFEST, VERSION, read_manifest
from activelab.data.state import LabelState
from activelab.errors import ConfigError, DataError, UserError
from activelab.io import atomic_write_bytes, atomic_write_json
from activelab.run import STATE_FILE, Run
from activelab.runlock import RunLock

from activelab.app.uploads import Upload

RUN_DIR = "run"
#: Models offered in the form (any ``torchvision:NAME`` or ``timm:NAME`` is accepted too).
MODELS = ("cnn", "resnet18", "resnet50")
#: Strategies offered first in the form (any registered strategy without a holdout split is accepted).
STRATEGIES = ("margin", "entropy", "least_confidence", "bald", "badge", "coreset", "random")
MAX_CLASSES = 50
_CLASS_NAME_LIMIT = 60


@dataclass(frozen=True)
class Settings:
    """What a person chooses when creating a project (checked by :func:`settings_from_form`)."""

    name: str
    classes: tuple[str, ...]
    model: str = "cnn"
    strategy: str = "margin"
    size: int = 64
    grayscale: bool = False
    pretrained: bool = False
    test_size: int = 20
    batch_size: int = 20
    train_steps: int = 200
    epochs: int = 5
    seed: int = 0


def _whole(form: Mapping[str, str], key: str, default: int, low: int, high: int) -> int:
    text = str(form.get(key) or default).strip()
    if not text.isdigit() or not low <= int(text) <= high:
        raise ConfigError(f"{key.replace('_', ' ')} must be a whole number from {low} to {high}, got {text[:20]!r}.")
    return int(text)


def settings_from_form(form: Mapping[str, str]) -> Settings:
    """The project settings in a submitted form, each checked; ConfigError of one sentence otherwise.

    Class names are one per line (or comma-separated), unique, at most 60 characters, without control
    characters and not starting with ``= + - @`` (spreadsheets would run such a cell as a formula).
    """
    name = " ".join(str(form.get("name") or "").split())
    if not name or len(name) > 100:
        raise ConfigError("the project needs a name of 1 to 100 characters.")
    raw = str(form.get("classes") or "").replace(",", "\n").splitlines()
    classes = tuple(" ".join(line.split()) for line in raw if line.strip())
    if not 2 <= len(classes) <= MAX_CLASSES:
        raise ConfigError(f"give 2 to {MAX_CLASSES} class names, one per line; got {len(classes)}.")
    if len(set(classes)) != len(classes):
        raise ConfigError("every class name must be different.")
    for label in classes:
        if len(label) > _CLASS_NAME_LIMIT or label[0] in "=+-@" or label.isdigit():
            raise ConfigError(f"the class name {label[:_CLASS_NAME_LIMIT]!r} must have at most {_CLASS_NAME_LIMIT} "
                              "characters, not start with = + - @ and not be a number.")
    model = str(form.get("model") or "cnn").strip()
    check_model_name(model)
    strategy = lookup_strategy(str(form.get("strategy") or "margin").strip())
    if "p_wrong_N" in strategy.needs:
        raise ConfigError(f"strategy '{strategy.name}' needs a holdout split, which a project does not have; "
                          "choose another strategy.")
    return Settings(name=name, classes=classes, model=model, strategy=strategy.name,
                    size=_whole(form, "size", 64, 8, 512), grayscale=str(form.get("colour")) == "grayscale",
                    pretrained=str(form.get("pretrained") or "").lower() in {"1", "on", "true", "yes"},
                    test_size=_whole(form, "test_size", 20, 1, 10_000),
                    batch_size=_whole(form, "batch_size", 20, 1, 1000),
                    train_steps=_whole(form, "train_steps", 200, 1, 100_000), epochs=_whole(form, "epochs", 5, 1, 1000),
                    seed=_whole(form, "seed", 0, 0, 2**31 - 1))


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class Project:
    """The project in folder ``root``; ``callbacks`` are given to its Run (the app's progress display)."""

    def __init__(self, root: Path, *, callbacks: Sequence[Callback] = ()):
        self.root = Path(root)
        self.callbacks = list(callbacks)
        self._run: Run | None = None
        self._manifest_lock = threading.Lock()

    # ------------------------------------------------------------------ creation and opening
    @property
    def exists(self) -> bool:
        return (self.root / MANIFEST).exists()

    def create(self, settings: Settings) -> None:
        """Write the manifest and create the run; on any refusal nothing is left behind."""
        if self.exists:
            raise ConfigError(f"{self.root} already holds a project.")
        manifest = {"format": FORMAT, "version": VERSION, "created": _now(), **asdict(settings),
                    "classes": list(settings.classes), "items": []}
        try:
            (self.root / IMAGES).mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.root / MANIFEST, manifest)
            self._run = Run.create(
                self.root / RUN_DIR, data="app-project", data_dir=self.root, model=settings.model,
                strategy=settings.strategy, seed=settings.seed, callbacks=self.callbacks, n_train_images=0, al_iter=0,
                al_samples_per_iter=settings.batch_size, n_val=0, n_holdout=0, min_steps=settings.train_steps,
                max_epochs=settings.epochs, pretrained=settings.pretrained,
                train_mode="finetune" if settings.pretrained else "scratch", progress=False)
        except UserError:
            (self.root / MANIFEST).unlink(missing_ok=True)
            shutil.rmtree(self.root / RUN_DIR, ignore_errors=True)
            raise
        except OSError as error:
            (self.root / MANIFEST).unlink(missing_ok=True)
            raise ConfigError(f"cannot create the project in {self.root} ({error.strerror or error}).") from None

    @property
    def run(self) -> Run:
        """The project's Run, opened once (it puts images the ledger does not know yet into the pool)."""
        if self._run is None:
            if not self.exists:
                raise ConfigError("there is no project yet; create one first.")
            self._run = Run.open(self.root / RUN_DIR, callbacks=self.callbacks, progress=False)
        return self._run

    def manifest(self) -> dict:
        return read_manifest(self.root)

    def ledger(self) -> LabelState:
        """The ledger as it is on disk now (no lock; it is replaced atomically)."""
        return LabelState.load(self.root / RUN_DIR / STATE_FILE)

    # ------------------------------------------------------------------ images
    def add_images(self, uploads: Sequence[Upload]) -> tuple[np.ndarray, int]:
        """Store ``uploads`` and put them into the pool; returns the new ids and how many were already here."""
        run = self.run
        with self._manifest_lock, RunLock(self.root):
            manifest = self.manifest()
            known = {item["file"] for item in manifest["items"]}
            duplicates = 0
            for upload in uploads:
                if upload.stored in known:
                    duplicates += 1
                    continue
                path = self.root / IMAGES / upload.stored
                if not path.exists():
                    atomic_write_bytes(path, upload.data)
                manifest["items"].append({"file": upload.stored, "name": upload.name, "added": _now()})
                known.add(upload.stored)
            if len(uploads) > duplicates:
                atomic_write_json(self.root / MANIFEST, manifest)
        return run.refresh(), duplicates

    def image_path(self, item: int) -> Path:
        """The stored file of image ``item`` (ids only: a request never names a path)."""
        items = self.manifest()["items"]
        if not 0 <= item < len(items):
            raise DataError(f"there is no image {item}.")
        return self.root / IMAGES / items[item]["file"]

    # ------------------------------------------------------------------ what a person sees
    def queue(self) -> list[dict]:
        """The images to label now: unlabelled test images first, then the pending batch in priority order.

        Each is a dict: ``id``, ``name``, ``kind`` (``test`` or ``batch``), ``guess`` and ``confidence``
        (the model's, for batch items chosen by a model; never shown for test items, so the model's guess
        cannot sway the labels it is measured against).
        """
        state, names = self.ledger(), self.manifest()
        classes, items = names["classes"], names["items"]
        queue = []
        if state.test_labels is not None:
            queue += [{"id": int(item), "name": items[item]["name"], "kind": "test", "guess": None,
                       "confidence": None}
                      for item, label in zip(state.test_ids.tolist(), state.test_labels.tolist()) if label == UNLABELLED]
        if state.pending:
            guesses = state.pending.get("guesses")
            confidences = state.pending.get("confidences")
            queue += [{"id": int(item), "name": items[item]["name"], "kind": "batch",
                       "guess": None if guesses is None else classes[guesses[rank]],
                       "confidence": None if confidences is None else round(float(confidences[rank]), 4)}
                      for rank, item in enumerate(state.pending["ids"])]
        return queue

    def summary(self) -> dict:
        """Counts, rounds and settings for the pages and ``GET /api/status``."""
        state, manifest = self.ledger(), self.manifest()
        classes = manifest["classes"]
        counts = np.bincount(state.labelled_labels, minlength=len(classes)) if state.n_labelled else \
            np.zeros(len(classes), int)
        test_ids, test_labels = state.labelled_test
        latest = state.rounds[-1] if state.rounds else None
        return {
            "name": manifest["name"], "classes": classes, "model": manifest["model"], "strategy": manifest["strategy"],
            "batch_size": manifest["batch_size"], "test_size": manifest["test_size"],
            "images": len(manifest["items"]), "pool": int(state.pool_ids.size),
            "labelled": int(state.n_labelled), "per_class": {name: int(count) for name, count in zip(classes, counts)},
            "test": {"drawn": int(state.test_ids.size), "labelled": int(test_ids.size),
                     "per_class": {name: int((test_labels == index).sum()) for index, name in enumerate(classes)}},
            "pending": 0 if state.pending is None else len(state.pending["ids"]),
            "stale": latest is None or latest.labels_digest != state.labels_digest(),
            "rounds": [{"round": record.round, "n_labelled": record.n_labelled, "test_accuracy": record.test_accuracy,
                        "n_test": record.n_test, "test_macro_f1": record.test_macro_f1, "steps": record.steps,
                        "seconds_train": record.seconds_train} for record in state.rounds],
        }

    def test_needed(self) -> int:
        """How many more test images to draw so the test set has the size chosen at creation."""
        state = self.ledger()
        return max(0, int(self.manifest()["test_size"]) - int(state.test_ids.size))

    # ------------------------------------------------------------------ exports
    def label_rows(self) -> list[dict]:
        """One row per labelled image (training and test): id, name, stored file, split, label, annotator, time
        (of the change that gave the current label)."""
        state, manifest = self.ledger(), self.manifest()
        classes, items = manifest["classes"], manifest["items"]
        last: dict[tuple[str, int], dict] = {}
        for event in state.events:
            if event["op"] in ("teach", "relabel", "teach-test"):
                split = "test" if event["op"] == "teach-test" else "train"
                for item in event["ids"]:
                    last[(split, int(item))] = event
        labelled = [("train", item, label) for item, label in zip(state.labelled_ids.tolist(),
                                                                  state.labelled_labels.tolist())]
        test_ids, test_labels = state.labelled_test
        labelled += [("test", item, label) for item, label in zip(test_ids.tolist(), test_labels.tolist())]
        rows = []
        for split, item, label in sorted(labelled, key=lambda row: row[1]):
            event = last.get((split, item), {})
            rows.append({"id": item, "name": items[item]["name"], "file": items[item]["file"], "split": split,
                         "label": classes[label], "annotator": event.get("annotator") or "",
                         "time": event.get("time") or ""})
        return rows

    def labels_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=["id", "name", "file", "split", "label", "annotator", "time"])
        writer.writeheader()
        writer.writerows(self.label_rows())
        return buffer.getvalue()

    def labels_json(self) -> dict:
        manifest = self.manifest()
        return {"project": manifest["name"], "classes": manifest["classes"], "labels": self.label_rows()}

    def label_studio_tasks(self) -> list[dict]:
        """Every image as a Label Studio task (JSON import format); labelled ones carry their annotation.

        ``data.image`` is the stored file as Label Studio's local-files URL relative to the project folder
        (``/data/local-files/?d=images/<file>``, served when Label Studio runs with
        ``LOCAL_FILES_SERVING_ENABLED=true`` and ``LOCAL_FILES_DOCUMENT_ROOT`` set to the project folder);
        the labelling config is ``<Image name="image" value="$image"/>`` with ``<Choices name="label"
        toName="image">``.
        """
        manifest = self.manifest()
        labels = {row["id"]: row for row in self.label_rows()}
        tasks = []
        for item, entry in enumerate(manifest["items"]):
            task = {"id": item + 1, "data": {"image": f"/data/local-files/?d={IMAGES}/{entry['file']}",
                                            "name": entry["name"], "activelab_id": item}}
            if item in labels:
                row = labels[item]
                task["data"]["split"] = row["split"]
                task["annotations"] = [{"result": [{"from_name": "label", "to_name": "image", "type": "choices",
                                                    "value": {"choices": [row["label"]]}}],
                                        "completed_by": row["annotator"] or None, "created_at": row["time"] or None}]
            tasks.append(task)
        return tasks

    def latest_weights(self) -> Path:
        """The weights file of the latest trained round."""
        state = self.ledger()
        if not state.rounds:
            raise DataError("no model has been trained yet; label a batch and click Suggest first.")
        return self.root / RUN_DIR / "models" / f"round_{state.rounds[-1].round:03d}.pt"

    def learning_curve_png(self) -> bytes:
        """Test accuracy against the number of training labels, one point per round, as a PNG."""
        from matplotlib.figure import Figure  # no pyplot: no global figure state, safe in threads

        rounds = [record for record in self.ledger().rounds if record.test_accuracy is not None]
        figure = Figure(figsize=(5, 3), dpi=100)
        axes = figure.subplots()
        if rounds:
            axes.plot([record.n_labelled for record in rounds], [record.test_accuracy for record in rounds],
                      marker="o")
        else:
            axes.text(0.5, 0.5, "no evaluated round yet", ha="center", va="center", transform=axes.transAxes)
        axes.set_xlabel("training labels")
        axes.set_ylabel("test accuracy")
        axes.set_ylim(0, 1)
        axes.grid(alpha=0.3)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        return buffer.getvalue()
