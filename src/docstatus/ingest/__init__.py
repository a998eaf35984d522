"""Ingest: uploaded and submitted files made safe, hashed, deduplicated and queued.

:class:`Intake` turns files into queued documents (``open_upload`` for bytes
arriving, ``submit_path`` for a file already in the uploads folder);
:mod:`.paths` keeps every path the service opens inside the uploads folder.
"""

from __future__ import annotations

from .intake import Accepted, Intake, UploadWriter
from .paths import inside_uploads, safe_filename, stored_path

__all__ = ["Accepted", "Intake", "UploadWriter", "inside_uploads", "safe_filename", "stored_path"]
