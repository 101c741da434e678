"""`edgeprune demo`: the main job end to end with nothing from outside the installed packages.

Trains a small CNN on scikit-learn's bundled 8x8 digits, profiles it on the `cpu` target, prunes it to
about half its measured latency with fine-tuning, exports the ONNX, checks the deadline, and says where
the report is. The network and batch (32) are chosen so inference is compute-bound (milliseconds), since
a tiny CNN at batch 1 runs in microseconds, is all overhead, and no pruning halves it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .log import log
from .models.digits_cnn import BATCH, INPUT_SHAPE, make_demo_net
from .progress import Progress, training_callback

SPEC = "zoo:digits_cnn"


@dataclass
class DemoConfig:
    output: str = "demo-run"
    fraction: float = 0.5  # deadline = this share of the dense model's measured latency
    epochs: int = 4
    force: bool = False


def run_demo(cfg: DemoConfig) -> dict:
    """Run the demo into cfg.output; returns a summary (also written as summary.json there)."""
    from .data import load_task_data
    from .errors import EdgepruneError
    from .io import write_json_atomic
    from .profiling import profile
    from .prune import PruneConfig, prune
    from .training import TrainConfig, configure_threads, train_from_scratch

    started = time.perf_counter()
    out = Path(cfg.output)
    if out.exists() and any(out.iterdir()) and not cfg.force:
        raise EdgepruneError(f"{out} is not empty: pass --force to replace the demo there, or -o elsewhere")
    out.mkdir(parents=True, exist_ok=True)
    configure_threads()
    torch.manual_seed(0)

    log(f"[1/5] training a CNN on scikit-learn's digits ({cfg.epochs} epochs) ...")
    task = load_task_data("digits", test_data="digits-test", batch_size=64, seed=0, input_shape=INPUT_SHAPE,
                          num_classes=10)
    net = make_demo_net()
    with Progress(cfg.epochs, "training") as bar:
        trained = train_from_scratch(net, task, TrainConfig(epochs=cfg.epochs, lr=0.05, batch_size=64),
                                     progress=training_callback(bar))
    net.eval()
    acc = task.evaluate(net, task.val)
    weights = out / "dense_weights.pt"
    torch.save(net.state_dict(), weights)
    spec = SPEC
    log(f"      trained in {trained.seconds:.1f} s, selection accuracy {acc:.2f}%")

    log("[2/5] profiling the dense model on target 'cpu' ...")
    dense = profile(spec, "cpu", weights=str(weights), shape=INPUT_SHAPE)
    log(f"      dense p50 {dense.latency_ms['p50']:.3f} ms at batch {BATCH}; deadline {cfg.fraction:.0%} of it")

    # The deadline goes to prune as a share (`--latency-ms 50%`), not as ms from the reading above: this
    # millisecond model on a shared machine reads up to 18% slower or faster minutes apart (session 18: the
    # same demo passed, then failed on a dense model read 2.53 and 2.99 ms), and a share is judged against
    # the dense model timed beside the pruned one.
    log("[3/5] pruning to the deadline with fine-tuning (then export) ...")
    run_dir = out / "run"
    result = prune(PruneConfig(
        model=spec, weights=str(weights), shape=INPUT_SHAPE, output=str(run_dir), data="digits",
        test_data="digits-test", latency_share=cfg.fraction, importance="activation", calib_images=256,
        finetune_epochs=1, final_epochs=2, batch_size=64, lr=0.02, max_rounds=6, force=True,
        max_acc_drop=3.0,
    ))
    report = result.report
    deadline = report["deadline_ms"]

    log("[4/5] checking the exported model against the deadline ...")
    check_summary = _check(run_dir / "model.onnx", deadline)

    summary = {
        "dense_p50_ms": dense.latency_ms["p50"], "deadline_ms": deadline, "deadline_share": report.get("deadline_share"),
        "final_latency_ms": report.get("final_latency_ms"), "deadline_met": report.get("deadline_met"),
        "accuracy": report["accuracy"], "test_accuracy": report.get("test_accuracy"),
        "params": report["params"], "flops": report["flops"], "check": check_summary,
        "report": str(run_dir / "report.json"), "html": str(run_dir / "report.html"),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    write_json_atomic(out / "summary.json", summary)
    log(f"[5/5] done in {summary['wall_s']} s; report: {run_dir / 'report.json'}")
    return summary


def _check(onnx_path: Path, deadline: float) -> dict:
    """`edgeprune check` on the exported model, where the check command is available."""
    try:
        from .check import CheckConfig, check
    except ImportError:  # pragma: no cover - check ships with edgeprune
        return {"ran": False}
    result = check(CheckConfig(model=str(onnx_path), target="cpu", latency_ms=deadline))
    data = result.to_dict() if hasattr(result, "to_dict") else dict(result)
    return json.loads(json.dumps(data, default=str))
