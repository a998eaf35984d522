"""Limits that keep one hostile or huge document from taking the worker (or the machine) down.

Every limit is checked *before* the expensive step it guards: the page count
before any page is rendered, a page's pixel count before it is rasterised
(the render scale is chosen to fit the budget), an image's size from its
header before it is decoded, a ZIP package's uncompressed size from its
directory before python-docx or python-pptx unpack it. A document over a
limit fails with :class:`~docstatus.errors.DocumentLimitError`.
"""

from __future__ import annotations

import importlib
import math
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from ..errors import DocumentLimitError, MissingDependencyError, UnreadableDocumentError

__all__ = ["Limits", "check_zip", "render_scale", "require"]


@dataclass(frozen=True, slots=True)
class Limits:
    """The pipeline's limits; every processor of the reference pipeline takes one.

    * ``max_pages`` — pages (PDF) or slides (PPTX) a document may have.
    * ``render_long_side`` — pixels of a rendered page's longer side (pages
      are rendered for their thumbnail and visual vector, not for print).
    * ``max_render_pixels`` — pixels one rendered page may have whatever its
      size in points; a page is scaled down to fit.
    * ``max_image_pixels`` — pixels a PNG/JPEG may declare in its header.
    * ``max_uncompressed_bytes`` / ``max_zip_entries`` — what a DOCX/PPTX
      package may unpack to (zip-bomb protection).
    * ``max_xml_bytes`` / ``max_xml_elements`` — the XML parts of a DOCX/PPTX
      (what python-docx/python-pptx parse into a tree, at about 20 bytes of
      memory per byte and 30 µs per paragraph): their uncompressed size and
      their element count, counted by streaming them before the library does.
    * ``max_text_chars`` — characters of extracted text kept per document.
    """

    max_pages: int = 2000
    render_long_side: int = 1024
    max_render_pixels: int = 4_000_000
    max_image_pixels: int = 64_000_000
    max_uncompressed_bytes: int = 512 * 1024 * 1024
    max_zip_entries: int = 20_000
    max_text_chars: int = 20_000_000
    max_xml_bytes: int = 64 * 1024 * 1024
    max_xml_elements: int = 2_000_000

    def __post_init__(self) -> None:
        for name in (
            "max_pages",
            "render_long_side",
            "max_render_pixels",
            "max_image_pixels",
            "max_uncompressed_bytes",
            "max_zip_entries",
            "max_text_chars",
            "max_xml_bytes",
            "max_xml_elements",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.render_long_side**2 > self.max_render_pixels * 4:
            raise ValueError("render_long_side is too large for max_render_pixels")

    def check_pages(self, filename: str, pages: int, unit: str = "pages") -> None:
        """:class:`DocumentLimitError` when ``pages`` is over :attr:`max_pages`."""
        if pages > self.max_pages:
            raise DocumentLimitError(filename, unit, pages, self.max_pages)


def require(module: str, package: str, extra: str = "pipeline") -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming ``package`` and the extra."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(package, extra) from None


def check_zip(path: Path, filename: str, kind: str, limits: Limits) -> None:
    """Refuse a ZIP package that is not one, or would unpack to more than the limits allow.

    Reads only the ZIP's central directory (the sizes it declares); the
    libraries that unpack it afterwards see only packages within the limits.
    """
    try:
        with zipfile.ZipFile(path) as package:
            entries = package.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise UnreadableDocumentError(filename, f"it is not a valid {kind} (a damaged ZIP package)") from exc
    if len(entries) > limits.max_zip_entries:
        raise DocumentLimitError(filename, "ZIP entries", len(entries), limits.max_zip_entries)
    total = sum(entry.file_size for entry in entries)
    if total > limits.max_uncompressed_bytes:
        raise DocumentLimitError(filename, "uncompressed bytes", total, limits.max_uncompressed_bytes)
    xml = [entry for entry in entries if entry.filename.lower().endswith(_XML_SUFFIXES)]
    xml_bytes = sum(entry.file_size for entry in xml)
    if xml_bytes > limits.max_xml_bytes:
        raise DocumentLimitError(filename, "bytes of XML", xml_bytes, limits.max_xml_bytes)
    _count_elements(path, xml, filename, kind, limits)


#: The parts of an Office package that its library parses as XML.
_XML_SUFFIXES = (".xml", ".rels")


def _count_elements(path: Path, xml: list[zipfile.ZipInfo], filename: str, kind: str, limits: Limits) -> None:
    """Refuse a package whose XML has more elements than the limit, by streaming it (seconds at most).

    An element is a ``<`` that does not start an end tag: start and empty
    tags, plus the few comments and declarations (an upper bound is enough).
    """
    elements = 0
    try:
        with zipfile.ZipFile(path) as package:
            for entry in xml:
                with package.open(entry) as part:
                    for block in iter(lambda: part.read(_READ_SIZE), b""):
                        # An end tag split between two blocks counts once too many: an upper bound.
                        elements += block.count(b"<") - block.count(b"</")
                        if elements > limits.max_xml_elements:
                            raise DocumentLimitError(
                                filename, "XML elements", elements, limits.max_xml_elements
                            )
    except (zipfile.BadZipFile, zlib.error, OSError, ValueError, EOFError) as exc:
        if isinstance(exc, DocumentLimitError):
            raise
        raise UnreadableDocumentError(filename, f"it is not a valid {kind} (a damaged ZIP package)") from exc


_READ_SIZE = 1 << 20


def render_scale(filename: str, width: float, height: float, limits: Limits) -> float:
    """The scale (pixels per unit) to render a ``width`` x ``height`` page within ``limits``.

    The longer side becomes :attr:`Limits.render_long_side` pixels, reduced
    further so the page stays within :attr:`Limits.max_render_pixels`. A page
    with no area or absurd dimensions is refused, never rendered.
    """
    if not (math.isfinite(width) and math.isfinite(height)) or width <= 0 or height <= 0:
        raise UnreadableDocumentError(filename, f"a page has an invalid size ({width:g} x {height:g})")
    scale = limits.render_long_side / max(width, height)
    area = width * height * scale * scale
    if area > limits.max_render_pixels:
        scale *= math.sqrt(limits.max_render_pixels / area)
    # A page so elongated that its short side would be under one pixel is a bomb, not a page.
    if min(width, height) * scale < 1:
        raise DocumentLimitError(
            filename, "page aspect ratio", max(width, height) / min(width, height), 10_000
        )
    return scale
