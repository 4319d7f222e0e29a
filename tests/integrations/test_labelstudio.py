"""activelab as a Label Studio ML backend: the protocol with FastAPI's test client, then a real Label Studio.

The unit tests drive the endpoints with the payloads Label Studio 1.23 sends, an image server of their own
standing in for Label Studio's file storage (a small FastAPI app on a free port). The slow test installs
and starts a real Label Studio (``scripts/ensure-label-studio.sh``), connects the backend through its API,
annotates real Fashion-MNIST images and checks the predictions, scores and retraining Label Studio sees.
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
import uvicorn
from fastapi import FastAPI, Response
from fastapi.testclient import TestClient

from activelab.data.sources.mnist_family import FASHION
from activelab.errors import ConfigError, StateError
from activelab.inference import pool_outputs
from activelab.integrations.labelstudio.app import BasicAuth, create_app
from activelab.integrations.labelstudio.backend import Backend
from activelab.integrations.labelstudio.cli import PASSWORD_VARIABLE, add_arguments, auth_from, main, settings_from
from activelab.integrations.labelstudio.labelconfig import parse_label_config
from activelab.integrations.labelstudio.learner import latest_label, project_id_of
from activelab.integrations.labelstudio.settings import BackendSettings, scoring_strategies
from activelab.strategies.uncertainty import score_margin
from labelstudio_server import (
    LabelStudioAPI,
    LabelStudioServer,
    classification_config,
    ensure_label_studio,
    free_port,
    personal_access_token,
    png_bytes,
)

CLASSES = FASHION.class_names
CONFIG = classification_config(CLASSES)
FAST = dict(grayscale=True, max_epochs=2, min_steps=10, batch_size=8)


def fashion_pixels(fashion, positions) -> np.ndarray:
    """The original uint8 pixels of Fashion-MNIST items (their tensors undone: x * std + mean, times 255)."""
    tensors = fashion.load(np.asarray(positions)).numpy()[:, 0]
    return np.rint((tensors * FASHION.std + FASHION.mean) * 255).clip(0, 255).astype(np.uint8)


@contextmanager
def serving(app: FastAPI):
    """Run ``app`` with uvicorn on a free loopback port in a thread; yields its URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join()


@pytest.fixture(scope="module")
def images(fashion):
    """Twelve Fashion-MNIST images as PNG files served at /data/upload/N.png, standing in for Label
    Studio's storage (/data/upload/broken.png is not an image), and an export listing the first six as
    annotated with their true classes (project 99 refuses the credentials)."""
    positions = np.arange(12)
    files = {f"{index}.png": png_bytes(pixels) for index, pixels in enumerate(fashion_pixels(fashion, positions))}
    files["broken.png"] = b"this is not a PNG file"
    storage = FastAPI()

    @storage.get("/data/upload/{name}")
    def upload(name: str) -> Response:
        if name not in files:
            return Response(status_code=404)
        return Response(files[name], media_type="image/png")

    @storage.get("/api/projects/{project}/export")
    def export(project: int):
        if project == 99:  # as Label Studio 1.23 answers a legacy token it does not accept
            return Response(status_code=401)
        return [{"id": 100 + index, "data": {"image": f"/data/upload/{index}.png"},
                 "annotations": [{"id": index, "result": parse_label_config(CONFIG).result(
                     CLASSES[fashion.labels[position]]), "was_cancelled": False}]}
                for index, position in enumerate(positions[:6])]

    with serving(storage) as url:
        yield url


def tasks(count: int, start: int = 0) -> list[dict]:
    return [{"id": 100 + index, "data": {"image": f"/data/upload/{index}.png"}} for index in range(start, start + count)]


@pytest.fixture
def backend(tmp_path, images):
    with Backend(tmp_path / "backend", BackendSettings(**FAST), label_studio_url=images) as backend:
        yield backend


@pytest.fixture
def client(backend):
    return TestClient(create_app(backend))


# ------------------------------------------------------------------------------ the labelling config


def test_label_config_gives_names_key_and_classes_in_order():
    config = parse_label_config(CONFIG)
    assert (config.from_name, config.to_name, config.image_key) == ("label", "image", "image")
    assert config.classes == CLASSES
    assert config.result("Bag") == [{"from_name": "label", "to_name": "image", "type": "choices",
                                     "value": {"choices": ["Bag"]}}]


def test_label_config_reads_aliases_and_skips_choices_not_on_an_image():
    xml = """<View><Text name="text" value="$caption"/><Choices name="mood" toName="text">
             <Choice value="a"/><Choice value="b"/></Choices><Image name="img" value="$photo"/>
             <Choices name="kind" toName="img"><Choice value="Cat" alias="cat"/><Choice value="Dog"/></Choices></View>"""
    config = parse_label_config(xml)
    assert (config.from_name, config.to_name, config.image_key, config.classes) == ("kind", "img", "photo",
                                                                                    ("cat", "Dog"))


@pytest.mark.parametrize("xml, fragment", [
    ("<View><Image name='i' value='$image'/><RectangleLabels name='b' toName='i'><Label value='x'/>"
     "</RectangleLabels></View>", "no image classification"),
    ("<View><Image name='i' value='$image'/><Choices name='c' toName='i' choice='multiple'>"
     "<Choice value='a'/><Choice value='b'/></Choices></View>", "allows several choices"),
    ("<View><Image name='i' value='$image'/><Choices name='c' toName='i'><Choice value='a'/></Choices></View>",
     "at least two distinct"),
    ("<View><Image name='i' value='$image'", "not valid XML"),
    ("", "is empty"),
])
def test_label_config_activelab_cannot_answer_is_one_sentence(xml, fragment):
    with pytest.raises(ConfigError, match=fragment) as error:
        parse_label_config(xml)
    assert str(error.value).endswith(".") and "\n" not in str(error.value)


def test_latest_annotation_wins_and_skipped_ones_do_not_count():
    config = parse_label_config(CONFIG)
    task = {"annotations": [
        {"id": 1, "updated_at": "2026-01-01T10:00:00Z", "result": config.result("Bag")},
        {"id": 2, "updated_at": "2026-01-02T10:00:00Z", "result": config.result("Coat")},
        {"id": 3, "updated_at": "2026-01-03T10:00:00Z", "result": config.result("Shirt"), "was_cancelled": True},
        {"id": 4, "updated_at": "2026-01-04T10:00:00Z", "result": [{"from_name": "other", "value": {}}]}]}
    assert latest_label(task, config) == "Coat"
    assert latest_label({"annotations": []}, config) is None


@pytest.mark.parametrize("value, expected", [(12, 12), ("12", 12), ("12.1712345678", 12), ({"id": 3}, 3)])
def test_project_ids_in_every_form_label_studio_sends(value, expected):
    assert project_id_of(value) == expected


def test_only_strategies_scoring_each_task_on_its_own_are_offered():
    offered = scoring_strategies()
    assert {"margin", "entropy", "least_confidence", "bald"} <= set(offered)
    assert not {"badge", "coreset", "batchbald", "random", "mb_outliers_mean"} & set(offered)
    with pytest.raises(ConfigError, match="does not score each task on its own"):
        BackendSettings(strategy="coreset")


# ----------------------------------------------------------------------------------- the protocol


def test_health_and_setup_before_any_model(client):
    assert client.get("/health").json()["status"] == "UP"
    answer = client.post("/setup", json={"project": "7.1712345678", "schema": CONFIG, "hostname": "http://x",
                                         "access_token": "abc", "extra_params": None})
    assert answer.status_code == 200
    assert answer.json() == {"model_version": "activelab-cnn-margin-untrained"}


def test_predict_before_any_model_returns_no_prediction_per_task(client):
    answer = client.post("/predict", json={"tasks": tasks(3), "project": "7.1", "label_config": CONFIG})
    assert answer.status_code == 200
    assert answer.json() == {"results": [[], [], []], "model_version": "activelab-cnn-margin-untrained"}


@pytest.mark.parametrize("payload, fragment", [
    ({"project": "7.1", "label_config": CONFIG}, "tasks is not valid: field required"),
    ({"tasks": [{"data": {}}], "project": "7.1", "label_config": CONFIG}, "tasks.0.id is not valid"),
    ({"tasks": "all", "project": "7.1", "label_config": CONFIG}, "tasks is not valid"),
    ({"tasks": [], "project": "seven", "label_config": CONFIG}, "project is not valid"),
])
def test_bad_predict_payloads_are_422_with_one_sentence(client, payload, fragment):
    answer = client.post("/predict", json=payload)
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert fragment in error.lower() and error.endswith(".") and "\n" not in error


def test_a_body_that_is_not_json_is_422(client):
    answer = client.post("/setup", content=b"{not json", headers={"Content-Type": "application/json"})
    assert answer.status_code == 422 and answer.json()["error"].startswith("the request's")


def test_an_unknown_label_config_is_400_with_a_clear_error(client):
    boxes = "<View><Image name='i' value='$image'/><RectangleLabels name='b' toName='i'/></View>"
    answer = client.post("/setup", json={"project": 7, "schema": boxes})
    assert answer.status_code == 400
    assert "no image classification activelab can answer" in answer.json()["error"]
    answer = client.post("/predict", json={"tasks": tasks(1), "project": 7, "label_config": boxes})
    assert answer.status_code == 400


def test_other_webhook_actions_are_acknowledged_and_ignored(client, backend):
    answer = client.post("/webhook", json={"action": "TASKS_CREATED", "project": {"id": 7}, "tasks": []})
    assert answer.json() == {"status": "ignored", "action": "TASKS_CREATED"}
    assert client.post("/webhook", json={"project": {"id": 7}}).status_code == 422
    assert backend.projects() == []


def test_webhook_trains_predictions_score_and_an_unreadable_image_is_skipped(client, backend, images, caplog):
    """ANNOTATION_CREATED trains on the six annotated tasks; /predict then returns the model's class and
    minus the margin informativeness, computed here again from the saved model; a task whose image is not
    an image and one whose image is missing get no prediction, with the reason logged."""
    answer = client.post("/webhook", json={"action": "ANNOTATION_CREATED", "project": {"id": 7, "label_config": CONFIG},
                                           "annotation": {"id": 1}, "task": {"id": 100}})
    assert answer.status_code == 200 and answer.json()["status"] == "training queued"
    assert backend.training.wait_idle(300)
    status = client.get("/status").json()["projects"][0]
    assert status["model_version"] == "activelab-cnn-margin-v1" and status["n_labels"] == 6
    assert sum(status["label_counts"].values()) == 6
    folder = backend.folder / "projects" / "7"
    state = json.loads((folder / "state.json").read_text())
    assert (folder / state["model_file"]).exists() and sorted(state["labels"]) == [str(100 + i) for i in range(6)]

    batch = tasks(4, start=6) + [{"id": 200, "data": {"image": "/data/upload/broken.png"}},
                                 {"id": 201, "data": {"image": "/data/upload/missing.png"}}]
    with caplog.at_level(logging.WARNING, logger="activelab"):
        answer = client.post("/predict", json={"tasks": batch, "project": "7.1", "label_config": CONFIG})
    results = answer.json()["results"]
    assert answer.status_code == 200 and len(results) == 6
    assert results[4] == [] and results[5] == []
    assert "task 200 gets no prediction" in caplog.text and "not an image" in caplog.text
    assert "task 201 gets no prediction" in caplog.text and "HTTP 404" in caplog.text

    learner = backend.project(7)
    dataset = learner._dataset([learner._image_file(task["data"]["image"], backend.client(7)) for task in batch[:4]],
                               np.full(4, -1), CLASSES)
    with torch.no_grad():
        probs = pool_outputs(learner._model, dataset, np.arange(4), {"probs_N_C"})["probs_N_C"]
    for row, prediction in enumerate(results[:4]):
        (only,) = prediction
        assert only["model_version"] == "activelab-cnn-margin-v1"
        assert only["result"] == parse_label_config(CONFIG).result(CLASSES[probs[row].argmax()])
        assert only["score"] == pytest.approx(-score_margin(probs[row:row + 1])[0], abs=1e-6)
    assert client.get("/versions").json() == {"versions": ["activelab-cnn-margin-v1"]}


def test_the_same_labels_do_not_train_again_and_a_restart_keeps_the_model(tmp_path, images):
    settings = BackendSettings(**FAST)
    with Backend(tmp_path / "b", settings, label_studio_url=images) as backend:
        client = TestClient(create_app(backend))
        client.post("/setup", json={"project": 7, "schema": CONFIG})
        for _ in range(2):
            client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 7}})
            assert backend.training.wait_idle(300)
        status = client.get("/status").json()["projects"][0]
        assert [entry["model_version"] for entry in status["history"]] == ["activelab-cnn-margin-v1"]
        assert "labels unchanged" in status["last_message"]
        before = client.post("/predict", json={"tasks": tasks(2, 6), "project": 7, "label_config": CONFIG}).json()
    with Backend(tmp_path / "b", settings, label_studio_url=images) as backend:
        client = TestClient(create_app(backend))
        assert client.post("/setup", json={"project": 7, "schema": CONFIG}).json()["model_version"] == \
            "activelab-cnn-margin-v1"
        after = client.post("/predict", json={"tasks": tasks(2, 6), "project": 7, "label_config": CONFIG}).json()
    assert after == before


def test_refused_credentials_end_the_training_with_advice_not_a_crash(client, backend):
    client.post("/setup", json={"project": 99, "schema": CONFIG, "access_token": "0123abcd"})
    client.post("/webhook", json={"action": "ANNOTATION_CREATED", "project": {"id": 99}})
    assert backend.training.wait_idle(60)
    status = client.get("/status").json()["projects"][0]
    assert status["model_version"] == "activelab-cnn-margin-untrained"
    assert "refused the credentials" in status["last_message"]
    assert "personal access token (--api-key or LABEL_STUDIO_API_KEY)" in status["last_message"]
    assert client.get("/health").json()["status"] == "UP"


def test_mc_dropout_strategy_scores_are_minus_bald(tmp_path, images):
    """With --strategy bald the score is minus BALD's mutual information (>= 0), so it is at most 0."""
    with Backend(tmp_path / "b", BackendSettings(**FAST, strategy="bald", mc_samples=4),
                 label_studio_url=images) as backend:
        client = TestClient(create_app(backend))
        client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 7, "label_config": CONFIG}})
        assert backend.training.wait_idle(300)
        results = client.post("/predict", json={"tasks": tasks(3, 6), "project": 7, "label_config": CONFIG}).json()
    assert results["model_version"] == "activelab-cnn-bald-v1"
    scores = [prediction["score"] for (prediction,) in results["results"]]
    assert all(-np.log(len(CLASSES)) - 1e-9 <= score <= 0 for score in scores) and len(set(scores)) == 3


def test_command_flags_build_the_settings_and_bad_values_are_one_sentence(tmp_path):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--dir", str(tmp_path), "--strategy", "entropy", "--grayscale", "--port", "9999"])
    assert settings_from(args) == BackendSettings(strategy="entropy", grayscale=True)
    with pytest.raises(ConfigError, match="does not score each task on its own"):
        main(parser.parse_args(["--dir", str(tmp_path), "--strategy", "badge"]))
    with pytest.raises(ConfigError, match="image_size"):
        main(parser.parse_args(["--dir", str(tmp_path), "--image-size", "4"]))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
            main(parser.parse_args(["--dir", str(tmp_path), "--port", str(port)]))
    assert not (tmp_path / "projects").exists()


def test_basic_auth_guards_every_endpoint_but_webhooks_of_known_projects(backend):
    """With credentials, a request without them or with wrong ones is 401 (and names the scheme); Label
    Studio's project webhooks, which it sends without the connection's credentials, pass only for a project
    the backend already serves."""
    client = TestClient(create_app(backend, auth=BasicAuth("studio", "s3cret:ok")))
    right, wrong = ("studio", "s3cret:ok"), ("studio", "s3cret")
    for method, path, body in (("GET", "/health", None), ("GET", "/status", None), ("GET", "/versions", None),
                               ("POST", "/setup", {"project": "7.1", "schema": CONFIG}),
                               ("POST", "/predict", {"tasks": tasks(1), "project": "7.1", "label_config": CONFIG})):
        for credentials in (None, wrong):
            answer = client.request(method, path, json=body, auth=credentials)
            assert answer.status_code == 401 and answer.headers["www-authenticate"] == 'Basic realm="activelab"'
            assert answer.json() == {"error": "this backend needs the user name and password it was started with."}
        assert client.request(method, path, json=body, auth=right).status_code == 200
    for header in ("Bearer x", "Basic !!!", "Basic " + "c3R1ZGlvOnMzY3JldA==", ""):
        assert client.get("/health", headers={"Authorization": header}).status_code == 401
    event = {"action": "TASKS_CREATED", "tasks": []}
    assert client.post("/webhook", json={**event, "project": {"id": 8}}).status_code == 401  # unknown project
    assert not backend.knows(8) and backend.knows(7)  # /setup above made 7 known
    assert client.post("/webhook", json={**event, "project": {"id": 7}}).json()["status"] == "ignored"
    assert client.post("/webhook", content=b"not json").status_code == 401


def test_basic_auth_flag_takes_the_password_from_the_environment(tmp_path, monkeypatch):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert auth_from(parser.parse_args(["--dir", str(tmp_path)])) is None
    monkeypatch.delenv(PASSWORD_VARIABLE, raising=False)
    with pytest.raises(ConfigError, match=PASSWORD_VARIABLE):
        main(parser.parse_args(["--dir", str(tmp_path), "--basic-auth-user", "studio"]))
    monkeypatch.setenv(PASSWORD_VARIABLE, "pw")
    assert auth_from(parser.parse_args(["--dir", str(tmp_path), "--basic-auth-user", "studio"])) == BasicAuth("studio",
                                                                                                           "pw")
    with pytest.raises(ConfigError, match="must not contain ':'"):
        auth_from(parser.parse_args(["--dir", str(tmp_path), "--basic-auth-user", "a:b"]))
    assert not (tmp_path / "projects").exists()


def test_a_second_backend_on_the_same_directory_is_refused(backend):
    with pytest.raises(StateError, match="in use by another activelab process"):
        Backend(backend.folder, backend.settings)


# ------------------------------------------------------------------------------- real Label Studio


@pytest.mark.slow
def test_real_label_studio_gets_scored_predictions_and_retraining(tmp_path, fashion):
    """Label Studio 1.23 in its own environment: a project with an image-classification config, 12 real
    Fashion-MNIST PNGs, activelab connected as its ML backend through the API, 6 annotations through the
    API. Label Studio must end up with a scored prediction of the newest model version for every task,
    the backend must have retrained on exactly the 6 labels, and Label Studio's own uncertainty-sampling
    queue must serve the task with the lowest score (activelab's most informative) first. The backend
    requires basic authentication, set on the connection as a user would: Label Studio's calls carry it,
    and its annotation webhooks (sent without it) still reach the backend."""
    executable, reason = ensure_label_studio()
    if executable is None:
        pytest.skip(reason)
    positions = np.arange(12)
    pixels = fashion_pixels(fashion, positions)
    config = parse_label_config(CONFIG)
    with LabelStudioServer(executable, tmp_path / "label-studio", free_port()) as studio:
        studio.wait_up(600)
        token = personal_access_token(studio.url)
        api = LabelStudioAPI(studio.url, token)
        project = api.create_project("activelab", CONFIG)
        task_ids = api.import_images(project, [(f"fashion-{p}.png", png_bytes(image)) for p, image in
                                               zip(positions, pixels)])
        assert len(task_ids) == 12
        settings = BackendSettings(**FAST)
        credentials = ("studio", "a long password")
        with Backend(tmp_path / "backend", settings, label_studio_url=studio.url, api_key=token) as backend, \
                serving(create_app(backend, auth=BasicAuth(*credentials))) as backend_url:
            assert httpx.get(f"{backend_url}/health").status_code == 401
            connection = api.connect_ml_backend(project, backend_url, basic_auth=credentials)
            assert connection["state"] == "CO" and connection["model_version"] == "activelab-cnn-margin-untrained"
            by_task = dict(zip(task_ids, positions))
            for task_id in task_ids[:6]:
                api.annotate(task_id, config.result(CLASSES[fashion.labels[by_task[task_id]]]))
            assert backend.training.wait_idle(600)
            api.start_training(connection["id"])
            assert backend.training.wait_idle(600)
            status = httpx.get(f"{backend_url}/status", auth=credentials).json()["projects"][0]
            api.retrieve_predictions(project)

            latest = status["model_version"]
            assert latest != "activelab-cnn-margin-untrained" and status["n_labels"] == 6
            assert status["history"][-1]["n_labels"] == 6 and "labels unchanged" in status["last_message"]
            state = json.loads((backend.folder / "projects" / str(project) / "state.json").read_text())
            assert (backend.folder / "projects" / str(project) / state["model_file"]).exists()
            assert sorted(int(task) for task in state["labels"]) == sorted(task_ids[:6])
            scores = {}
            for task_id in task_ids:
                (prediction,) = [p for p in api.predictions(task_id) if p["model_version"] == latest]
                assert config.chosen_class(prediction["result"]) in CLASSES
                assert -1.0 <= prediction["score"] <= 0.0
                scores[task_id] = prediction["score"]

            api.http.patch(f"/api/projects/{project}", json={"sampling": "Uncertainty sampling",
                                                              "model_version": latest}).raise_for_status()
            served = api.http.get(f"/api/projects/{project}/next").json()["id"]
            unlabelled = task_ids[6:]
            assert served == min(unlabelled, key=scores.__getitem__)
