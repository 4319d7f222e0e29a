"""The labelling app's routes: server-rendered pages, a small JSON API for the labelling page, exports.

Pages (GET, HTML): ``/login``, ``/`` (the project: counts, rounds, learning curve, upload, job), ``/setup``
(create the project), ``/label`` (label with clicks or keys). Fragments polled by htmx: ``/job``.
Images and figures: ``/images/{id}`` (by id only, never by a name), ``/plot.png``. Changes (POST, CSRF):
``/setup``, ``/upload``, ``/import``, ``/test/draw``, ``/suggest``, ``/api/label``, ``/api/unlabel``,
``/api/skip``. Reads: ``/api/status``, ``/api/job``. Exports: ``/export/labels.csv``, ``/export/labels.json``,
``/export/label-studio.json``, ``/export/model.pt``.

A form POST answers an htmx request with an HTML fragment (a message, plus ``HX-Trigger: refresh`` so the
page reloads its counts) and anything else with JSON; an error a person can cause is one sentence, with
400 (409 when the run or a job is busy, 413 when too large). Every template escapes what it prints
(Jinja2 autoescape; data for scripts goes through ``tojson``), and the labelling script writes text with
``textContent`` only.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from activelab.app.jobs import JobBusy, Jobs
from activelab.app.project import MODELS, STRATEGIES, Project, settings_from_form
from activelab.app.security import COOKIE, BodyLimit, Guard, Secrets, form_csrf_ok
from activelab.app.uploads import (Limits, Rejected, Upload, check_image, import_folder, is_zip, read_zip,
                                   sanitise_name)
from activelab.errors import ConfigError, DataError, StateError, UserError

_MEDIA_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".gif": "image/gif", ".bmp": "image/bmp",
                ".tif": "image/tiff", ".webp": "image/webp"}
_ANNOTATOR = re.compile(r"[^\w .@-]+")


class LabelIn(BaseModel):
    id: int
    label: int | str
    annotator: str | None = None


class ItemIn(BaseModel):
    id: int
    annotator: str | None = None


def _annotator(name: str | None) -> str:
    """Who labelled, as the page says (a free name kept in the history), cleaned and at most 40 characters."""
    cleaned = _ANNOTATOR.sub("", name or "").strip()[:40]
    return cleaned or "app"


def create_app(project_dir: Path, *, import_root: Path | None = None, limits: Limits = Limits(),
               secrets: Secrets | None = None) -> FastAPI:
    """The app serving the project in ``project_dir``; ``secrets`` default to a fresh random token."""
    secrets = secrets or Secrets.generate()
    jobs = Jobs(project_dir)
    jobs.recover()
    project = Project(project_dir, callbacks=[jobs])
    templates = Environment(loader=PackageLoader("activelab.app", "templates"), autoescape=True)
    app = FastAPI(title="activelab", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.project, app.state.jobs, app.state.secrets = project, jobs, secrets
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")

    def page(name: str, status_code: int = 200, **context: object) -> HTMLResponse:
        body = templates.get_template(name).render(csrf=secrets.csrf, **context)
        return HTMLResponse(body, status_code=status_code)

    def answer(request: Request, message: str, status_code: int = 200, **extra: object) -> Response:
        if request.headers.get("hx-request"):
            body = templates.get_template("message.html").render(message=message, error=status_code >= 400)
            headers = {} if status_code >= 400 else {"HX-Trigger": "refresh"}
            return HTMLResponse(body, status_code=status_code, headers=headers)
        key = "error" if status_code >= 400 else "message"
        return JSONResponse({key: message, **extra}, status_code=status_code)

    @app.exception_handler(UserError)
    async def user_error(request: Request, error: UserError) -> Response:
        status_code = 409 if isinstance(error, (JobBusy, StateError)) else 400
        return answer(request, str(error), status_code)

    async def checked_form(request: Request) -> dict:
        """The submitted form's fields (files aside), after the CSRF check."""
        form = await request.form(max_files=limits.max_files + 1, max_fields=50)
        if not form_csrf_ok(request, secrets, form.get("csrf_token")):
            raise _Forbidden
        return form

    @app.exception_handler(_Forbidden)
    async def forbidden(request: Request, error: "_Forbidden") -> Response:
        return answer(request, "the CSRF token is missing or wrong; reload the page.", 403)

    # ------------------------------------------------------------------ login
    @app.get("/login")
    def login_page(request: Request, token: str | None = None) -> Response:
        if token is None:
            return page("login.html", error=None)
        if not secrets.is_token(token):
            return page("login.html", status_code=401, error="That token is not this server's; copy the URL again.")
        return _logged_in(secrets)

    @app.post("/login")
    async def login(request: Request) -> Response:
        form = await request.form(max_files=0, max_fields=5)
        if not secrets.is_token(form.get("token")):
            return page("login.html", status_code=401, error="That token is not this server's; copy the URL again.")
        return _logged_in(secrets)

    # ------------------------------------------------------------------ pages
    @app.get("/")
    def home(request: Request) -> Response:
        if not project.exists:
            return RedirectResponse("/setup", status_code=303)
        return page("dashboard.html", summary=project.summary(), job=jobs.status(), test_needed=project.test_needed(),
                    import_allowed=import_root is not None, limits=limits)

    @app.get("/summary")
    def summary_fragment(request: Request) -> Response:
        return page("summary.html", summary=project.summary(), test_needed=project.test_needed())

    @app.get("/setup")
    def setup_page(request: Request) -> Response:
        if project.exists:
            return RedirectResponse("/", status_code=303)
        return page("setup.html", models=MODELS, strategies=STRATEGIES)

    @app.post("/setup")
    async def setup(request: Request) -> Response:
        form = await checked_form(request)
        settings = settings_from_form(form)
        await run_in_threadpool(project.create, settings)
        response = answer(request, f"project {settings.name} created.")
        response.headers["HX-Redirect"] = "/"
        return response

    @app.get("/label")
    def label_page(request: Request) -> Response:
        if not project.exists:
            return RedirectResponse("/setup", status_code=303)
        summary = project.summary()
        return page("label.html", summary=summary, queue=project.queue(), classes=summary["classes"])

    @app.get("/job")
    def job_fragment(request: Request) -> Response:
        return page("job.html", job=jobs.status())

    # ------------------------------------------------------------------ images and figures
    @app.get("/images/{item}")
    def image(item: int) -> Response:
        path = project.image_path(item)
        return FileResponse(path, media_type=_MEDIA_TYPES.get(path.suffix, "application/octet-stream"),
                            headers={"Cache-Control": "private, max-age=86400"})

    @app.get("/plot.png")
    def plot() -> Response:
        return Response(project.learning_curve_png(), media_type="image/png")

    # ------------------------------------------------------------------ uploads
    @app.post("/upload")
    async def upload(request: Request) -> Response:
        form = await checked_form(request)
        files = [value for key, value in form.multi_items() if key == "files" and isinstance(value, UploadFile)]
        if not files:
            raise DataError("choose one or more image files (or a zip file) to upload.")
        if len(files) > limits.max_files:
            raise DataError(f"at most {limits.max_files} files can be uploaded at a time.")
        contents = [(upload.filename or "image", await upload.read()) for upload in files]
        accepted, rejected = await run_in_threadpool(_check_uploads, contents, limits)
        return await _store(request, accepted, rejected)

    @app.post("/import")
    async def import_(request: Request) -> Response:
        form = await checked_form(request)
        accepted, rejected = await run_in_threadpool(import_folder, import_root, str(form.get("folder") or ""), limits)
        return await _store(request, accepted, rejected)

    async def _store(request: Request, accepted: list[Upload], rejected: list[Rejected]) -> Response:
        if not accepted:
            reasons = "; ".join(f"{item.reason}" for item in rejected[:3])
            raise DataError(f"no image was added: {reasons or 'no image files were found.'}")
        ids, duplicates = await run_in_threadpool(project.add_images, accepted)
        message = f"added {ids.size} image(s)"
        if duplicates:
            message += f", {duplicates} already in the project"
        if rejected:
            message += f", {len(rejected)} refused ({rejected[0].name}: {rejected[0].reason.rstrip('.')})"
        return answer(request, message + ".", added=ids.tolist(), duplicates=duplicates,
                      rejected=[{"name": item.name, "reason": item.reason} for item in rejected])

    # ------------------------------------------------------------------ steps
    @app.post("/test/draw")
    async def draw_test(request: Request) -> Response:
        form = await checked_form(request)
        text = str(form.get("n") or project.test_needed()).strip()
        if not text.isdigit() or int(text) < 1:
            raise ConfigError(f"the number of test images must be a whole number >= 1, got {text[:20]!r}.")
        ids = await run_in_threadpool(project.run.draw_test, int(text), annotator="app")
        return answer(request, f"drew {ids.size} test image(s); label them first: the model is measured on them.",
                      ids=ids.tolist())

    @app.post("/suggest")
    async def suggest(request: Request) -> Response:
        form = await checked_form(request)
        if project.test_needed() and not project.ledger().test_ids.size:
            raise ConfigError("draw the test images first: the model's accuracy is measured on them.")
        text = str(form.get("n") or project.manifest()["batch_size"]).strip()
        if not text.isdigit() or int(text) < 1:
            raise ConfigError(f"the batch size must be a whole number >= 1, got {text[:20]!r}.")
        job = await run_in_threadpool(jobs.start_suggest, project, int(text))
        return answer(request, "started: training and choosing the next images.", status_code=202, job=job)

    @app.post("/api/label")
    def label(payload: LabelIn) -> dict:
        project.run.label([payload.id], [payload.label], annotator=_annotator(payload.annotator))
        return {"id": payload.id, "label": project.run.dataset.class_names[_class_of(project, payload.id)]}

    @app.post("/api/unlabel")
    def unlabel(payload: ItemIn) -> dict:
        project.run.unlabel([payload.id], annotator=_annotator(payload.annotator))
        return {"id": payload.id, "label": None}

    @app.post("/api/skip")
    def skip(payload: ItemIn) -> dict:
        project.run.skip([payload.id], annotator=_annotator(payload.annotator))
        return {"id": payload.id, "skipped": True}

    @app.get("/api/status")
    def status() -> dict:
        return {**project.summary(), "queue": project.queue(), "job": jobs.status()}

    @app.get("/api/job")
    def job_status() -> dict:
        return {"job": jobs.status()}

    # ------------------------------------------------------------------ exports
    @app.get("/export/labels.csv")
    def export_csv() -> Response:
        return Response(project.labels_csv(), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": 'attachment; filename="labels.csv"'})

    @app.get("/export/labels.json")
    def export_json() -> Response:
        return JSONResponse(project.labels_json(), headers={"Content-Disposition": 'attachment; filename="labels.json"'})

    @app.get("/export/label-studio.json")
    def export_label_studio() -> Response:
        return Response(json.dumps(project.label_studio_tasks(), indent=1), media_type="application/json",
                        headers={"Content-Disposition": 'attachment; filename="label-studio-tasks.json"'})

    @app.get("/export/model.pt")
    def export_model() -> Response:
        path = project.latest_weights()
        return FileResponse(path, media_type="application/octet-stream", filename=f"activelab-model-{path.stem}.pt")

    app.add_middleware(BodyLimit, max_bytes=limits.max_request_bytes)
    app.add_middleware(Guard, secrets_=secrets)  # added last, so it runs first: no body is read without a session
    return app


class _Forbidden(Exception):
    """A form without the right CSRF token."""


def _logged_in(secrets: Secrets) -> Response:
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(COOKIE, secrets.session, httponly=True, samesite="strict", path="/")
    return response


def _check_uploads(contents: list[tuple[str, bytes]], limits: Limits) -> tuple[list[Upload], list[Rejected]]:
    """Each uploaded file (or each image in an uploaded zip) checked; refused ones with their reason."""
    accepted, rejected = [], []
    for name, data in contents:
        try:
            if is_zip(data):
                images, refused = read_zip(data, name, limits)
                accepted += images
                rejected += refused
            else:
                accepted.append(check_image(data, name, limits))
        except DataError as error:
            rejected.append(Rejected(sanitise_name(name), str(error)))
    if len(accepted) > limits.max_files:
        raise DataError(f"the upload holds {len(accepted)} images, more than the limit of {limits.max_files}.")
    return accepted, rejected


def _class_of(project: Project, item: int) -> int:
    """The class index an item has now (training or test label)."""
    state = project.ledger()
    where = state.labelled_ids == item
    if where.any():
        return int(state.labelled_labels[where][0])
    return int(state.test_labels[state.test_ids == item][0])
