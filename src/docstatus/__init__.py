"""docstatus: track and show the processing status of every document in a pipeline."""

from __future__ import annotations

from .errors import (
    DocumentNotFoundError,
    DuplicateDocumentError,
    InvalidTransitionError,
    LeaseLostError,
    StatusError,
    StoreUnavailableError,
)
from .events import Event
from .manager import StatusManager, get_status_manager, processing_status
from .models import ProcessingStatus, Status, progress_for

__version__ = "0.1.0"

__all__ = [
    "DocumentNotFoundError",
    "DuplicateDocumentError",
    "Event",
    "InvalidTransitionError",
    "LeaseLostError",
    "ProcessingStatus",
    "Status",
    "StatusError",
    "StatusManager",
    "StoreUnavailableError",
    "__version__",
    "get_status_manager",
    "processing_status",
    "progress_for",
]
