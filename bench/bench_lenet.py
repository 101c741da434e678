"""LeNet-5 on MNIST: compression at <= 1 % accuracy loss for AIAP vs IAP vs ILP (issue 3; METHODS.md §4).

LeNet-5 (`zoo:lenet5`) is trained here from scratch on MNIST `train_5k` (all 5,000 images), then pruned by
each method under one budget with the accuracy-critical policy (`max_acc_drop=1`). The official t10k test set
is split by position parity: the even half is the selection data every decision uses (so its accuracy is
optimistic), the odd half is a held-out test set that is only reported. (The first and last 5,000 t10k
images come from different writers, so a parity split keeps both halves alike.)

Compression = all conv+fc weights / remaining conv+fc weights (weight tensors only, biases excluded), the
measure of the published figures: AIAP 15.88x, IAP 7.75x, ILP 4.77x.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgeprune.data import NAMED_DATA, data_root, load_task_data
from edgeprune.errors import ConstraintNotMet
from edgeprune.loading import load
from edgeprune.models import ZOO
from edgeprune.prune import PruneConfig, prune
from edgeprune.rundir import RunDir
from edgeprune.training import TrainConfig, evaluate, train_from_scratch

from .table import print_table

MODEL = "zoo:lenet5"

# name -> the PruneConfig fields that make the method; one line each
METHODS: dict[str, dict] = {
    "AIAP (activation+aiap)": {"importance": "activation", "method": "aiap", "weighting": "params"},
    "IAP (activation+fixed)": {"importance": "activation", "method": "fixed", "fraction": 0.1},
    "ILP (l1+fixed)": {"importance": "l1", "method": "fixed", "fraction": 0.1},
}
PUBLISHED = {"AIAP (activation+aiap)": 15.88, "IAP (activation+fixed)": 7.75, "ILP (l1+fixed)": 4.77}


@dataclass(frozen=True)
class Budget:
    """Training from scratch, then the retraining budget every method gets."""

    train_epochs: int  # from scratch, cosine LR
    train_lr: float
    finetune_epochs: int  # per round, over all 5,000 training images
    max_rounds: int
    calib_images: int
    batch_size: int
    lr: float
    max_batches: int | None = None  # per epoch (smoke runs only)
    max_acc_drop: float = 1.0
    final_epochs: int = 0
    retrain: str = "finetune"  # cosine LR, fresh SGD (momentum 0.9, wd 2e-4) each round


FULL = Budget(train_epochs=20, train_lr=0.05, finetune_epochs=2, max_rounds=30, calib_images=256, batch_size=64,
              lr=0.01)
QUICK = Budget(train_epochs=2, train_lr=0.05, finetune_epochs=1, max_rounds=2, calib_images=64, batch_size=64,
               lr=0.01, max_batches=10)


def conv_fc_weights(model: nn.Module) -> int:
    """Number of conv and fully-connected weights (weight tensors only) in `model`."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


def _widths(model: nn.Module) -> str:
    return "-".join(str(m.out_channels if isinstance(m, nn.Conv2d) else m.out_features)
                    for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


def _split_t10k(out: Path) -> tuple[Path, Path]:
    x, y = NAMED_DATA["mnist-t10k"]()
    sel, test = out / "selection.npz", out / "test.npz"
    np.savez(sel, x=x[0::2], y=y[0::2])
    np.savez(test, x=x[1::2], y=y[1::2])
    return sel, test


def _train(budget: Budget, selection: Path, test: Path, out: Path) -> tuple[Path, dict, object]:
    entry = ZOO["lenet5"]
    common = dict(mean=entry.mean, std=entry.std, batch_size=budget.batch_size, input_shape=entry.input_shape,
                  num_classes=entry.num_classes, seed=0)
    task = load_task_data("mnist-train5k", str(selection), **common)
    test_task = load_task_data(str(test), str(test), **common)
    torch.manual_seed(0)
    model = entry.factory()
    result = train_from_scratch(model, task, TrainConfig(epochs=budget.train_epochs, lr=budget.train_lr,
                                                         batch_size=budget.batch_size, seed=0,
                                                         max_batches=budget.max_batches))
    weights = out / "lenet5_trained.pt"
    torch.save(model.state_dict(), weights)
    trained = {"epochs": budget.train_epochs, "lr": budget.train_lr, "seconds": round(result.seconds, 1),
               "final_loss": result.epoch_losses[-1], "selection_acc": evaluate(model, task.val),
               "test_acc": evaluate(model, test_task.val)}
    return weights, trained, (lambda m: evaluate(m, test_task.val))


def _tried(out: Path) -> list[dict]:
    """The rounds a run that kept nothing tried (from its state file): threshold, params, accuracy, verdict."""
    history = RunDir(out).read_state().get("history", []) if RunDir(out).state_path.is_file() else []
    return [{k: r.get(k) for k in ("round", "threshold", "params", "flops", "accuracy", "verdict")} for r in history]


def _one(name: str, fields: dict, budget: Budget, weights: Path, selection: Path, out: Path, test_acc,
         dense_weights: int) -> dict:
    cfg = PruneConfig(
        model=MODEL, weights=str(weights), output=str(out), data="mnist-train5k", val_data=str(selection),
        max_acc_drop=budget.max_acc_drop, finetune_epochs=budget.finetune_epochs, final_epochs=budget.final_epochs,
        max_rounds=budget.max_rounds, calib_images=budget.calib_images, batch_size=budget.batch_size,
        lr=budget.lr, retrain=budget.retrain, max_batches=budget.max_batches, seed=0, step=1.0,
        warmup=3, iterations=20, min_time_s=0.1, **fields,
    )
    started = time.perf_counter()
    try:
        report, met = prune(cfg).report, True
    except ConstraintNotMet as exc:
        report, met = (exc.result.report if exc.result is not None else None), False
    wall = time.perf_counter() - started
    row = {"method": name, "config": fields, "met": met, "wall_s": round(wall, 1)}
    if report is None:
        return {**row, "compression": 1.0, "note": "no round within the tolerance",
                "tried": _tried(out)}
    model = load(out)
    remaining = conv_fc_weights(model)
    a = report["accuracy"]
    return {
        **row,
        "weights": {"before": dense_weights, "after": remaining},
        "compression": dense_weights / remaining,
        "params": report["params"], "flops": report["flops"],
        "widths": _widths(model),
        "selection_acc": a, "selection_drop": a["before"] - a["after"],
        "test_acc_after": test_acc(model),
        "rounds": len(report["rounds"]),
        "good_rounds": sum(r["verdict"] == "good" for r in report["rounds"]),
        "best_round": report["best_round"],
        "stop_reason": report["stop_reason"],
    }


def run(quick: bool = False) -> dict:
    budget = QUICK if quick else FULL
    mnist = data_root() / "mnist"
    needed = [mnist / n for n in ("train_5k.csv.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        print(f"skipped: MNIST missing ({', '.join(missing)}); set EDGEPRUNE_DATA")
        return {"skipped": f"missing {', '.join(missing)}"}
    started, load_before = time.perf_counter(), os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="edgeprune-bench-lenet-") as tmp:
        selection, test = _split_t10k(Path(tmp))
        weights, trained, test_acc = _train(budget, selection, test, Path(tmp))
        dense = ZOO["lenet5"].factory()
        dense_weights = conv_fc_weights(dense)
        rows = [_one(name, fields, budget, weights, selection, Path(tmp) / f"run{i}", test_acc, dense_weights)
                for i, (name, fields) in enumerate(METHODS.items())]
    wall = time.perf_counter() - started

    def fmt(v, spec=".2f"):
        return "-" if v is None else format(v, spec)

    print(f"\nLeNet-5 trained from scratch on train_5k ({budget.train_epochs} epochs, {trained['seconds']} s): "
          f"selection acc {trained['selection_acc']:.2f}, test acc {trained['test_acc']:.2f}")
    print_table(
        f"LeNet-5 / MNIST, accuracy loss <= {budget.max_acc_drop} pt on the selection half of t10k "
        f"(test: the other half); compression = conv+fc weights before / after",
        ["method", "compression", "published", "widths", "sel acc before", "sel acc after", "test acc after",
         "rounds (good)", "stop", "wall s"],
        [[r["method"], f"{r['compression']:.2f}x", f"{PUBLISHED[r['method']]:.2f}x", r.get("widths", "-"),
          fmt(r.get("selection_acc", {}).get("before")), fmt(r.get("selection_acc", {}).get("after")),
          fmt(r.get("test_acc_after")), f"{r.get('rounds', 0)} ({r.get('good_rounds', 0)})",
          r.get("stop_reason") or r.get("note", "-"), fmt(r["wall_s"], ".0f")] for r in rows],
    )
    print(f"budget: {asdict(budget)}; AIAP first step 1 (the paper's); wall {wall:.0f} s; "
          f"load average before/after {load_before[0]:.1f}/{os.getloadavg()[0]:.1f}")
    return {
        "model": MODEL, "budget": asdict(budget), "aiap_step": 1.0, "trained": trained,
        "dense_weights": dense_weights, "selection": "t10k even positions", "test": "t10k odd positions",
        "methods": rows, "published": PUBLISHED, "wall_s": round(wall, 1),
        "loadavg_before_after": [load_before[0], os.getloadavg()[0]], "cpu_count": os.cpu_count(),
    }
