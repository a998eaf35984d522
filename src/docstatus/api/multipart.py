"""The streaming multipart parser of uploads: files written to disk as the body arrives.

python-multipart's streaming parser runs over the request body chunk by
chunk; each file of the ``file`` field goes through
:meth:`~docstatus.ingest.Intake.open_upload` as it arrives, so nothing is
held whole in memory, and every file stays a temporary file until the
request's handler finishes it.
"""

from __future__ import annotations

from typing import Any

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool

from ..errors import InvalidRequestError, RequestTooLargeError
from ..ingest import Intake, UploadWriter

__all__ = ["FILE_FIELD", "FILE_FIELDS", "MAX_FILES", "MultipartUpload", "multipart_boundary"]

#: Files one upload request may carry.
MAX_FILES = 100
#: The form field that carries files.
FILE_FIELD = "file"
#: Every field name accepted for files: ``f`` is what some existing upload forms send.
FILE_FIELDS = frozenset({FILE_FIELD.encode(), b"f"})


def multipart_boundary(content_type: str | None) -> bytes:
    """The boundary of a ``multipart/form-data`` Content-Type; ``InvalidRequestError`` for any other."""
    kind, options = parse_options_header(content_type)
    if kind != b"multipart/form-data":
        raise InvalidRequestError(
            "Uploads must be multipart/form-data with the files in the 'file' field",
            content_type=(content_type or "")[:200],
        )
    boundary = options.get(b"boundary")
    if not boundary or len(boundary) > 200:
        raise InvalidRequestError("The multipart Content-Type has no valid boundary")
    return boundary


class _Part:
    """The part being parsed: its headers so far, and its writer once it is a file."""

    def __init__(self) -> None:
        self.headers: dict[bytes, bytes] = {}
        self.field = b""
        self.value = b""
        self.filename: str | None = None


class MultipartUpload:
    """One upload request being parsed: parser callbacks queue file operations, ``feed`` runs them.

    Parser callbacks only record what to do; the disk work (opening temp files,
    writing) runs in a worker thread per received chunk, off the event loop.
    """

    def __init__(self, intake: Intake, boundary: bytes, max_request_bytes: int) -> None:
        self._intake = intake
        self._limit = max_request_bytes
        self._received = 0
        self._part = _Part()
        self._ops: list[tuple[str, Any]] = []
        self._ended = False
        self.writers: list[UploadWriter] = []
        self._current: UploadWriter | None = None
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._on_part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
                "on_end": self._on_end,
            },
        )

    # -- parser callbacks (record only) ----------------------------------------

    def _on_part_begin(self) -> None:
        self._part = _Part()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._part.field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._part.value += data[start:end]

    def _on_header_end(self) -> None:
        self._part.headers[self._part.field.strip().lower()] = self._part.value.strip()
        self._part.field = self._part.value = b""

    def _on_headers_finished(self) -> None:
        disposition, options = parse_options_header(self._part.headers.get(b"content-disposition"))
        name = options.get(b"name")
        if disposition != b"form-data" or name not in FILE_FIELDS:
            return  # another form field: its data is skipped
        raw_name = options.get(b"filename")
        if raw_name is None:
            field = name.decode("ascii", "replace") if name else FILE_FIELD
            raise InvalidRequestError(f"The '{field}' field must be a file (its part has no filename)")
        self._part.filename = raw_name.decode("utf-8", "replace")
        self._ops.append(("open", self._part.filename))

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part.filename is not None:
            self._ops.append(("data", data[start:end]))

    def _on_part_end(self) -> None:
        if self._part.filename is not None:
            self._ops.append(("close", None))

    def _on_end(self) -> None:
        self._ended = True

    # -- driving ---------------------------------------------------------------

    async def feed(self, chunk: bytes) -> None:
        """Parse ``chunk`` and write what it carries; raises for a body over the limit or malformed."""
        self._received += len(chunk)
        if self._received > self._limit:
            raise RequestTooLargeError(self._limit)
        try:
            self._parser.write(chunk)
        except MultipartParseError as exc:
            raise InvalidRequestError(f"Malformed multipart body: {exc}") from None
        ops, self._ops = self._ops, []
        if ops:
            await run_in_threadpool(self._apply, ops)

    def _apply(self, ops: list[tuple[str, Any]]) -> None:
        for op, arg in ops:
            if op == "open":
                if len(self.writers) >= MAX_FILES:
                    raise InvalidRequestError(f"An upload may carry at most {MAX_FILES} files")
                self._current = self._intake.open_upload(arg)
                self.writers.append(self._current)
            elif op == "data" and self._current is not None:
                self._current.write(arg)
            elif op == "close":
                self._current = None

    def check_complete(self) -> None:
        """Raise unless the body was a whole multipart message with at least one file."""
        if not self._ended:
            raise InvalidRequestError("Malformed multipart body: it ends before its closing boundary")
        if not self.writers:
            raise InvalidRequestError(f"No file in the upload: send it in the '{FILE_FIELD}' field")

    def abort(self) -> None:
        """Remove every temporary file of this request (idempotent)."""
        for writer in self.writers:
            writer.abort()
