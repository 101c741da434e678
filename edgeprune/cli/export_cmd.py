"""`edgeprune export`: a deployable artifact (ONNX, .ort, TensorRT engine) checked against PyTorch."""

from __future__ import annotations

import click

from ..errors import EdgepruneError
from ..models import parse_shape
from .common import model_options, target_options
from .output import FORMAT_OPTION, QUIET_OPTION, log, print_json


def _shape(option: str, text: str | None) -> tuple[int, ...] | None:
    try:
        return parse_shape(text)
    except EdgepruneError:
        raise EdgepruneError(f"{option} {text!r} is not a shape like 1x3x224x224 (positive integers joined by 'x')") from None


def _summary(data: dict) -> list[str]:
    parity = data["parity"]
    worst = max(parity["outputs"], key=lambda o: o["max_abs_error"])
    lines = [
        f"artifact  {data['artifact_path']} ({data['artifact']['format']}, {data['precision']}, "
        f"{data['artifact']['bytes'] / 1e6:.2f} MB)",
        f"sidecar   {data['sidecar_path']}",
        f"parity    {parity['samples']} samples of {parity['inputs']}: max abs error {worst['max_abs_error']:.3g}, "
        f"max rel error {worst['max_rel_error']:.3g} (atol {parity['tolerance']['atol']:g}, "
        f"rtol {parity['tolerance']['rtol']:g})"
        + (f", top-1 agreement {parity['top1_agreement']:.1%}" if parity.get("top1_agreement") is not None else ""),
    ]
    acc = data.get("accuracy")
    if acc:
        lines.append(f"accuracy  {acc['data']} ({acc['samples']}): PyTorch {acc['torch']:.2%}, "
                     f"artifact {acc['artifact']:.2%} ({acc['delta'] * 100:+.2f} points)")
    lat = data.get("latency") or {}
    if lat.get("measured"):
        s = lat["latency_ms"]
        lines.append(f"latency   {data['target']['name']} {lat['metric']} {lat['value_ms']:.3f} ms "
                     f"(p50 {s['p50']:.3f}, p90 {s['p90']:.3f}, n {s['n']}; {lat['how']})")
    else:
        lines.append(f"latency   not measured ({lat.get('reason', 'n/a')})")
    lines.append("PASSED")
    return lines


@click.command()
@click.argument("source")
@model_options
@target_options
@click.option("--to", "to", type=click.Choice(["onnx", "ort", "engine"]),
              help="artifact kind (default: the target's: onnx for onnxruntime, engine for tensorrt)")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="artifact file (.onnx, .ort, .engine/.plan); the sidecar goes to OUTPUT.json")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), help="artifact precision (target's default)")
@click.option("--opset", type=int, help="ONNX opset (exporter default)")
@click.option("--dynamic-batch", is_flag=True, help="export with a dynamic batch dimension")
@click.option("--min-shape", help="TensorRT profile min shape, e.g. 1x3x32x32 (with --dynamic-batch)")
@click.option("--opt-shape", help="TensorRT profile opt shape (default: the model's input shape)")
@click.option("--max-shape", help="TensorRT profile max shape (default: the opt shape)")
@click.option("--no-simplify", is_flag=True, help="skip onnxslim graph simplification")
@click.option("--data", help="parity inputs (and INT8 calibration): .npz with x uint8 NHWC, y labels; default random")
@click.option("--samples", default=32, show_default=True, help="how many inputs the parity check compares")
@click.option("--val-data", help="measure the artifact's and PyTorch's top-1 accuracy on this .npz")
@click.option("--val-limit", type=int, help="use only the first N images of --val-data")
@click.option("--atol", type=float, help="absolute tolerance of the parity check (precision's default)")
@click.option("--rtol", type=float, help="relative tolerance of the parity check (precision's default)")
@click.option("--workspace", help="TensorRT builder workspace, e.g. 4G (target's default)")
@click.option("--timing-cache", type=click.Path(dir_okay=False), help="TensorRT timing cache: read if present, updated")
@click.option("--no-measure", is_flag=True, help="skip measuring the artifact's latency on the target")
@click.option("--force", is_flag=True, help="replace an existing output")
@click.option("--seed", default=0, show_default=True, help="seed of the random parity inputs")
@FORMAT_OPTION
@QUIET_OPTION
def export(source, weights, shape, allow_pickle, target, host, accept_new_host_key, warmup, iterations, min_time,
           to, output, precision, opset, dynamic_batch, min_shape, opt_shape, max_shape, no_simplify, data, samples,
           val_data, val_limit, atol, rtol, workspace, timing_cache, no_measure, force, seed, fmt, quiet) -> None:
    """Export SOURCE (a model spec or a prune run directory) as a deployable artifact for a target.

    The artifact is checked against PyTorch on the same inputs, its latency is measured on the target, and
    a sidecar JSON with its provenance, parity, accuracy and latency is written next to it.
    """
    from ..export import ExportConfig
    from ..export import export as run_export

    config = ExportConfig(
        source=source, output=output, target=target, to=to, weights=weights, shape=parse_shape(shape),
        allow_pickle=allow_pickle, host=host, accept_new_host_key=accept_new_host_key, precision=precision,
        opset=opset, dynamic_batch=dynamic_batch, min_shape=_shape("--min-shape", min_shape),
        opt_shape=_shape("--opt-shape", opt_shape), max_shape=_shape("--max-shape", max_shape),
        simplify=not no_simplify, data=data, samples=samples, val_data=val_data, val_limit=val_limit, atol=atol,
        rtol=rtol, workspace=workspace, timing_cache=timing_cache, measure=not no_measure, warmup=warmup,
        iterations=iterations, min_time_s=min_time, force=force, seed=seed,
    )
    result = run_export(config, log=None if quiet else log)
    data_out = result.to_dict()
    if fmt == "json":
        print_json(data_out)
    else:
        for line in _summary(data_out):
            click.echo(line)
