"""A real Label Studio server for the tests: installed by scripts/ensure-label-studio.sh, started on a free
port with its data in a temporary folder, and driven through its HTTP API as a person's scripts would."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
ENSURE_SCRIPT = REPO / "scripts" / "ensure-label-studio.sh"
EMAIL, PASSWORD = "tester@example.com", "activelab-test-password"

CLASSIFICATION_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <Choices name="label" toName="image" choice="single">
{choices}
  </Choices>
</View>"""


def classification_config(classes) -> str:
    """An image-classification labelling config with one <Choice> per class."""
    return CLASSIFICATION_CONFIG.format(choices="\n".join(f'    <Choice value="{name}"/>' for name in classes))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ensure_label_studio() -> tuple[Path | None, str]:
    """The ``label-studio`` executable (installing it once), or None and why it cannot be had."""
    try:
        done = subprocess.run(["bash", str(ENSURE_SCRIPT)], capture_output=True, text=True, timeout=1200)
    except subprocess.TimeoutExpired:
        return None, "installing label-studio took more than 20 minutes"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"label-studio could not be installed from the package registry ({last})"
    return Path(done.stdout.strip().splitlines()[-1]), ""


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


class LabelStudioServer:
    """``label-studio start`` in its own process group, stopped (with its children) on exit."""

    def __init__(self, executable: Path, data_dir: Path, port: int):
        self.executable, self.data_dir, self.port = executable, data_dir, port
        self.url = f"http://127.0.0.1:{port}"
        self.log = data_dir / "label-studio.log"
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "LabelStudioServer":
        env = {**os.environ, "LABEL_STUDIO_BASE_DATA_DIR": str(self.data_dir),
               # the activelab backend runs on this machine: let Label Studio call it and post webhooks to it
               "ML_BLOCK_LOCAL_IP": "false", "SSRF_PROTECTION_ENABLED": "false",
               "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true"}
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as sink:
            self.process = subprocess.Popen(
                [str(self.executable), "start", "--no-browser", "--port", str(self.port), "--username", EMAIL,
                 "--password", PASSWORD], stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, cwd=self.data_dir, start_new_session=True)
        return self

    def wait_up(self, timeout: float) -> float:
        """Seconds until ``GET /health`` answers ``{"status": "UP"}``; raises after ``timeout``."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"label-studio exited with {self.process.returncode}: {self.tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).json().get("status") == "UP":
                    return time.monotonic() - start
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(1)
        raise RuntimeError(f"label-studio was not UP after {timeout:.0f} s: {self.tail()}")

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def __exit__(self, *exc_info) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def personal_access_token(url: str) -> str:
    """Log in as the test user (Django's login form) and create a personal access token, as a person does
    under Account & Settings."""
    with httpx.Client(base_url=url, timeout=30) as browser:
        browser.get("/user/login/")
        answer = browser.post("/user/login/", headers={"Referer": f"{url}/user/login/"},
                              data={"email": EMAIL, "password": PASSWORD,
                                    "csrfmiddlewaretoken": browser.cookies["csrftoken"]})
        assert answer.status_code == 302, f"login failed: HTTP {answer.status_code}"
        answer = browser.post("/api/token/", headers={"X-CSRFToken": browser.cookies["csrftoken"],
                                                       "Referer": f"{url}/"})
        answer.raise_for_status()
        return answer.json()["token"]


class LabelStudioAPI:
    """The calls of Label Studio's REST API the test makes, with a personal access token."""

    def __init__(self, url: str, token: str):
        self.url = url
        access = httpx.post(f"{url}/api/token/refresh/", json={"refresh": token}, timeout=30)
        access.raise_for_status()
        self.http = httpx.Client(base_url=url, timeout=120,
                                 headers={"Authorization": f"Bearer {access.json()['access']}"})

    def _ok(self, response: httpx.Response) -> object:
        assert response.status_code < 400, f"{response.request.method} {response.request.url}: " \
                                            f"HTTP {response.status_code} {response.text[:500]}"
        return response.json() if response.content else None

    def create_project(self, title: str, label_config: str) -> int:
        return self._ok(self.http.post("/api/projects", json={"title": title, "label_config": label_config}))["id"]

    def import_images(self, project: int, images: list[tuple[str, bytes]]) -> list[int]:
        """Upload PNG files; Label Studio makes one task per file with data.image = its upload path."""
        files = {f"file{index}": (name, data, "image/png") for index, (name, data) in enumerate(images)}
        self._ok(self.http.post(f"/api/projects/{project}/import", files=files))
        return [task["id"] for task in self.tasks(project)]

    def tasks(self, project: int) -> list[dict]:
        return self._ok(self.http.get("/api/tasks", params={"project": project, "page_size": 1000,
                                                             "fields": "all"}))["tasks"]

    def connect_ml_backend(self, project: int, url: str, *, basic_auth: tuple[str, str] | None = None) -> dict:
        body = {"project": project, "url": url, "title": "activelab"}
        if basic_auth is not None:
            body.update(auth_method="BASIC_AUTH", basic_auth_user=basic_auth[0], basic_auth_pass=basic_auth[1])
        return self._ok(self.http.post("/api/ml", json=body))

    def annotate(self, task: int, config_result: list[dict]) -> dict:
        return self._ok(self.http.post(f"/api/tasks/{task}/annotations", json={"result": config_result}))

    def retrieve_predictions(self, project: int) -> dict:
        return self._ok(self.http.post("/api/dm/actions", params={"id": "retrieve_tasks_predictions",
                                                                  "project": project},
                                       json={"selectedItems": {"all": True, "excluded": []}}))

    def predictions(self, task: int) -> list[dict]:
        return self._ok(self.http.get("/api/predictions", params={"task": task}))

    def start_training(self, ml_backend: int) -> dict:
        return self._ok(self.http.post(f"/api/ml/{ml_backend}/train", json={}))
