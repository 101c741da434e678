"""Run named benchmarks, print their tables and write JSON to bench/results/NAME.json.

Usage: python -m bench [all | NAME ...] [--quick] [--models CASE,...] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path

# name -> module with `run(quick: bool) -> dict`
BENCHMARKS = {
    "profile": "bench.bench_profile",
    "prune_methods": "bench.bench_prune_methods",
    "lenet": "bench.bench_lenet",
    "check": "bench.bench_check",
    "costmodel": "bench.bench_costmodel",
    "deadline": "bench.bench_deadline",
    "at_deadline": "bench.bench_at_deadline",
    "criteria": "bench.bench_criteria",
    "regrow": "bench.bench_regrow",
}

RESULTS = Path(__file__).parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("names", nargs="*", default=["all"])
    parser.add_argument("--quick", action="store_true", help="smaller repeat counts (smoke run)")
    parser.add_argument("--models", help="a subset of a benchmark's cases (sets EDGEPRUNE_BENCH_MODELS)")
    parser.add_argument("--seeds", help="seeds to repeat a benchmark over, e.g. 0,1,2 (sets EDGEPRUNE_BENCH_SEEDS)")
    args = parser.parse_args(argv)
    if args.models:
        os.environ["EDGEPRUNE_BENCH_MODELS"] = args.models
    if args.seeds:
        os.environ["EDGEPRUNE_BENCH_SEEDS"] = args.seeds
    names = list(BENCHMARKS) if "all" in args.names else args.names
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    RESULTS.mkdir(exist_ok=True)
    for name in names:
        module = importlib.import_module(BENCHMARKS[name])
        started = time.time()
        figures = module.run(quick=args.quick)
        record = {"benchmark": name, "quick": args.quick, "host": platform.node(),
                  "wall_s": round(time.time() - started, 1), "figures": figures}
        out = RESULTS / f"{name}.json"
        out.write_text(json.dumps(record, indent=2, default=str) + "\n")
        print(f"[{name}] wrote {out} ({record['wall_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
