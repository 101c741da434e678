"""Pruning methods on ResNet-56 / CIFAR-10 at <= 1 pt accuracy drop, under one small CPU budget (issue 3).

`zoo:cifar_resnet56` with the shared pretrained weights; fine-tuning on CIFAR-10 `train.npz` (its first
`train_limit` images); decisions on selection data taken from `val.npz`; the accuracy-critical policy
(`max_acc_drop=1`). Methods: activation + AIAP (params-weighted), l1 + fixed 10 % per round (ILP),
lookahead + AIAP. Every method gets the same budget (`FULL`, or `QUICK` for a smoke run).

val.npz is split in two halves (even / odd positions): the selection half decides every round, so its
accuracy is optimistic (the loop picked the model that did well on it); the other half is a held-out test
set, evaluated once per final model and never used to decide. Published reference: METHODS.md §4.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgeprune.data import data_root, load_npz, load_task_data
from edgeprune.errors import ConstraintNotMet
from edgeprune.loading import load
from edgeprune.models import ZOO, load_model
from edgeprune.prune import PruneConfig, prune
from edgeprune.rundir import RunDir
from edgeprune.training import evaluate

from .table import print_table

MODEL = "zoo:cifar_resnet56"

# AIAP's first step is the engine's own (selection.auto_step: the smallest threshold removing ~8 % of the
# prunable parameters on the dense model's scores); each method's first threshold is in its record.

# name -> the PruneConfig fields that make the method; one line each
METHODS: dict[str, dict] = {
    "activation+aiap": {"importance": "activation", "method": "aiap", "weighting": "params"},
    "l1+fixed (ILP)": {"importance": "l1", "method": "fixed", "fraction": 0.1},
    "lookahead+aiap": {"importance": "lookahead", "method": "aiap", "weighting": "params"},
}

# METHODS.md §4, ResNet-56 / CIFAR-10, <= 1 % loss (GPU budgets: 182 epochs per round)
PUBLISHED = {
    "activation+aiap": {"method": "AAP, params-weighted", "acc_drop": 0.86, "params_red_pct": 88.23},
    "l1+fixed (ILP)": {"method": "ILP", "acc_drop": 1.00, "params_red_pct": 41.18},
    "lookahead+aiap": None,
}


@dataclass(frozen=True)
class Budget:
    """The retraining and data budget every method gets."""

    train_limit: int  # first N CIFAR-10 training images used for fine-tuning
    finetune_epochs: int  # per round
    max_rounds: int
    calib_images: int
    batch_size: int
    lr: float
    selection_images: int  # from val.npz (even positions)
    test_images: int  # from val.npz (odd positions); 0: no held-out test
    max_batches: int | None = None  # per epoch (smoke runs only)
    max_acc_drop: float = 1.0
    final_epochs: int = 0
    retrain: str = "finetune"  # cosine LR, fresh SGD (momentum 0.9, wd 2e-4) each round


FULL = Budget(train_limit=640, finetune_epochs=1, max_rounds=3, calib_images=128, batch_size=64, lr=0.01,
              selection_images=1000, test_images=1000)
QUICK = Budget(train_limit=128, finetune_epochs=1, max_rounds=1, calib_images=64, batch_size=64, lr=0.01,
               selection_images=200, test_images=200, max_batches=2)


def _split_val(val: Path, out: Path, budget: Budget) -> tuple[Path, Path | None]:
    x, y = load_npz(val)
    sel = out / "selection.npz"
    np.savez(sel, x=x[0::2][: budget.selection_images], y=y[0::2][: budget.selection_images])
    if not budget.test_images:
        return sel, None
    test = out / "test.npz"
    np.savez(test, x=x[1::2][: budget.test_images], y=y[1::2][: budget.test_images])
    return sel, test


def _test_accuracy(test: Path | None):
    if test is None:
        return lambda model: None
    entry = ZOO[MODEL.split(":", 1)[1]]
    task = load_task_data(str(test), str(test), mean=entry.mean, std=entry.std, batch_size=256,
                          input_shape=entry.input_shape, num_classes=entry.num_classes)
    return lambda model: evaluate(model, task.val)


def _tried(out: Path) -> list[dict]:
    """The rounds a run that kept nothing tried (from its state file): threshold, params, accuracy, verdict."""
    history = RunDir(out).read_state().get("history", []) if RunDir(out).state_path.is_file() else []
    return [{k: r.get(k) for k in ("round", "threshold", "params", "flops", "accuracy", "verdict")} for r in history]


def _one(name: str, fields: dict, budget: Budget, weights: Path, selection: Path, out: Path, test_acc) -> dict:
    cfg = PruneConfig(
        model=MODEL, weights=str(weights), output=str(out), data="cifar10-train", val_data=str(selection),
        max_acc_drop=budget.max_acc_drop, train_limit=budget.train_limit, finetune_epochs=budget.finetune_epochs,
        final_epochs=budget.final_epochs, max_rounds=budget.max_rounds, calib_images=budget.calib_images,
        batch_size=budget.batch_size, lr=budget.lr, retrain=budget.retrain, max_batches=budget.max_batches,
        seed=0, warmup=3, iterations=10, min_time_s=0.1, **fields,
    )
    started = time.perf_counter()
    try:
        report, met = prune(cfg).report, True
    except ConstraintNotMet as exc:  # no round kept the accuracy: the method reached nothing in this budget
        report, met = (exc.result.report if exc.result is not None else None), False
    wall = time.perf_counter() - started
    row = {"method": name, "config": fields, "met": met, "wall_s": round(wall, 1)}
    if report is None:
        return {**row, "params_red_pct": 0.0, "flops_red_pct": 0.0, "note": "no round within the tolerance",
                "tried": _tried(out)}
    p, f, a = report["params"], report["flops"], report["accuracy"]
    return {
        **row,
        "params": p, "flops": f,
        "params_red_pct": 100.0 * (1 - p["after"] / p["before"]),
        "flops_red_pct": 100.0 * (1 - f["after"] / f["before"]),
        "selection_acc": a,
        "selection_drop": a["before"] - a["after"],
        "test_acc_after": test_acc(load(out)),
        "rounds": len(report["rounds"]),
        "good_rounds": sum(r["verdict"] == "good" for r in report["rounds"]),
        "thresholds": [round(r["threshold"], 3) for r in report["rounds"]],
        "round_acc": [r["accuracy"] for r in report["rounds"]],
        "best_round": report["best_round"],
        "stop_reason": report["stop_reason"],
        "finetune_s": round(report["budget"]["finetune_seconds"], 1),
    }


def run(quick: bool = False) -> dict:
    budget = QUICK if quick else FULL
    root = data_root()
    weights, val = root / "weights" / "cifar_resnet56.th", root / "cifar10" / "val.npz"
    missing = [str(p) for p in (weights, val, root / "cifar10" / "train.npz") if not p.is_file()]
    if missing:
        print(f"skipped: shared data missing ({', '.join(missing)}); set EDGEPRUNE_DATA")
        return {"skipped": f"missing {', '.join(missing)}"}
    started, load_before = time.perf_counter(), os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="edgeprune-bench-methods-") as tmp:
        selection, test = _split_val(val, Path(tmp), budget)
        test_acc = _test_accuracy(test)
        dense_test = test_acc(load_model(MODEL, weights=weights).module)
        rows = [_one(name, fields, budget, weights, selection, Path(tmp) / f"run{i}", test_acc)
                for i, (name, fields) in enumerate(METHODS.items())]
    wall = time.perf_counter() - started

    def fmt(v, spec=".2f"):
        return "-" if v is None else format(v, spec)

    print_table(
        f"ResNet-56 / CIFAR-10, accuracy drop <= {budget.max_acc_drop} pt on the selection data "
        f"({budget.selection_images} val images; test: {budget.test_images} other val images)",
        ["method", "params red %", "FLOPs red %", "sel acc before", "sel acc after", "test acc after",
         "rounds (good)", "stop", "wall s"],
        [[r["method"], fmt(r["params_red_pct"], ".1f"), fmt(r["flops_red_pct"], ".1f"),
          fmt(r.get("selection_acc", {}).get("before")), fmt(r.get("selection_acc", {}).get("after")),
          fmt(r.get("test_acc_after")), f"{r.get('rounds', 0)} ({r.get('good_rounds', 0)})",
          r.get("stop_reason") or r.get("note", "-"), fmt(r["wall_s"], ".0f")] for r in rows],
    )
    print(f"dense test accuracy {fmt(dense_test)}; budget: {asdict(budget)}; AIAP first step: automatic; "
          f"wall {wall:.0f} s; "
          f"load average before/after {load_before[0]:.1f}/{os.getloadavg()[0]:.1f}")
    print_table(
        "published (METHODS.md §4, ResNet-56, <= 1 % loss; GPU: 182 epochs per round)",
        ["method", "published as", "acc drop", "params red %"],
        [[n, p["method"], p["acc_drop"], p["params_red_pct"]] for n, p in PUBLISHED.items() if p],
    )
    return {
        "model": MODEL, "budget": asdict(budget), "aiap_step": "auto (selection.auto_step, ~8% of params)", "dense_test_acc": dense_test,
        "selection": "val.npz even positions", "test": "val.npz odd positions" if test else None,
        "methods": rows, "published": PUBLISHED, "wall_s": round(wall, 1),
        "loadavg_before_after": [load_before[0], os.getloadavg()[0]], "cpu_count": os.cpu_count(),
    }
