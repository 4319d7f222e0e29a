"""The HTTP side: the endpoints Label Studio 1.23 calls on an ML backend, as a FastAPI app.

Label Studio calls (``label_studio/ml/api_connector.py`` in its source):

``GET /health``
    On connecting and before predicting, with a one-second timeout: ``{"status": "UP"}``.
``POST /setup``
    ``{"project": "ID.CREATED", "schema": LABEL_CONFIG, "hostname": URL, "access_token": TOKEN, ...}`` on
    connecting and before each batch of predictions; answers ``{"model_version": ...}``, which Label
    Studio uses to ask again only for tasks without a prediction of that version.
``POST /predict``
    ``{"tasks": [{"id": ..., "data": {...}}, ...], "project": ..., "label_config": ...}``; answers
    ``{"results": [...]}`` with one list per task, in order, holding a prediction ``{"result": [choice],
    "score": ..., "model_version": ...}`` or nothing (no model yet, or the task's image could not be
    fetched). See :mod:`.learner` for what the score means.
``POST /webhook``
    Every project event Label Studio emits (it registers the backend's ``/webhook`` when the backend is
    connected) and ``START_TRAINING`` from the "Start training" button; annotation events and
    ``START_TRAINING`` queue a retraining, others are acknowledged and ignored.
``GET /versions``
    The model versions trained, for Label Studio's version menu.

``GET /status`` is activelab's own: each project's model version, training labels and training state.

With :class:`BasicAuth` credentials (Label Studio's "Basic Authentication" of an ML backend connection),
every request must carry them, except webhooks about a project the backend already serves: Label Studio
sends its project webhooks without the connection's credentials, and such a webhook can only queue a
retraining on the labels read from Label Studio.

A request Label Studio could not have sent (missing fields, wrong types, not JSON) is answered 422, and a
labelling config activelab cannot answer 400, each with ``{"error": "<one sentence>"}``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from activelab.errors import UserError
from activelab.integrations.labelstudio.backend import Backend
from activelab.integrations.labelstudio.learner import project_id_of

log = logging.getLogger(__name__)

#: Webhook actions after which the labels may have changed, and ``START_TRAINING``.
TRAINING_ACTIONS = frozenset({"ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATION_UPDATED",
                              "ANNOTATIONS_DELETED", "START_TRAINING"})


def _project(value: object) -> int:
    try:
        return project_id_of(value)
    except UserError as error:
        raise ValueError(str(error)) from None


class Task(BaseModel):
    """A task as Label Studio sends it; only ``id`` and ``data`` are read."""

    model_config = ConfigDict(extra="allow")
    id: int
    data: dict[str, Any]


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    tasks: list[Task]
    label_config: str
    project: int

    @field_validator("project", mode="before")
    @classmethod
    def _project_id(cls, value: object) -> int:
        return _project(value)


class SetupRequest(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    project: int
    label_config: str = Field(alias="schema")
    hostname: str | None = None
    access_token: str | None = None

    @field_validator("project", mode="before")
    @classmethod
    def _project_id(cls, value: object) -> int:
        return _project(value)


class WebhookRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    action: str
    project: dict[str, Any] | None = None


def _sentence(error: RequestValidationError) -> str:
    """The first validation problem as one sentence."""
    problem = error.errors()[0]
    where = ".".join(str(part) for part in problem.get("loc", ())[1:]) or "body"
    message = str(problem.get("msg", "is not valid")).rstrip(".")
    return f"the request's {where} is not valid: {message[0].lower() + message[1:]}."


@dataclass(frozen=True)
class BasicAuth:
    """The user name and password Label Studio must send (HTTP basic authentication)."""

    user: str
    password: str

    def allows(self, header: str | None) -> bool:
        """Whether an ``Authorization`` header holds these credentials (compared in constant time)."""
        scheme, _, encoded = (header or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            given = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(given, f"{self.user}:{self.password}".encode("utf-8"))


async def _webhook_project(request: Request) -> int | None:
    """The project a webhook request names, or None when its body does not name one."""
    try:
        return project_id_of((json.loads(await request.body()) or {}).get("project"))
    except (ValueError, AttributeError, TypeError, UserError):
        return None


def create_app(backend: Backend, *, auth: BasicAuth | None = None) -> FastAPI:
    """The FastAPI app answering Label Studio for ``backend`` (which the caller opens and closes); with
    ``auth``, requests must carry those credentials (see the module's description for webhooks)."""
    app = FastAPI(title="activelab ML backend for Label Studio", docs_url=None, redoc_url=None)

    if auth is not None:
        @app.middleware("http")
        async def require_credentials(request: Request, call_next):
            if auth.allows(request.headers.get("authorization")):
                return await call_next(request)
            if request.method == "POST" and request.url.path == "/webhook":
                project = await _webhook_project(request)
                if project is not None and backend.knows(project):
                    return await call_next(request)
            log.warning("%s %s refused: no valid credentials.", request.method, request.url.path)
            return JSONResponse({"error": "this backend needs the user name and password it was started with."},
                                status_code=401, headers={"WWW-Authenticate": 'Basic realm="activelab"'})

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        sentence = _sentence(error)
        log.warning("%s %s refused: %s", request.method, request.url.path, sentence)
        return JSONResponse({"error": sentence}, status_code=422)

    @app.exception_handler(UserError)
    async def user_error(request: Request, error: UserError) -> JSONResponse:
        log.warning("%s %s refused: %s", request.method, request.url.path, error)
        return JSONResponse({"error": str(error)}, status_code=400)

    @app.get("/health")
    def health() -> dict:
        return {"status": "UP", "model_class": "activelab", "model": backend.settings.model,
                "strategy": backend.settings.strategy}

    @app.post("/setup")
    def setup(request: SetupRequest) -> dict:
        learner = backend.project(request.project)
        learner.remember_config(request.label_config)
        backend.remember_setup(request.project, request.hostname, request.access_token)
        return {"model_version": learner.model_version}

    @app.post("/predict")
    def predict(request: PredictRequest) -> dict:
        learner = backend.project(request.project)
        config = learner.remember_config(request.label_config)
        tasks = [task.model_dump() for task in request.tasks]
        results = learner.predict(tasks, config, backend.client(request.project))
        return {"results": results, "model_version": learner.model_version}

    @app.post("/webhook")
    def webhook(request: WebhookRequest) -> dict:
        if request.action not in TRAINING_ACTIONS:
            return {"status": "ignored", "action": request.action}
        if request.project is None:
            raise UserError(f"the {request.action} webhook names no project.")
        project_id = project_id_of(request.project)
        learner = backend.project(project_id)
        if isinstance(request.project.get("label_config"), str):
            learner.remember_config(request.project["label_config"])
        backend.training.request(project_id)
        return {"status": "training queued", "project": project_id, "model_version": learner.model_version}

    @app.get("/versions")
    async def versions(request: Request) -> dict:
        wanted = None
        if await request.body():  # Label Studio sends {"project": "ID.CREATED"} with its GET
            try:
                wanted = project_id_of((await request.json()).get("project"))
            except (ValueError, AttributeError, UserError):
                wanted = None
        return {"versions": [version for learner in backend.projects()
                             if wanted is None or learner.project_id == wanted for version in learner.versions()]}

    @app.get("/status")
    def status() -> dict:
        return {"projects": [{**learner.status(), **backend.training.state(learner.project_id)}
                             for learner in backend.projects()]}

    return app
