"""What the labelling app accepts as an image, and from where.

An upload is trusted by nothing it claims: not its name, not its extension, not its content type. Its
bytes must decode with Pillow as one of :data:`FORMATS` (``Image.verify`` checks the structure, a full
``load`` checks every pixel, and the pixel count is bounded before decoding, against decompression
bombs). The stored name is the SHA-256 of the bytes plus the extension of the decoded format, so the
uploader's name never becomes a path; it is only kept, sanitised (:func:`sanitise_name`), for people.

Images arrive as files of a multipart upload, as the members of a zip file (only regular members, names
reduced to their last part, sizes bounded both as declared and as read, so a zip bomb stops at the
limit) or from a folder on the server under the ``--import-root`` folder (:func:`import_folder`: the
folder and every file are resolved, symbolic links included, and must lie inside the root).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import unicodedata
import zipfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from activelab.errors import DataError

#: Pillow formats accepted, with the extension their stored file gets.
FORMATS = {"PNG": ".png", "JPEG": ".jpg", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif", "WEBP": ".webp"}
#: File name endings looked at in a zip file or an imported folder (the bytes decide in the end).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp"})
_NAME_LIMIT = 120
_UNSAFE = re.compile(r"[^\w.()+ -]+")


@dataclass(frozen=True)
class Limits:
    """Upload limits: bytes per image file, files per request (a zip's images count), bytes per request,
    pixels per image, bytes of a zip's content, images per folder import."""

    max_file_bytes: int = 20 * 2**20
    max_files: int = 1000
    max_request_bytes: int = 256 * 2**20
    max_pixels: int = 50_000_000
    max_zip_bytes: int = 1024 * 2**20
    max_import_files: int = 20_000


@dataclass(frozen=True)
class Upload:
    """An accepted image: its bytes, the stored name (hash + format extension) and the sanitised name."""

    data: bytes
    stored: str
    name: str


@dataclass(frozen=True)
class Rejected:
    """A file that was not taken, and why (one sentence)."""

    name: str
    reason: str


def sanitise_name(name: str) -> str:
    """A file name safe to show and export: the last part of ``name`` (``/`` or ``\\``), NFC, without
    control or unusual characters, no leading dots, at most 120 characters; ``image`` if nothing is left."""
    last = re.split(r"[/\\]", str(name))[-1]
    text = unicodedata.normalize("NFC", last)
    text = "".join(character for character in text if unicodedata.category(character)[0] != "C")
    text = _UNSAFE.sub("_", text).strip().lstrip(".")
    if len(text) > _NAME_LIMIT:
        stem, suffix = os.path.splitext(text)
        text = stem[:_NAME_LIMIT - len(suffix[:10])] + suffix[:10]
    return text or "image"


def check_image(data: bytes, name: str, limits: Limits) -> Upload:
    """``data`` as an accepted image; DataError of one sentence naming the file otherwise."""
    shown = sanitise_name(name)
    if len(data) > limits.max_file_bytes:
        raise DataError(f"{shown} is larger than the limit of {limits.max_file_bytes / 2**20:g} MB per image.")
    try:
        with Image.open(io.BytesIO(data)) as image:
            kind = image.format
            if kind not in FORMATS:
                raise DataError(f"{shown} is a {kind} image; upload PNG, JPEG, GIF, BMP, TIFF or WebP.")
            if image.width * image.height > limits.max_pixels:
                raise DataError(f"{shown} has {image.width}x{image.height} pixels, more than the limit of "
                                f"{limits.max_pixels}.")
            image.verify()
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except DataError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, EOFError):
        raise DataError(f"{shown} is not an image (its content does not decode as PNG, JPEG, GIF, BMP, TIFF or "
                        "WebP).") from None
    return Upload(data, hashlib.sha256(data).hexdigest() + FORMATS[kind], shown)


def is_zip(data: bytes) -> bool:
    return data[:4] == b"PK\x03\x04"


def read_zip(data: bytes, name: str, limits: Limits) -> tuple[list[Upload], list[Rejected]]:
    """The images in zip file ``data``; members that are not images are listed as rejected."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise DataError(f"{sanitise_name(name)} is not a readable zip file.") from None
    accepted, rejected, total = [], [], 0
    with archive:
        members = [info for info in archive.infolist() if not info.is_dir()]
        wanted = [info for info in members if Path(info.filename).suffix.lower() in IMAGE_SUFFIXES]
        if len(wanted) > limits.max_files:
            raise DataError(f"{sanitise_name(name)} holds {len(wanted)} images, more than the limit of "
                            f"{limits.max_files} per upload.")
        rejected += [Rejected(sanitise_name(info.filename), "not an image file name") for info in members
                     if info not in wanted]
        for info in wanted:
            member = sanitise_name(info.filename)
            if info.file_size > limits.max_file_bytes:
                rejected.append(Rejected(member, f"larger than the limit of {limits.max_file_bytes / 2**20:g} MB"))
                continue
            try:
                with archive.open(info) as handle:
                    content = handle.read(limits.max_file_bytes + 1)
            except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError) as error:
                rejected.append(Rejected(member, f"cannot be read from the zip file ({error})"))
                continue
            total += len(content)
            if total > limits.max_zip_bytes:
                raise DataError(f"{sanitise_name(name)} unpacks to more than {limits.max_zip_bytes / 2**20:g} MB.")
            try:
                accepted.append(check_image(content, member, limits))
            except DataError as error:
                rejected.append(Rejected(member, str(error)))
    return accepted, rejected


def resolve_import(root: Path | None, folder: str) -> Path:
    """The folder ``folder`` (relative to ``root``, or absolute inside it), which must lie inside ``root``."""
    if root is None:
        raise DataError("folder import is off; start the server with --import-root DIR to allow it.")
    base = Path(root).resolve()
    target = (base / folder).resolve()
    if not target.is_relative_to(base):
        raise DataError(f"the folder {sanitise_name(folder)!r} is outside the import root; give a folder inside it.")
    if not target.is_dir():
        raise DataError(f"there is no folder {str(target.relative_to(base)) or '.'!r} in the import root.")
    return target


def import_folder(root: Path | None, folder: str, limits: Limits) -> tuple[list[Upload], list[Rejected]]:
    """The images in ``folder`` under ``root`` and its subfolders; symbolic links that lead outside the root
    and files that are not images are rejected."""
    base = Path(root).resolve() if root is not None else None
    target = resolve_import(root, folder)
    accepted, rejected = [], []
    for directory, subfolders, files in os.walk(target):
        subfolders.sort()
        for file_name in sorted(files):
            path = Path(directory) / file_name
            shown = str(path.relative_to(target))
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            real = path.resolve()
            if not real.is_relative_to(base) or not real.is_file():
                rejected.append(Rejected(sanitise_name(shown), "a link that leads outside the import root"))
                continue
            if len(accepted) >= limits.max_import_files:
                raise DataError(f"the folder holds more than {limits.max_import_files} images; import it in parts.")
            if real.stat().st_size > limits.max_file_bytes:
                rejected.append(Rejected(sanitise_name(shown),
                                         f"larger than the limit of {limits.max_file_bytes / 2**20:g} MB"))
                continue
            try:
                accepted.append(check_image(real.read_bytes(), file_name, limits))
            except (DataError, OSError) as error:
                rejected.append(Rejected(sanitise_name(shown), str(error)))
    return accepted, rejected
