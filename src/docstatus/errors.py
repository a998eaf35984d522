"""The docstatus exception hierarchy.

Every exception docstatus raises on purpose derives from :class:`StatusError`.
Subclasses also inherit the builtin a caller would catch without knowing
docstatus (``KeyError`` for a missing document, ``ValueError`` for a rule that
was broken), so code written against the original contract keeps working.
Each exception carries its data as attributes and has a stable ``code`` that
the HTTP layer puts in its error body.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AmbiguousDocumentIdError",
    "ApiError",
    "AuthenticationError",
    "ConfigError",
    "DocumentActiveError",
    "ContentChangedError",
    "CrossSiteRequestError",
    "DiskFullError",
    "DocumentNotFoundError",
    "DocumentTimeoutError",
    "DuplicateDocumentError",
    "InvalidRequestError",
    "InvalidTransitionError",
    "LeaseLostError",
    "LinkedFileError",
    "MemoryLimitError",
    "MissingDependencyError",
    "NotRetryableError",
    "DocumentLimitError",
    "OutputError",
    "PageNotFoundError",
    "PathOutsideUploadsError",
    "RequestTooLargeError",
    "ServerUnreachableError",
    "StatusError",
    "StoreSchemaError",
    "StoreUnavailableError",
    "TooManyStreamsError",
    "UnreadableDocumentError",
    "UnsupportedFormatError",
    "UploadClosedError",
    "UploadNotFoundError",
    "UploadTooLargeError",
    "UnreadableEntryError",
]


class StatusError(Exception):
    """Root of every docstatus exception.

    ``retryable`` says whether a document that failed with this error may
    succeed if processed again (False: the same file can only fail the same way).
    """

    code = "STATUS_ERROR"
    retryable = True

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"

    def to_dict(self) -> dict[str, Any]:
        """The error as the HTTP API reports it."""
        return {"error": self.message, "code": self.code, "details": self.details}


class DocumentNotFoundError(StatusError, KeyError):
    """No status is stored for the document."""

    code = "DOCUMENT_NOT_FOUND"

    def __init__(self, doc_id: str) -> None:
        super().__init__(f"Document {doc_id!r} not found", doc_id=doc_id)
        self.doc_id = doc_id


class AmbiguousDocumentIdError(StatusError, ValueError):
    """A short id (a prefix of doc ids) names more than one document; ``matches`` are some of them."""

    code = "AMBIGUOUS_ID"

    def __init__(self, prefix: str, matches: list[str]) -> None:
        shown = ", ".join(m[:16] + ("…" if len(m) > 16 else "") for m in matches[:3])
        more = ", …" if len(matches) > 3 else ""
        super().__init__(
            f"{prefix!r} is ambiguous: it starts the ids of {len(matches)}"
            f"{'+' if len(matches) >= 10 else ''} documents ({shown}{more}); give more characters",
            prefix=prefix,
            matches=list(matches),
        )
        self.prefix = prefix
        self.matches = list(matches)


class DuplicateDocumentError(StatusError, ValueError):
    """``create_status`` was called for a doc_id that already has a status."""

    code = "DUPLICATE_DOCUMENT"

    def __init__(self, doc_id: str) -> None:
        super().__init__(f"Document {doc_id!r} already exists", doc_id=doc_id)
        self.doc_id = doc_id


class InvalidTransitionError(StatusError, ValueError):
    """The lifecycle does not allow moving the document between the two states."""

    code = "INVALID_TRANSITION"

    def __init__(self, doc_id: str, current: str, target: str, reason: str = "") -> None:
        why = f": {reason}" if reason else ""
        super().__init__(
            f"Document {doc_id!r} cannot go from {current!r} to {target!r}{why}",
            doc_id=doc_id,
            current=current,
            target=target,
        )
        self.doc_id = doc_id
        self.current = current
        self.target = target


class DocumentActiveError(InvalidTransitionError):
    """A document that has not finished (queued or in progress) cannot be removed: cancel it first."""

    code = "DOCUMENT_ACTIVE"

    def __init__(self, doc_id: str, current: str) -> None:
        super().__init__(doc_id, current, "removed")
        self.message = f"Document {doc_id!r} is {current} and cannot be removed: cancel it first"
        self.args = (self.message,)


class LeaseLostError(StatusError):
    """A worker's write carried a lease epoch that no longer holds the document.

    The lease expired and passed on, or the document was finished by someone
    else (a cancel): the write was refused and nothing changed. ``doc_id`` and
    ``epoch`` say which document and which lease.
    """

    code = "LEASE_LOST"

    def __init__(self, doc_id: str, epoch: int) -> None:
        super().__init__(
            f"The lease {epoch} on document {doc_id!r} is no longer held: the write was refused",
            doc_id=doc_id,
            epoch=epoch,
        )
        self.doc_id = doc_id
        self.epoch = epoch


class StoreUnavailableError(StatusError):
    """The store cannot be reached or written; the change was not made."""

    code = "STORE_UNAVAILABLE"

    def __init__(self, store: str, cause: BaseException) -> None:
        super().__init__(f"Status store {store} is unavailable: {cause}", store=store)
        self.store = store
        self.__cause__ = cause


class TooManyStreamsError(StatusError):
    """The service already serves as many event streams as it allows; try again later."""

    code = "TOO_MANY_STREAMS"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"The service already serves its limit of {limit} event streams; retry later", limit=limit
        )
        self.limit = limit


class StoreSchemaError(StoreUnavailableError):
    """The store's schema is newer than this version of docstatus knows; nothing was changed."""

    code = "STORE_SCHEMA"

    def __init__(self, store: str, found: int, supported: int) -> None:
        StatusError.__init__(
            self,
            f"Status store {store} has schema version {found}, but this docstatus supports up to "
            f"{supported}: upgrade docstatus to use it",
            store=store,
            found=found,
            supported=supported,
        )
        self.store = store
        self.found = found
        self.supported = supported


class UnsupportedFormatError(StatusError, ValueError):
    """The file's format is not one the pipeline can process (or its content contradicts its name).

    The message says what is wrong with this file; the supported extensions are
    in ``details["supported"]`` (and the README), not repeated in every message.
    """

    code = "UNSUPPORTED_FORMAT"
    retryable = False

    def __init__(self, filename: str, reason: str = "", supported: tuple[str, ...] = ()) -> None:
        why = f": {reason}" if reason else ""
        super().__init__(
            f"Unsupported format for {filename!r}{why}",
            filename=filename,
            supported=list(supported),
        )
        self.filename = filename
        self.reason = reason
        self.supported = supported


class UploadTooLargeError(StatusError, ValueError):
    """An upload or submitted file is bigger than the configured limit."""

    code = "UPLOAD_TOO_LARGE"

    def __init__(self, filename: str, max_bytes: int) -> None:
        super().__init__(
            f"{filename!r} is larger than the limit of {max_bytes} bytes",
            filename=filename,
            max_bytes=max_bytes,
        )
        self.filename = filename
        self.max_bytes = max_bytes


class PathOutsideUploadsError(StatusError, PermissionError):
    """A submitted path resolves (symlinks followed) to somewhere outside the uploads folder."""

    code = "PATH_OUTSIDE_UPLOADS"

    def __init__(self, path: str) -> None:
        super().__init__(f"Path {path!r} is outside the uploads folder", path=path)
        self.path = path


class LinkedFileError(PathOutsideUploadsError):
    """A submitted file has other hard links: it may be a file from outside the uploads folder.

    A hard link looks like any file inside the folder, so the only safe answer
    is to refuse every file whose link count is above one (reported as a 403,
    like a path outside the folder).
    """

    code = "PATH_LINKED"

    def __init__(self, path: str, links: int) -> None:
        StatusError.__init__(
            self,
            f"Path {path!r} has {links} hard links: a file linked from elsewhere cannot be submitted "
            "(copy or move it into the uploads folder instead)",
            path=path,
            links=links,
        )
        self.path = path
        self.links = links


class UploadNotFoundError(StatusError, FileNotFoundError):
    """A submitted path does not name an existing regular file inside the uploads folder."""

    code = "UPLOAD_NOT_FOUND"

    def __init__(self, path: str) -> None:
        super().__init__(f"No file {path!r} in the uploads folder", path=path)
        self.path = path


class ConfigError(StatusError, ValueError):
    """A setting (from the environment or an argument) has an invalid value."""

    code = "CONFIG_ERROR"

    def __init__(self, name: str, value: object, reason: str) -> None:
        super().__init__(f"Invalid {name}={value!r}: {reason}", name=name)
        self.name = name
        self.value = value
        self.reason = reason


class DiskFullError(StatusError, OSError):
    """The server's disk (or the user's quota) is full: the file could not be stored; nothing was kept."""

    code = "DISK_FULL"

    def __init__(self, filename: str) -> None:
        super().__init__(
            f"The server's disk is full: {filename!r} could not be stored (try again later)",
            filename=filename,
        )
        self.filename = filename


class UploadClosedError(StatusError, ValueError):
    """An upload was written to or finished after it was finished or aborted."""

    code = "UPLOAD_CLOSED"

    def __init__(self, filename: str) -> None:
        super().__init__(f"The upload of {filename!r} is already finished or aborted", filename=filename)
        self.filename = filename


class DocumentTimeoutError(StatusError, TimeoutError):
    """A processor ran longer than the worker pool's ``document_timeout``."""

    code = "DOCUMENT_TIMEOUT"

    def __init__(self, doc_id: str, timeout: float) -> None:
        super().__init__(f"processing took longer than {timeout:g} seconds", doc_id=doc_id, timeout=timeout)
        self.doc_id = doc_id
        self.timeout = timeout


class OutputError(StatusError, ValueError):
    """Pipeline output that cannot be stored as given (e.g. chunks and vectors that do not match)."""

    code = "OUTPUT_INVALID"


class MissingDependencyError(StatusError, ImportError):
    """A feature needs an optional dependency that is not installed."""

    code = "MISSING_DEPENDENCY"

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"this needs the {package!r} package: pip install 'docstatus[{extra}]'",
            package=package,
            extra=extra,
        )
        self.package = package
        self.extra = extra


class UnreadableDocumentError(StatusError, ValueError):
    """A document's content cannot be read: damaged, truncated, encrypted, or not what its format says."""

    code = "DOCUMENT_UNREADABLE"
    retryable = False

    def __init__(self, filename: str, reason: str) -> None:
        super().__init__(f"{filename!r} cannot be read: {reason}", filename=filename, reason=reason)
        self.filename = filename
        self.reason = reason


class DocumentLimitError(StatusError, ValueError):
    """A document exceeds one of the pipeline's limits (pages, pixels, uncompressed size)."""

    code = "DOCUMENT_TOO_LARGE"
    retryable = False

    def __init__(self, filename: str, what: str, value: float, limit: float) -> None:
        super().__init__(
            f"{filename!r} is over a limit: {value:,.0f} {what} (at most {limit:,.0f} allowed)",
            filename=filename,
            what=what,
            value=value,
            limit=limit,
        )
        self.filename = filename
        self.what = what
        self.value = value
        self.limit = limit


class ContentChangedError(StatusError, ValueError):
    """A document's file no longer has the content its doc_id (the SHA-256 of it) was given for.

    The file was replaced or changed after intake; processing it would store
    other bytes under the old id, so the document fails instead (for good:
    the same file can only fail the same way; upload the new content to get
    its own document).
    """

    code = "CONTENT_CHANGED"
    retryable = False

    def __init__(self, filename: str, doc_id: str, found: str) -> None:
        super().__init__(
            f"{filename!r} changed after it was queued: its SHA-256 is now {found[:12]}..., "
            f"not the {doc_id[:12]}... it was queued as (upload it again to process the new content)",
            filename=filename,
            doc_id=doc_id,
            found=found,
        )
        self.filename = filename
        self.doc_id = doc_id
        self.found = found


class MemoryLimitError(StatusError, MemoryError):
    """Processing a document needed more memory than a worker process may use (its limit was hit)."""

    code = "MEMORY_LIMIT"
    retryable = False

    def __init__(self, filename: str, limit_mb: int | None) -> None:
        limit = f" ({limit_mb:,} MB, DOCSTATUS_CHILD_MEMORY_MB)" if limit_mb else ""
        super().__init__(
            f"{filename!r} needed more memory than a worker process may use{limit}",
            filename=filename,
            limit_mb=limit_mb,
        )
        self.filename = filename
        self.limit_mb = limit_mb


class PageNotFoundError(StatusError, KeyError):
    """A stored document has no page with that number (pages count from 1)."""

    code = "PAGE_NOT_FOUND"

    def __init__(self, doc_id: str, page: int) -> None:
        super().__init__(f"Document {doc_id!r} has no stored page {page}", doc_id=doc_id, page=page)
        self.doc_id = doc_id
        self.page = page


class NotRetryableError(StatusError, ValueError):
    """A retry of a document whose failure would only repeat (the file is damaged, unsupported, too big)."""

    code = "NOT_RETRYABLE"

    def __init__(self, doc_id: str, error: str) -> None:
        super().__init__(
            f"Retrying would fail the same way, so it is not offered: {error}", doc_id=doc_id, error=error
        )
        self.doc_id = doc_id
        self.error = error


class InvalidRequestError(StatusError, ValueError):
    """A request the API cannot act on: a malformed body or upload, an unknown event."""

    code = "INVALID_REQUEST"


class AuthenticationError(StatusError, PermissionError):
    """A changing request without the configured bearer token."""

    code = "UNAUTHORIZED"

    def __init__(self, message: str = "Missing or invalid bearer token") -> None:
        super().__init__(message)


class CrossSiteRequestError(StatusError, PermissionError):
    """A browser page of another site tried to change something (an upload, a cancel...): refused."""

    code = "CROSS_SITE_REQUEST"

    def __init__(self, origin: str, path: str) -> None:
        super().__init__(
            f"Cross-site request refused: a page from {origin} may not POST to {path} "
            "(add its origin to DOCSTATUS_CORS_ORIGINS to allow it)",
            origin=origin,
            path=path,
        )
        self.origin = origin
        self.path = path


class RequestTooLargeError(StatusError, ValueError):
    """A request body over the configured limit (nothing of it was kept)."""

    code = "REQUEST_TOO_LARGE"

    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"Request body is larger than the limit of {max_bytes} bytes", max_bytes=max_bytes)
        self.max_bytes = max_bytes


class ServerUnreachableError(StatusError, ConnectionError):
    """A client could not reach the docstatus service at ``url`` (refused, timed out, not HTTP)."""

    code = "SERVER_UNREACHABLE"

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"Cannot reach the docstatus service at {url}: {reason}", url=url)
        self.url = url
        self.reason = reason


class ApiError(StatusError):
    """The service answered a client's request with an error (``status_code``, ``api_code``: its code)."""

    code = "API_ERROR"

    def __init__(self, status_code: int, api_code: str, message: str) -> None:
        super().__init__(message, status_code=status_code, api_code=api_code)
        self.status_code = status_code
        self.api_code = api_code


class UnreadableEntryError(DuplicateDocumentError):
    """An entry that code wrote straight into the wrapped dict cannot be read as a status.

    ``field`` names what is wrong (``None`` when it is the entry as a whole,
    e.g. not a dict) and ``reason`` says why. The entry stays in the dict as it
    is and is no document of the manager's; ``create_status`` over its doc_id
    raises this (a ``DuplicateDocumentError``, hence a ``ValueError``: the
    doc_id is taken) instead of saying only that it exists.
    """

    def __init__(self, doc_id: str, field: str | None, reason: str) -> None:
        where = f"its {field!r} " if field else "it "
        StatusError.__init__(
            self,
            f"Entry {doc_id!r} of the wrapped dict cannot be read as a status: {where}{reason}",
            doc_id=doc_id,
            field=field,
            reason=reason,
        )
        self.doc_id = doc_id
        self.field = field
        self.reason = reason
