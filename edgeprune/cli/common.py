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


class DeadlineType(click.ParamType):
    """A deadline in ms (`20`) or as a share of the dense model's latency on the target (`50%`): converts to
    ("ms", 20.0) or ("share", 0.5)."""

    name = "MS|PCT%"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        text = str(value).strip()
        share = text.endswith("%")
        try:
            number = float(text[:-1] if share else text)
        except ValueError:
            self.fail(f"{value!r} is neither milliseconds (20) nor a share of the dense latency (50%)", param, ctx)
        if share and not 0 < number < 100:
            self.fail(f"{value!r}: a share of the dense latency lies between 0% and 100%, e.g. 50%", param, ctx)
        if not share and number <= 0:
            self.fail(f"{value!r}: a deadline in ms must be positive", param, ctx)
        return ("share", number / 100) if share else ("ms", number)


DEADLINE = DeadlineType()
