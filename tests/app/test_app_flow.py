"""A person's whole session on real Fashion-MNIST images, through every endpoint of the app."""

from __future__ import annotations

import csv
import io
import time

import numpy as np
import pytest
import torch
from app_helpers import create_project, csrf, make_client, upload

from activelab.models.cnn import small_cnn


def wait_for_job(client, timeout: float = 300) -> dict:
    client.app.state.jobs.wait(timeout)
    job = client.get("/api/job").json()["job"]
    assert job["state"] != "running"
    return job


def label_queue(client, truth, kinds=("test", "batch")) -> list[int]:
    labelled = []
    for item in client.get("/api/status").json()["queue"]:
        if item["kind"] in kinds:
            answer = client.post("/api/label", json={"id": item["id"], "label": int(truth[item["id"]]),
                                                     "annotator": "ada"}, headers=csrf(client))
            assert answer.status_code == 200, answer.text
            labelled.append(item["id"])
    return labelled


@pytest.mark.slow
def test_upload_label_suggest_train_and_export(tmp_path, fashion_pngs):
    paths, truth, classes = fashion_pngs
    paths, truth = paths[:60], truth[:60]
    client = make_client(tmp_path / "project")
    assert client.get("/", headers={"accept": "text/html"}, follow_redirects=False).headers["location"] == "/setup"
    assert client.get("/setup").status_code == 200
    create_project(client, classes)
    assert client.get("/setup", follow_redirects=False).status_code == 303
    assert upload(client, paths[:30]).json()["added"] == list(range(30))
    assert upload(client, paths[30:]).json()["added"] == list(range(30, 60))  # ids follow upload order
    assert client.get(f"/images/5").content == paths[5].read_bytes()
    assert client.get("/images/60").status_code == 400

    refused = client.post("/suggest", data={"csrf_token": client.app.state.secrets.csrf})
    assert refused.status_code == 400 and "test images first" in refused.json()["error"]
    drawn = client.post("/test/draw", data={"csrf_token": client.app.state.secrets.csrf}).json()["ids"]
    assert len(drawn) == 10
    status = client.get("/api/status").json()
    assert [item["id"] for item in status["queue"]] == sorted(drawn) and status["pool"] == 50
    test_ids = label_queue(client, truth)
    assert client.get("/api/status").json()["test"]["labelled"] == 10

    started = client.post("/suggest", data={"csrf_token": client.app.state.secrets.csrf})
    assert started.status_code == 202
    job = wait_for_job(client)
    assert (job["state"], job["round"], job["selected"]) == ("done", -1, 10)  # a first random batch, no model
    first = client.get("/api/status").json()["queue"]
    assert len(first) == 10 and not set(item["id"] for item in first) & set(test_ids)
    assert all(item["guess"] is None for item in first)
    batch_ids = label_queue(client, truth)

    skip_me = client.post("/suggest", data={"csrf_token": client.app.state.secrets.csrf})
    assert skip_me.status_code == 202
    busy = client.post("/suggest", data={"csrf_token": client.app.state.secrets.csrf})
    assert busy.status_code == 409 or client.app.state.jobs.status()["state"] != "running"
    job = wait_for_job(client)
    assert job["state"] == "done" and job["round"] == 0, job
    status = client.get("/api/status").json()
    assert status["rounds"][0]["n_labelled"] == 10 and status["rounds"][0]["steps"] == 10
    assert status["rounds"][0]["n_test"] == len(test_ids)  # the accuracy is on every test label given
    accuracy = status["rounds"][0]["test_accuracy"]
    queue = status["queue"]
    assert len(queue) == 10 and all(item["kind"] == "batch" and 0 < item["confidence"] <= 1 for item in queue)
    assert not {item["id"] for item in queue} & (set(test_ids) | set(batch_ids))
    assert status["per_class"] == {name: int((truth[batch_ids] == index).sum()) for index, name in enumerate(classes)}

    # the exported model gives the reported accuracy on the person's test labels
    weights = torch.load(io.BytesIO(client.get("/export/model.pt").content), weights_only=True)
    model = small_cnn(1, len(classes), (28, 28))
    model.load_state_dict(weights["model"])
    model.eval()
    dataset = client.app.state.project.run.dataset
    with torch.no_grad():
        predicted = model(dataset.load(np.array(test_ids))).argmax(1).numpy()
    assert accuracy == pytest.approx(float((predicted == truth[test_ids]).mean()), abs=1e-6)

    # skip, label, undo (unlabel) and correct (relabel)
    skipped, kept = queue[0]["id"], queue[1]["id"]
    assert client.post("/api/skip", json={"id": skipped}, headers=csrf(client)).json()["skipped"]
    assert client.post("/api/label", json={"id": kept, "label": classes[0]}, headers=csrf(client)).status_code == 200
    assert client.post("/api/unlabel", json={"id": kept}, headers=csrf(client)).json()["label"] is None
    assert client.post("/api/label", json={"id": test_ids[0], "label": 1}, headers=csrf(client)).json()["label"] == \
        classes[1]
    assert client.post("/api/skip", json={"id": test_ids[1]}, headers=csrf(client)).status_code == 400
    assert client.post("/api/label", json={"id": 0, "label": "wolf"}, headers=csrf(client)).status_code == 400
    assert client.post("/api/label", json={"id": 999, "label": 0}, headers=csrf(client)).status_code == 400

    for path in ("/", "/label", "/summary", "/job"):
        page = client.get(path)
        assert page.status_code == 200 and "text/html" in page.headers["content-type"], path
    assert "test accuracy" in client.get("/").text
    assert client.get("/plot.png").content[:8] == b"\x89PNG\r\n\x1a\n"
    assert client.get("/static/htmx.min.js").status_code == 200 and client.get("/static/app.js").status_code == 200

    rows = list(csv.DictReader(io.StringIO(client.get("/export/labels.csv").text)))
    assert len(rows) == 20 and {row["split"] for row in rows} == {"train", "test"}
    by_id = {int(row["id"]): row for row in rows}
    assert by_id[test_ids[0]]["label"] == classes[1]  # the correction
    assert all(by_id[item]["label"] == classes[truth[item]] for item in batch_ids)
    assert by_id[batch_ids[0]]["name"] == paths[batch_ids[0]].name and by_id[batch_ids[0]]["annotator"] == "ada"
    exported = client.get("/export/labels.json").json()
    assert exported["classes"] == list(classes) and exported["labels"] == [
        {**row, "id": int(row["id"])} for row in rows]
    tasks = client.get("/export/label-studio.json").json()
    assert len(tasks) == 60 and tasks[batch_ids[0]]["annotations"][0]["result"][0]["value"] == {
        "choices": [classes[truth[batch_ids[0]]]]}
    assert "annotations" not in tasks[skipped] and tasks[5]["data"]["image"].startswith("/data/local-files/?d=images/")
