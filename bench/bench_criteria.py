"""Importance criteria on one architecture and one schedule (issue 5, a follow-up to benchmark 2).

Benchmark 2 (`at_deadline`) compares methods that differ in three things at once: the architecture each
ends on, the schedule that reaches it (edgeprune's rounds fine-tune intermediate models) and the channel
criterion (edgeprune's activation importance against L1 norms). When the latency policy and uniform L1 both
delivered the same halved ResNet-56, the policy was 2 points behind, and that benchmark cannot say which of
schedule or criterion cost them. Here only the criterion changes.

Setup: `zoo:cifar_resnet56` with the shared pretrained weights. Per seed and criterion: the same share of
every prunable group's units is removed in one step (selection method `fixed`, the uniform plan ILP uses), by
the criterion's ranking, from the dense model; then every model gets the same fine-tuning (the same first
`train_limit` CIFAR-10 training images, epochs, lr, batch size, seed and cosine schedule). Calibration images
(activation and taylor importance) are the task data's seeded choice of training images, with their labels
(taylor needs them; the other criteria read the inputs or nothing). Test top-1 on the 2,500
odd-position images of val.npz (benchmark 2's test set); the first criterion is compared with each other on
the same images by McNemar's exact test. No latency is measured: the architecture is the same by construction
(the table shows each model's parameter count to prove it).

Reproduce: `python -m bench criteria --seeds 0,1,2` (EDGEPRUNE_BENCH_CRITERIA=activation,l1,lookahead,taylor picks
criteria, the first one the reference; EDGEPRUNE_BENCH_SHARE=0.5 the share removed; EDGEPRUNE_BENCH_TRAIN_LIMIT
the training images, default 5000, as benchmark 2 was run; EDGEPRUNE_BENCH_EPOCHS, default 2, the epochs that
benchmark 2's one-round runs spent). About 2-3 min of fine-tuning per criterion and seed on a quiet 2-core
machine. `--quick` is a smoke run on a few batches.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.bench_at_deadline import _predictions, mcnemar
from bench.cifar_seeds import per_seed, resnet56_and_data
from bench.table import print_table

MODEL = "zoo:cifar_resnet56"


@dataclass(frozen=True)
class Setup:
    criteria: tuple[str, ...]
    share: float
    train_limit: int
    epochs: int
    batch_size: int = 64
    lr: float = 0.01
    calib_images: int = 256
    test_images: int = 2500
    max_batches: int | None = None


def setup_from_env(quick: bool) -> Setup:
    criteria = tuple(c.strip() for c in os.environ.get("EDGEPRUNE_BENCH_CRITERIA", "activation,l1").split(",")
                     if c.strip())
    share = float(os.environ.get("EDGEPRUNE_BENCH_SHARE", "0.5"))
    if quick:
        return Setup(criteria, share, train_limit=64, epochs=1, calib_images=32, test_images=200, max_batches=2)
    return Setup(criteria, share, train_limit=int(os.environ.get("EDGEPRUNE_BENCH_TRAIN_LIMIT", "5000")),
                 epochs=int(os.environ.get("EDGEPRUNE_BENCH_EPOCHS", "2")))


def pruned_by(criterion: str, dense, calib, share: float):
    """A copy of `dense` with `share` of every prunable group's units removed, ranked by `criterion`.

    `calib` holds (inputs, targets) batches (bare input batches do for criteria that need no labels)."""
    import torch

    from edgeprune.pruning import PruningGraph, get_importance
    from edgeprune.selection import SelectionContext, select

    model = copy.deepcopy(dense)
    first = calib[0][0] if isinstance(calib[0], (tuple, list)) else calib[0]
    graph = PruningGraph(model, torch.zeros((1,) + tuple(first.shape[1:])))
    groups = graph.groups()
    scores = get_importance(criterion).scores(graph.model, graph, groups, calib)
    graph.prune_many(select("fixed", groups, scores, SelectionContext(fraction=share)))
    return model


def run_seed(setup: Setup, seed: int, root: Path, tmp: Path) -> dict[str, Any]:
    import torch

    from edgeprune.pruning import count_params_flops
    from edgeprune.training import TrainConfig, finetune

    loaded, test, task = resnet56_and_data(root, tmp, seed, test_images=setup.test_images,
                                           train_limit=setup.train_limit, batch_size=setup.batch_size)
    dense = loaded.module.eval()
    calib = task.calibration_batches(setup.calib_images)  # (inputs, targets): taylor uses the targets
    train_cfg = TrainConfig(epochs=setup.epochs, lr=setup.lr, batch_size=setup.batch_size, mode="finetune",
                            train_limit=setup.train_limit, seed=seed, max_batches=setup.max_batches)
    rows, correct = [], {}
    for criterion in setup.criteria:
        torch.manual_seed(seed)
        model = pruned_by(criterion, dense, calib, setup.share)
        params, flops = count_params_flops(model, torch.zeros((1,) + tuple(loaded.input_shape[1:])))
        before, _ = _predictions(model.eval(), test.val)
        started = time.perf_counter()
        torch.manual_seed(seed)
        finetune(model, task, train_cfg)
        correct[criterion], _ = _predictions(model.eval(), test.val)
        rows.append({"criterion": criterion, "params": params, "flops": flops,
                     "test_acc_before_finetune": 100.0 * float(before.mean()),
                     "test_acc": 100.0 * float(correct[criterion].mean()),
                     "train_s": round(time.perf_counter() - started, 1)})
        print(f"seed {seed} {criterion}: {params:,} params, test {rows[-1]['test_acc']:.2f}% "
              f"({rows[-1]['test_acc_before_finetune']:.2f}% before fine-tuning)", flush=True)
    reference = setup.criteria[0]
    for row in rows[1:]:
        row["vs_reference"] = mcnemar(correct[reference], correct[row["criterion"]])
    return {"seed": seed, "criteria": rows}


def summarise(setup: Setup, runs: list[dict]) -> dict[str, Any]:
    """Per criterion over seeds: test accuracy, (reference - it) per seed with McNemar p; printed as a table."""
    reference = setup.criteria[0]
    out: dict[str, Any] = {}
    for criterion in setup.criteria:
        rows = [next(c for c in r["criteria"] if c["criterion"] == criterion) for r in runs]
        out[criterion] = {"params": sorted({c["params"] for c in rows}), "test_acc": [c["test_acc"] for c in rows],
                          "mean_test_acc": float(np.mean([c["test_acc"] for c in rows])),
                          "reference_minus_this_pts": [c["vs_reference"]["acc_diff_pts"] for c in rows
                                                       if "vs_reference" in c],
                          "p_values": [c["vs_reference"]["p_value"] for c in rows if "vs_reference" in c]}
    print_table(
        f"{MODEL}, {setup.share:.2f} of every group removed in one step by each criterion, then {setup.epochs} "
        f"epoch(s) on {setup.train_limit} training images; test top-1 % per seed ({reference} is the reference)",
        ["criterion", "params", *[f"seed {r['seed']}" for r in runs], "mean",
         f"{reference} - this (pts)", "McNemar p"],
        [[c, ",".join(f"{p:,}" for p in v["params"]), *[f"{a:.2f}" for a in v["test_acc"]], f"{v['mean_test_acc']:.2f}",
          " ".join(f"{d:+.2f}" for d in v["reference_minus_this_pts"]) or "-",
          " ".join(f"{p:.2g}" for p in v["p_values"]) or "-"] for c, v in out.items()])
    return out


def run(quick: bool = False) -> dict:
    setup = setup_from_env(quick)
    runs = per_seed("edgeprune-bench-criteria-", lambda seed, root, tmp: run_seed(setup, seed, root, tmp))
    if isinstance(runs, dict):
        return runs
    return {"setup": setup.__dict__, "runs": runs, "summary": summarise(setup, runs)}
