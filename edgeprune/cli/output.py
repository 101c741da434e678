"""Shared CLI output helpers: machine-readable stdout, human tables, logs on stderr."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ..io import write_json_atomic

FORMAT_OPTION = click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
    help="stdout format: a human table or machine-readable JSON",
)
QUIET_OPTION = click.option("-q", "--quiet", is_flag=True, help="no progress or log output on stderr")


def print_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))


def write_report(obj: Any, output: str | None) -> None:
    if output:
        write_json_atomic(Path(output), obj)


def log(message: str) -> None:
    click.echo(message, err=True)
