"""Option groups shared by the commands that load a model or measure on a target."""

from __future__ import annotations

from collections.abc import Callable

import click


def model_options(f: Callable) -> Callable:
    f = click.option("--allow-pickle", is_flag=True,
                     help="allow loading a pickled full module (runs code from the file: trusted files only)")(f)
    f = click.option("--shape", help="input shape, e.g. 1x3x224x224 (default: the model's or target's)")(f)
    f = click.option("--weights", type=click.Path(), help="state_dict / checkpoint to load into MODEL")(f)
    return f


def target_options(f: Callable) -> Callable:
    f = click.option("--min-time", type=float, help="minimum measuring time in seconds (target's default)")(f)
    f = click.option("--iterations", type=int, help="timed iterations (target's default)")(f)
    f = click.option("--warmup", type=int, help="warm-up iterations (target's default)")(f)
    f = click.option("--accept-new-host-key", is_flag=True,
                     help="trust a device's SSH host key on first connection")(f)
    f = click.option("--host", help="measure on this device over SSH: user@host[:port]")(f)
    f = click.option("--target", "-t", default="cpu", show_default=True,
                     help="target name (see `edgeprune targets`) or path to a .toml profile")(f)
    return f
