"""What the backend asks of Label Studio's own API: a project's annotated tasks and the images of tasks.

Label Studio 1.23 has two kinds of API key, and :class:`LabelStudioClient` takes either:

* a personal access token (the default since 1.19): a JWT refresh token. The client exchanges it for a
  short-lived access token at ``POST /api/token/refresh/`` and sends ``Authorization: Bearer ACCESS``,
  exchanging it again when Label Studio answers 401;
* a legacy token (40 hexadecimal characters, also what Label Studio hands an ML backend in ``/setup``),
  sent as ``Authorization: Token KEY``. Label Studio 1.23 refuses legacy tokens unless an administrator
  enabled them for the organisation.

Credentials go only to Label Studio's own address: a task whose image lies on another host is fetched
without them. Every failure is a :class:`LabelStudioError` whose message is one sentence.
"""

from __future__ import annotations

import json
import threading
from urllib.parse import urljoin, urlsplit

import httpx

from activelab.errors import DataError

#: Largest image file the backend downloads (bytes); larger ones are refused, not truncated.
MAX_IMAGE_BYTES = 50 * 2**20


class LabelStudioError(DataError):
    """Label Studio could not be reached, refused the credentials, or a task's image could not be fetched."""


def is_personal_access_token(key: str) -> bool:
    """True for a JWT (three dot-separated parts), the form of Label Studio's personal access tokens."""
    parts = key.split(".")
    return len(parts) == 3 and all(parts)


class LabelStudioClient:
    """A small synchronous client for one Label Studio server.

    Parameters
    ----------
    url : str
        Label Studio's address, such as ``http://localhost:8080``.
    api_key : str or None
        A personal access token or a legacy token (see the module docstring); None sends no credentials.
    timeout : float
        Seconds to wait for each request.
    """

    def __init__(self, url: str, api_key: str | None, *, timeout: float = 30.0):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise LabelStudioError(f"the Label Studio URL {url!r} is not an http(s) address such as "
                                   "http://localhost:8080.")
        self.url = url.rstrip("/") + "/"
        self._origin = (parts.scheme, parts.netloc)
        self._key = api_key or None
        self._access: str | None = None
        self._refresh_lock = threading.Lock()
        self._http = httpx.Client(timeout=timeout, follow_redirects=False)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def annotated_tasks(self, project_id: int) -> list[dict]:
        """Every task of project ``project_id`` that has at least one annotation, with its annotations.

        Uses Label Studio's JSON export (``GET /api/projects/ID/export?exportType=JSON``), which lists only
        annotated tasks unless asked for all.
        """
        body = self._get(urljoin(self.url, f"api/projects/{int(project_id)}/export"),
                         params={"exportType": "JSON"}, authorised=True, what=f"the tasks of project {project_id}")
        try:
            tasks = json.loads(body)
        except ValueError:
            raise LabelStudioError(f"Label Studio answered the export of project {project_id} with something "
                                   "that is not JSON.") from None
        if not isinstance(tasks, list):
            raise LabelStudioError(f"Label Studio's export of project {project_id} is not a list of tasks.")
        return [task for task in tasks if isinstance(task, dict)]

    def absolute(self, reference: str) -> str:
        """The full address of a task's image field (Label Studio's own paths are relative to its URL)."""
        return urljoin(self.url, reference)

    def image_bytes(self, reference: str, *, max_bytes: int = MAX_IMAGE_BYTES) -> bytes:
        """The file a task's image field points at: an http(s) URL, or a path on Label Studio such as
        ``/data/upload/1/x.png`` (fetched with the credentials)."""
        address = self.absolute(reference)
        parts = urlsplit(address)
        if parts.scheme not in ("http", "https"):
            raise LabelStudioError(f"the image {reference!r} is not an http(s) URL or a Label Studio path "
                                   "(cloud storage URLs must be served through Label Studio).")
        own = (parts.scheme, parts.netloc) == self._origin
        return self._get(address, authorised=own, what=f"the image {reference}", max_bytes=max_bytes)

    def _get(self, address: str, *, authorised: bool, what: str, params: dict | None = None,
             max_bytes: int | None = None) -> bytes:
        """GET ``address``; with ``authorised``, with the API key, asking for a fresh access token once on 401."""
        for attempt in (0, 1):
            headers = self._auth_headers(renew=attempt == 1) if authorised else {}
            try:
                with self._http.stream("GET", address, params=params, headers=headers) as response:
                    if response.status_code == 401 and authorised and attempt == 0 and self._renewable():
                        continue
                    self._check_status(response, what)
                    body = bytearray()
                    for chunk in response.iter_bytes():
                        body += chunk
                        if max_bytes is not None and len(body) > max_bytes:
                            raise LabelStudioError(f"{what} is larger than {max_bytes // 2**20} MiB.")
                    return bytes(body)
            except httpx.HTTPError as error:
                raise LabelStudioError(f"could not fetch {what} from {address} ({type(error).__name__}: "
                                       f"{error}).") from None
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _check_status(self, response: httpx.Response, what: str) -> None:
        if response.status_code == 401:
            advice = ("give the backend a personal access token (--api-key or LABEL_STUDIO_API_KEY)"
                      if self._key is None or not is_personal_access_token(self._key) else
                      "check that the personal access token is current")
            raise LabelStudioError(f"Label Studio refused the credentials for {what} (HTTP 401); {advice}.")
        if response.status_code >= 400:
            raise LabelStudioError(f"Label Studio answered HTTP {response.status_code} for {what}.")

    def _renewable(self) -> bool:
        return self._key is not None and is_personal_access_token(self._key)

    def _auth_headers(self, *, renew: bool) -> dict[str, str]:
        if self._key is None:
            return {}
        if not is_personal_access_token(self._key):
            return {"Authorization": f"Token {self._key}"}
        with self._refresh_lock:
            if self._access is None or renew:
                self._access = self._exchange()
            return {"Authorization": f"Bearer {self._access}"}

    def _exchange(self) -> str:
        """A fresh access token for the personal access token."""
        try:
            response = self._http.post(urljoin(self.url, "api/token/refresh/"), json={"refresh": self._key})
        except httpx.HTTPError as error:
            raise LabelStudioError(f"could not reach Label Studio at {self.url} ({type(error).__name__}: "
                                   f"{error}).") from None
        if response.status_code in (400, 401):
            raise LabelStudioError("Label Studio refused the personal access token (it may be revoked or "
                                   "expired); create a new one under Account & Settings.")
        self._check_status(response, "a fresh access token")
        try:
            return str(response.json()["access"])
        except (ValueError, KeyError, TypeError):
            raise LabelStudioError("Label Studio's answer to a token refresh holds no access token.") from None
