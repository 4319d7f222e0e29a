"""A real `activelab serve` process killed while a person labels and while a model trains, then started
again: every acknowledged label is there, and the interrupted job is marked failed, not dropped."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from app_helpers import kill, start_server

from activelab.data.state import LabelState


def wait_job(client: httpx.Client, until, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get("/api/job").json()["job"]
        if until(job):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.2)


@pytest.mark.slow
def test_a_killed_server_loses_no_label_and_marks_its_training_job_failed(tmp_path, fashion_pngs):
    paths, truth, classes = fashion_pngs
    project = tmp_path / "project"
    server, client = start_server(project)
    try:
        form = {"name": "restart", "classes": "\n".join(classes), "size": "28", "colour": "grayscale",
                "test_size": "10", "batch_size": "10", "train_steps": "3000", "epochs": "1"}
        assert client.post("/setup", data=form).status_code == 200
        files = [("files", (path.name, path.read_bytes(), "image/png")) for path in paths[:50]]
        assert client.post("/upload", files=files).status_code == 200
        test_ids = client.post("/test/draw", data={}).json()["ids"]
        pool = client.get("/api/status").json()["pool"]
        assert len(test_ids) == 10 and pool == 40
        free = [item for item in range(50) if item not in test_ids]
        acknowledged: list[int] = []

        def label_until_killed() -> None:
            for item in test_ids + free:
                try:
                    answer = client.post("/api/label", json={"id": item, "label": int(truth[item])})
                except httpx.TransportError:
                    return
                if answer.status_code == 200:
                    acknowledged.append(item)

        labeller = threading.Thread(target=label_until_killed)
        labeller.start()
        while len(acknowledged) < 15:
            time.sleep(0.01)
        kill(server)
        labeller.join(60)
    finally:
        if server.poll() is None:
            kill(server)

    state = LabelState.load(project / "run" / "state.json")
    kept = set(state.labelled_ids.tolist()) | set(state.labelled_test[0].tolist())
    assert set(acknowledged) <= kept and len(kept) <= len(acknowledged) + 1  # at most the one in flight
    server, client = start_server(project)
    try:
        status = client.get("/api/status").json()
        assert status["labelled"] + status["test"]["labelled"] == len(kept)
        assert client.post("/suggest", data={"n": "5"}).status_code == 202
        wait_job(client, lambda job: job["phase"] == "training" or job["state"] != "running")
        kill(server)
    finally:
        if server.poll() is None:
            kill(server)

    server, client = start_server(project)
    try:
        job = client.get("/api/job").json()["job"]
        assert job["state"] == "failed" and "server stopped while this job was training" in job["error"]
        status = client.get("/api/status").json()
        assert status["labelled"] + status["test"]["labelled"] == len(kept) and status["rounds"] == []
        assert client.post("/suggest", data={"n": "5"}).status_code == 202  # and it can run again
    finally:
        server.terminate()
        server.wait(30)
