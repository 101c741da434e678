"""`edgeprune.profile`: where a model's time and memory go on a target, per PyTorch module."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .attribution import attribute, attributed_share, index_graph
from .errors import EdgepruneError
from .models import LoadedModel, load_model, sha256_file
from .onnx_export import export_onnx
from .progress import Progress
from .runners import open_runner
from .targets import HostSpec, TargetSpec, load_target

SCHEMA_VERSION = 1


@dataclass
class ProfileConfig:
    """Options of `edgeprune profile`, as the CLI parses them."""

    model: str
    target: str = "cpu"
    weights: str | None = None
    shape: tuple[int, ...] | None = None
    allow_pickle: bool = False
    host: str | None = None
    accept_new_host_key: bool = False
    warmup: int | None = None
    iterations: int | None = None
    min_time_s: float | None = None
    per_node: bool = True


@dataclass
class ProfileReport:
    """The report `edgeprune profile` prints; `to_dict()` is its versioned JSON form."""

    model: dict[str, Any]
    target: dict[str, Any]
    latency_ms: dict[str, float]
    samples_ms: list[float]
    layers: list[dict[str, Any]]
    memory: dict[str, Any]
    attribution: dict[str, Any]
    raw: dict[str, Any] = field(repr=False, default_factory=dict)
    wall_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "kind": "edgeprune.profile",
            "model": self.model,
            "target": self.target,
            "latency_ms": self.latency_ms,
            "samples_ms": self.samples_ms,
            "layers": self.layers,
            "memory": self.memory,
            "attribution": self.attribution,
            "wall_s": round(self.wall_s, 3),
        }

    def slowest(self, n: int = 15) -> list[dict[str, Any]]:
        return sorted(self.layers, key=lambda layer: -layer["latency_ms"])[:n]


def _layer_rows(nodes: list[dict]) -> list[dict]:
    total = sum(n.get("latency_ms", 0.0) for n in nodes) or 1.0
    rows = []
    for n in nodes:
        shapes = n.get("output_shapes") or []
        mem = n.get("memory") or {}
        rows.append({
            "name": n["name"],
            "module": n.get("module"),
            "op": n.get("op"),
            "output_shape": shapes[0] if shapes else None,
            "latency_ms": n.get("latency_ms", 0.0),
            "share": n.get("latency_ms", 0.0) / total,
            "memory_bytes": mem.get("output_bytes", mem.get("output_size")),
            "onnx_node": n.get("onnx_node"),
            "attribution": n.get("attribution"),
        })
    return rows


def build_report(raw: dict, target: TargetSpec, model_info: dict, onnx_path: Path,
                 module_names: set[str] | None) -> ProfileReport:
    """Turn a profiler's raw output into a report with every layer joined to its module."""
    nodes = raw.get("nodes") or []
    if nodes:
        nodes = attribute(nodes, index_graph(onnx_path, module_names))
    node_sum = sum(n.get("latency_ms", 0.0) for n in nodes)
    p50 = raw["latency_ms"]["p50"]
    return ProfileReport(
        model=model_info,
        target={"spec": target.to_dict(), "conditions": raw.get("conditions", {}),
                "settings": raw.get("settings", {}), "remote": raw.get("remote")},
        latency_ms=raw["latency_ms"],
        samples_ms=raw.get("samples_ms", []),
        layers=_layer_rows(nodes),
        memory=raw.get("memory", {}),
        attribution={
            "attributed_share": attributed_share(nodes) if nodes else None,
            "node_sum_ms": node_sum,
            "node_sum_over_p50": node_sum / p50 if p50 else None,
        },
        raw={k: raw.get(k) for k in ("engine", "model")},
    )


def resolve_target(name: str | TargetSpec, host: str | None = None, accept_new_host_key: bool = False,
                   **measure: Any) -> TargetSpec:
    host_spec = HostSpec.parse(host, accept_new_host_key=accept_new_host_key) if host else None
    return load_target(name, host_spec).with_measure(**measure)


def export_for_target(loaded: LoadedModel, directory: Path) -> tuple[Path, dict]:
    """The ONNX the target will run, and what the report records about it."""
    if loaded.onnx_path is not None:
        return loaded.onnx_path, {"exporter": None, "onnx_sha256": sha256_file(loaded.onnx_path)}
    result = export_onnx(loaded.module, loaded.input_shape, directory / "model.onnx", model_name=loaded.spec)
    return result.path, {"exporter": result.exporter, "opset": result.opset,
                         "onnx_sha256": sha256_file(result.path)}


def profile(
    model: str | LoadedModel,
    target: str | TargetSpec = "cpu",
    *,
    weights: str | None = None,
    shape: tuple[int, ...] | None = None,
    allow_pickle: bool = False,
    host: str | None = None,
    accept_new_host_key: bool = False,
    warmup: int | None = None,
    iterations: int | None = None,
    min_time_s: float | None = None,
    per_node: bool = True,
) -> ProfileReport:
    """Measure `model` on `target`: end-to-end latency statistics and per-layer time and memory."""
    started = time.perf_counter()
    spec = resolve_target(target, host, accept_new_host_key, warmup=warmup, iterations=iterations,
                          min_time_s=min_time_s)
    if shape is None and spec.input_shape is not None and not isinstance(model, LoadedModel):
        shape = spec.input_shape
    loaded = model if isinstance(model, LoadedModel) else load_model(
        model, weights=weights, shape=shape, allow_pickle=allow_pickle)
    module_names = {n for n, _ in loaded.module.named_modules() if n} if loaded.module is not None else None
    # The runner opens first: a target that cannot be measured here fails before any work or progress line.
    with open_runner(spec) as runner, tempfile.TemporaryDirectory(prefix="edgeprune-onnx-") as tmp, \
            Progress(2, "profiling: exporting") as bar:
        onnx_path, export_info = export_for_target(loaded, Path(tmp))
        bar.advance(description=f"profiling: measuring on {spec.name}")
        extra = []
        if loaded.onnx_path is not None and loaded.input_shape:
            import onnx

            first_input = onnx.load(str(onnx_path), load_external_data=False).graph.input[0].name
            extra = ["--shape", f"{first_input}=" + "x".join(map(str, loaded.input_shape))]
        raw = runner.measure(onnx_path, per_node=per_node, extra_args=extra)
        bar.advance(description="profiling: measured")
        report = build_report(raw, spec, {**loaded.describe(), **export_info}, onnx_path, module_names)
    if not report.samples_ms:
        raise EdgepruneError("the profiler returned no latency samples")
    report.wall_s = time.perf_counter() - started
    return report


def run_profile(config: ProfileConfig) -> ProfileReport:
    """The CLI's entry: a ProfileConfig in, a report out."""
    return profile(
        config.model, config.target, weights=config.weights, shape=config.shape,
        allow_pickle=config.allow_pickle, host=config.host, accept_new_host_key=config.accept_new_host_key,
        warmup=config.warmup, iterations=config.iterations, min_time_s=config.min_time_s,
        per_node=config.per_node,
    )
