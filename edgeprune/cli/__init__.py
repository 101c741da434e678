"""The `edgeprune` command line: a thin layer that parses options into config objects and calls the library.

Commands are imported lazily (heavy imports such as torch happen only in the command that needs them),
so `edgeprune --help` is fast and a missing optional backend degrades one command, never the whole CLI.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from ..errors import EdgepruneError

# Busy-waiting OpenMP threads slow training several-fold when cores are shared (measured here: a
# ResNet-20 step 3.4 s vs 0.6 s); must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# command name -> "module:attribute"; registering a command touches only this table.
COMMANDS: dict[str, str] = {
    "targets": "edgeprune.cli.targets_cmd:targets",
    "profile": "edgeprune.cli.profile_cmd:profile",
    "prune": "edgeprune.cli.prune_cmd:prune",
    "export": "edgeprune.cli.export_cmd:export",
    "inspect": "edgeprune.cli.inspect_cmd:inspect",
    "check": "edgeprune.cli.check_cmd:check",
    "demo": "edgeprune.cli.demo_cmd:demo",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgeprune")
def cli() -> None:
    """Prune CNNs until they meet a latency deadline measured on the real target device."""
    from ..log import set_quiet

    set_quiet(False)  # each invocation starts loud; --format json / -q turn it off while parsing
    # ...and ends loud again: an in-process caller (a test, a notebook) must not inherit a command's -q
    click.get_current_context().call_on_close(lambda: set_quiet(False))


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors become one line on stderr and an exit code, never a traceback."""
    try:
        cli.main(args=argv, prog_name="edgeprune", standalone_mode=False)
    except EdgepruneError as exc:
        # Commands print their result (a missed deadline included) before raising, so stdout stays usable.
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    sys.exit(0)
