"""Who may use the labelling app, and what a request may carry.

* **Access token.** The server makes a random token when it starts (``secrets.token_urlsafe``) and prints
  the login URL with it. Every request but the login page must prove it: the session cookie, set by the
  login page, holds ``HMAC(token, "session")`` (so the cookie is not the token itself), or an
  ``Authorization: Bearer TOKEN`` header for scripts. Comparisons use :func:`hmac.compare_digest`. A
  browser without a session is sent to the login page; anything else gets 401.
* **CSRF.** Every state-changing request authenticated by the cookie carries ``HMAC(token, "csrf")``, as
  the form field ``csrf_token`` or the header ``X-CSRF-Token`` (the pages put it in both places). The cookie
  is also ``SameSite=Strict`` and ``HttpOnly``. A bearer-token request needs no CSRF token: a browser
  never adds that header on its own.
* **Request size.** :class:`BodyLimit` refuses a body longer than the limit with 413, by its declared
  length before reading it and by counting while it streams in (a chunked upload declares nothing).
* **Headers.** Every answer forbids framing, sniffing and the referrer (the login URL holds the token),
  and its Content-Security-Policy allows scripts, styles and images from the app itself only.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: The session cookie's name.
COOKIE = "activelab_session"
#: Paths that need no session: the login page (GET shows it, POST checks a token).
PUBLIC_PATHS = frozenset({"/login"})
#: The headers every answer carries.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Secrets:
    """The server's access token and the values derived from it."""

    token: str

    @classmethod
    def generate(cls) -> "Secrets":
        return cls(secrets.token_urlsafe(32))

    def _derive(self, purpose: str) -> str:
        return hmac.new(self.token.encode(), purpose.encode(), hashlib.sha256).hexdigest()

    @property
    def session(self) -> str:
        """The session cookie's value."""
        return self._derive("session")

    @property
    def csrf(self) -> str:
        """The CSRF token the pages embed."""
        return self._derive("csrf")

    def is_token(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def is_session(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.session.encode())

    def is_csrf(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.csrf.encode())


def bearer(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header, or None."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


class Guard:
    """ASGI middleware: the session or bearer token on every request but the login page, CSRF on changes,
    and the security headers on every answer."""

    def __init__(self, app: ASGIApp, secrets_: Secrets):
        self.app = app
        self.secrets = secrets_

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(name, value) for name, value in message.get("headers", [])
                           if name.decode().lower() not in {key.lower() for key in SECURITY_HEADERS}]
                headers += [(name.lower().encode(), value.encode()) for name, value in SECURITY_HEADERS.items()]
                message = {**message, "headers": headers}
            await send(message)

        refusal = self.refusal(Request(scope))
        if refusal is not None:
            await refusal(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)

    def refusal(self, request: Request) -> Response | None:
        """The answer refusing ``request``, or None when it may go on (CSRF form fields are checked by the
        route, which reads the form; here only the header is checked for non-form bodies)."""
        if request.url.path in PUBLIC_PATHS:
            return None
        if self.secrets.is_token(bearer(request)):
            return None
        if not self.secrets.is_session(request.cookies.get(COOKIE)):
            if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
                return RedirectResponse("/login", status_code=303)
            return JSONResponse({"error": "a valid access token is required; open the URL the server printed."},
                                status_code=401)
        if request.method in _SAFE_METHODS:
            return None
        if is_form(request):
            return None  # the route checks the form's csrf_token (see check_form_csrf)
        if not self.secrets.is_csrf(request.headers.get("x-csrf-token")):
            return JSONResponse({"error": "the CSRF token is missing or wrong; reload the page."}, status_code=403)
        return None


def is_form(request: Request) -> bool:
    content_type = request.headers.get("content-type", "")
    return content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded"))


def form_csrf_ok(request: Request, secrets_: Secrets, form_token: str | None) -> bool:
    """Whether a form request may change state: a bearer token, or the CSRF token in the header or form."""
    if secrets_.is_token(bearer(request)):
        return True
    return secrets_.is_csrf(request.headers.get("x-csrf-token")) or secrets_.is_csrf(form_token)


class BodyLimit:
    """ASGI middleware refusing request bodies longer than ``max_bytes`` with 413."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._too_large(scope, receive, send)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._too_large(scope, receive, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        megabytes = self.max_bytes / 2**20
        await PlainTextResponse(f"the request is larger than the limit of {megabytes:g} MB; send fewer or smaller "
                                "files at a time.", status_code=413)(scope, receive, send)


class _TooLarge(Exception):
    """Raised inside :class:`BodyLimit` when a streamed body passes the limit."""
