"""`edgeprune check`: a CI latency gate (exit 0 PASSED, 3 FAILED, 1 error)."""

from __future__ import annotations

from typing import Any

import click

from ..errors import ConstraintNotMet, EdgepruneError
from .common import model_options, target_options
from .output import FORMAT_OPTION, QUIET_OPTION, log, print_json


def _given(ctx: click.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source != click.core.ParameterSource.DEFAULT


def _pick(ctx: click.Context, name: str, value: Any, project: Any, key: str | None = None,
          default: Any = None) -> Any:
    """Command line over [tool.edgeprune] over the built-in default."""
    if _given(ctx, name) and value is not None and value != ():
        return value
    return project.get(key or name, default)


def _print_table(result: Any) -> None:
    d = result.to_dict()
    lat = d["candidate"]["latency_ms"]
    click.echo(f"model      {d['model']} on {d['target']} (metric {d['metric']}, "
               f"{(d['candidate'].get('settings') or {}).get('blocks', '?')} blocks)")
    click.echo(f"candidate  p50 {lat['p50']:.4g}  p90 {lat['p90']:.4g}  p99 {lat['p99']:.4g}  "
               f"mean {lat['mean']:.4g} ms  n={lat['n']}")
    if d["baseline"]:
        b = d["baseline"]["latency_ms"] or {}
        click.echo(f"baseline   p50 {b.get('p50', float('nan')):.4g}  p90 {b.get('p90', float('nan')):.4g}  "
                   f"p99 {b.get('p99', float('nan')):.4g}  mean {b.get('mean', float('nan')):.4g} ms  "
                   f"n={b.get('n')}  ({d['baseline']['source']})")
    moved = [c for c in d["layer_changes"] if c["delta_ms"]][:5]
    if moved:
        click.echo("moved most " + ", ".join(f"{c['layer']} {c['delta_ms']:+.3f} ms" for c in moved))
    for note in d["notes"]:
        click.echo(f"note       {note}")
    click.echo(result.summary_line())


@click.command()
@click.argument("model", required=False)
@model_options
@target_options
@click.option("--latency-ms", type=float, help="absolute budget for the metric, in ms")
@click.option("--baseline", type=click.Path(dir_okay=False), help="stored baseline profile (JSON) to compare with")
@click.option("--baseline-model", help="measure this model now, interleaved with MODEL, as the baseline")
@click.option("--baseline-weights", type=click.Path(), help="weights for --baseline-model")
@click.option("--max-regression", help="allowed slowdown against the baseline, e.g. 5% or 0.05  [default: 5%]")
@click.option("--metric", type=click.Choice(["p50", "p90", "p99", "mean"]), help="metric to gate on (target's default)")
@click.option("--alpha", type=float, help="one-sided significance level of the decision  [default: 0.05]")
@click.option("--blocks", type=int, help="alternating measurement blocks per model  [default: 6]")
@click.option("--max-blocks", type=int,
              help="measure further rounds of --blocks while the verdict is inconclusive, up to this many  "
                   "[default: 3 x --blocks]")
@click.option("--update-baseline", is_flag=True, help="measure MODEL and (re)write --baseline with it (no regression check)")
@click.option("--ignore-condition", "ignore_conditions", multiple=True,
              help="compare even though this condition field differs (repeatable), e.g. runtime_version")
@click.option("--no-layers", is_flag=True, help="skip the per-layer run (no per-layer diff)")
@click.option("--junit", type=click.Path(dir_okay=False), help="write a JUnit XML report here")
@click.option("--summary", type=click.Path(dir_okay=False), help="write a markdown summary here")
@click.option("--benchmark-json", type=click.Path(dir_okay=False),
              help="write github-action-benchmark customSmallerIsBetter JSON here")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="pyproject.toml to read [tool.edgeprune] from (default: nearest upward from the CWD)")
@click.option("--no-config", is_flag=True, help="ignore [tool.edgeprune] in pyproject.toml")
@FORMAT_OPTION
@QUIET_OPTION
@click.pass_context
def check(ctx: click.Context, **opts: Any) -> None:
    """Check MODEL's latency on a target against a budget (--latency-ms) or a baseline; exit 3 when it fails.

    MODEL: a model spec, an .onnx file, a TensorRT engine, or a run directory of `edgeprune prune`.
    """
    from ..ci_outputs import junit_error_xml, write_outputs
    from ..io import write_text_atomic
    from ..project_config import ProjectConfig, load_project_config

    quiet, fmt = opts["quiet"], opts["fmt"]
    project = ProjectConfig() if opts["no_config"] else load_project_config(opts["config_path"])
    if project.unknown and not quiet:
        log(f"warning: {project.path} [tool.edgeprune] has key(s) check does not read: {', '.join(project.unknown)}")
    junit = _pick(ctx, "junit", opts["junit"], project)
    try:
        config = _build_config(ctx, project, opts)
        if not quiet and fmt != "json":
            log(f"checking {config.model} on {config.target} ...")
        from ..check import check as run_check

        result = run_check(config, progress=None if quiet else log)
    except EdgepruneError as exc:
        if junit:
            write_text_atomic(junit, junit_error_xml(str(opts["model"] or project.get("model") or "check"), str(exc)))
        raise
    written = write_outputs(result, junit=junit, summary=_pick(ctx, "summary", opts["summary"], project),
                            benchmark_json=_pick(ctx, "benchmark_json", opts["benchmark_json"], project))
    if written and not quiet:
        log("wrote " + ", ".join(written))
    if fmt == "json":
        print_json(result.to_dict())
    else:
        _print_table(result)
    if not result.passed:
        raise ConstraintNotMet(result.summary_line(), result)


def _build_config(ctx: click.Context, project: Any, opts: dict[str, Any]) -> Any:
    """Options merged over [tool.edgeprune] into the library's CheckConfig."""
    from ..check import DEFAULT_BLOCKS, CheckConfig
    from ..models import parse_shape
    from ..stats import DEFAULT_ALPHA, parse_fraction

    model = opts["model"] or project.get("model")
    if not model:
        raise click.UsageError("give MODEL (or set model in [tool.edgeprune] of pyproject.toml)")
    raw_regression = _pick(ctx, "max_regression", opts["max_regression"], project, default=0.05)
    try:
        max_regression = parse_fraction(raw_regression)
    except ValueError as exc:
        raise EdgepruneError(f"--max-regression: {exc}") from None
    shape = opts["shape"] if _given(ctx, "shape") else project.get("shape")
    return CheckConfig(
        model=model,
        target=_pick(ctx, "target", opts["target"], project, default="cpu"),
        latency_ms=_pick(ctx, "latency_ms", opts["latency_ms"], project),
        baseline=_pick(ctx, "baseline", opts["baseline"], project),
        baseline_model=_pick(ctx, "baseline_model", opts["baseline_model"], project),
        max_regression=max_regression,
        metric=_pick(ctx, "metric", opts["metric"], project),
        alpha=_pick(ctx, "alpha", opts["alpha"], project, default=DEFAULT_ALPHA),
        blocks=_pick(ctx, "blocks", opts["blocks"], project, default=DEFAULT_BLOCKS),
        max_blocks=_pick(ctx, "max_blocks", opts["max_blocks"], project),
        update_baseline=opts["update_baseline"],
        weights=_pick(ctx, "weights", opts["weights"], project),
        baseline_weights=opts["baseline_weights"],
        shape=parse_shape(shape),
        allow_pickle=opts["allow_pickle"],
        host=opts["host"],
        accept_new_host_key=opts["accept_new_host_key"],
        warmup=_pick(ctx, "warmup", opts["warmup"], project),
        iterations=_pick(ctx, "iterations", opts["iterations"], project),
        min_time_s=_pick(ctx, "min_time", opts["min_time"], project, key="min_time_s"),
        per_node=not opts["no_layers"],
        ignore_conditions=tuple(_pick(ctx, "ignore_conditions", opts["ignore_conditions"], project, default=())),
    )
