"""The format registry: formats by extension and by signature, each with its check and its processor.

A format is one :class:`FormatEntry`: its name, its extensions, its kind
(``"text"``: read as characters; ``"visual"``: rendered as pages), its media
type, an optional content check over the first bytes of the file, optional
signatures that name it by content alone, an optional check that names it by
content when the file has no extension, and the factory of its processor.
:class:`FormatRegistry` answers which format a file is and builds the
processors. This module never imports a format: the table of the built-in
ones is :data:`docstatus.formats.ENTRIES`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from ..output.embedding import Embedder
from ..output.visual import VisualEmbedder
from ..worker.job import Processor
from .checks import SNIFF_BYTES, ContentCheck
from .limits import Limits

__all__ = ["FormatEntry", "FormatInfo", "FormatRegistry", "FormatType", "ProcessorFactory"]

FormatType = Literal["text", "visual"]


class ProcessorFactory(Protocol):
    """Builds a format's processor; the reference processor classes are factories themselves."""

    def __call__(
        self,
        embedder: Embedder | None = None,
        *,
        visual_embedder: VisualEmbedder | None = None,
        limits: Limits | None = None,
    ) -> Processor:
        """A processor embedding text chunks with ``embedder`` and pages with ``visual_embedder``."""
        ...


@dataclass(frozen=True, slots=True)
class FormatInfo:
    """What :meth:`FormatRegistry.detect` found: the format name, its kind and its media type."""

    format: str
    format_type: FormatType
    media_type: str


@dataclass(frozen=True, slots=True)
class FormatEntry:
    """One format: how files of it are recognised and what processes them.

    ``extensions`` are matched case-insensitively (given with or without the
    dot; stored lower case with it). ``check`` looks at the file's first
    bytes when the extension names this format; ``signatures`` (leading bytes
    only this format has) name it when a file's extension is missing or
    unknown. ``sniff`` names it for a file with no extension at all that no
    signature names, when the check passes on the file's first bytes (text
    has no signature: a ``README`` is text by what it contains); formats are
    tried in the order they were added. ``processor`` is ``None`` for a
    format that is accepted but processed by a processor given to the worker
    pool directly.
    Raises ``ValueError`` for a missing name, no extensions or an unknown kind.
    """

    name: str
    extensions: tuple[str, ...]
    kind: FormatType
    media_type: str
    check: ContentCheck | None = None
    signatures: tuple[bytes, ...] = ()
    processor: ProcessorFactory | None = field(default=None, compare=False)
    sniff: ContentCheck | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        extensions = tuple(_normal_ext(e) for e in self.extensions)
        if not self.name or not extensions:
            raise ValueError("a format needs a name and at least one extension")
        if self.kind not in ("text", "visual"):
            raise ValueError(f"format_type must be 'text' or 'visual', not {self.kind!r}")
        # Frozen: the normalised values replace the given ones once, here.
        object.__setattr__(self, "extensions", extensions)
        object.__setattr__(self, "signatures", tuple(self.signatures))

    @property
    def info(self) -> FormatInfo:
        """What detection reports for this format."""
        return FormatInfo(self.name, self.kind, self.media_type)


class FormatRegistry:
    """Formats by extension. Thread-safe; later registrations of an extension replace earlier ones."""

    def __init__(self, entries: Iterable[FormatEntry] = ()) -> None:
        self._by_ext: dict[str, FormatEntry] = {}
        self._by_name: dict[str, FormatEntry] = {}
        self._sniffable: list[FormatEntry] = []
        self._by_content: list[tuple[FormatEntry, ContentCheck]] = []
        self._lock = threading.Lock()
        for entry in entries:
            self.add(entry)

    def add(self, entry: FormatEntry) -> FormatInfo:
        """Accept files with ``entry``'s extensions (and signatures) as its format."""
        with self._lock:
            for ext in entry.extensions:
                self._by_ext[ext] = entry
            self._by_name[entry.name] = entry
            if entry.signatures:
                self._sniffable = [f for f in self._sniffable if f.name != entry.name] + [entry]
            self._by_content = [f for f in self._by_content if f[0].name != entry.name]
            if entry.sniff is not None:
                self._by_content.append((entry, entry.sniff))
        return entry.info

    def register(
        self,
        format: str,
        extensions: Iterable[str],
        format_type: FormatType,
        media_type: str,
        *,
        check: ContentCheck | None = None,
        signatures: Iterable[bytes] = (),
        processor: ProcessorFactory | None = None,
        sniff: ContentCheck | None = None,
    ) -> FormatInfo:
        """Accept files with any of ``extensions`` (``".pdf"``; case-insensitive) as ``format``.

        The arguments are those of :class:`FormatEntry`; ``ValueError`` when they do not make one.
        """
        entry = FormatEntry(
            format, tuple(extensions), format_type, media_type, check, tuple(signatures), processor, sniff
        )
        return self.add(entry)

    def extensions(self) -> frozenset[str]:
        """Every extension currently accepted (lower case, with the dot)."""
        with self._lock:
            return frozenset(self._by_ext)

    def processors(
        self,
        limits: Limits | None = None,
        *,
        embedder: Embedder | None = None,
        visual_embedder: VisualEmbedder | None = None,
    ) -> dict[str, Processor]:
        """A processor for every format that has a factory, by format name.

        Formats with the same factory share one processor (processors are thread-safe).
        """
        with self._lock:
            entries = list(self._by_name.values())
        built: dict[ProcessorFactory, Processor] = {}
        processors: dict[str, Processor] = {}
        for entry in entries:
            if entry.processor is None:
                continue
            if entry.processor not in built:
                built[entry.processor] = entry.processor(
                    embedder, visual_embedder=visual_embedder, limits=limits
                )
            processors[entry.name] = built[entry.processor]
        return processors

    def detect(self, path: Path, filename: str) -> FormatInfo | None:
        """The format of the file at ``path`` named ``filename``, or ``None`` if unsupported."""
        return self.explain(path, filename)[0]

    def explain(self, path: Path, filename: str) -> tuple[FormatInfo | None, str]:
        """Like :meth:`detect`, plus why a file was rejected (``""`` when accepted).

        A known extension picks the format and its content check must pass;
        without a known extension the content's signature may still name a
        format (a PDF saved as ``report`` or ``report.bin``), and without any
        extension a format's ``sniff`` check may (text saved as ``README``).
        """
        entry = self._by_ext.get(Path(filename).suffix.lower())
        if entry is None:
            return self._sniff(path, filename)
        if entry.check is None:
            return entry.info, ""
        reason = entry.check(_head(path))
        return (None, reason) if reason else (entry.info, "")

    def _sniff(self, path: Path, filename: str) -> tuple[FormatInfo | None, str]:
        head = _head(path)
        with self._lock:
            candidates, by_content = list(self._sniffable), list(self._by_content)
        for entry in candidates:
            if head.startswith(entry.signatures):
                return entry.info, ""
        suffix = Path(filename).suffix
        if suffix:
            return None, f"{suffix.lower()!r} files are not supported (the README lists the formats that are)"
        return _by_content(head, by_content)


def _by_content(head: bytes, checks: list[tuple[FormatEntry, ContentCheck]]) -> tuple[FormatInfo | None, str]:
    """The first format whose ``sniff`` check passes on ``head``; else why the first one refused."""
    reasons = []
    for entry, sniff in checks:
        reason = sniff(head)
        if not reason:
            return entry.info, ""
        reasons.append(reason)
    return None, "the file has no extension" + (f" and {reasons[0]}" if reasons else "")


def _head(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(SNIFF_BYTES)


def _normal_ext(ext: str) -> str:
    ext = ext.strip().lower()
    if not ext.startswith("."):
        ext = "." + ext
    if len(ext) < 2 or "/" in ext or "\\" in ext:
        raise ValueError(f"invalid extension {ext!r}")
    return ext
