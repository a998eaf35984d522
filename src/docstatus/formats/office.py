"""Word (DOCX, with python-docx) and PowerPoint (PPTX, with python-pptx) documents.

Both are ZIP packages: their directory is checked against the limits
(:func:`~docstatus.formats.limits.check_zip`) before the library unpacks
anything. A DOCX is text: headings become Markdown headings (so chunks follow
sections), list items ``-`` lines and tables ``|``-separated rows. A PPTX is
visual, one page per slide: its text (title as a heading, text frames,
tables, notes) is extracted and the slide is drawn with Pillow as a
*schematic rendering* — background, pictures in their frames, filled shapes
and text at its place — which is what its thumbnail and visual vector show.
It is not a faithful rendering like LibreOffice's (no theme fonts, effects or
charts); plug in your own renderer by subclassing :class:`PptxProcessor`.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import UnreadableDocumentError
from ..output.visual import PageImage
from ..worker.job import Job, Reporter
from .base import ExtractedText, PagedProcessor, PageSource, TextDocumentProcessor
from .images import open_image
from .limits import Limits, check_zip, render_scale, require

__all__ = ["DocxProcessor", "PptxProcessor", "PptxSource", "docx_text"]

# Exceptions the libraries raise for packages that are ZIPs but not valid documents.
_BROKEN = (KeyError, ValueError, AttributeError, TypeError, IndexError, OSError, SyntaxError)

# -- DOCX ---------------------------------------------------------------------------------------


def _heading_level(style_name: str) -> int:
    if style_name == "Title":
        return 1
    if style_name.startswith("Heading "):
        level = style_name.removeprefix("Heading ").strip()
        if level.isdigit():
            return min(6, max(1, int(level)))
    return 0


class _StyleNames:
    """Paragraph style names by style id, looked up once per document.

    python-docx's ``paragraph.style`` searches the styles part on every call
    (about a millisecond): 200,000 paragraphs took minutes. The id is read
    from the paragraph's XML element instead, and each id resolved once.
    """

    def __init__(self, document: Any) -> None:
        self._styles = document.styles
        self._names: dict[str | None, str] = {}

    def of(self, paragraph: Any) -> str:
        style_id = paragraph._p.style  # the w:pStyle value; None: the default style
        name = self._names.get(style_id)
        if name is None:
            style = paragraph.style
            name = self._names[style_id] = (style.name or "") if style is not None else ""
        return name


def _paragraph_line(paragraph: Any, styles: _StyleNames) -> str:
    text = " ".join(paragraph.text.split())
    if not text:
        return ""
    style = styles.of(paragraph)
    level = _heading_level(style or "")
    if level:
        return "#" * level + " " + text
    if "List" in (style or ""):
        return "- " + text
    return text


def _table_lines(table: Any) -> Iterator[str]:
    for row in table.rows:
        cells: list[str] = []
        for cell in row.cells:
            text = " ".join(cell.text.split())
            if not cells or cells[-1] != text:  # merged cells repeat their text
                cells.append(text)
        if any(cells):
            yield " | ".join(cells)


def docx_text(document: Any, reporter: Reporter | None = None) -> str:
    """The Markdown-like text of a python-docx ``Document``, body in order (paragraphs and tables)."""
    blocks: list[str] = []
    styles = _StyleNames(document)
    for item in document.iter_inner_content():
        if reporter is not None:
            reporter.check()
        if hasattr(item, "rows"):
            blocks.append("\n".join(_table_lines(item)))
        else:
            blocks.append(_paragraph_line(item, styles))
    return "\n\n".join(b for b in blocks if b)


class DocxProcessor(TextDocumentProcessor):
    """Processes Word documents (DOCX); see the module docstring."""

    def extract(self, job: Job, reporter: Reporter) -> ExtractedText:
        """The document's text, after the package passed the ZIP limits."""
        docx = require("docx", "python-docx")
        missing = require("docx.opc.exceptions", "python-docx").PackageNotFoundError
        check_zip(job.path, job.filename, "Word document", self.limits)
        try:
            document = docx.Document(str(job.path))
        except (*_BROKEN, missing) as exc:
            raise UnreadableDocumentError(job.filename, _not_office("Word document (DOCX)")) from exc
        text = docx_text(document, reporter)
        metadata: dict[str, Any] = {"paragraphs": len(document.paragraphs), "tables": len(document.tables)}
        title = (document.core_properties.title or "").strip()
        if title:
            metadata["title"] = title[:500]
        return ExtractedText(text, metadata)


def _not_office(kind: str) -> str:
    # The library's own error (a missing ZIP member...) stays the exception's cause, for the log.
    return f"it is not a valid {kind} (it may be damaged, or another kind of file)"


# -- PPTX ---------------------------------------------------------------------------------------


def _shapes(shapes: Any) -> Iterator[Any]:
    """Every shape, group members included, in drawing order."""
    for shape in shapes:
        if getattr(shape, "shape_type", None) == 6:  # MSO_SHAPE_TYPE.GROUP
            yield from _shapes(shape.shapes)
        else:
            yield shape


def _shape_text(shape: Any) -> str:
    if getattr(shape, "has_text_frame", False):
        return "\n".join(" ".join(p.text.split()) for p in shape.text_frame.paragraphs if p.text.strip())
    if getattr(shape, "has_table", False):
        return "\n".join(_table_lines(shape.table))
    return ""


def slide_text(slide: Any) -> str:
    """A slide's text: the title as a heading, then every other shape's text, then the notes."""
    title_shape = slide.shapes.title
    blocks: list[str] = []
    if title_shape is not None and title_shape.has_text_frame and title_shape.text_frame.text.strip():
        blocks.append("# " + " ".join(title_shape.text_frame.text.split()))
    for shape in _shapes(slide.shapes):
        if title_shape is not None and shape.shape_id == title_shape.shape_id:
            continue
        text = _shape_text(shape)
        if text:
            blocks.append(text)
    if slide.has_notes_slide:
        notes = slide.notes_slide.notes_text_frame
        if notes is not None and notes.text.strip():
            blocks.append("Notes: " + " ".join(notes.text.split()))
    return "\n\n".join(blocks)


class _SlideRenderer:
    """Draws a schematic rendering of one slide with Pillow (see the module docstring)."""

    def __init__(self, filename: str, width: int, height: int, limits: Limits) -> None:
        self.image_module = require("PIL.Image", "Pillow")
        self.draw_module = require("PIL.ImageDraw", "Pillow")
        self.font_module = require("PIL.ImageFont", "Pillow")
        self.filename = filename
        self.limits = limits
        self.scale = render_scale(filename, width, height, limits)
        self.size = (max(1, round(width * self.scale)), max(1, round(height * self.scale)))

    def render(self, slide: Any) -> Any:
        canvas = self.image_module.new("RGB", self.size, _background(slide))
        draw = self.draw_module.Draw(canvas)
        for shape in _shapes(slide.shapes):
            box = self._box(shape)
            if box is not None:
                self._draw_shape(canvas, draw, shape, box)
        return canvas

    def _box(self, shape: Any) -> tuple[int, int, int, int] | None:
        try:
            left, top, width, height = shape.left, shape.top, shape.width, shape.height
        except _BROKEN:
            return None
        if None in (left, top, width, height) or width <= 0 or height <= 0:
            return None
        s = self.scale
        return round(left * s), round(top * s), round((left + width) * s), round((top + height) * s)

    def _draw_shape(self, canvas: Any, draw: Any, shape: Any, box: tuple[int, int, int, int]) -> None:
        fill = _solid_fill(shape)
        if fill is not None:
            draw.rectangle(box, fill=fill)
        if getattr(shape, "shape_type", None) == 13:  # MSO_SHAPE_TYPE.PICTURE
            self._paste_picture(canvas, draw, shape, box)
        text = _shape_text(shape)
        if text:
            self._draw_text(draw, text, box)

    def _paste_picture(self, canvas: Any, draw: Any, shape: Any, box: tuple[int, int, int, int]) -> None:
        try:
            picture, _, _ = open_image(io.BytesIO(shape.image.blob), self.filename, self.limits)
        except (UnreadableDocumentError, *_BROKEN):
            draw.rectangle(box, outline=(128, 128, 128))  # a picture we cannot decode: its frame
            return
        size = (max(1, box[2] - box[0]), max(1, box[3] - box[1]))
        canvas.paste(picture.resize(size), box[:2])

    def _draw_text(self, draw: Any, text: str, box: tuple[int, int, int, int]) -> None:
        size = max(6, min(48, (box[3] - box[1]) // max(1, text.count("\n") + 1) - 2, self.size[1] // 24))
        font = self.font_module.load_default(size=size)
        lines = text.split("\n")[: max(1, (box[3] - box[1]) // size)]
        draw.multiline_text(
            (box[0] + 2, box[1] + 1), "\n".join(line[:200] for line in lines), fill=(0, 0, 0), font=font
        )


def _background(slide: Any) -> tuple[int, int, int]:
    try:
        fill = slide.background.fill
        if fill.type == 1:  # MSO_FILL.SOLID
            rgb = fill.fore_color.rgb
            return int(rgb[0]), int(rgb[1]), int(rgb[2])
    except _BROKEN:
        pass
    return (255, 255, 255)


def _solid_fill(shape: Any) -> tuple[int, int, int] | None:
    try:
        fill = shape.fill
        if fill.type == 1:  # MSO_FILL.SOLID
            rgb = fill.fore_color.rgb
            return int(rgb[0]), int(rgb[1]), int(rgb[2])
    except _BROKEN:
        pass
    return None


class PptxSource:
    """An opened presentation, one page per slide (see :class:`~docstatus.formats.base.PageSource`)."""

    def __init__(self, path: Path, filename: str, limits: Limits) -> None:
        pptx = require("pptx", "python-pptx")
        missing = require("pptx.exc", "python-pptx").PackageNotFoundError
        check_zip(path, filename, "PowerPoint presentation", limits)
        try:
            self._presentation = pptx.Presentation(str(path))
            self._slides = list(self._presentation.slides)
        except (*_BROKEN, missing) as exc:
            raise UnreadableDocumentError(filename, _not_office("PowerPoint presentation (PPTX)")) from exc
        limits.check_pages(filename, len(self._slides), "slides")
        width = int(self._presentation.slide_width or 9144000)
        height = int(self._presentation.slide_height or 6858000)
        self._emu = (width, height)
        self._renderer = _SlideRenderer(filename, width, height, limits)

    @property
    def total_pages(self) -> int:
        """How many slides the presentation has."""
        return len(self._slides)

    @property
    def metadata(self) -> dict[str, Any]:
        """The slide size in points and the title when the document says."""
        found: dict[str, Any] = {
            "slide_width_pt": self._emu[0] / 12700,
            "slide_height_pt": self._emu[1] / 12700,
        }
        title = (self._presentation.core_properties.title or "").strip()
        if title:
            found["title"] = title[:500]
        return found

    def page(self, index: int) -> PageImage:
        """Slide ``index`` drawn schematically, with its text; sizes in points."""
        slide = self._slides[index]
        try:
            image = self._renderer.render(slide)
            text = slide_text(slide)
        except _BROKEN as exc:
            raise UnreadableDocumentError(self._renderer.filename, f"slide {index + 1} is damaged") from exc
        return PageImage(image, text, self._emu[0] / 12700, self._emu[1] / 12700)

    def close(self) -> None:
        """Nothing to release (python-pptx holds the package in memory)."""


class PptxProcessor(PagedProcessor):
    """Processes PowerPoint presentations (PPTX): a slide is a page; see the module docstring."""

    page_unit = "slides"

    def open_pages(self, job: Job) -> PageSource:
        """The opened presentation, after the package passed the ZIP limits."""
        return PptxSource(job.path, job.filename, self.limits)
