"""`edgeprune prune`: prune MODEL until its constraints are met on a target."""

from __future__ import annotations

import click

from ..models import parse_shape
from .common import DEADLINE, model_options, target_options
from .output import FORMAT_OPTION, QUIET_OPTION, print_json


def _share_words(share: dict | None) -> str:
    if not share:
        return ""
    return (f" ({share['share'] * 100:g}% of dense; the artifact reads {share['share_upper']:.3f} of the dense model timed "
            f"beside it, upper bound)")


def _floats(text: str | None) -> tuple[float, ...] | None:
    return tuple(float(v) for v in text.split(",")) if text else None


@click.command()
@click.argument("model")
@model_options
@target_options
@click.option("--data", help="training data: .npz (x uint8 NHWC, y), ImageFolder dir, module:function, or 'digits'")
@click.option("--val-data", help="selection data (default: a held-out split of --data)")
@click.option("--test-data", help="reported only, never used to decide")
@click.option("--mean", help="normalisation mean, e.g. 0.485,0.456,0.406 (default: the zoo model's)")
@click.option("--std", help="normalisation std (default: the zoo model's)")
@click.option("--importance", default="activation", show_default=True,
              help="importance criterion: activation (IAP), l1 (ILP), lookahead (LAP), taylor (first-order "
                   "Taylor on the loss, as HALP; needs labelled --data), random")
@click.option("--importance-p", default=1.0, show_default=True, help="activation power p")
@click.option("--calib-images", default=256, show_default=True, help="calibration images for activation and taylor scores")
@click.option("--aggregate", type=click.Choice(["mean", "sum"]), default="mean", show_default=True,
              help="how coupled layers' scores combine per channel group")
@click.option("--method", type=click.Choice(["aiap", "fixed", "sap"]), default="aiap", show_default=True,
              help="aiap: adaptive threshold; fixed: a fraction per round (ILP/IAP); sap: PQ-index counts")
@click.option("--weighting", type=click.Choice(["params", "flops"]), default="params", show_default=True,
              help="AIAP variant: per-layer thresholds weighted by parameters or FLOPs")
@click.option("--fraction", default=0.1, show_default=True, help="fixed method: share of each layer per round")
@click.option("--step", type=float, help="AIAP's first threshold step (default: auto, see README)")
@click.option("--max-rounds", default=12, show_default=True)
@click.option("--max-acc-drop", type=float, help="accuracy-critical: at most this many points below the dense model")
@click.option("--params-reduction", type=float, help="at least this percentage fewer parameters")
@click.option("--max-params", type=int, help="at most this many parameters")
@click.option("--memory-mb", type=float, help="at most this peak memory measured on the target")
@click.option("--latency-ms", type=DEADLINE,
              help="deadline: the target's latency metric must be at or under this many ms (20), or under this share "
                   "of the dense model's, measured on the target when the run begins and judged as a share (50%)")
@click.option("--metric", type=click.Choice(["p50", "p90", "p99", "mean"]),
              help="latency metric the deadline is checked on (default: the target's, p50 unless set)")
@click.option("--allocator", type=click.Choice(["ratio", "knapsack"]), default="ratio", show_default=True,
              help="ratio: highest latency saved per importance lost first; knapsack: most importance kept")
@click.option("--compare-uniform/--no-compare-uniform", default=True, show_default=True,
              help="every latency round also measures the uniform-share plans (every group at one share of its "
                   "dense width) aimed at the deadline, and fine-tunes one that lands in the slack window instead of "
                   "the round's own plan unless that one lands there with more parameters")
@click.option("--regrow/--no-regrow", default=True, show_default=True,
              help="where a uniform-share plan is found, also measure it with units given back up to the aim, "
                   "those costing the least latency for the importance they carry first, and fine-tune that plan "
                   "where it lands in the slack window")
@click.option("--latency-frame", type=click.Choice(["auto", "dense", "own"]), default="auto", show_default=True,
              help="dense: every reading in the loop is the model timed between two readings of the dense model, "
                   "scaled to the dense model's speed at the start, so a machine whose speed drifts does not move "
                   "the verdicts (3 profiler processes per reading); own: each model's own reading (1 process); "
                   "auto: dense on onnxruntime targets, own elsewhere")
@click.option("--confidence", default=0.95, show_default=True,
              help="the deadline holds only when this upper confidence bound of the metric is under it")
@click.option("--slack", default=0.05, show_default=True, help="how far under a budget still counts as met")
@click.option("--finetune-epochs", default=1, show_default=True, help="fine-tuning epochs per round")
@click.option("--final-epochs", default=0, show_default=True, help="fine-tuning epochs after the last round")
@click.option("--train-limit", type=int, help="use only the first N training samples")
@click.option("--batch-size", default=128, show_default=True)
@click.option("--lr", default=0.01, show_default=True)
@click.option("--retrain", type=click.Choice(["finetune", "lr-rewind", "weight-rewind"]), default="finetune",
              show_default=True)
@click.option("--rewind-snapshot", type=click.Path(), help="early weights for weight rewinding")
@click.option("--rewind-epoch", type=int, help="the epoch the snapshot / LR schedule rewinds to")
@click.option("--max-batches", type=int, help="cap batches per epoch (smoke runs)")
@click.option("--seed", default=0, show_default=True)
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="run directory")
@click.option("--resume", is_flag=True, help="continue the run in --output after an interruption")
@click.option("--force", is_flag=True, help="replace a run already in --output")
@FORMAT_OPTION
@QUIET_OPTION
def prune(model, weights, shape, allow_pickle, target, host, accept_new_host_key, warmup, iterations, min_time,
          data, val_data, test_data, mean, std, importance, importance_p, calib_images, aggregate, method,
          weighting, fraction, step, max_rounds, max_acc_drop, params_reduction, max_params, memory_mb, latency_ms, metric, allocator, compare_uniform,
          regrow, latency_frame, confidence, slack, finetune_epochs, final_epochs, train_limit, batch_size, lr, retrain, rewind_snapshot, rewind_epoch,
          max_batches, seed, output, resume, force, fmt, quiet) -> None:
    """Prune MODEL's filters until the constraints hold; write the pruned model, ONNX and report to -o."""
    from ..prune import PruneConfig, run_prune

    config = PruneConfig(
        model=model, output=output, target=target, weights=weights, shape=parse_shape(shape),
        allow_pickle=allow_pickle, host=host, accept_new_host_key=accept_new_host_key, data=data,
        val_data=val_data, test_data=test_data, mean=_floats(mean), std=_floats(std), importance=importance,
        importance_p=importance_p, calib_images=calib_images, aggregate=aggregate, method=method,
        weighting=weighting, fraction=fraction, step=step, max_rounds=max_rounds, max_acc_drop=max_acc_drop,
        params_reduction=params_reduction, max_params=max_params, memory_mb=memory_mb,
        latency_ms=latency_ms[1] if latency_ms and latency_ms[0] == "ms" else None,
        latency_share=latency_ms[1] if latency_ms and latency_ms[0] == "share" else None,
        metric=metric, allocator=allocator, compare_uniform=compare_uniform, regrow=regrow,
        latency_frame=latency_frame, confidence=confidence, slack=slack,
        finetune_epochs=finetune_epochs, final_epochs=final_epochs, train_limit=train_limit,
        batch_size=batch_size, lr=lr, retrain=retrain, rewind_snapshot=rewind_snapshot,
        rewind_epoch=rewind_epoch, max_batches=max_batches, seed=seed, resume=resume, force=force,
        warmup=warmup, iterations=iterations, min_time_s=min_time,
    )
    result = run_prune(config)
    r = result.report
    if fmt == "json":
        print_json(r)
    else:
        acc = r["accuracy"]
        acc_text = f", accuracy {acc['before']:.2f} -> {acc['after']:.2f}" if acc["before"] is not None else ""
        if r.get("deadline_ms") is not None:
            fl = r["final_latency_ms"]
            click.echo(f"latency {r['metric']}: {r['dense_latency_ms'][r['metric']]:.3f} -> {fl[r['metric']]:.3f} ms "
                       f"(upper bound {r['final_metric_upper_ms']:.3f}) vs deadline {r['deadline_ms']} ms"
                       + _share_words(r.get("deadline_share")))
        click.echo(f"{'PASSED' if result.met else 'FAILED'}: params {r['params']['before']:,} -> "
                   f"{r['params']['after']:,} ({r['compression_ratio']:.2f}x), FLOPs {r['flops']['before']:,} -> "
                   f"{r['flops']['after']:,}{acc_text}; {len(r['rounds'])} rounds; report {result.output}/report.json")
