"""On-disk cache of latency tables and model residuals, never trusted blindly.

Layout: `<root>/costmodel/<conditions key>/<entry key>.json`, where root is $EDGEPRUNE_CACHE_DIR, else
$XDG_CACHE_HOME/edgeprune, else ~/.cache/edgeprune. The conditions key hashes what decides a kernel's
speed on the target (CPU model, cores, threads, runtime and version, precision, execution provider,
optimisation level, GPU, Jetson power mode) plus the measuring protocol's version; the entry key hashes
the layer signature and its width grid (or the model fingerprint, for a residual). Every entry carries a
sha256 checksum of its own content. An entry that does not parse, fails its checksum, misses a field,
belongs to another schema version or does not match the key it was filed under is logged, deleted and
rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from ..io import write_json_atomic

log = logging.getLogger("edgeprune.costmodel")

SCHEMA_VERSION = 1
# Bump when the way variants are built or read changes: old measurements then stop matching.
PROTOCOL_VERSION = 1
ENTRY_KINDS = {"edgeprune.costmodel.table", "edgeprune.costmodel.residual"}
REQUIRED = {
    "edgeprune.costmodel.table": ("signature", "grid", "latency_ms"),
    "edgeprune.costmodel.residual": ("dense_ms", "fingerprint"),
}
# Fields of a profile's `conditions` that decide how fast a kernel runs there.
CONDITION_FIELDS = (
    "cpu_model", "machine", "physical_cores", "logical_cores", "runtime", "runtime_version", "threads",
    "precision", "execution_provider", "graph_optimization_level", "gpus", "jetson", "device", "tensorrt",
)


def default_cache_root() -> Path:
    env = os.environ.get("EDGEPRUNE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "edgeprune"


def canonical_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def conditions_key(conditions: dict[str, Any]) -> str:
    """Hash of the measurement conditions that decide latency (hostname, governor etc. left out)."""
    picked = {k: conditions.get(k) for k in CONDITION_FIELDS}
    picked["protocol"] = PROTOCOL_VERSION
    return canonical_hash(picked)[:20]


def _checksum(entry: dict[str, Any]) -> str:
    return canonical_hash({k: v for k, v in entry.items() if k != "checksum"})


class LatencyCache:
    """Latency tables and residuals on disk, keyed by conditions and entry key."""

    def __init__(self, root: str | os.PathLike[str] | None = None):
        self.root = Path(root).expanduser() if root is not None else default_cache_root()
        self.dir = self.root / "costmodel"
        self.rejected: list[tuple[str, str]] = []  # (path, why) of entries found bad in this process

    def path_for(self, cond_key: str, entry_key: str) -> Path:
        return self.dir / cond_key / f"{entry_key}.json"

    def get(self, cond_key: str, entry_key: str, kind: str) -> dict[str, Any] | None:
        """The verified entry, or None (missing; or bad, in which case it is deleted and logged)."""
        path = self.path_for(cond_key, entry_key)
        if not path.is_file():
            return None
        why = None
        try:
            entry = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            entry, why = None, f"unreadable JSON ({type(exc).__name__})"
        if why is None:
            why = self._problem(entry, cond_key, entry_key, kind)
        if why is None:
            return entry
        log.warning("cost-model cache entry %s rejected (%s); deleted, it will be measured again", path, why)
        self.rejected.append((str(path), why))
        try:
            path.unlink()
        except OSError as exc:
            log.warning("cannot delete bad cache entry %s: %s", path, exc)
        return None

    @staticmethod
    def _problem(entry: Any, cond_key: str, entry_key: str, kind: str) -> str | None:
        if not isinstance(entry, dict):
            return "not a JSON object"
        if entry.get("schema_version") != SCHEMA_VERSION:
            return f"stale schema_version {entry.get('schema_version')!r} (current {SCHEMA_VERSION})"
        if entry.get("kind") != kind:
            return f"kind {entry.get('kind')!r}, expected {kind}"
        missing = [f for f in ("checksum", "conditions_key", "key", *REQUIRED[kind]) if f not in entry]
        if missing:
            return f"missing field(s) {', '.join(missing)}"
        if entry["checksum"] != _checksum(entry):
            return "checksum mismatch"
        if entry["conditions_key"] != cond_key or entry["key"] != entry_key:
            return "filed under another key"
        if kind == "edgeprune.costmodel.table" and not _table_ok(entry):
            return "latency grid does not match its widths or holds non-finite values"
        if kind == "edgeprune.costmodel.residual" and not (
            _finite(entry["dense_ms"]) and (entry.get("nonlayer_ms") is None or _finite(entry["nonlayer_ms"]))
        ):
            return "dense latency is not a finite number"
        return None

    def put(self, cond_key: str, entry_key: str, kind: str, payload: dict[str, Any],
            conditions: dict[str, Any] | None = None) -> Path:
        if kind not in ENTRY_KINDS:
            raise ValueError(f"unknown cache entry kind {kind}")
        entry = {"schema_version": SCHEMA_VERSION, "kind": kind, "conditions_key": cond_key, "key": entry_key,
                 **payload}
        entry["checksum"] = _checksum(entry)
        path = self.path_for(cond_key, entry_key)
        write_json_atomic(path, entry)
        if conditions is not None:  # for people reading the cache: what this directory was measured under
            about = path.parent / "conditions.json"
            if not about.is_file():
                write_json_atomic(about, {k: conditions.get(k) for k in CONDITION_FIELDS})
        return path


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _table_ok(entry: dict[str, Any]) -> bool:
    grid, values = entry.get("grid"), entry.get("latency_ms")
    if not isinstance(grid, dict) or not isinstance(values, list):
        return False
    outs, ins = grid.get("outs"), grid.get("ins")
    if not isinstance(outs, list) or not outs or len(values) != len(outs):
        return False
    width = 1 if ins is None else len(ins) if isinstance(ins, list) and ins else -1
    return all(isinstance(row, list) and len(row) == width and all(_finite(v) and v >= 0 for v in row)
               for row in values)
