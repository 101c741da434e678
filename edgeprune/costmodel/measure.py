"""Measuring for the cost model: the target's conditions, variant packs, and the dense model end to end.

Everything goes through the target's runner, so tables are measured by the same profiler program, with
the same runtime, threads, execution provider and optimisation level as the deployed model. Packs and the
dense model are measured in interleaved rounds, and each figure is the least-contended (minimum) of its
rounds: on a shared machine a burst of other work inflates one round, never improves one.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import EdgepruneError
from ..progress import Progress
from ..targets import TargetSpec
from .variants import Branch, Grid, LayerSignature, Pack, plan_packs, read_branch_times, write_pack

log = logging.getLogger("edgeprune.costmodel")

PACK_WARMUP = 5
PACK_PROFILE_S = 1.0  # profiled run time aimed at per pack and round
MIN_PACK_ITERATIONS = 10
GUESS_MS_PER_MAC = 5e-8  # 20 GMAC/s, until the first pack has been measured


@dataclass
class TableRequest:
    key: str
    signature: LayerSignature
    grid: Grid


@dataclass
class MeasureStats:
    """What building cost: runner calls and seconds, for reports and benchmarks."""

    runner_calls: int = 0
    pack_count: int = 0
    variants: int = 0
    measure_s: float = 0.0
    export_s: float = 0.0
    profiler_overhead_ms: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"runner_calls": self.runner_calls, "packs": self.pack_count, "variants": self.variants,
                "measure_s": round(self.measure_s, 3), "export_s": round(self.export_s, 3),
                "profiler_overhead_ms": self.profiler_overhead_ms}


def runtime_version(runtime: str) -> str | None:
    """Version of the runtime's Python module here (what the local profiler process will load)."""
    module = {"onnxruntime": "onnxruntime", "tensorrt": "tensorrt"}.get(runtime, runtime)
    try:
        return str(__import__(module).__version__)
    except Exception:
        return None


def _target_extras(target: TargetSpec) -> dict[str, Any]:
    extra: dict[str, Any] = {"device": target.device, "tensorrt": dict(target.tensorrt) or None}
    if target.runtime == "onnxruntime":
        extra["execution_provider"] = target.execution_provider
        extra["graph_optimization_level"] = target.graph_optimization_level
    return extra


def local_conditions(target: TargetSpec) -> dict[str, Any]:
    """The conditions the local profiler would record, computed here without starting it."""
    from ..profilers.common import collect_conditions, physical_cores

    threads = target.threads or physical_cores()
    cond = collect_conditions(target.runtime, runtime_version(target.runtime) or "unknown", threads,
                              target.precision)
    cond.update(_target_extras(target))
    return cond


_PROBED: dict[str, dict[str, Any]] = {}


def target_conditions(target: TargetSpec, runner: Any | None) -> dict[str, Any]:
    """Conditions of the machine that measures `target`: computed locally for a local target, else read
    from one tiny probe measurement through the runner (remembered for this process)."""
    if not target.is_remote:
        return local_conditions(target)
    memo = json.dumps(target.to_dict(), sort_keys=True, default=str)
    if memo not in _PROBED:
        if runner is None:
            raise EdgepruneError(f"target {target.name} is remote: its conditions need a runner to probe it")
        sig = LayerSignature(op="conv", in_channels=8, out_channels=8, kernel=(3, 3), padding=(1, 1, 1, 1),
                             height=8, width=8)
        pack = Pack([Branch(0, sig, 8, 8, key="probe")])
        with tempfile.TemporaryDirectory(prefix="edgeprune-cm-probe-") as tmp:
            path = write_pack(pack, Path(tmp) / "probe.onnx")
            raw = runner.measure(path, per_node=False, extra_args=pack_args(target, 5))
        cond = dict(raw.get("conditions") or {})
        if not cond:
            raise EdgepruneError(f"the profiler on target {target.name} reported no measurement conditions")
        cond.update(_target_extras(target))
        _PROBED[memo] = cond
    return _PROBED[memo]


def pack_args(target: TargetSpec, iterations: int) -> list[str]:
    """Profiler options for a pack, appended after the target's own (argparse keeps the last): per-node
    medians need a few dozen runs and no minimum time. The end-to-end timing of a pack is not used, so
    where the profiler can profile nodes longer than it times end to end (onnxruntime), it does."""
    n = str(max(5, iterations))
    if target.runtime == "onnxruntime":
        return ["--warmup", str(PACK_WARMUP), "--iterations", "5", "--min-time", "0", "--node-iterations", n]
    return ["--warmup", str(PACK_WARMUP), "--iterations", n, "--min-time", "0"]


def measure_rounds(
    requests: list[TableRequest],
    dense_onnx: Path | None,
    target: TargetSpec,
    runner: Any,
    *,
    repeats: int,
    iterations: int,
    workdir: Path,
    stats: MeasureStats,
    seed: int = 0,
) -> tuple[dict[str, list[list[float]]], list[tuple[float, list[dict]]]]:
    """Measure every requested grid (and the dense model, if given) in `repeats` interleaved rounds.

    Returns key -> latency grid (ms, rows = out widths, columns = in widths; one column for depthwise),
    each cell the minimum over rounds, and the dense model's (p50, per-node profile) of each round."""
    branches = [Branch(0, r.signature, o, i, key=r.key) for r in requests for o, i in r.grid.cells()]
    packs = plan_packs(branches)
    paths = [write_pack(p, workdir / f"pack{n}.onnx", seed=seed + n) for n, p in enumerate(packs)]
    stats.pack_count += len(packs)
    stats.variants += len(branches)
    best: dict[int, float] = {}
    dense: list[float] = []
    speed = _Speed()
    t0 = time.perf_counter()
    with Progress(max(1, repeats) * len(packs), f"cost model: measuring {len(branches)} layer variants") as bar:
        for rnd in range(max(1, repeats)):
            for pack, path in zip(packs, paths, strict=True):
                n = speed.iterations_for(pack, iterations)
                raw = runner.measure(path, per_node=True, extra_args=pack_args(target, n))
                stats.runner_calls += 1
                try:
                    times, eps = read_branch_times(raw, len(pack.branches))
                except ValueError as exc:
                    raise EdgepruneError(f"cost model: profiling {path.name} on {target.name}: {exc}") from exc
                stats.profiler_overhead_ms.append(eps)
                speed.observe(pack, sum(times))
                for b, t in zip(pack.branches, times, strict=True):
                    best[id(b)] = min(best.get(id(b), float("inf")), t)
                bar.advance()
            if dense_onnx is not None:
                dense.append(measure_dense_once(dense_onnx, runner))
                stats.runner_calls += 1
            log.info("cost model: round %d/%d measured (%d packs, %d variants)", rnd + 1, repeats,
                     len(packs), len(branches))
    stats.measure_s += time.perf_counter() - t0
    grids: dict[str, list[list[float]]] = {}
    by_key = {r.key: r for r in requests}
    for b in branches:
        req = by_key[b.key]
        grid = grids.setdefault(b.key, [[0.0] * (1 if req.grid.ins is None else len(req.grid.ins))
                                        for _ in req.grid.outs])
        row = req.grid.outs.index(b.out_channels)
        col = 0 if req.grid.ins is None else req.grid.ins.index(b.in_channels)
        grid[row][col] = best[id(b)]
    return grids, dense


class _Speed:
    """Sizes each pack's profiled runs to about PACK_PROFILE_S seconds from the speed seen so far: a pack
    of large kernels needs fewer runs for a stable median than a pack of tiny ones."""

    def __init__(self) -> None:
        self.ms = 0.0
        self.macs = 0

    def observe(self, pack: Pack, ms: float) -> None:
        self.ms += ms
        self.macs += pack.macs

    def iterations_for(self, pack: Pack, most: int) -> int:
        ms_per_mac = self.ms / self.macs if self.macs and self.ms > 0 else GUESS_MS_PER_MAC
        est_ms = pack.macs * ms_per_mac
        if est_ms <= 0:
            return most
        return int(max(min(most, MIN_PACK_ITERATIONS), min(most, PACK_PROFILE_S * 1000 / est_ms)))


def measure_dense_once(onnx_path: Path, runner: Any) -> tuple[float, list[dict]]:
    """End-to-end p50 of the dense model and its per-node profile."""
    raw = runner.measure(onnx_path, per_node=True, extra_args=None)
    try:
        return float(raw["latency_ms"]["p50"]), list(raw.get("nodes") or [])
    except (KeyError, TypeError, ValueError) as exc:
        raise EdgepruneError(f"the profile of {onnx_path.name} has no latency_ms.p50") from exc


# Runtime node types that carry a conv/linear layer (fused activations and adds included).
LAYER_OPS = {"Conv", "FusedConv", "NhwcFusedConv", "ConvTranspose", "QLinearConv", "Gemm", "FusedGemm",
             "MatMul", "FusedMatMul"}


def nonlayer_node_ms(nodes: list[dict], eps_ms: float) -> float | None:
    """Time of the nodes that are not conv/linear layers (pooling, pads, unfused adds, layout
    conversions), each less the profiler's per-node cost; None without a per-node profile."""
    if not nodes:
        return None
    return sum(max(0.0, float(n.get("latency_ms", 0.0)) - eps_ms) for n in nodes
               if str(n.get("op") or "") not in LAYER_OPS)
