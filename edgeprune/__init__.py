"""edgeprune: prune CNNs until they meet a latency deadline measured on the real target device.

The public API is imported lazily so `import edgeprune` stays light and never initialises CUDA.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .errors import ConstraintNotMet, EdgepruneError

__version__ = "0.1.0"

# public name -> module that defines it
_API = {
    "profile": "edgeprune.profiling",
    "ProfileReport": "edgeprune.profiling",
    "load_target": "edgeprune.targets",
    "TargetSpec": "edgeprune.targets",
    "load_model": "edgeprune.models",
    "load": "edgeprune.loading",
    "inspect_path": "edgeprune.inspect",
    "ExportConfig": "edgeprune.export",
    "CheckConfig": "edgeprune.check",
}

__all__ = ["ConstraintNotMet", "EdgepruneError", "__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'edgeprune' has no attribute {name!r}")
