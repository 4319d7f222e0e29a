"""Contact sheets: a batch's images on one PNG, a grid of captioned thumbnails, to look at before labelling.

Images come from ``Dataset.load`` already normalised, and how to undo the normalisation is the source's
business, so each image is stretched to 0..255 by its own minimum and maximum for display, channel by
channel: normalisation is an affine map per channel, which this undoes up to contrast, so a grey picture
normalised with RGB statistics comes back grey rather than tinted (a constant channel shows mid-grey).
One channel is shown grey, three or more as RGB from the first three, two as the first. Thumbnails
keep the aspect ratio with the longer side ``thumb`` pixels: small images (28x28) are enlarged without
smoothing, so their real pixels stay visible; large ones are reduced with Lanczos. Each cell is
captioned with the item's rank and id, and the model's guess with its confidence.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

if TYPE_CHECKING:
    from activelab.data.base import Dataset
    from activelab.run import Batch

#: Longer side of a thumbnail, in pixels.
THUMB = 96
#: Most thumbnails per row.
COLUMNS = 10
#: Space around a thumbnail and between caption lines, in pixels.
PAD = 4
#: Caption lines under each thumbnail.
CAPTION_LINES = 2
#: Images decoded at a time.
LOAD_CHUNK = 64
_BACKGROUND, _FRAME, _INK = (255, 255, 255), (235, 235, 235), (0, 0, 0)


def display_pixels(images: np.ndarray) -> list[np.ndarray]:
    """uint8 pixels per image of ``images`` ``[B, C, H, W]``: ``[H, W]`` (grey) or ``[H, W, 3]`` (RGB),
    each channel of each image stretched to 0..255 by its own minimum and maximum."""
    images = np.nan_to_num(np.asarray(images, dtype=np.float64))
    if images.ndim != 4:
        raise ValueError(f"expected images [B, C, H, W], got shape {images.shape}")
    shown = []
    for image in images:
        channels = image[:3] if image.shape[0] >= 3 else image[:1]
        low = channels.min(axis=(1, 2), keepdims=True)
        spread = channels.max(axis=(1, 2), keepdims=True) - low
        stretched = np.where(spread > 0, (channels - low) * (255.0 / np.where(spread > 0, spread, 1.0)), 128.0)
        picture = np.moveaxis(stretched, 0, -1) if stretched.shape[0] == 3 else stretched[0]
        shown.append(np.clip(np.rint(picture), 0, 255).astype(np.uint8))
    return shown


def thumbnail(pixels: np.ndarray, thumb: int = THUMB) -> Image.Image:
    """An RGB image of ``pixels`` whose longer side is ``thumb`` pixels."""
    image = Image.fromarray(pixels).convert("RGB")
    scale = thumb / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    resample = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.LANCZOS
    return image.resize(size, resample)


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default()


def _line_height(font) -> int:
    left, top, right, bottom = font.getbbox("Ag")
    return int(bottom) + 2


def cell_size(thumb: int = THUMB) -> tuple[int, int]:
    """Width and height of one captioned cell of the grid."""
    return thumb + 2 * PAD, thumb + 2 * PAD + CAPTION_LINES * _line_height(_font()) + PAD


def sheet_size(count: int, *, thumb: int = THUMB, columns: int = COLUMNS) -> tuple[int, int]:
    """Width and height in pixels of the contact sheet of ``count`` images."""
    width, height = cell_size(thumb)
    used = min(count, columns)
    return used * width, -(-count // columns) * height


def _fitted(text: str, font, width: int) -> str:
    """``text``, cut short with '..' when it is wider than ``width`` pixels."""
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "..") > width:
        text = text[:-1]
    return text + ".."


def contact_sheet(images: np.ndarray | Sequence[np.ndarray], captions: Sequence[Sequence[str]], *,
                  thumb: int = THUMB, columns: int = COLUMNS) -> Image.Image:
    """A grid of ``images`` (``[B, C, H, W]``, any scale) with up to :data:`CAPTION_LINES` caption lines each."""
    pixels = display_pixels(np.asarray(images))
    if len(pixels) != len(captions):
        raise ValueError(f"got {len(pixels)} images but {len(captions)} captions")
    if not pixels:
        raise ValueError("a contact sheet needs at least one image")
    font = _font()
    line = _line_height(font)
    width, height = cell_size(thumb)
    sheet = Image.new("RGB", sheet_size(len(pixels), thumb=thumb, columns=columns), _BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for index, (picture, caption) in enumerate(zip(pixels, captions)):
        left, top = (index % columns) * width, (index // columns) * height
        draw.rectangle([left + PAD - 1, top + PAD - 1, left + PAD + thumb, top + PAD + thumb], fill=_FRAME)
        small = thumbnail(picture, thumb)
        sheet.paste(small, (left + PAD + (thumb - small.width) // 2, top + PAD + (thumb - small.height) // 2))
        for number, text in enumerate(list(caption)[:CAPTION_LINES]):
            draw.text((left + PAD, top + 2 * PAD + thumb + number * line), _fitted(text, font, width - 2 * PAD),
                      fill=_INK, font=font)
    return sheet


def batch_captions(batch: Batch) -> list[tuple[str, str]]:
    """Two caption lines per item: rank and id; the model's guess and confidence (or that there is none)."""
    captions = []
    for row in batch.to_rows():
        guess = "no model yet" if row["guess"] is None else f"{row['guess']} {100 * row['confidence']:.0f}%"
        captions.append((f"#{row['rank']}  id {row['id']}", guess))
    return captions


def batch_sheet(batch: Batch, dataset: Dataset, *, thumb: int = THUMB, columns: int = COLUMNS) -> Image.Image:
    """The contact sheet of ``batch``'s images, decoded from ``dataset`` :data:`LOAD_CHUNK` at a time."""
    chunks = [dataset.load(batch.ids[start:start + LOAD_CHUNK]).detach().cpu().numpy()
              for start in range(0, len(batch), LOAD_CHUNK)]
    return contact_sheet(np.concatenate(chunks), batch_captions(batch), thumb=thumb, columns=columns)


def png_bytes(image: Image.Image) -> bytes:
    """``image`` encoded as PNG."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


__all__ = ["COLUMNS", "THUMB", "batch_captions", "batch_sheet", "cell_size", "contact_sheet", "display_pixels",
           "png_bytes", "sheet_size", "thumbnail"]
