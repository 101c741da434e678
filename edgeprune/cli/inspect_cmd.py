"""`edgeprune inspect`: summarise a model, engine, profile or prune run directory."""

from __future__ import annotations

from typing import Any

import click

from .output import FORMAT_OPTION, print_json


def _io_line(label: str, items: list[dict[str, Any]] | None) -> str:
    parts = [f"{i['name']} {'x'.join(str(d) for d in (i.get('shape') or []))} {i.get('dtype', '')}".strip()
             for i in items or []]
    return f"{label:<9} {', '.join(parts) or '-'}"


def _print(data: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=150)
    console.print(f"[bold]{data.get('path')}[/bold]: {data['kind']}")
    if data.get("inputs") is not None or data.get("outputs") is not None:
        console.print(_io_line("inputs", data.get("inputs")), highlight=False)
        console.print(_io_line("outputs", data.get("outputs")), highlight=False)
    if data.get("params") is not None:
        console.print(f"params    {data['params']:,}   FLOPs {data.get('flops') or 0:,} "
                      "(2 x MACs of conv/gemm/matmul, per input)", highlight=False)
    channels = data.get("channels")
    if channels:
        console.print("channels per layer, before -> after pruning:")
        table = Table()
        for col in ("module", "before", "after"):
            table.add_column(col, justify="left" if col == "module" else "right")
        for row in channels:
            table.add_row(row["module"], str(row["before"]), str(row["after"]))
        console.print(table)
    elif data.get("layers"):
        table = Table(title="layers")
        for col in ("module", "op", "in", "out", "params", "MFLOPs"):
            table.add_column(col, justify="left" if col in ("module", "op") else "right")
        for row in data["layers"]:
            table.add_row(row.get("module") or row["name"], row["op"], str(row.get("in_channels", "")),
                          str(row.get("out_channels", "")), f"{row['params']:,}", f"{row['flops'] / 1e6:.2f}")
        console.print(table)
    side = data.get("sidecar")
    if side:
        lat = side.get("latency") or {}
        parity = side.get("parity") or {}
        acc = side.get("accuracy") or {}
        console.print(f"sidecar   {side['artifact'].get('format')} {side.get('precision')} for target "
                      f"{(side.get('target') or {}).get('name')}; parity "
                      f"{'passed' if parity.get('passed') else 'FAILED'} ({parity.get('samples')} samples)",
                      highlight=False)
        if lat.get("measured"):
            console.print(f"latency   {lat['metric']} {lat['value_ms']:.3f} ms ({lat.get('how')})", highlight=False)
        if acc:
            console.print(f"accuracy  PyTorch {acc['torch']:.2%}, artifact {acc['artifact']:.2%} on {acc['data']}",
                          highlight=False)
        src = side.get("source") or {}
        console.print(f"source    {src.get('spec')} (model hash {str(src.get('model_hash'))[:12]})", highlight=False)
    if data.get("latency_ms"):
        lat = data["latency_ms"]
        console.print(f"latency   p50 {lat['p50']:.3f} ms, p90 {lat['p90']:.3f}, n {lat['n']}", highlight=False)
    for art in data.get("artifacts") or []:
        console.print(f"artifact  {art['file']}: {art.get('kind', art.get('error'))}", highlight=False)


@click.command()
@click.argument("path", type=click.Path())
@FORMAT_OPTION
def inspect(path: str, fmt: str) -> None:
    """Summarise PATH: an ONNX/.ort model, an engine (via its sidecar), an edgeprune JSON, or a run directory."""
    from ..inspect import inspect_path

    data = inspect_path(path)
    if fmt == "json":
        print_json(data)
    else:
        _print(data)
