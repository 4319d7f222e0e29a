"""``activelab serve``: run the labelling app with uvicorn and print the URL that logs in.

The server binds to 127.0.0.1 unless told otherwise; binding to any other address prints a warning on
standard error (the app speaks plain HTTP, so anyone on the path can read the token). The access token is
new at every start; the URL printed on standard output carries it (``/login?token=...``), and the login
page sets the session cookie and forgets the token from the address bar.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from activelab.app.security import Secrets
from activelab.app.uploads import Limits
from activelab.errors import ConfigError
from activelab.serving import check_port_free, http_url, is_loopback

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


def login_url(host: str, port: int, token: str) -> str:
    return http_url(host, port, f"/login?token={token}")


def serve(project: Path, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, import_root: Path | None = None,
          limits: Limits = Limits()) -> None:
    """Serve the project folder ``project`` until interrupted (it is created when missing)."""
    import uvicorn

    from activelab.app.web import create_app

    check_port_free(host, port)
    project = Path(project)
    if project.exists() and not project.is_dir():
        raise ConfigError(f"--project {project} exists and is not a folder.")
    if import_root is not None and not Path(import_root).is_dir():
        raise ConfigError(f"--import-root {import_root} is not a folder.")
    try:
        project.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"cannot create the project folder {project} ({error.strerror}).") from None
    secrets = Secrets.generate()
    app = create_app(project, import_root=import_root, limits=limits, secrets=secrets)
    if not is_loopback(host):
        print(f"activelab: warning: serving on {host}, reachable from other machines; the connection is plain "
              "HTTP, so anyone on the network path can read the token. Bind to 127.0.0.1 (the default) unless "
              "you need this.", file=sys.stderr)
    print(f"activelab serve: project {project.resolve()}", flush=True)
    print(f"open {login_url(host if host not in ('0.0.0.0', '::') else DEFAULT_HOST, port, secrets.token)}",
          flush=True)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)  # the access log would print the token
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
