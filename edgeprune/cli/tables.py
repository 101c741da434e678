"""Human-readable tables for stdout (the JSON form is what scripts read)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def _fmt_shape(shape) -> str:
    return "x".join(str(d) for d in shape) if shape else ""


def print_profile(report, top: int) -> None:
    console = Console(width=150)
    lat = report.latency_ms
    spec = report.target["spec"]
    cond = report.target.get("conditions", {})
    console.print(
        f"[bold]{report.model['spec']}[/bold] on [bold]{spec['name']}[/bold] "
        f"({spec['runtime']} {spec['precision']}, threads {cond.get('threads', spec['threads'])}, "
        f"{cond.get('cpu_model') or cond.get('gpu_name') or ''})"
    )
    console.print(
        f"latency ms: p50 {lat['p50']:.3f}  p90 {lat['p90']:.3f}  p99 {lat['p99']:.3f}  "
        f"mean {lat['mean']:.3f}  std {lat['std']:.3f}  n {lat['n']}"
    )
    mem = report.memory
    console.print(f"memory: peak RSS {mem.get('peak_rss_mb', float('nan')):.1f} MB, "
                  f"params {mem.get('params_mb', float('nan')):.2f} MB")
    att = report.attribution
    if report.layers:
        console.print(f"per-layer sum {att['node_sum_ms']:.3f} ms = {att['node_sum_over_p50']:.2f}x p50; "
                      f"{att['attributed_share'] * 100:.1f}% of it joined to a PyTorch module")
        table = Table(title=f"slowest {min(top, len(report.layers))} layers")
        for col in ("layer", "module", "op", "output", "ms", "share", "out MB"):
            table.add_column(col, justify="right" if col in ("ms", "share", "out MB") else "left")
        for row in report.slowest(top):
            mb = row.get("memory_bytes")
            table.add_row(row["name"][:40], row["module"] or "-", row["op"] or "", _fmt_shape(row["output_shape"]),
                          f"{row['latency_ms']:.3f}", f"{row['share'] * 100:.1f}%",
                          f"{mb / 1e6:.2f}" if mb else "-")
        console.print(table)
