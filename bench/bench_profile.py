"""Profiling figures (issue: foundation): stability of p50, per-layer sum vs end-to-end, wall time.

For torchvision:resnet18 at 1x3x224x224 and zoo:cifar_resnet56 at batch 1 and 32 on the `cpu` target:
- spread of p50 over 5 repeated `profile` calls: each run's deviation from their median (goal within ±5%);
- sum of per-layer medians / end-to-end p50 (onnxruntime's per-node profiling adds a fixed cost per node,
  so small, overhead-bound layers inflate the sum; large layers keep it near 1);
- wall time of one profile call, export included (goal <= 30 s for resnet18).
"""

from __future__ import annotations

import statistics

from edgeprune.models import load_model
from edgeprune.profiling import profile

from .table import print_table

CASES = [
    ("torchvision:resnet18", (1, 3, 224, 224)),
    ("zoo:cifar_resnet56", (1, 3, 32, 32)),
    ("zoo:cifar_resnet56", (32, 3, 32, 32)),
]


def run(quick: bool = False) -> dict:
    repeats = 2 if quick else 5
    results = []
    for spec, shape in CASES:
        loaded = load_model(spec, shape=shape)
        reports = [profile(loaded, "cpu") for _ in range(repeats)]
        p50s = [r.latency_ms["p50"] for r in reports]
        med = statistics.median(p50s)
        devs = [(p - med) / med * 100 for p in p50s]
        results.append({
            "model": spec, "shape": "x".join(map(str, shape)), "p50_ms": p50s,
            "max_abs_dev_pct": max(abs(d) for d in devs),
            "within_5pct": all(abs(d) <= 5 for d in devs),
            "layer_sum_over_p50": [round(r.attribution["node_sum_over_p50"], 3) for r in reports],
            "attributed_share": min(r.attribution["attributed_share"] for r in reports),
            "wall_s": [round(r.wall_s, 2) for r in reports],
            "threads": reports[0].target["conditions"].get("threads"),
        })
    print_table(
        "profile on cpu: p50 stability, layer-sum ratio, wall time",
        ["model", "shape", "median p50 ms", "max |dev| %", "layer sum/p50", "attributed", "wall s (max)"],
        [[r["model"], r["shape"], statistics.median(r["p50_ms"]), r["max_abs_dev_pct"],
          statistics.median(r["layer_sum_over_p50"]), r["attributed_share"], max(r["wall_s"])] for r in results],
    )
    return {"cases": results}
