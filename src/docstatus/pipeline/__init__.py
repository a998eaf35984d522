"""The processing runtime: intake of files, the worker pool, processors and their output."""

from __future__ import annotations
