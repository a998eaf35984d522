"""Documents the pipeline tests generate: PDFs written by hand (plain and encrypted), and files
written by the libraries themselves (python-docx, python-pptx, Pillow)."""

from __future__ import annotations

import hashlib
import io
import struct
import zipfile
import zlib
from pathlib import Path

#: A Markdown guide: three sections, the middle one longer than a chunk.
MARKDOWN = (
    "# Guide\n\nIntro paragraph about document pipelines.\n\n## Parsing\n\n"
    + "Parsing turns bytes into text. " * 60
    + "\n\n## Embedding\n\nVectors of chunks, compared by cosine similarity.\n"
).encode()

# -- PDF ---------------------------------------------------------------------------------------

_PAD = bytes.fromhex("28BF4E5E4E758A4164004E56FFFA01082E2E00B6D0683E802F0CA9FE6453697A")
_FILE_ID = bytes.fromhex("0123456789abcdef0123456789abcdef")


def _rc4(key: bytes, data: bytes) -> bytes:
    s = list(range(256))
    j = 0
    for i in range(256):
        j = (j + s[i] + key[i % len(key)]) % 256
        s[i], s[j] = s[j], s[i]
    out = bytearray()
    i = j = 0
    for byte in data:
        i = (i + 1) % 256
        j = (j + s[i]) % 256
        s[i], s[j] = s[j], s[i]
        out.append(byte ^ s[(s[i] + s[j]) % 256])
    return bytes(out)


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def _page_stream(lines: list[str], shade: float) -> bytes:
    ops = [f"{shade:.2f} g 0 0 612 120 re f 0 g", "BT /F1 14 Tf 72 720 Td 18 TL"]
    ops += [f"({_escape(line)}) '" for line in lines]
    ops.append("ET")
    return "\n".join(ops).encode("latin-1")


class _Standard40:
    """The PDF Standard security handler, revision 2 (40-bit RC4), for a user password."""

    def __init__(self, user: bytes, owner: bytes, permissions: int = -4) -> None:
        self.permissions = permissions
        owner_key = hashlib.md5((owner + _PAD)[:32]).digest()[:5]
        self.o = _rc4(owner_key, (user + _PAD)[:32])
        material = (user + _PAD)[:32] + self.o + struct.pack("<i", permissions) + _FILE_ID
        self.key = hashlib.md5(material).digest()[:5]
        self.u = _rc4(self.key, _PAD)

    def encrypt(self, number: int, data: bytes) -> bytes:
        key = hashlib.md5(self.key + struct.pack("<i", number)[:3] + b"\x00\x00").digest()[:10]
        return _rc4(key, data)

    def dictionary(self) -> bytes:
        return (
            f"<< /Filter /Standard /V 1 /R 2 /O <{self.o.hex()}> /U <{self.u.hex()}> /P {self.permissions} >>"
        ).encode()


def pdf_bytes(
    pages: list[list[str]],
    *,
    size: tuple[float, float] = (612, 792),
    password: str | None = None,
    title: str = "Test document",
) -> bytes:
    """A PDF whose page ``i`` shows ``pages[i]`` lines of Helvetica text; encrypted when ``password``."""
    security = _Standard40(password.encode(), b"owner-" + password.encode()) if password else None
    n = len(pages)
    objects: dict[int, bytes] = {}
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(n))
    objects[1] = b"<< /Type /Catalog /Pages 2 0 R >>"
    objects[2] = f"<< /Type /Pages /Kids [{kids}] /Count {n} >>".encode()
    objects[3] = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
    for i, lines in enumerate(pages):
        page, content = 4 + 2 * i, 5 + 2 * i
        objects[page] = (
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {size[0]:g} {size[1]:g}] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {content} 0 R >>"
        ).encode()
        stream = _page_stream(lines, 0.3 + 0.6 * (i % 3) / 2)
        if security is not None:
            stream = security.encrypt(content, stream)
        objects[content] = b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream"
    info = 4 + 2 * n
    title_bytes = title.encode("latin-1")
    if security is not None:
        title_bytes = security.encrypt(info, title_bytes)
    objects[info] = b"<< /Title <" + title_bytes.hex().encode() + b"> >>"
    trailer_extra = b""
    if security is not None:
        objects[info + 1] = security.dictionary()
        trailer_extra = b" /Encrypt %d 0 R" % (info + 1)
    return _assemble(objects, info, trailer_extra)


def _assemble(objects: dict[int, bytes], info: int, trailer_extra: bytes) -> bytes:
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = {}
    for number in sorted(objects):
        offsets[number] = len(out)
        out += b"%d 0 obj\n" % number + objects[number] + b"\nendobj\n"
    xref = len(out)
    size = max(objects) + 1
    out += b"xref\n0 %d\n0000000000 65535 f \n" % size
    for number in range(1, size):
        out += b"%010d 00000 n \n" % offsets[number]
    file_id = _FILE_ID.hex().encode()
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info %d 0 R /ID [<%s> <%s>]%s >>\n" % (
        size,
        info,
        file_id,
        file_id,
        trailer_extra,
    )
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


def numbered_pages(n: int) -> list[list[str]]:
    """``n`` pages of text, each saying its number and something findable."""
    topics = ["invoices and payments", "solar panels", "river dolphins", "sourdough bread", "jazz piano"]
    return [
        [
            f"Page {i + 1} of the report.",
            f"This page is about {topics[i % len(topics)]}.",
            "More text follows here.",
        ]
        for i in range(n)
    ]


# -- ZIP-based and images -------------------------------------------------------------------------


def docx_bytes() -> bytes:
    import docx

    document = docx.Document()
    document.core_properties.title = "Quarterly report"
    document.add_heading("Quarterly report", level=1)
    document.add_paragraph("Revenue grew thanks to river dolphins tourism.")
    document.add_heading("Costs", level=2)
    document.add_paragraph("Sourdough bread for the whole team.", style="List Bullet")
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "Item", "Amount"
    table.cell(1, 0).text, table.cell(1, 1).text = "Bread", "42"
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def pptx_bytes(slides: int = 3) -> bytes:
    from pptx import Presentation
    from pptx.dml.color import RGBColor
    from pptx.util import Inches

    presentation = Presentation()
    for i in range(slides):
        slide = presentation.slides.add_slide(presentation.slide_layouts[1])
        slide.shapes.title.text = f"Slide {i + 1}: jazz piano"
        slide.placeholders[1].text = f"Point {i + 1} about improvisation"
        box = slide.shapes.add_shape(1, Inches(1), Inches(5), Inches(2), Inches(1))
        box.fill.solid()
        box.fill.fore_color.rgb = RGBColor(200, 30 * i % 255, 40)
        picture = io.BytesIO(png_bytes((60, 40), (0, 120, 200)))
        slide.shapes.add_picture(picture, Inches(5), Inches(4), Inches(3), Inches(2))
        slide.notes_slide.notes_text_frame.text = f"Speaker notes {i + 1}"
    buffer = io.BytesIO()
    presentation.save(buffer)
    return buffer.getvalue()


def png_bytes(size: tuple[int, int] = (300, 200), colour: tuple[int, int, int] = (250, 120, 10)) -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", size, colour)
    ImageDraw.Draw(image).rectangle((size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2), fill=(0, 0, 0))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes(size: tuple[int, int] = (640, 480)) -> bytes:
    from PIL import Image

    image = Image.linear_gradient("L").resize(size).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header declares an enormous image (its data would inflate to gigabytes)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = zlib.compress(b"\x00" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", data)
        + _png_chunk(b"IEND", b"")
    )


def zip_bomb_docx(uncompressed: int) -> bytes:
    """A ZIP named like a DOCX whose one entry inflates to ``uncompressed`` bytes (compressed tiny)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as package:
        package.writestr("[Content_Types].xml", "<Types/>")
        with package.open("word/document.xml", "w", force_zip64=True) as entry:
            block = b"\x00" * (1 << 20)
            for _ in range(uncompressed // len(block)):
                entry.write(block)
    return buffer.getvalue()


def amplified_docx(paragraphs: int) -> bytes:
    """A valid DOCX whose body repeats one tiny paragraph ``paragraphs`` times (it compresses ~400:1)."""
    source = zipfile.ZipFile(io.BytesIO(docx_bytes()))
    buffer = io.BytesIO()
    paragraph = b"<w:p><w:r><w:t>x</w:t></w:r></w:p>"
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as package:
        for info in source.infolist():
            data = source.read(info.filename)
            if info.filename == "word/document.xml":
                head, body, tail = data.partition(b"<w:body>")
                data = head + body + paragraph * paragraphs + tail
            package.writestr(info.filename, data)
    return buffer.getvalue()


def plain_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as package:
        package.writestr("notes.txt", "just a zip")
    return buffer.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
