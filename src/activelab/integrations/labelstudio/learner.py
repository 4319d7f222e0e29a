"""One Label Studio project's model: its labelled images, its training, its predictions and their scores.

A :class:`ProjectLearner` owns the folder ``<backend dir>/projects/<project id>/``:

* ``state.json``: the current model's version, classes, training labels (task id -> class) and a history
  of every model trained, written atomically;
* ``model-vN.pt``: the weights of model version N. A new version's weights are written before the
  ``state.json`` that names them and the old file is removed only afterwards, so a crash at any moment
  leaves a state file whose weights exist;
* ``label_config.xml``: the last labelling config Label Studio sent, so training after a restart knows
  the classes;
* ``images/``: every image downloaded from Label Studio, named by a digest of its address, checked to
  decode before it is kept.

Training uses activelab's building blocks (:func:`activelab.models.build_model`,
:func:`activelab.training.fit`, :class:`activelab.data.images.ImageFileDataset`); before a new model
replaces the old one, the old one is evaluated (:func:`activelab.training.evaluate`) on the labels that
arrived since it was trained, which it never saw: an honest estimate of how good its suggestions were.

Scores follow Label Studio's convention, not activelab's: Label Studio's "Uncertainty sampling" queue
and an ascending sort on the prediction score both serve the task with the **lowest** score first, so a
task's ``score`` is minus the strategy's informativeness (for margin sampling ``(p1 - p2) - 1``, for
entropy ``-H(p)``). The lowest score is the task activelab would have a person label first.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import logging
import threading
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from activelab.data.base import UNLABELLED
from activelab.data.images import ImageFileDataset, image_preprocess
from activelab.errors import ConfigError, DataError, StateError, UserError
from activelab.inference import pool_outputs
from activelab.integrations.labelstudio.client import LabelStudioClient
from activelab.integrations.labelstudio.labelconfig import LabelConfig, parse_label_config
from activelab.io import atomic_write_bytes, atomic_write_json
from activelab.integrations.labelstudio.settings import BackendSettings
from activelab.models import build_model
from activelab.models.heads import ActiveModel
from activelab.strategies import Strategy, get_strategy
from activelab.training import evaluate, fit

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
CONFIG_FILE = "label_config.xml"
#: Version of ``state.json``'s layout.
STATE_FORMAT = 1
def project_id_of(value: object) -> int:
    """A Label Studio project id from what its requests carry: ``12``, ``"12"``, ``"12.1712345678"``
    (``/setup`` and ``/predict`` add the project's creation time) or ``{"id": 12, ...}`` (webhooks)."""
    if isinstance(value, dict):
        value = value.get("id")
    if isinstance(value, str):
        value = value.split(".", 1)[0]
        value = int(value) if value.isdigit() else value
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{value!r} is not a Label Studio project id such as 12 or '12.1712345678'.")
    return value


def latest_label(task: dict, config: LabelConfig) -> str | None:
    """The class of a task's most recent annotation that chose one of the config's classes (cancelled,
    i.e. skipped, annotations and those choosing nothing are passed over); None when there is none."""
    chosen = []
    for annotation in task.get("annotations") or []:
        if not isinstance(annotation, dict) or annotation.get("was_cancelled"):
            continue
        label = config.chosen_class(annotation.get("result"))
        if label is not None:
            chosen.append((str(annotation.get("updated_at") or ""), int(annotation.get("id") or 0), label))
    return max(chosen)[2] if chosen else None


def image_reference(task: dict, config: LabelConfig) -> str:
    """The image address in a task's data under the config's ``$key``; a one-sentence error when missing."""
    data = task.get("data")
    reference = data.get(config.image_key) if isinstance(data, dict) else None
    if not isinstance(reference, str) or not reference:
        raise DataError(f"task {task.get('id')} has no image under data.{config.image_key}.")
    return reference


class ProjectLearner:
    """The model of one Label Studio project, with its folder (see the module docstring)."""

    def __init__(self, folder: Path, project_id: int, settings: BackendSettings):
        self.folder = Path(folder)
        self.project_id = project_id
        self.settings = settings
        self.images = self.folder / "images"
        self.images.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()          # guards the (model, state) pair, held briefly
        self._running = threading.Lock()       # one pass of a model at a time (MC dropout patches the head)
        self._state = self._read_state()
        self._model = self._load_model(self._state)

    # ------------------------------------------------------------------------------------- reading

    @property
    def model_version(self) -> str:
        """The current model's version name, or the "untrained" name when there is no usable model."""
        with self._lock:
            usable = self._model is not None
            version = self._state["version"] if usable else 0
        return self.settings.model_version(version)

    def status(self) -> dict:
        """Model version, training labels per class, when it was trained, and the history of models."""
        with self._lock:
            state = self._state or {}
            return {"project": self.project_id, "model_version": self.settings.model_version(
                        state["version"] if self._model is not None else 0),
                    "n_labels": len(state.get("labels", {})), "label_counts": state.get("label_counts", {}),
                    "trained_at": state.get("trained_at"), "history": list(state.get("history", []))}

    def versions(self) -> list[str]:
        """Every model version trained for this project, oldest first."""
        with self._lock:
            return [entry["model_version"] for entry in (self._state or {}).get("history", [])]

    def label_config(self) -> LabelConfig | None:
        """The labelling config last remembered for this project, if any."""
        path = self.folder / CONFIG_FILE
        return parse_label_config(path.read_text(encoding="utf-8")) if path.exists() else None

    def remember_config(self, xml: str) -> LabelConfig:
        """Parse ``xml`` (a one-sentence error when activelab cannot answer it) and keep it for later."""
        config = parse_label_config(xml)
        path = self.folder / CONFIG_FILE
        if not path.exists() or path.read_text(encoding="utf-8") != xml:
            atomic_write_bytes(path, xml.encode("utf-8"))
        return config

    # ---------------------------------------------------------------------------------- predicting

    def predict(self, tasks: list[dict], config: LabelConfig, client: LabelStudioClient | None) -> list[list[dict]]:
        """One list per task: a prediction (the model's class, the score, the model version), or nothing.

        Nothing when no model was trained yet for these classes, and for a task whose image cannot be
        fetched or decoded (logged with the reason); the other tasks are still predicted.
        """
        with self._lock:
            model, state = self._model, self._state
        results: list[list[dict]] = [[] for _ in tasks]
        if model is None or tuple(state["classes"]) != config.classes:
            return results
        if client is None:
            log.warning("project %s: no Label Studio address to fetch images from; start the backend with "
                        "--label-studio-url or let Label Studio call /setup", self.project_id)
            return results
        files, rows = [], []
        for row, task in enumerate(tasks):
            try:
                files.append(self._image_file(image_reference(task, config), client))
                rows.append(row)
            except UserError as error:
                log.warning("project %s: task %s gets no prediction: %s", self.project_id, task.get("id"), error)
        if not files:
            return results
        dataset = self._dataset(files, np.full(len(files), UNLABELLED), config.classes)
        strategy = get_strategy(self.settings.strategy)
        with self._running:
            outputs = pool_outputs(model, dataset, np.arange(len(files)), {"probs_N_C", *strategy.needs},
                                   mc_samples=self.settings.mc_samples, seed=self.settings.seed)
        informativeness = self._informativeness(strategy, outputs)
        guesses = outputs["probs_N_C"].argmax(axis=1)
        version = self.settings.model_version(state["version"])
        for row, guess, value in zip(rows, guesses, informativeness):
            results[row] = [{"result": config.result(config.classes[guess]), "score": -float(value),
                             "model_version": version}]
        return results

    def _informativeness(self, strategy: Strategy, outputs: dict[str, np.ndarray]) -> np.ndarray:
        """The strategy's score of every item (higher: more informative), in item order."""
        n_items = outputs["probs_N_C"].shape[0]
        selection = strategy(n_items, rng=np.random.default_rng(self.settings.seed), **outputs)
        scores = np.empty(n_items)
        scores[selection.positions] = selection.scores
        return scores

    # ------------------------------------------------------------------------------------ training

    def train(self, config: LabelConfig, client: LabelStudioClient) -> str:
        """Train a new model on the project's annotated tasks in Label Studio; returns what happened.

        Tasks whose image cannot be fetched are left out with a logged reason. Nothing is trained when
        fewer than ``min_labels`` labels are usable or the labels are those of the current model.
        """
        task_ids, files, labels = [], [], []
        for task in client.annotated_tasks(self.project_id):
            label = latest_label(task, config)
            if label is None:
                continue
            try:
                files.append(self._image_file(image_reference(task, config), client))
            except UserError as error:
                log.warning("project %s: task %s left out of training: %s", self.project_id, task.get("id"), error)
                continue
            task_ids.append(str(task["id"]))
            labels.append(label)
        labelled = dict(zip(task_ids, labels))
        with self._lock:
            model, state = self._model, self._state
        if len(labelled) < self.settings.min_labels:
            return (f"project {self.project_id}: {len(labelled)} usable label(s), fewer than the "
                    f"{self.settings.min_labels} needed to train; waiting for more annotations")
        if model is not None and state["labels"] == labelled and tuple(state["classes"]) == config.classes:
            return f"project {self.project_id}: labels unchanged, {self.model_version} kept"
        targets = np.array([config.classes.index(label) for label in labels], dtype=np.int64)
        dataset = self._dataset(files, targets, config.classes)
        previous = self._previous_accuracy(model, state, dataset, task_ids, config)
        torch.manual_seed(self.settings.seed)
        new_model = build_model(self.settings.model, self.settings.input_shape, len(config.classes))
        result = fit(new_model, dataset, np.arange(len(files)), targets, np.empty(0, dtype=np.int64),
                     self.settings.train_settings(), seed=self.settings.seed)
        version = (state["version"] if state else 0) + 1
        new_state = self._new_state(state, version, config, labelled, previous, result.epochs, result.steps,
                                    result.seconds)
        self._save(new_model, new_state, state)
        return (f"project {self.project_id}: trained {new_state['model_version']} on {len(labelled)} labels "
                f"({result.steps} steps, {result.seconds:.1f} s)")

    def _previous_accuracy(self, model: ActiveModel | None, state: dict | None, dataset: ImageFileDataset,
                           task_ids: list[str], config: LabelConfig) -> float | None:
        """Accuracy of the current model on the labelled tasks it was not trained on (None: no such task)."""
        if model is None or tuple(state["classes"]) != config.classes:
            return None
        new = np.array([row for row, task_id in enumerate(task_ids) if task_id not in state["labels"]],
                       dtype=np.int64)
        if new.size == 0:
            return None
        with self._running:
            metrics = evaluate(model, dataset, new, self.settings.train_settings())
        return metrics["test_accuracy"]

    def _new_state(self, state: dict | None, version: int, config: LabelConfig, labelled: dict[str, str],
                   previous: float | None, epochs: int, steps: int, seconds: float) -> dict:
        counts = {name: sum(label == name for label in labelled.values()) for name in config.classes}
        trained_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        model_version = self.settings.model_version(version)
        entry = {"model_version": model_version, "n_labels": len(labelled), "trained_at": trained_at,
                 "previous_model_accuracy_on_new_labels": previous, "epochs": epochs, "steps": steps,
                 "seconds": round(seconds, 3)}
        return {"format": STATE_FORMAT, "project": self.project_id, "version": version,
                "model_version": model_version, "model_file": f"model-v{version}.pt",
                "settings": asdict(self.settings), "classes": list(config.classes), "labels": labelled,
                "label_counts": counts, "trained_at": trained_at,
                "history": [*(state or {}).get("history", []), entry]}

    def _save(self, model: ActiveModel, state: dict, old_state: dict | None) -> None:
        """Weights first, then the state naming them, then the old weights go; then the new model serves."""
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        atomic_write_bytes(self.folder / state["model_file"], buffer.getvalue())
        atomic_write_json(self.folder / STATE_FILE, state)
        with self._lock:
            self._model, self._state = model.eval(), state
        if old_state is not None and old_state["model_file"] != state["model_file"]:
            (self.folder / old_state["model_file"]).unlink(missing_ok=True)

    # ------------------------------------------------------------------------------ files on disk

    def _image_file(self, reference: str, client: LabelStudioClient) -> str:
        """The cached file (a name under ``images/``) of the image at ``reference``, downloaded once."""
        address = client.absolute(reference)
        name = hashlib.sha256(address.encode("utf-8")).hexdigest()[:32]
        if not (self.images / name).exists():
            data = client.image_bytes(reference)
            try:
                with Image.open(io.BytesIO(data)) as image:
                    image.verify()
            except (OSError, ValueError, Image.DecompressionBombError) as error:
                raise DataError(f"{reference} is not an image PIL can decode ({error}).") from None
            atomic_write_bytes(self.images / name, data)
        return name

    def _dataset(self, files: list[str], labels: np.ndarray, classes: tuple[str, ...]) -> ImageFileDataset:
        settings = self.settings
        size = (settings.image_size, settings.image_size)
        return ImageFileDataset("label-studio", self.images, files, labels, classes,
                                image_preprocess(size, settings.grayscale), grayscale=settings.grayscale)

    def _read_state(self) -> dict | None:
        path = self.folder / STATE_FILE
        if not path.exists():
            return None
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
            if state["format"] != STATE_FORMAT or not (self.folder / state["model_file"]).exists():
                raise ValueError("unknown format or missing weights")
            return state
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise StateError(f"{path} cannot be read ({error}); move the folder {self.folder} away to start "
                             "this project afresh.") from None

    def _load_model(self, state: dict | None) -> ActiveModel | None:
        """The saved model, or None when there is none or it was built with another model or image shape."""
        if state is None:
            return None
        trained = state["settings"]
        same = (trained["model"] == self.settings.model and trained["image_size"] == self.settings.image_size
                and trained["grayscale"] == self.settings.grayscale)
        if not same:
            log.warning("project %s: the saved model %s was built for model %s and %s-pixel %s images; it is "
                        "not used and the next annotation trains a new one", self.project_id,
                        state["model_version"], trained["model"], trained["image_size"],
                        "grey" if trained["grayscale"] else "colour")
            return None
        model = build_model(self.settings.model, self.settings.input_shape, len(state["classes"]))
        weights = torch.load(self.folder / state["model_file"], map_location="cpu", weights_only=True)
        model.load_state_dict(weights)
        return model.eval()
