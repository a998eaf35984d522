"""PNG and JPEG images: one visual page each, decoded with Pillow within the limits.

``Image.open`` only reads the header, so the declared size is checked against
:attr:`Limits.max_image_pixels` before any pixel is decoded; a JPEG is then
decoded at a reduced size (``draft``) when the rendering needs no more. A
truncated or damaged image fails with a readable error. Images have no text.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..errors import DocumentLimitError, UnreadableDocumentError
from ..output.visual import PageImage
from ..worker.job import Job
from .base import PagedProcessor, PageSource
from .limits import Limits, render_scale, require

__all__ = ["ImageProcessor", "ImageSource", "open_image"]

_FORMATS = ["PNG", "JPEG"]
_PIXELS = re.compile(r"\((\d+) pixels\)")


def open_image(data_or_path: Path | Any, filename: str, limits: Limits) -> tuple[Any, tuple[int, int], str]:
    """The image at a path (or a binary file object) decoded within the limits (RGB), its size and format.

    Raises :class:`DocumentLimitError` for an image declaring more pixels than
    allowed (a decompression bomb) and :class:`UnreadableDocumentError` for
    one that is not a PNG/JPEG or is truncated.
    """
    image_module = require("PIL.Image", "Pillow")
    try:
        image = image_module.open(data_or_path, formats=_FORMATS)
    except image_module.DecompressionBombError as exc:
        # Pillow's own limit is looser than ours; report it as ours.
        found = _PIXELS.search(str(exc))
        pixels = int(found.group(1)) if found else limits.max_image_pixels + 1
        raise DocumentLimitError(filename, "image pixels", pixels, limits.max_image_pixels) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise UnreadableDocumentError(filename, "it is not a readable PNG or JPEG image") from exc
    with image:
        size, format = image.size, str(image.format)
        return _decode(image, filename, limits), size, format


def _decode(image: Any, filename: str, limits: Limits) -> Any:
    width, height = image.size
    if width * height > limits.max_image_pixels:
        raise DocumentLimitError(filename, "image pixels", width * height, limits.max_image_pixels)
    scale = render_scale(filename, width, height, limits)
    if image.format == "JPEG" and scale < 1:
        # Decode at 1/2, 1/4 or 1/8 size directly: faster, and less memory.
        image.draft("RGB", (max(1, int(width * scale)), max(1, int(height * scale))))
    try:
        image.load()
        rgb = image.convert("RGB")
    except (OSError, ValueError, SyntaxError) as exc:
        raise UnreadableDocumentError(filename, "the image is damaged or truncated") from exc
    if scale < 1:
        rgb = rgb.resize((max(1, round(width * scale)), max(1, round(height * scale))))
    return rgb


class ImageSource:
    """A PNG or JPEG as a one-page document (see :class:`~docstatus.formats.base.PageSource`)."""

    def __init__(self, path: Path, filename: str, limits: Limits) -> None:
        self._image, self._size, self._format = open_image(path, filename, limits)

    @property
    def total_pages(self) -> int:
        """Always 1."""
        return 1

    @property
    def metadata(self) -> dict[str, Any]:
        """The image's format (by content) and its size in pixels."""
        return {"image_format": self._format.lower(), "width": self._size[0], "height": self._size[1]}

    def page(self, index: int) -> PageImage:
        """The image, scaled within the limits, without text."""
        return PageImage(self._image, "", float(self._size[0]), float(self._size[1]))

    def close(self) -> None:
        """Nothing to release (the image is in memory)."""


class ImageProcessor(PagedProcessor):
    """Processes PNG and JPEG images: one page, a thumbnail and a visual vector, no text."""

    def open_pages(self, job: Job) -> PageSource:
        """The decoded image, or an error saying why it cannot be used."""
        return ImageSource(job.path, job.filename, self.limits)
