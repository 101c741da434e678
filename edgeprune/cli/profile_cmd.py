"""`edgeprune profile`: end-to-end latency and the slowest layers of a model on a target."""

from __future__ import annotations

import click

from ..models import parse_shape
from .common import model_options, target_options
from .output import FORMAT_OPTION, QUIET_OPTION, print_json, write_report


@click.command()
@click.argument("model")
@model_options
@target_options
@click.option("--top", default=15, show_default=True, help="how many of the slowest layers to show")
@click.option("--no-layers", is_flag=True, help="end-to-end timing only (skip the per-layer run)")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="write the whole JSON report here")
@click.option("--plot", type=click.Path(dir_okay=False), help="write a per-layer latency plot (PNG) here")
@FORMAT_OPTION
@QUIET_OPTION
def profile(model, weights, shape, allow_pickle, target, host, accept_new_host_key, warmup, iterations,
            min_time, top, no_layers, output, plot, fmt, quiet) -> None:
    """Measure MODEL on a target: latency statistics, and where time and memory go per layer."""
    from ..profiling import ProfileConfig, run_profile

    config = ProfileConfig(
        model=model, target=target, weights=weights, shape=parse_shape(shape), allow_pickle=allow_pickle,
        host=host, accept_new_host_key=accept_new_host_key, warmup=warmup, iterations=iterations,
        min_time_s=min_time, per_node=not no_layers,
    )
    report = run_profile(config)
    data = report.to_dict()
    write_report(data, output)
    if plot:
        from ..plots import plot_profile_layers

        plot_profile_layers(data, plot)
    if fmt == "json":
        print_json(data)
    else:
        from .tables import print_profile

        print_profile(report, top)
