"""The labelling app: a person uploads images, labels a test set and a first batch, and the model asks
for the labels that matter (``activelab serve --project DIR``).

* :mod:`activelab.app.project` -- the project folder: images stored by content hash, the manifest, the
  step-wise Run (ledger and results store), what the pages show and the exports;
* :mod:`activelab.app.uploads` -- what counts as an image and where it may come from (limits, Pillow
  decoding, sanitised names, zip files, folder import under ``--import-root``);
* :mod:`activelab.app.jobs` -- training and selection in a background thread, with progress, and a job
  a stopped server left running marked failed at the next start;
* :mod:`activelab.app.security` -- the access token, session cookie, CSRF token, body limit, headers;
* :mod:`activelab.app.web` -- the FastAPI routes, Jinja2 pages (autoescaped) and the JSON API;
* :mod:`activelab.app.server` -- ``activelab serve``: the URL with its token, the bind address.

Concurrency: every change is a step of the Run, which serialises the threads of the server on the run
directory and holds the OS-level run lock for cross-process safety; labels go in while a model trains
(training holds no lock). Two tabs labelling one item: the later label wins and the history keeps both.
"""

from activelab.app.web import create_app

__all__ = ["create_app"]
