"""PNG plots (matplotlib, no display needed) for profiles and prune reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .io import write_bytes_atomic


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> None:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    write_bytes_atomic(Path(path), buf.getvalue())


def module_latency(layers: list[dict[str, Any]]) -> dict[str, float]:
    """Per-module latency in execution order (unattributed nodes grouped under '(unattributed)')."""
    totals: dict[str, float] = {}
    for layer in layers:
        key = layer.get("module") or "(unattributed)"
        totals[key] = totals.get(key, 0.0) + layer.get("latency_ms", 0.0)
    return totals


def plot_profile_layers(report: dict[str, Any], path: str | Path, top: int = 40) -> None:
    """Horizontal bars of the slowest modules' latency for one profile."""
    plt = _figure()
    totals = sorted(module_latency(report["layers"]).items(), key=lambda kv: -kv[1])[:top]
    names = [k for k, _ in totals][::-1]
    values = [v for _, v in totals][::-1]
    fig, ax = plt.subplots(figsize=(8, max(3, 0.22 * len(names) + 1)))
    ax.barh(names, values, color="#3b7dd8")
    lat = report["latency_ms"]
    ax.set_xlabel("median latency per inference (ms)")
    ax.set_title(f"{report['model']['spec']} on {report['target']['spec']['name']}: "
                 f"p50 {lat['p50']:.2f} ms, slowest modules")
    ax.tick_params(axis="y", labelsize=7)
    _save(fig, path)
    plt.close(fig)
