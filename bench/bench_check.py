"""CI-gate figures (issue: CI latency regression checks): how often `edgeprune check` is wrong here.

Model: a plain stack of `depth` 3x3 Conv(32)-ReLU layers on a 1x3x16x16 input (built as ONNX directly;
~1.2 ms on 2 idle cores), measured on the `cpu` target with check's defaults, metric p50, --max-regression
5%, alpha 0.05 (see edgeprune/stats.py for the rule). With --baseline-model both models run in one
profiler process, alternating per iteration (the A/B mode), for the target's warm-up, iterations and
minimum time, and the pairs are cut into 6 paired blocks (one more A/B run, 6 more blocks, while the
verdict is inconclusive, up to 18). A stored baseline and its check are measured alone, each in 6 blocks
of one profiler process each.

- false_failures.interleaved: `check BASE --baseline-model BASE` (both measured now, interleaved),
  repeated N times; failures / N (goal 0/20). `max_lower_bound` is the largest 95% lower bound of the
  change seen (a failure needs it above +5%); `re_measured` counts checks that needed more blocks.
- false_failures.stored: a fresh baseline of BASE written with --update-baseline, then `check BASE
  --baseline FILE`, N times; failures / N (goal 0/20). The stored path cannot cancel machine drift, so
  this is the harder case on a shared machine.
- sweep: candidates deeper than BASE (depth 40 -> 41 ... 48, each extra layer ~2-3% more time), each
  checked against BASE with --baseline-model. `slowdown` is the median of the measured ratio - 1 over the
  runs (what the slowdown actually was, not what was intended). `detected_5pct` counts detections at
  the default 5% allowance; `detected_0pct` re-decides the same pooled samples with no allowance (a pure
  test at alpha 0.05: the machine's sensitivity).
- detection_10pct: the sweep point meant to be >= 10% slower (goal 20/20 detections; its measured
  slowdown is in the record).
- smallest_reliable: the smallest measured slowdown detected in every run, per allowance.
- busy_share: median share of the base model's iterations slower than twice its fastest tenth (how much
  the machine's other work got in the way while measuring; ~0 on an idle machine).
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

import numpy as np

from edgeprune import stats
from edgeprune.check import CheckConfig, check

from .table import print_table

BASE_DEPTH = 40
SWEEP_DEPTHS = (41, 42, 43, 45, 48)
DETECTION_DEPTH = 45  # +11..15% here, depending on load; the figure records the slowdown actually measured


def conv_stack(path: Path, depth: int, width: int = 32, size: int = 16) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits, nodes, x, cin = [], [], "input", 3
    for i in range(depth):
        w = numpy_helper.from_array((rng.standard_normal((width, cin, 3, 3)) * 0.05).astype(np.float32),
                                    f"conv{i}.weight")
        inits.append(w)
        nodes.append(helper.make_node("Conv", [x, w.name], [f"c{i}"], name=f"conv{i}", pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}"))
        x, cin = f"r{i}", width
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["output"], name="pool"))
    graph = helper.make_graph(
        nodes, "stack", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, width, 1, 1])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def _blocks(report: dict) -> list[list[float]]:
    return stats.split_blocks(report["samples_ms"], report.get("samples_blocks"))


def run(quick: bool = False) -> dict:
    runs = 3 if quick else 20
    sweep_runs = 3 if quick else 10
    measure = {"iterations": 60, "min_time_s": 0.6} if quick else {}
    with tempfile.TemporaryDirectory(prefix="edgeprune-bench-check-") as tmp:
        d = Path(tmp)
        base = str(conv_stack(d / "base.onnx", BASE_DEPTH))

        def gate(model: str, **kw) -> object:
            return check(CheckConfig(model=model, per_node=False, **measure, **kw))

        interleaved = [gate(base, baseline_model=base) for _ in range(runs)]
        stored = []
        for i in range(runs):
            baseline = str(d / f"baseline{i}.json")
            gate(base, baseline=baseline, update_baseline=True)
            stored.append(gate(base, baseline=baseline))

        sweep = []
        for depth in SWEEP_DEPTHS if not quick else (42, DETECTION_DEPTH, 48):
            cand = str(conv_stack(d / f"depth{depth}.onnx", depth))
            n = runs if depth == DETECTION_DEPTH else sweep_runs
            results = [gate(cand, baseline_model=base) for _ in range(n)]
            zero = [stats.compare_to_baseline(_blocks(r.baseline), _blocks(r.candidate), max_regression=0.0,
                                              paired=True).failed for r in results]
            sweep.append({
                "depth": depth,
                "runs": n,
                "slowdown": statistics.median(r.regression.change for r in results),
                "slowdown_range": [min(r.regression.change for r in results),
                                   max(r.regression.change for r in results)],
                "detected_5pct": sum(not r.passed for r in results),
                "detected_0pct": sum(zero),
                "re_measured": sum(_re_measured(r) for r in results),
            })

    def false_failures(results: list) -> dict:
        return {"failures": sum(not r.passed for r in results), "runs": len(results),
                "max_change": max(r.regression.change for r in results),
                "max_lower_bound": max(r.regression.ratio_ci[0] - 1 for r in results),
                "re_measured": sum(_re_measured(r) for r in results)}

    def smallest(key: str) -> float | None:
        reliable = [s["slowdown"] for s in sweep if s[key] == s["runs"]]
        return min(reliable) if reliable else None

    detection = next((s for s in sweep if s["depth"] == DETECTION_DEPTH), None)
    figures = {
        "settings": {"base_depth": BASE_DEPTH, "max_regression": 0.05, "alpha": stats.DEFAULT_ALPHA,
                     "measure": measure or "target defaults", "blocks": 6,
                     "baseline_model": "A/B: one process, alternating per iteration, cut into paired blocks"},
        "false_failures": {"interleaved": false_failures(interleaved), "stored": false_failures(stored)},
        "detection_10pct": detection,
        "sweep": sweep,
        "smallest_reliable": {"allow_5pct": smallest("detected_5pct"), "allow_0pct": smallest("detected_0pct")},
        "base_p50_ms": statistics.median(r.candidate_latency["p50"] for r in interleaved),
        "busy_share": statistics.median(r.noise["candidate_slow_share"] for r in interleaved),
        "check_wall_s": statistics.median(r.wall_s for r in interleaved),
    }
    ff = figures["false_failures"]
    print_table(
        "check: false failures of a model against its own fresh baseline (goal 0)",
        ["baseline", "failures", "runs", "max change %", "max 95% lower bound %", "re-measured"],
        [[k, v["failures"], v["runs"], v["max_change"] * 100, v["max_lower_bound"] * 100, v["re_measured"]]
         for k, v in ff.items()],
    )
    print_table(
        f"check: detections of slower candidates (depth {BASE_DEPTH} -> N), interleaved",
        ["depth", "measured slowdown %", "range %", "detected @5%", "detected @0%", "runs", "re-measured"],
        [[s["depth"], s["slowdown"] * 100, f"{s['slowdown_range'][0] * 100:.1f}..{s['slowdown_range'][1] * 100:.1f}",
          s["detected_5pct"], s["detected_0pct"], s["runs"], s["re_measured"]] for s in sweep],
    )
    sr = figures["smallest_reliable"]
    print(f"smallest slowdown detected in every run: {_fmt(sr['allow_5pct'])} (5% allowance), "
          f"{_fmt(sr['allow_0pct'])} (no allowance); base p50 {figures['base_p50_ms']:.3f} ms; "
          f"iterations > 2x the fastest tenth: {figures['busy_share']:.0%} (median); "
          f"one check {figures['check_wall_s']:.1f} s")
    return figures


def _re_measured(result: object) -> bool:
    """Whether the check measured more than its first round of blocks (the first verdict was inconclusive)."""
    return len(result.candidate["samples_blocks"]) > 6


def _fmt(value: float | None) -> str:
    return "none" if value is None else f"{value * 100:.1f}%"


if __name__ == "__main__":
    run(quick=True)
