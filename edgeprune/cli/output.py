"""Shared CLI output helpers: machine-readable stdout, human tables, logs on stderr."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ..io import write_json_atomic
from ..log import set_quiet


def _quiet_if(wanted: object):
    """An option callback that silences logs and progress when the option has the `wanted` value."""
    def callback(ctx: click.Context, param: click.Parameter, value: object) -> object:
        if value == wanted:
            set_quiet(True)  # JSON on stdout means a program is reading: no bars or chatter around it
        return value

    return callback


FORMAT_OPTION = click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
    help="stdout format: a human table or machine-readable JSON (JSON also silences progress on stderr)",
    callback=_quiet_if("json"),
)
QUIET_OPTION = click.option("-q", "--quiet", is_flag=True, help="no progress or log output on stderr",
                            callback=_quiet_if(True))


def print_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))


def write_report(obj: Any, output: str | None) -> None:
    if output:
        write_json_atomic(Path(output), obj)


def log(message: str) -> None:
    click.echo(message, err=True)
