"""Units given back to a uniform share (issue 5, a follow-up to benchmark 2): does the plan regrow.py makes
from a uniformly pruned ResNet-56 keep more accuracy than the uniform share it came from, at the same measured
deadline?

Benchmark 2 (`at_deadline`) runs the whole loop, whose outcome on a shared machine turns as much on noisy
readings as on the plans. Here only the plan changes. Per seed: `zoo:cifar_resnet56` with the shared weights,
input 32x3x32x32 on target `cpu`; the deadline D is half the dense p50. The policy's own pieces make the plans
from the dense model with activation importance: the uniform shares (LatencyPlanner.uniform_family) from 0.5
down, and a share with units given back up to the aim (LatencyPlanner.regrown, from the share's reading).
Each plan is timed `repeats` times in turn with the dense model (dense, plan, dense, plan, ..., each reading in
a profiler process of its own): its median ratio to the dense readings around it, at the dense p50 the
deadline was set from. The shares are timed widest first (at most SHARE_TRIES) until one reads under the aim:
the uniform model the loop would deliver at this deadline, and what benchmark 2's uniform baseline is (the
halved model read 0.50-0.54 of dense in session 16, over the 0.4875 aim). A seed where none does, or where
the tables find nothing to give back, is reported as such. A regrown plan that reads over the deadline is
planned once more, as the loop does (prune._regrown_probes), with the allowance scaled by the latency it really
added over what the tables predicted, and the last plan is the one compared. Then both get identical
fine-tuning (the same first `train_limit` CIFAR-10 training images, epochs, lr, batch size, seed, cosine
schedule) and are tested on the 2,500 odd-position images of val.npz (benchmark 2's test set); McNemar's exact
test on the same images.

Reproduce: `python -m bench regrow --seeds 0,1,2` (EDGEPRUNE_BENCH_TRAIN_LIMIT, default 5000, and
EDGEPRUNE_BENCH_EPOCHS, default 2, as the criteria benchmark). About 4-7 min per seed on a quiet 2-core machine,
plus the cost model's first build (about 2 min, then cached). `--quick` is a smoke run on a few batches.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import median
from typing import Any

from bench.bench_at_deadline import _predictions, mcnemar
from bench.cifar_seeds import per_seed, resnet56_and_data
from bench.table import print_table
from edgeprune.probing import RATIO_BOUNDS

MODEL = "zoo:cifar_resnet56"


@dataclass(frozen=True)
class Setup:
    shape: tuple[int, ...]
    train_limit: int
    epochs: int
    repeats: int  # interleaved readings of each plan
    batch_size: int = 64
    lr: float = 0.01
    calib_images: int = 256
    test_images: int = 2500
    warmup: int = 10
    iterations: int = 100
    min_time_s: float = 2.0
    max_batches: int | None = None


def setup_from_env(quick: bool) -> Setup:
    if quick:
        return Setup(shape=(8, 3, 32, 32), train_limit=64, epochs=1, repeats=1, calib_images=32, test_images=200,
                     warmup=2, iterations=10, min_time_s=0.1, max_batches=2)
    return Setup(shape=(32, 3, 32, 32), train_limit=int(os.environ.get("EDGEPRUNE_BENCH_TRAIN_LIMIT", "5000")),
                 epochs=int(os.environ.get("EDGEPRUNE_BENCH_EPOCHS", "2")), repeats=3)


def in_turn(p50: dict[str, Any], names: list[str], repeats: int) -> dict[str, Any]:
    """Each model timed `repeats` times between readings of the dense model: `p50(name)` takes one reading.
    Returns every reading and, per model, the median ratio to the mean of its two dense neighbours."""
    readings: dict[str, list[float]] = {"dense": [p50["dense"]()]}
    ratios: dict[str, list[float]] = {n: [] for n in names}
    for rep in range(repeats):
        for n in (names if rep % 2 == 0 else list(reversed(names))):
            own = p50[n]()
            after = p50["dense"]()
            readings.setdefault(n, []).append(own)
            ratios[n].append(own / ((readings["dense"][-1] + after) / 2))
            readings["dense"].append(after)
    return {"readings_ms": readings, "ratios": ratios, "ratio": {n: float(median(r)) for n, r in ratios.items()},
            "dense_ms": float(median(readings["dense"]))}


SHARE_TRIES = 4  # uniform shares timed, from 0.5 down, in search of one that reads under the aim


def plans(dense, example, target, scores, groups, dense_ms: float):
    """(the uniform shares' units from 0.5 down, widest first, as [(share, units)]; a function giving the units
    of a share regrown from its reading) made by the policy's planner on a cost model of the dense model."""
    from edgeprune.costmodel import CostModel
    from edgeprune.latency import LatencyPlanner, layer_widths

    cm = CostModel.build(dense, example, target)
    cm.calibrate(dense_ms)
    planner = LatencyPlanner(cm, dense_ms, 0.5 * dense_ms)
    planner.dense_sizes = {g.id: g.size for g in groups}
    widths = layer_widths(dense)
    family, _start = planner.uniform_family(groups, scores, widths)
    shares = [(info["share"], units) for units, info in family if info["share"] <= 0.5]

    def regrown(units, reading_ms: float, added_ratio: float | None = None):
        out = planner.regrown(units, groups, scores, widths, reading_ms, added_ratio=added_ratio)
        return (out[0], out[1]) if out is not None else (units, {"restored": []})

    return shares, regrown


def run_seed(setup: Setup, seed: int, root: Path, tmp: Path) -> dict[str, Any]:
    import torch

    from edgeprune.latency import LatencyPlanner, aim_ms, measure_model
    from edgeprune.profiling import resolve_target
    from edgeprune.pruning import PruningGraph, count_params_flops, get_importance
    from edgeprune.training import TrainConfig, finetune

    loaded, test, task = resnet56_and_data(root, tmp, seed, test_images=setup.test_images,
                                           train_limit=setup.train_limit, batch_size=setup.batch_size, shape=setup.shape)
    dense = loaded.module.eval()
    target = resolve_target("cpu", warmup=setup.warmup, iterations=setup.iterations, min_time_s=setup.min_time_s)
    example = torch.zeros(setup.shape)
    graph = PruningGraph(copy.deepcopy(dense), example)
    groups = graph.groups()
    torch.manual_seed(seed)
    scores = get_importance("activation").scores(graph.model, graph, groups, task.calibration_batches(setup.calib_images))

    def p50_of(module):
        return lambda: float(measure_model(loaded, module, target)["latency_ms"]["p50"])

    def build(units):
        model = copy.deepcopy(dense)
        PruningGraph(model, example).prune_many(units)
        return model.eval()

    dense_ms = p50_of(dense)()
    aim_ratio = aim_ms(0.5, LatencyPlanner.slack)  # the aim of a deadline at half the dense p50, as a ratio
    shares, regrow_from = plans(dense, example, target, scores, groups, dense_ms)
    tried = []
    # the uniform share the loop would deliver: the widest that reads under the aim, timed from 0.5 down
    for share, units in shares[:SHARE_TRIES]:
        uniform = build(units)
        first = in_turn({"dense": p50_of(dense), "uniform": p50_of(uniform)}, ["uniform"], setup.repeats)
        tried.append({"share": share, "ratio": first["ratio"]["uniform"], "ratios": first["ratios"]["uniform"]})
        print(f"seed {seed}: dense {dense_ms:.2f} ms, the {share:.4g} share at {first['ratio']['uniform']:.3f} of it "
              f"(ratios {[round(r, 3) for r in first['ratios']['uniform']]})", flush=True)
        if first["ratio"]["uniform"] < aim_ratio:
            break
    # as the loop reads a plan: its ratio to the dense model, at the dense speed the deadline was set from
    share_reading = first["ratio"]["uniform"] * dense_ms
    regrown_units, info = regrow_from(units, share_reading)
    if not info.get("restored"):
        print(f"seed {seed}: no share of {[t['share'] for t in tried]} reads under the aim with room to give back "
              f"(last {first['ratio']['uniform']:.3f} of dense against {aim_ratio:.4f})", flush=True)
        return {"seed": seed, "dense_ms": dense_ms, "share_reading_ms": share_reading, "timing_share": first,
                "shares_tried": tried, "restored": [], "plans": [], "regrown_vs_uniform": None}
    regrown = build(regrown_units)
    second = in_turn({"dense": p50_of(dense), "regrown": p50_of(regrown)}, ["regrown"], setup.repeats)
    attempts = [{"ratio": second["ratio"]["regrown"], "restored": info["restored"]}]
    predicted_added = info["predicted_latency_ms"] - info["predicted_share_ms"]
    measured_added = (second["ratio"]["regrown"] - first["ratio"]["uniform"]) * dense_ms
    if second["ratio"]["regrown"] * dense_ms > 0.5 * dense_ms and predicted_added > 0 and measured_added > 0:
        # as the loop does (prune._regrown_probes): over the deadline, planned once more with the allowance
        # scaled by the latency the first plan really added over what the tables predicted
        lo, hi = RATIO_BOUNDS
        regrown_units, info = regrow_from(units, share_reading, min(hi, max(lo, measured_added / predicted_added)))
        if info.get("restored"):
            regrown = build(regrown_units)
            second = in_turn({"dense": p50_of(dense), "regrown": p50_of(regrown)}, ["regrown"], setup.repeats)
            attempts.append({"ratio": second["ratio"]["regrown"], "restored": info["restored"]})
    print(f"seed {seed}: regrown plans at {[round(a['ratio'], 3) for a in attempts]} of dense", flush=True)
    timing = {"ratio": {"uniform": first["ratio"]["uniform"], "regrown": second["ratio"]["regrown"]},
              "uniform": first, "regrown": second}
    cfg = TrainConfig(epochs=setup.epochs, lr=setup.lr, batch_size=setup.batch_size, mode="finetune",
                      train_limit=setup.train_limit, seed=seed, max_batches=setup.max_batches)
    rows, correct = [], {}
    for name, model in (("uniform", uniform), ("regrown", regrown)):
        params, flops = count_params_flops(model, torch.zeros((1,) + tuple(setup.shape[1:])))
        started = time.perf_counter()
        torch.manual_seed(seed)
        finetune(model, task, cfg)
        correct[name], _ = _predictions(model.eval(), test.val)
        rows.append({"plan": name, "params": params, "flops": flops, "ratio_to_dense": timing["ratio"][name],
                     "test_acc": 100.0 * float(correct[name].mean()), "train_s": round(time.perf_counter() - started, 1)})
        print(f"seed {seed} {name}: {params:,} params, {timing['ratio'][name]:.3f} of dense, "
              f"test {rows[-1]['test_acc']:.2f}%", flush=True)
    return {"seed": seed, "dense_ms": dense_ms, "share_reading_ms": share_reading, "share": share,
            "shares_tried": tried, "attempts": attempts,
            "restored": info.get("restored", []), "timing": timing, "plans": rows,
            "regrown_vs_uniform": mcnemar(correct["regrown"], correct["uniform"])}


def summarise(runs: list[dict], setup: Setup) -> dict[str, Any]:
    compared = [r for r in runs if r["regrown_vs_uniform"] is not None]
    out = {"regrown_minus_uniform_pts": [r["regrown_vs_uniform"]["acc_diff_pts"] for r in compared],
           "p_values": [r["regrown_vs_uniform"]["p_value"] for r in compared],
           "seeds_with_nothing_given_back": [r["seed"] for r in runs if r["regrown_vs_uniform"] is None]}
    rows = []
    for r in runs:
        if r["regrown_vs_uniform"] is None:
            last = r["shares_tried"][-1]
            rows.append([r["seed"], f"share {last['share']:.4g}", "", f"{last['ratio']:.3f}", "",
                         "nothing given back", ""])
            continue
        for p in r["plans"]:
            regrown = p["plan"] == "regrown"
            rows.append([r["seed"], p["plan"] if regrown else f"share {r['share']:.4g}", f"{p['params']:,}",
                         f"{p['ratio_to_dense']:.3f}", f"{p['test_acc']:.2f}",
                         f"{r['regrown_vs_uniform']['acc_diff_pts']:+.2f}" if regrown else "",
                         f"{r['regrown_vs_uniform']['p_value']:.2g}" if regrown else ""])
    shape = "x".join(str(d) for d in setup.shape)
    print_table(
        f"{MODEL} at {shape} on cpu: the widest uniform share reading under the aim of a deadline of half the dense "
        f"p50, and that share regrown up to the aim; identical fine-tuning; test top-1 on {setup.test_images:,} images",
        ["seed", "plan", "params", "of dense (median)", "test %", "regrown - uniform (pts)", "McNemar p"], rows)
    return out


def run(quick: bool = False) -> dict:
    setup = setup_from_env(quick)
    runs = per_seed("edgeprune-bench-regrow-", lambda seed, root, tmp: run_seed(setup, seed, root, tmp))
    if isinstance(runs, dict):
        return runs
    return {"setup": asdict(setup), "runs": runs, "summary": summarise(runs, setup)}
