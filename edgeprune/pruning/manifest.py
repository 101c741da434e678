"""A portable description of a pruned model: rebuild it from the original definition plus weights.

The manifest records every layer's channel counts before and after, and every pruning step (which units
of which group went in which round, and the same in the root layers' channel indices, which is what
`rebuild` replays). A directory written by `save_pruned` holds `manifest.json` and `weights.pt`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeprune.errors import EdgepruneError
from edgeprune.io import write_json_atomic

from .graph import PruneStep, PruningGraph

__all__ = [
    "FORMAT",
    "build_manifest",
    "layer_channels",
    "load_pruned",
    "rebuild",
    "save_pruned",
]

FORMAT = "edgeprune.pruned-model"
VERSION = 1
MANIFEST_NAME = "manifest.json"
WEIGHTS_NAME = "weights.pt"
_SHAPE_ATTRS = (
    "in_channels",
    "out_channels",
    "groups",
    "in_features",
    "out_features",
    "num_features",
    "num_channels",
    "num_groups",
    "num_parameters",
    "pad",
)


def layer_channels(model: nn.Module) -> dict[str, dict[str, int]]:
    """Channel-defining attributes of every module that has any (convs, linears, norms, shortcuts)."""
    out: dict[str, dict[str, int]] = {}
    for name, m in model.named_modules():
        attrs = {a: int(getattr(m, a)) for a in _SHAPE_ATTRS if isinstance(getattr(m, a, None), int)}
        if attrs:
            out[name] = attrs
    return out


def build_manifest(
    original_model: nn.Module,
    pruned_model: nn.Module,
    graph_history: Iterable[PruneStep | Mapping[str, Any]],
    example_input: torch.Tensor | None = None,
) -> dict[str, Any]:
    """The manifest of `pruned_model`, made from `original_model` by the steps in `graph_history`.

    `graph_history` is `PruningGraph.history` (steps or their dicts). `example_input`, if given, records
    the input shape so `rebuild` can trace without one.
    """
    before, after = layer_channels(original_model), layer_channels(pruned_model)
    if set(before) != set(after):
        raise ValueError("the pruned model does not have the original model's modules")
    steps = [s if isinstance(s, PruneStep) else PruneStep.from_dict(s) for s in graph_history]
    cls = type(original_model)
    return {
        "format": FORMAT,
        "version": VERSION,
        "model_class": f"{cls.__module__}.{cls.__qualname__}",
        "input_shape": list(example_input.shape) if example_input is not None else None,
        "layers": {name: {"before": before[name], "after": after[name]} for name in before},
        "steps": [s.to_dict() for s in steps],
    }


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_pruned(model: nn.Module, manifest: Mapping[str, Any], directory: str | os.PathLike) -> Path:
    """Write `weights.pt` (the state_dict) and then `manifest.json` into `directory`, each atomically.

    The manifest is written last and names the weights' sha256, so a manifest on disk always describes
    complete weights next to it. Returns the directory.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / WEIGHTS_NAME
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{WEIGHTS_NAME}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(model.state_dict(), fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, weights)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    doc = dict(manifest)
    doc["weights"] = {"file": WEIGHTS_NAME, "sha256": _sha256(weights)}
    write_json_atomic(directory / MANIFEST_NAME, doc)
    return directory


def _check_layers(model: nn.Module, expected: Mapping[str, Mapping[str, Any]], when: str) -> None:
    have = layer_channels(model)
    for name, want in expected.items():
        got = have.get(name)
        if got != dict(want):
            raise EdgepruneError(
                f"manifest does not fit this model definition: layer {name!r} {when} is {got}, manifest says "
                f"{dict(want)}; rebuild from the model the manifest was made from"
            )


def rebuild(
    original_model: nn.Module,
    manifest: Mapping[str, Any],
    example_input: torch.Tensor | None = None,
    state_dict: Mapping[str, torch.Tensor] | None = None,
) -> nn.Module:
    """Replay the manifest's channel removals on a copy of `original_model`, then load `state_dict`.

    `original_model` is an unpruned instance of the original definition (left untouched). Without
    `example_input` a zero tensor of the recorded input shape is used for tracing.
    """
    if manifest.get("format") != FORMAT:
        raise EdgepruneError(f"not an edgeprune pruned-model manifest (format {manifest.get('format')!r})")
    if int(manifest.get("version", 0)) > VERSION:
        raise EdgepruneError(
            f"manifest version {manifest['version']} is newer than this edgeprune reads ({VERSION})"
        )
    layers = manifest["layers"]
    model = copy.deepcopy(original_model)
    _check_layers(model, {n: v["before"] for n, v in layers.items()}, "before pruning")
    if example_input is None:
        shape = manifest.get("input_shape")
        if not shape:
            raise EdgepruneError("the manifest records no input shape: pass example_input to rebuild")
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        example_input = torch.zeros(shape, device=device)
    graph = PruningGraph(model, example_input)
    graph.replay(PruneStep.from_dict(s) for s in manifest["steps"])
    _check_layers(model, {n: v["after"] for n, v in layers.items()}, "after replay")
    if state_dict is not None:
        model.load_state_dict(state_dict, strict=True)
    return model


def load_pruned(
    original_model: nn.Module, directory: str | os.PathLike, example_input: torch.Tensor | None = None
) -> nn.Module:
    """Rebuild the model saved by `save_pruned` in `directory` (weights checked against their hash)."""
    directory = Path(directory)
    try:
        manifest = json.loads((directory / MANIFEST_NAME).read_text())
    except FileNotFoundError:
        raise EdgepruneError(f"{directory} holds no {MANIFEST_NAME}: not a saved pruned model") from None
    except json.JSONDecodeError as exc:
        raise EdgepruneError(f"{directory / MANIFEST_NAME} is not valid JSON ({exc})") from None
    info = manifest.get("weights") or {"file": WEIGHTS_NAME}
    weights = directory / info["file"]
    if not weights.is_file():
        raise EdgepruneError(f"{weights} is missing; save the model again")
    if "sha256" in info and _sha256(weights) != info["sha256"]:
        raise EdgepruneError(f"{weights} does not match the hash in its manifest; save the model again")
    state = torch.load(weights, map_location="cpu", weights_only=True)
    model = rebuild(original_model, manifest, example_input)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    model.load_state_dict({k: v.to(device) for k, v in state.items()}, strict=True)
    return model
