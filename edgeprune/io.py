"""Atomic file writing: a reader never sees a half-written file, and an interrupted write leaves none.

The byte-level write is the profilers' own (they ship inside edgeprune and must stay importable without
it, so the mechanism lives there); edgeprune's JSON adds `default=str` for the paths and numbers its
reports carry.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .profilers.common import write_bytes_atomic

__all__ = ["write_bytes_atomic", "write_json_atomic", "write_text_atomic"]


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, default=str) + "\n")
