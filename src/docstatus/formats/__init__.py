"""The formats the pipeline accepts and the processors that turn their files into output."""

from __future__ import annotations

from .registry import FORMATS, FormatInfo, FormatRegistry, detect_format, register_format

__all__ = ["FORMATS", "FormatInfo", "FormatRegistry", "detect_format", "register_format"]
