"""The visual stage: a rendered page becomes a thumbnail and a visual vector.

The default :class:`PerceptualDescriptor` is a *perceptual descriptor*, not a
semantic embedding: it captures how a page looks (layout of light and dark,
colours), so near-identical pages (a scan and its re-scan, repeated slides)
have nearby vectors, while pages about the same topic need not. It needs only
Pillow and no model. Plug in a real model (e.g. CLIP) through the
:class:`VisualEmbedder` protocol::

    class ClipEmbedder:
        dimension = 512
        def embed_image(self, image):          # a PIL.Image.Image in RGB
            return model.encode(image).tolist()

    PdfProcessor(visual_embedder=ClipEmbedder())
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from .embedding import normalise

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = [
    "PageImage",
    "PerceptualDescriptor",
    "VisualEmbedder",
    "VisualResult",
    "make_thumbnail",
    "visual_result",
]

#: Longest side of a stored thumbnail, in pixels.
THUMBNAIL_SIDE = 256
_GRID = 16
_BINS = 4  # per colour channel: 4 x 4 x 4 joint histogram


@runtime_checkable
class VisualEmbedder(Protocol):
    """Turns a rendered page (a PIL image in RGB) into ``dimension`` floats. Must be thread-safe."""

    @property
    def dimension(self) -> int:
        """The length of every vector :meth:`embed_image` returns."""
        ...

    def embed_image(self, image: Image) -> Sequence[float]:
        """The vector of ``image``."""
        ...


class PerceptualDescriptor:
    """A 320-float perceptual descriptor of a page image (see the module docstring).

    The first 256 values are the page downscaled to 16 x 16 grey levels,
    centred on their mean (layout: where the ink is); the last 64 are a
    joint 4 x 4 x 4 RGB histogram of a 32 x 32 downscale (colour). Each part
    is L2-normalised, then the whole, so the dot product of two descriptors
    is their cosine similarity. Deterministic; Pillow only.
    """

    dimension = _GRID * _GRID + _BINS**3

    def embed_image(self, image: Image) -> list[float]:
        """The descriptor of ``image`` (any mode; converted as needed)."""
        from PIL import Image as PILImage

        rgb = image if image.mode == "RGB" else image.convert("RGB")
        grey = rgb.convert("L").resize((_GRID, _GRID), PILImage.Resampling.BOX)
        levels = list(grey.tobytes())
        mean = sum(levels) / len(levels)
        layout = normalise([v - mean for v in levels])
        small = rgb.resize((32, 32), PILImage.Resampling.BOX).tobytes()
        histogram = [0.0] * _BINS**3
        step = 256 // _BINS
        for i in range(0, len(small), 3):
            r, g, b = small[i] // step, small[i + 1] // step, small[i + 2] // step
            histogram[(r * _BINS + g) * _BINS + b] += 1.0
        return normalise(layout + normalise(histogram))

    def __repr__(self) -> str:
        return "PerceptualDescriptor()"


@dataclass(frozen=True, slots=True)
class PageImage:
    """One page of a document: its rendering, its extracted text and its size in its own units."""

    image: Image
    text: str
    width: float
    height: float


@dataclass(frozen=True, slots=True)
class VisualResult:
    """What the visual stage keeps of one page: a thumbnail (encoded) and the page's vector."""

    thumbnail: bytes
    media_type: str
    vector: list[float]
    pixels: tuple[int, int]


def make_thumbnail(image: Image, side: int = THUMBNAIL_SIDE) -> tuple[bytes, str]:
    """``image`` scaled to fit ``side`` pixels, encoded as JPEG; returns the bytes and media type."""
    from PIL import Image as PILImage

    thumb = image if image.mode == "RGB" else image.convert("RGB")
    thumb = thumb.copy()
    thumb.thumbnail((side, side), PILImage.Resampling.LANCZOS)
    buffer = io.BytesIO()
    thumb.save(buffer, format="JPEG", quality=80, optimize=True)
    return buffer.getvalue(), "image/jpeg"


def visual_result(image: Image, embedder: VisualEmbedder) -> VisualResult:
    """The thumbnail and vector of one rendered page."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    thumbnail, media_type = make_thumbnail(rgb)
    vector = [float(x) for x in embedder.embed_image(rgb)]
    if len(vector) != embedder.dimension:
        raise ValueError(
            f"{embedder!r} returned {len(vector)} values, not its dimension {embedder.dimension}"
        )
    return VisualResult(thumbnail, media_type, vector, rgb.size)
