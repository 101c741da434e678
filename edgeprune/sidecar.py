"""The metadata JSON written next to every exported artifact (`<artifact>.json`).

Engines and models stay plain files that trtexec, Polygraphy and onnxruntime load as they are; everything
edgeprune knows about them (where they came from, how they were built and checked, how fast they ran on
the target and under which conditions) lives here.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
from pathlib import Path
from typing import Any

from .errors import EdgepruneError
from .io import write_json_atomic

SIDECAR_KIND = "edgeprune.sidecar"
SCHEMA_VERSION = 1
_VERSIONED = ("edgeprune", "torch", "onnx", "onnxruntime", "onnxslim", "numpy", "tensorrt")


def sidecar_path(artifact: str | Path) -> Path:
    """`model.engine` -> `model.engine.json`."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".json")


def runtime_versions() -> dict[str, str | None]:
    """Installed versions of the libraries that shaped the artifact (None where absent)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for dist in _VERSIONED:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    if versions["tensorrt"] is None:  # JetPack installs tensorrt without pip metadata
        try:
            import tensorrt  # noqa: PLC0415

            versions["tensorrt"] = tensorrt.__version__
        except ImportError:
            pass
    return versions


def model_hash(module: Any) -> str:
    """sha256 over a module's state_dict (names, dtypes, shapes, bytes): identifies the exact weights."""
    import torch

    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        raw = t.view(torch.int16) if t.dtype == torch.bfloat16 else t  # numpy has no bfloat16
        h.update(raw.numpy().tobytes())
    return h.hexdigest()


def file_digest(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": h.hexdigest()}


def build_sidecar(
    *,
    artifact: Path,
    fmt: str,
    precision: str,
    source: dict[str, Any],
    manifest: dict[str, Any] | None,
    target: dict[str, Any],
    io: dict[str, Any],
    build: dict[str, Any],
    parity: dict[str, Any],
    accuracy: dict[str, Any] | None,
    latency: dict[str, Any] | None,
    extra_files: list[Path] = (),  # type: ignore[assignment]
) -> dict[str, Any]:
    """The sidecar's content, versioned."""
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": SIDECAR_KIND,
        "artifact": {**file_digest(artifact), "format": fmt,
                     "extra_files": [file_digest(p) for p in extra_files]},
        "precision": precision,
        "source": source,
        "pruning_manifest": manifest,
        "target": target,
        "io": io,
        "build": build,
        "parity": parity,
        "accuracy": accuracy,
        "latency": latency,
        "runtime_versions": runtime_versions(),
    }


def write_sidecar(artifact: Path, data: dict[str, Any]) -> Path:
    path = sidecar_path(artifact)
    write_json_atomic(path, data)
    return path


def read_sidecar(path: str | Path) -> dict[str, Any]:
    """Read and validate a sidecar, given either the artifact or the sidecar itself."""
    path = Path(path)
    side = path if path.name.endswith(".json") else sidecar_path(path)
    if not side.is_file():
        raise EdgepruneError(f"no sidecar {side.name} next to {path.name}: it was not exported by edgeprune export")
    try:
        data = json.loads(side.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EdgepruneError(f"sidecar {side} is not valid JSON (truncated?): {exc}") from exc
    if not isinstance(data, dict) or data.get("kind") != SIDECAR_KIND:
        raise EdgepruneError(f"{side} is not an edgeprune sidecar (kind {data.get('kind') if isinstance(data, dict) else None!r})")
    if data.get("schema_version", 0) > SCHEMA_VERSION:
        raise EdgepruneError(f"sidecar {side} has schema version {data['schema_version']}; this edgeprune reads "
                             f"up to {SCHEMA_VERSION}: upgrade edgeprune")
    return data


def verify_artifact(artifact: Path, sidecar: dict[str, Any]) -> None:
    """The artifact is byte for byte the one the sidecar describes; else a truncated/changed-file error."""
    artifact = Path(artifact)
    recorded = sidecar.get("artifact") or {}
    size = artifact.stat().st_size
    if recorded.get("bytes") is not None and size != recorded["bytes"]:
        hint = "truncated" if size < recorded["bytes"] else "changed"
        raise EdgepruneError(
            f"{artifact.name} is {size} bytes but its sidecar records {recorded['bytes']}: the file is {hint} "
            "since export; copy it again or re-export"
        )
    if recorded.get("sha256") and file_digest(artifact)["sha256"] != recorded["sha256"]:
        raise EdgepruneError(f"{artifact.name} does not match the sha256 in its sidecar: the file changed "
                             "since export; re-export it")
