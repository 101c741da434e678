"""Reload a pruned model from its run directory: `edgeprune.load(run_dir)`.

A prune run directory holds `manifest.json` + `weights.pt` (edgeprune.pruning.manifest.save_pruned) and
`source.json`, which names the original model spec and how it was loaded. Reloading builds the original
architecture from the spec, replays the manifest's channel removals, and loads the pruned weights (which
replace every original weight, so the original weights file is recorded for provenance but not needed).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import EdgepruneError
from .io import write_json_atomic
from .models import LoadedModel

SOURCE_NAME = "source.json"
SOURCE_KIND = "edgeprune.source"
SOURCE_VERSION = 1
MANIFEST_NAME = "manifest.json"
WEIGHTS_NAME = "weights.pt"


def _portable_spec(spec: str) -> str:
    """Make file-based specs absolute so the run directory reloads from any working directory."""
    if spec.startswith(("zoo:", "torchvision:")):
        return spec
    if ".py:" in spec:
        file_part, _, func = spec.rpartition(":")
        return f"{Path(file_part).resolve()}:{func}"
    return str(Path(spec).resolve())


def source_record(loaded: LoadedModel, *, allow_pickle: bool = False) -> dict[str, Any]:
    """What source.json holds for `loaded` (the unpruned model the run started from)."""
    from .sidecar import model_hash

    return {
        "kind": SOURCE_KIND,
        "schema_version": SOURCE_VERSION,
        "model": _portable_spec(loaded.spec),
        "weights": str(Path(loaded.weights).resolve()) if loaded.weights else None,
        "weights_sha256": loaded.weights_sha256,
        "model_hash": model_hash(loaded.module) if loaded.module is not None else None,
        "input_shape": list(loaded.input_shape) if loaded.input_shape else None,
        "mean": list(loaded.mean),
        "std": list(loaded.std),
        "num_classes": loaded.num_classes,
        "allow_pickle": allow_pickle,
    }


def write_source(directory: str | Path, loaded: LoadedModel, *, allow_pickle: bool = False) -> Path:
    """Write `source.json` into a run directory (prune calls this next to save_pruned)."""
    path = Path(directory) / SOURCE_NAME
    write_json_atomic(path, source_record(loaded, allow_pickle=allow_pickle))
    return path


def is_run_dir(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and (path / MANIFEST_NAME).is_file()


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise EdgepruneError(f"{path.parent} has no {path.name}: {what}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EdgepruneError(f"{path} is not valid JSON (truncated?): {exc}") from exc
    if not isinstance(data, dict):
        raise EdgepruneError(f"{path} is not a JSON object")
    return data


def read_source(run_dir: str | Path) -> dict[str, Any]:
    run_dir = Path(run_dir)
    data = _read_json(run_dir / SOURCE_NAME,
                      "it does not name the original model, so the pruned model cannot be rebuilt "
                      "(was it written by edgeprune prune?)")
    if data.get("kind") != SOURCE_KIND or not isinstance(data.get("model"), str):
        raise EdgepruneError(f"{run_dir / SOURCE_NAME} is not an edgeprune source record")
    if int(data.get("schema_version", 0)) > SOURCE_VERSION:
        raise EdgepruneError(f"{run_dir / SOURCE_NAME} is schema version {data['schema_version']}: upgrade edgeprune")
    return data


def read_manifest(run_dir: str | Path) -> dict[str, Any]:
    return _read_json(Path(run_dir) / MANIFEST_NAME, "not a prune run directory")


def load_run(run_dir: str | Path, *, allow_pickle: bool | None = None) -> LoadedModel:
    """The pruned model of a run directory as a LoadedModel (module, input shape, normalisation, provenance)."""
    from .models import load_model
    from .pruning.manifest import load_pruned

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise EdgepruneError(f"{run_dir} is not a directory (expected a prune run directory)")
    if not (run_dir / MANIFEST_NAME).is_file():
        raise EdgepruneError(f"{run_dir} has no {MANIFEST_NAME}: not a prune run directory")
    source = read_source(run_dir)
    manifest = read_manifest(run_dir)
    shape = tuple(source.get("input_shape") or manifest.get("input_shape") or ()) or None
    pickle_ok = bool(source.get("allow_pickle")) if allow_pickle is None else allow_pickle
    # The pruned weights replace every original weight: build the architecture only.
    original = load_model(source["model"], shape=shape, allow_pickle=pickle_ok)
    import torch

    example = torch.zeros(original.input_shape)
    module = load_pruned(original.module, run_dir, example)
    module.eval()
    loaded = LoadedModel(
        spec=str(run_dir),
        module=module,
        input_shape=original.input_shape,
        num_classes=source.get("num_classes", original.num_classes),
        weights=str(run_dir / WEIGHTS_NAME),
        weights_sha256=(manifest.get("weights") or {}).get("sha256"),
        info={"run_dir": str(run_dir.resolve()), "source": source, "manifest": manifest},
    )
    if source.get("mean"):
        loaded.mean = tuple(source["mean"])
    if source.get("std"):
        loaded.std = tuple(source["std"])
    return loaded


def load(run_dir: str | Path, *, allow_pickle: bool | None = None) -> Any:
    """Rebuild the pruned `torch.nn.Module` saved in a prune run directory (eval mode, on CPU)."""
    return load_run(run_dir, allow_pickle=allow_pickle).module
