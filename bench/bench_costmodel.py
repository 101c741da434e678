"""Cost-model figures (issue 5, "Cost model"): build time, and predicted vs measured latency.

- Build time of the cost model of zoo:cifar_resnet56 at 1x3x32x32 on `cpu`, cold (empty cache) and warm
  (goal: cold <= 2 minutes).
- Prediction accuracy over random pruned configurations: each residual block of a ResNet gets a random
  inner width (conv1's outputs = conv2's inputs; no coupled channels), drawn around a per-configuration
  keep ratio and rounded down to a step edge of the measured table (what an allocator following
  `step_edges` does; EDGEPRUNE_BENCH_SNAP=grid rounds to the nearest measured width instead, any multiple
  of 8, including widths that are no edge). Every configuration is exported once and measured on the target in interleaved rounds;
  its end-to-end figure is the least-contended (minimum) p50 of the rounds, the estimator the cost model
  uses for its own measurements. Reported, as shares within ±5% / ±10%: the default ("profiled") residual,
  the constant and scaled ones, and "calibrated" (the loop's use: correct from the previous
  configuration's real measurement, then predict the next, paired within a round so both see the same
  load; every round's prediction counts). Two controls: "node sum" compares the
  per-node profile of each configuration (each node less the profiler's per-node cost, median of rounds)
  with `predict_nodes` (per-node medians suffer less than whole runs from a busy machine, so this mostly
  isolates the tables' own accuracy);
  "rounds agree" is the share of configurations whose rounds' p50 agree ((max - min) / min) within 5% / 10%
  — the noise floor of the end-to-end truth on this machine.
- ResNet-18 configurations are timed with 60 runs / 1 s (not the target's 200 / 2 s) and 2 rounds (ResNet-56:
  3 rounds) to fit the time.
- Environment: EDGEPRUNE_BENCH_MODELS=zoo:cifar_resnet56 runs a subset; EDGEPRUNE_BENCH_THREADS=N measures a
  variant of `cpu` with N threads (reported in the tables); EDGEPRUNE_BENCH_EXPORTER=legacy exports faster;
  EDGEPRUNE_BENCH_BATCH=32 sets every case's batch; EDGEPRUNE_BENCH_PRUNE=groups draws a random width for
  every channel group the pruning graph finds (residual streams and shortcut channels too, no rounding)
  instead of the blocks' inner widths: arbitrary widths, most of them off the tables' grid, which the
  latency policy never produces (its removals land on step edges); EDGEPRUNE_BENCH_PRUNE=reachable prunes
  every group the way the policy can: 1-4 rounds of the allocator's own candidates, picked at random.

`python -m bench costmodel [--quick]`, or `python -m bench.bench_costmodel [--quick]`.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .table import print_table

CASES_FULL = [("zoo:cifar_resnet56", (1, 3, 32, 32), 30), ("torchvision:resnet18", (1, 3, 224, 224), 30)]
CASES_QUICK = [("zoo:cifar_resnet56", (1, 3, 32, 32), 6)]


def _load(spec: str):
    from edgeprune.models import load_model

    return load_model(spec).module


def _blocks(model: Any) -> list[tuple[str, Any]]:
    """Residual blocks with conv1 -> bn1 -> conv2 (CIFAR and torchvision BasicBlock)."""
    return [(n, m) for n, m in model.named_modules()
            if all(hasattr(m, a) for a in ("conv1", "bn1", "conv2")) and n]


def random_config(model: Any, cm: Any, rng: random.Random, snap: str = "edges") -> dict[str, int]:
    """block path -> inner width around a random keep ratio: rounded down to a step edge of the block's
    conv1 ("edges", what an allocator following the table does) or to its nearest measured width ("grid")."""
    keep = rng.uniform(0.2, 1.0)
    config = {}
    for name, block in _blocks(model):
        full = block.conv1.out_channels
        want = full * min(1.0, max(0.05, rng.uniform(keep - 0.2, keep + 0.2)))
        if snap == "edges":
            config[name] = cm.round_width(f"{name}.conv1", round(want))
        else:
            grid = cm.tables[cm.layers[f"{name}.conv1"].table_key].outs
            config[name] = min(grid, key=lambda w, want=want: abs(w - want))
    return config


def random_groups(model: Any, example: Any, rng: random.Random) -> tuple[Any, dict[str, float]]:
    """A copy of `model` with every channel group thinned to a random share of its units, drawn around
    one random keep ratio (random units, at least one kept); returns it and each group's kept share."""
    from edgeprune.pruning import PruningGraph

    keep = rng.uniform(0.2, 1.0)
    pruned = copy.deepcopy(model)
    graph = PruningGraph(pruned, example)
    plan, kept = {}, {}
    for g in graph.groups():
        share = min(1.0, max(0.05, rng.uniform(keep - 0.2, keep + 0.2)))
        n = max(1, round(g.size * share))
        kept[g.id] = n / g.size
        if n < g.size:
            plan[g.id] = sorted(rng.sample(range(g.size), g.size - n))
    graph.prune_many(plan)
    return pruned.eval(), kept


def reachable_groups(model: Any, example: Any, cm: Any, rng: random.Random) -> tuple[Any, dict[str, float]]:
    """A copy of `model` pruned the way the latency policy can prune it: 1-4 rounds, each taking, for a
    random share of the groups, one of the allocator's own candidates at random (removals landing on a
    step edge of the tables, at most half a group, bundles included), with random unit scores in place
    of importance. Returns it and each dense group's kept share."""
    import numpy as np

    from edgeprune.allocator import candidates
    from edgeprune.latency import layer_widths
    from edgeprune.pruning import PruningGraph

    pruned = copy.deepcopy(model)
    graph = PruningGraph(pruned, example)
    sizes = {g.id: g.size for g in graph.groups()}
    local = copy.deepcopy(cm)
    touch = rng.uniform(0.2, 0.9)
    for _ in range(rng.randint(1, 4)):
        groups = graph.groups()
        local.set_channels({p: w for p, w in layer_widths(pruned).items() if p in local.layers})
        scores = {g.id: np.array([rng.random() for _ in range(g.size)]) for g in groups}
        plan: dict[str, list[int]] = {}
        for _key, options in sorted(candidates(groups, scores, local).items()):
            if options and rng.random() < touch:
                for gid, units in rng.choice(options).removals.items():
                    plan[gid] = list(units)
        if plan:
            graph.prune_many(plan)
    now = {g.id: g.size for g in graph.groups()}
    return pruned.eval(), {gid: now.get(gid, size) / size for gid, size in sizes.items()}


def pruned_copy(model: Any, config: dict[str, int]) -> Any:
    from torch import nn

    pruned = copy.deepcopy(model)
    for name, block in _blocks(pruned):
        w = config[name]
        c1, c2 = block.conv1, block.conv2
        block.conv1 = nn.Conv2d(c1.in_channels, w, c1.kernel_size, c1.stride, c1.padding, bias=c1.bias is not None)
        block.bn1 = nn.BatchNorm2d(w)
        block.conv2 = nn.Conv2d(w, c2.out_channels, c2.kernel_size, c2.stride, c2.padding, bias=c2.bias is not None)
    return pruned.eval()


def channels_of(model: Any, config: dict[str, int]) -> dict[str, tuple[int, int]]:
    ch = {}
    for name, block in _blocks(model):
        w = config[name]
        ch[f"{name}.conv1"] = (w, block.conv1.in_channels)
        ch[f"{name}.conv2"] = (block.conv2.out_channels, w)
    return ch


def _within(errors: list[float], bound: float) -> float:
    return sum(abs(e) <= bound for e in errors) / len(errors) if errors else float("nan")


def _node_time(nodes: list[dict], eps: float) -> float:
    return sum(max(0.0, float(n["latency_ms"]) - eps) for n in nodes)


def evaluate(spec: str, shape: tuple[int, ...], n_configs: int, *, rounds: int, exporter: str, seed: int,
             cache_dir: Path) -> dict[str, Any]:
    import torch

    from edgeprune.costmodel import CostModel
    from edgeprune.onnx_export import export_onnx
    from edgeprune.runners import open_runner
    from edgeprune.targets import load_target

    target = load_target("cpu")
    if os.environ.get("EDGEPRUNE_BENCH_THREADS"):  # a variant of `cpu` with fixed threads, labelled as such
        target = dataclasses.replace(target, threads=int(os.environ["EDGEPRUNE_BENCH_THREADS"]))
    model = _load(spec)
    example = torch.zeros(shape)
    t0 = time.perf_counter()
    cm = CostModel.build(model, example, target, cache=cache_dir, exporter=exporter)
    cold_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    warm = CostModel.build(model, example, target, cache=cache_dir, exporter=exporter)
    warm_s = time.perf_counter() - t0
    assert warm.info["runner_calls"] == 0, "warm build measured something"
    eps = statistics.median(cm.info["profiler_overhead_ms"] or [0.0])

    rng = random.Random(seed)
    snap = os.environ.get("EDGEPRUNE_BENCH_SNAP", "edges")
    prune_mode = os.environ.get("EDGEPRUNE_BENCH_PRUNE", "inner")
    if prune_mode not in ("inner", "groups", "reachable"):
        raise SystemExit(f"EDGEPRUNE_BENCH_PRUNE must be inner, groups or reachable, got {prune_mode!r}")
    from edgeprune.latency import layer_widths

    # (pruned model, its (out, in) per cost-modelled layer, mean kept share) per configuration
    variants: list[tuple[Any, dict[str, tuple[int, int]], float]] = []
    for _ in range(n_configs):
        if prune_mode in ("groups", "reachable"):
            pruned, kept = (random_groups(model, example, rng) if prune_mode == "groups"
                            else reachable_groups(model, example, cm, rng))
            ch = {p: w for p, w in layer_widths(pruned).items() if p in cm.layers}
            variants.append((pruned, ch, statistics.mean(kept.values())))
        else:
            config = random_config(model, cm, rng, snap)
            variants.append((pruned_copy(model, config), channels_of(model, config),
                             statistics.mean(config[b] / blk.conv1.out_channels for b, blk in _blocks(model))))
    configs = [ch for _, ch, _ in variants]
    # Large models: fewer timed runs per measurement (each run is long, and 30 configs x rounds add up).
    big = sum(e.signature.macs() for e in cm.layers.values()) > 1e9
    truth_target = target.with_measure(iterations=60, min_time_s=1.0) if big else target
    extra = ["--node-iterations", "20"] if big else None
    e2e: list[list[float]] = [[] for _ in configs]
    node: list[list[float]] = [[] for _ in configs]
    dense_runs: list[float] = []
    export_s = 0.0
    with tempfile.TemporaryDirectory(prefix="edgeprune-bench-cm-") as tmp, open_runner(truth_target) as runner:
        paths = []
        for k, (pruned, _, _) in enumerate(variants):
            t1 = time.perf_counter()
            paths.append(export_onnx(pruned, shape, Path(tmp) / f"c{k}" / "model.onnx", exporter=exporter).path)
            export_s += time.perf_counter() - t1
        dense_path = export_onnx(model, shape, Path(tmp) / "dense" / "model.onnx", exporter=exporter).path
        t1 = time.perf_counter()
        for _ in range(rounds):  # interleaved: every config once per round
            dense_runs.append(runner.measure(dense_path, per_node=False)["latency_ms"]["p50"])
            for k, path in enumerate(paths):
                raw = runner.measure(path, per_node=True, extra_args=extra)
                e2e[k].append(raw["latency_ms"]["p50"])
                node[k].append(_node_time(raw["nodes"], eps))
        measure_s = time.perf_counter() - t1

    # The loop's use: measure this configuration, calibrate on it, predict the next one, measure that
    # seconds later. Paired within each round, so both measurements see the same machine load.
    cal_errors: list[list[float]] = [[] for _ in configs]
    for r in range(rounds):
        calibrated = copy.deepcopy(cm)
        for k, ch in enumerate(configs):
            if k > 0:
                cal_errors[k].append((calibrated.predict(ch) - e2e[k][r]) / e2e[k][r])
            calibrated.calibrate(e2e[k][r], ch)
    rows = []
    for k, ch in enumerate(configs):
        truth = min(e2e[k])
        preds = {}
        for mode in ("profiled", "constant", "scaled"):
            cm.residual_mode = mode
            preds[mode] = cm.predict(ch)
        cm.residual_mode = "profiled"
        node_truth = statistics.median(node[k])
        node_pred = cm.predict_nodes(ch)
        rows.append({
            "config": k, "keep": variants[k][2],
            "measured_ms": truth, "measured_rounds_ms": e2e[k],
            "round_spread": (max(e2e[k]) - min(e2e[k])) / min(e2e[k]),
            **{f"predicted_{m}_ms": v for m, v in preds.items()},
            **{f"error_{m}": (v - truth) / truth for m, v in preds.items()},
            "errors_calibrated_per_round": cal_errors[k],
            "error_calibrated": statistics.median(cal_errors[k]) if cal_errors[k] else None,
            "node_measured_ms": node_truth, "node_predicted_ms": node_pred,
            "node_error": (node_pred - node_truth) / node_truth,
        })
    share = {}
    for col in ("error_profiled", "error_constant", "error_scaled", "error_calibrated", "node_error"):
        if col == "error_calibrated":  # every paired prediction counts
            errs = [e for r in rows for e in r["errors_calibrated_per_round"]]
        else:
            errs = [r[col] for r in rows if r[col] is not None]
        share[col] = {"within_5pct": _within(errs, 0.05), "within_10pct": _within(errs, 0.10),
                      "median_abs": statistics.median(abs(e) for e in errs) if errs else None}
    spreads = [r["round_spread"] for r in rows]
    return {
        "model": spec, "shape": "x".join(map(str, shape)), "exporter": exporter, "configs": n_configs,
        "threads": cm.conditions.get("threads"), "snap": snap if prune_mode == "inner" else None, "prune": prune_mode,
        "rounds": rounds, "build_cold_s": round(cold_s, 1), "build_warm_s": round(warm_s, 2),
        "build_info": cm.info, "dense_ms_at_build": cm.dense_ms, "dense_layer_ms": cm.dense_layer_ms,
        "nonlayer_ms": cm.nonlayer_ms, "dense_ms_during_eval": dense_runs,
        "truth_settings": {"iterations": truth_target.measure.iterations, "min_time_s": truth_target.measure.min_time_s},
        "export_s": round(export_s, 1), "measure_s": round(measure_s, 1), "shares": share,
        "noise_floor": {"rounds_within_5pct": _within(spreads, 0.05), "rounds_within_10pct": _within(spreads, 0.10)},
        "load_avg": os.getloadavg(), "rows": rows,
    }


def n_macs_big(spec: str) -> bool:
    return spec.startswith("torchvision:")  # the 224x224 cases: long runs, fewer rounds


def run(quick: bool = False) -> dict:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    cases = CASES_QUICK if quick else CASES_FULL
    only = os.environ.get("EDGEPRUNE_BENCH_MODELS")  # e.g. "zoo:cifar_resnet56": a subset of the cases
    if only:
        cases = [c for c in cases if c[0] in only.split(",")]
    exporter = os.environ.get("EDGEPRUNE_BENCH_EXPORTER", "dynamo")
    results = []

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:+.1f}"

    with tempfile.TemporaryDirectory(prefix="edgeprune-bench-cache-") as cache:
        for spec, shape, n in cases:
            if os.environ.get("EDGEPRUNE_BENCH_BATCH"):
                shape = (int(os.environ["EDGEPRUNE_BENCH_BATCH"]), *shape[1:])
            rounds = 2 if quick or n_macs_big(spec) else 3
            results.append(evaluate(spec, shape, n, rounds=rounds, exporter=exporter, seed=0, cache_dir=Path(cache)))
            r = results[-1]
            print_table(
                f"{spec} {r['shape']} on cpu ({r['threads']} threads), random {r['prune']} widths: "
                "predicted vs measured (ms; errors in %)",
                ["cfg", "keep", "p50 measured", "round spread", "pred", "err", "err const.", "err scaled",
                 "err calib.", "node sum", "node pred", "node err"],
                [[x["config"], round(x["keep"], 2), x["measured_ms"], pct(x["round_spread"]),
                  x["predicted_profiled_ms"], pct(x["error_profiled"]), pct(x["error_constant"]),
                  pct(x["error_scaled"]), pct(x["error_calibrated"]), x["node_measured_ms"], x["node_predicted_ms"],
                  pct(x["node_error"])] for x in r["rows"]],
            )
    print_table(
        "cost model on cpu: build time, and share of predictions within ±5% / ±10% of the measurement",
        ["model", "shape", "threads", "cold s", "warm s", "n", "profiled", "constant", "scaled", "calibrated",
         "node sum", "rounds agree"],
        [[r["model"], r["shape"], r["threads"], r["build_cold_s"], r["build_warm_s"], r["configs"],
          *[f"{r['shares'][c]['within_5pct']:.2f} / {r['shares'][c]['within_10pct']:.2f}"
            for c in ("error_profiled", "error_constant", "error_scaled", "error_calibrated", "node_error")],
          f"{r['noise_floor']['rounds_within_5pct']:.2f} / {r['noise_floor']['rounds_within_10pct']:.2f}"]
         for r in results],
    )
    return {"cases": results}


if __name__ == "__main__":
    import json

    figures = run(quick="--quick" in sys.argv)
    out = Path(__file__).parent / "results" / "costmodel.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"benchmark": "costmodel", "quick": "--quick" in sys.argv, "figures": figures},
                              indent=2, default=str) + "\n")
    print(f"[costmodel] wrote {out}")
