"""The app-project source: the images a person uploaded to a labelling-app project (``activelab serve``).

A project folder (``--data-dir``) holds ``project.json`` (the manifest) and ``images/``. The manifest
keeps the project's settings (name, class names, image size, colour) and one entry per image in the order
the images were added: the stored file name (the SHA-256 of its bytes and the extension of its decoded
format, so a file is stored once and its name is never the uploader's) and the original name (sanitised,
for people and exports). An image's position in that list is its id, so ids are stable and new images
only ever get new ids: the dataset is *appendable* (see :mod:`activelab.run`), and a run's ledger puts
new images into its unlabelled pool. Labels do not live here but in the run's ledger (every item is
unlabelled for the source), so labelling never changes the dataset's fingerprint.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from activelab.data.base import UNLABELLED
from activelab.data.images import ImageFileDataset, image_preprocess
from activelab.data.options import check_options, given_path, required_path
from activelab.data.sources import Source, register_source
from activelab.errors import DataError

#: The manifest's file name inside a project folder, its format name and version.
MANIFEST = "project.json"
FORMAT = "activelab.app-project"
VERSION = 1
#: The folder of the stored images inside a project folder.
IMAGES = "images"


def read_manifest(project_dir: Path) -> dict:
    """The manifest of the project in ``project_dir``, checked for its format; DataError otherwise."""
    path = Path(project_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{project_dir} is not a labelling-app project (no {MANIFEST}).") from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise DataError(f"{path} is not a readable project manifest ({error}).") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{path} is not an activelab project manifest.")
    if manifest.get("version") != VERSION:
        raise DataError(f"{path} has project format version {manifest.get('version')}, this activelab reads "
                        f"version {VERSION}.")
    return manifest


class ProjectImages(ImageFileDataset):
    """A project's images: an :class:`ImageFileDataset` that can grow (``appendable``).

    ``names`` are the original (sanitised) file names, ``key(i)`` the stored name of item ``i``.
    """

    appendable = True

    def __init__(self, project_dir: Path, manifest: dict):
        items = manifest["items"]
        self.stored = [item["file"] for item in items]
        self.names = [item["name"] for item in items]
        grayscale = bool(manifest["grayscale"])
        size = int(manifest["size"])
        super().__init__("app-project", Path(project_dir) / IMAGES, self.stored,
                         np.full(len(items), UNLABELLED, dtype=np.int64), manifest["classes"],
                         image_preprocess((size, size), grayscale), grayscale=grayscale)

    def fingerprint(self, n_items: int | None = None) -> str:
        """A digest of the source, classes, input shape and the first ``n_items`` stored names (default all).

        A ledger that knew ``n`` items checks ``fingerprint(n)``: images added since do not change it,
        images replaced or removed do.
        """
        n_items = len(self) if n_items is None else int(n_items)
        digest = hashlib.sha256(f"{self.name}|{'/'.join(self.class_names)}|{self.input_shape}|{n_items}".encode())
        for name in self.stored[:n_items]:
            digest.update(name.encode() + b"\n")
        return digest.hexdigest()[:16]


def load(data_dir: Path | None = None, **options: Any) -> ProjectImages:
    """The images of the project folder ``data_dir`` (no options: the settings are in its manifest)."""
    check_options("app-project", options, ())
    path = required_path(data_dir, "app-project", "a labelling-app project folder (activelab serve --project DIR)")
    manifest = read_manifest(path)
    try:
        return ProjectImages(path, manifest)
    except (KeyError, TypeError, ValueError) as error:
        raise DataError(f"{path / MANIFEST} is missing or has a malformed field ({error}).") from None


register_source(Source(
    name="app-project", description="the images uploaded to a labelling-app project (activelab serve)",
    load=load, locate=given_path, classes=None, size="any", options=()))
