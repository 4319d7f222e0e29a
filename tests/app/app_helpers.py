"""Helpers of the labelling-app tests: a logged-in test client, a project, uploads."""

from __future__ import annotations

import io
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from activelab.app.security import Secrets
from activelab.app.uploads import Limits
from activelab.app.web import create_app

TOKEN = "test-token-0123456789"
#: A project small enough to train in a few seconds: 28-pixel grey images, 10 steps a round.
PROJECT = {"name": "clothes", "classes": "", "model": "cnn", "strategy": "margin", "size": "28", "colour": "grayscale",
           "test_size": "10", "batch_size": "10", "train_steps": "10", "epochs": "1", "seed": "0"}


def png_bytes(seed: int = 0, size: int = 28) -> bytes:
    """A small random grey PNG."""
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size, size), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def make_client(project_dir: Path, *, login: bool = True, limits: Limits = Limits(), import_root: Path | None = None
                ) -> TestClient:
    app = create_app(project_dir, import_root=import_root, limits=limits, secrets=Secrets(TOKEN))
    client = TestClient(app, base_url="http://127.0.0.1")
    if login:
        assert client.get(f"/login?token={TOKEN}", follow_redirects=False).status_code == 303
    return client


def csrf(client: TestClient) -> dict:
    """The CSRF header the pages send."""
    return {"X-CSRF-Token": client.app.state.secrets.csrf}


def create_project(client: TestClient, classes: tuple[str, ...], **changes: str) -> None:
    form = {**PROJECT, "classes": "\n".join(classes), **changes, "csrf_token": client.app.state.secrets.csrf}
    response = client.post("/setup", data=form)
    assert response.status_code == 200, response.text


def upload(client: TestClient, paths: list[Path]):
    files = [("files", (path.name, path.read_bytes(), "image/png")) for path in paths]
    return client.post("/upload", files=files, data={"csrf_token": client.app.state.secrets.csrf})


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(project: Path) -> tuple[subprocess.Popen, httpx.Client]:
    """`activelab serve` on a free port in a subprocess, and a client holding its token (bearer)."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "activelab.cli", "serve", "--project", str(project), "--port",
                               str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = ""
    while "token=" not in line:
        line = server.stdout.readline()
        assert line, server.stderr.read()
    token = re.search(r"token=(\S+)", line).group(1)
    assert line.strip().startswith(f"open http://127.0.0.1:{port}/login?token=")
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"},
                          timeout=60)
    client.login_url = line.split("open ", 1)[1].strip()
    deadline = time.monotonic() + 60
    while True:
        try:
            if client.get("/api/job").status_code == 200:
                return server, client
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the server did not answer within 60 s"
        time.sleep(0.2)


def kill(server: subprocess.Popen) -> None:
    server.send_signal(signal.SIGKILL)
    server.wait(30)
