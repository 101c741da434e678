"""`edgeprune targets`: the known target profiles and whether each can be measured from here."""

from __future__ import annotations

import click

from ..targets import builtin_targets, load_target, usability
from .output import FORMAT_OPTION, print_json


def list_targets(extra: tuple[str, ...] = ()) -> list[dict]:
    """Every built-in target (plus user profiles given) with its usability on this machine."""
    specs = list(builtin_targets().values()) + [load_target(p) for p in extra]
    rows = []
    for spec in specs:
        ok, why = usability(spec)
        rows.append({**spec.to_dict(), "usable": ok, "why": why})
    return rows


@click.command()
@click.argument("profiles", nargs=-1, type=click.Path())
@FORMAT_OPTION
def targets(profiles: tuple[str, ...], fmt: str) -> None:
    """List the target profiles (built-in and PROFILES given) and whether each is usable here."""
    rows = list_targets(profiles)
    if fmt == "json":
        print_json(rows)
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="edgeprune targets")
    for col in ("name", "runtime", "precision", "threads", "metric", "usable here", "why / where"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], r["runtime"], r["precision"], str(r["threads"] or "all"), r["metric"],
                      "yes" if r["usable"] else "no", escape(r["why"]))
    Console(width=140).print(table)
