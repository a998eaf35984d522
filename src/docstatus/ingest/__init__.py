"""Ingest: uploaded and submitted files made safe, hashed, deduplicated and queued."""

from __future__ import annotations

from .intake import Accepted, Intake, UploadWriter, safe_filename, stored_path

__all__ = ["Accepted", "Intake", "UploadWriter", "safe_filename", "stored_path"]
