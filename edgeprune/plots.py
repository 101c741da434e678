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


def _save(fig, path: str | Path, dpi: int = 110) -> None:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    write_bytes_atomic(Path(path), buf.getvalue())


def module_latency(layers: list[dict[str, Any]]) -> dict[str, float]:
    """Per-module latency in execution order (unattributed nodes grouped under '(unattributed)')."""
    totals: dict[str, float] = {}
    for layer in layers:
        key = layer.get("module") or "(unattributed)"
        totals[key] = totals.get(key, 0.0) + layer.get("latency_ms", 0.0)
    return totals


def plot_profile_layers(report: dict[str, Any], path: str | Path, top: int = 40) -> None:
    """Horizontal bars of the slowest modules' latency for one profile (`edgeprune profile --plot`)."""
    plt = _figure()
    totals = sorted(module_latency(report["layers"]).items(), key=lambda kv: -kv[1])[:top]
    names = [k for k, _ in totals]
    values = [v for _, v in totals]
    total = sum(module_latency(report["layers"]).values()) or 1.0
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(9, max(2.4, (0.3 if len(names) <= 24 else 0.22) * len(names) + 1.3)))
        ax.barh(names, values, color=AFTER, height=0.6)
        ax.set_ylim(len(names) - 0.5, -0.5)  # slowest on top
        ax.tick_params(axis="y", labelsize=8.5 if len(names) <= 24 else 7, length=0)
        ax.grid(axis="x")
        ax.set_axisbelow(True)
        span = max(values + [1e-12])
        for r, v in enumerate(values):
            ax.text(v + span * 0.01, r, f"{fmt_ms(v)} ms  ({v / total * 100:.0f}%)", va="center", fontsize=7.5,
                    color=MUTED)
        ax.set_xlim(0, span * 1.25)
        lat = report["latency_ms"]
        ax.set_xlabel("median time per inference (ms), summed per module; % of the per-layer total")
        ax.set_title(f"{report['model']['spec']} on {report['target']['spec']['name']}: "
                     f"p50 {fmt_ms(lat['p50'])} ms end to end, slowest modules")
        _save(fig, path, dpi=REPORT_DPI)
        plt.close(fig)


# ---- prune report plots: one palette so "before", "after" and the deadline read the same everywhere

BEFORE = "#a3aebd"
AFTER = "#1f6feb"
PREDICTED = "#d4a72c"
ACCURACY = "#1a7f37"
DEADLINE = "#cf222e"
INK = "#24292f"
MUTED = "#57606a"
REPORT_DPI = 140  # the report scales plots down to its column: crisp on high-density screens too

_STYLE = {
    "font.size": 9.5, "axes.titlesize": 11.5, "axes.titleweight": "bold", "axes.titlelocation": "left",
    "axes.titlepad": 10, "axes.labelcolor": INK, "axes.labelsize": 9.5, "axes.edgecolor": "#d0d7de",
    "axes.spines.top": False, "axes.spines.right": False, "xtick.color": MUTED, "ytick.color": MUTED,
    "legend.frameon": False, "legend.fontsize": 8.5, "figure.facecolor": "white", "axes.facecolor": "white",
    "grid.color": "#eaeef2", "grid.linewidth": 0.8,
}


def fmt_ms(value: float | None) -> str:
    """A latency with as many digits as its size deserves (0.0123, 1.23, 12.3, 123)."""
    if value is None:
        return "n/a"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}" if value >= 0.01 else f"{value:.2g}"


def _pct_change(before: float, after: float) -> str:
    if not before:
        return ""
    change = (after - before) / before * 100
    return "same" if abs(change) < 0.05 else f"{change:+.0f}%".replace("-", "\u2212")


def plot_before_after(before: dict[str, float], after: dict[str, float], path: str | Path, *, title: str,
                      xlabel: str, value_format=fmt_ms, top: int = 40) -> None:
    """Grouped horizontal bars, one pair per module in execution order (the `top` largest kept).

    Modules pruned away entirely show an empty "after" bar; modules only in `after` are appended.
    """
    plt = _figure()
    names = list(before) + [n for n in after if n not in before]
    if len(names) > top:
        largest = set(sorted(names, key=lambda n: -max(before.get(n, 0.0), after.get(n, 0.0)))[:top])
        names = [n for n in names if n in largest]
        title += f" ({top} largest of {len(before)})"
    b = [before.get(n, 0.0) for n in names]
    a = [after.get(n, 0.0) for n in names]
    rows = range(len(names))
    height = 0.4
    with plt.rc_context(_STYLE):
        row_in = 0.3 if len(names) <= 24 else 0.22
        fig, ax = plt.subplots(figsize=(10, max(2.4, row_in * len(names) + 1.4)))
        ax.barh([r - height / 2 for r in rows], b, height, color=BEFORE, label="before")
        ax.barh([r + height / 2 for r in rows], a, height, color=AFTER, label="after (delivered model)")
        ax.set_yticks(list(rows), names)
        ax.set_ylim(len(names) - 0.4, -0.6)  # execution order reads top to bottom
        ax.tick_params(axis="y", labelsize=8.5 if len(names) <= 24 else 7, length=0)
        ax.grid(axis="x")
        ax.set_axisbelow(True)
        ax.set_xlabel(xlabel)
        ax.set_title(title)
        span = max(b + a + [1e-12])
        for r, (vb, va) in enumerate(zip(b, a, strict=True)):
            label = f"{value_format(vb)} \u2192 {value_format(va)}"
            change = _pct_change(vb, va)
            ax.text(max(vb, va) + span * 0.01, r, f"{label}  ({change})" if change else label,
                    va="center", fontsize=7.5, color=MUTED)
        ax.set_xlim(0, span * 1.3)
        ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=2, borderaxespad=0.2)
        _save(fig, path, dpi=REPORT_DPI)
        plt.close(fig)


def plot_layer_latency(layer_latency: dict[str, dict[str, float]], path: str | Path, *, metric: str = "median",
                       target: str = "") -> None:
    """Latency per module before and after pruning (report.json's `layer_latency`)."""
    where = f" on {target}" if target else ""
    plot_before_after(layer_latency.get("before", {}), layer_latency.get("after", {}), path,
                      title=f"Latency per layer{where}",
                      xlabel=f"{metric} time per inference (ms), summed per module")


def plot_layer_channels(channels: dict[str, dict[str, int]], path: str | Path) -> None:
    """Output channels per conv layer before and after pruning (report.json's `channels`)."""
    plot_before_after({k: float(v) for k, v in channels.get("before", {}).items()},
                      {k: float(v) for k, v in channels.get("after", {}).items()}, path,
                      title="Output channels per conv layer", xlabel="output channels",
                      value_format=lambda v: f"{v:.0f}")


def _columns(points: list[tuple[float, float]]) -> tuple[list[float], list[float]]:
    return [x for x, _ in points], [y for _, y in points]


def _overshoot_spans(ax, rounds: list[int], verdicts: list[str]) -> None:
    for r, v in zip(rounds, verdicts, strict=True):
        if v == "overshoot":
            ax.axvspan(r - 0.42, r + 0.42, color=DEADLINE, alpha=0.07, lw=0)


def plot_trajectory(series: dict[str, Any], path: str | Path) -> None:
    """The run round by round: the monitored quantity (measured, predicted) against its budget, and
    accuracy in a panel below on the same rounds.

    `series` (built by html_report.trajectory_series): rounds, measured, predicted, verdicts, accuracy,
    accuracy_floor, budget, budget_low (the slack window's lower edge), budget_label, delivered, label,
    unit, title.
    """
    plt = _figure()
    rounds = series["rounds"]
    measured, predicted = series["measured"], series.get("predicted") or []
    verdicts, accuracy = series["verdicts"], series.get("accuracy") or []
    budget = series.get("budget")
    has_acc = any(a is not None for a in accuracy)
    with plt.rc_context(_STYLE):
        if has_acc:
            fig, (ax, axa) = plt.subplots(2, 1, sharex=True, figsize=(10, 5.6),
                                          gridspec_kw={"height_ratios": [3, 1.35], "hspace": 0.08})
        else:
            fig, ax = plt.subplots(figsize=(10, 4.2))
            axa = None
        ax.grid(axis="y")
        ax.set_axisbelow(True)
        _overshoot_spans(ax, rounds, verdicts)
        if budget is not None:
            low = series.get("budget_low")
            if low is not None:
                ax.axhspan(low, budget, color=ACCURACY, alpha=0.10, lw=0, label="target window (within slack)")
            ax.axhline(budget, color=DEADLINE, lw=1.6, label=series["budget_label"])
        pts = [(r, y) for r, y in zip(rounds, measured, strict=True) if y is not None]
        if pts:
            ax.plot(*_columns(pts), color=AFTER, lw=1.2, alpha=0.45, zorder=2)
        keep = [(r, y) for r, y, v in zip(rounds, measured, verdicts, strict=True) if y is not None and v != "overshoot"]
        over = [(r, y) for r, y, v in zip(rounds, measured, verdicts, strict=True) if y is not None and v == "overshoot"]
        if keep:
            ax.scatter(*_columns(keep), color=AFTER, s=44, zorder=3, label=f"measured {series['label']}")
        if over:
            ax.scatter(*_columns(over), color=DEADLINE, marker="X", s=80, zorder=3, label="overshoot: backed off")
        ppts = [(r, y) for r, y in zip(rounds, predicted, strict=False) if y is not None]
        if ppts:
            ax.plot(*_columns(ppts), color=PREDICTED, lw=1.4, ls="--", marker="o", mfc="white", ms=5, zorder=2,
                    label="predicted by the cost model")
        delivered = series.get("delivered")
        if delivered is not None and delivered in rounds:
            y = measured[rounds.index(delivered)]
            if y is not None:
                ax.scatter([delivered], [y], s=300, facecolors="none", edgecolors=INK, lw=1.5, zorder=4,
                           label="delivered model")
        unit = series["unit"]
        ax.set_ylabel(f"{series['label']} ({unit})" if unit else series["label"])
        values = [y for _, y in pts + ppts] + ([budget] if budget is not None else [])
        if values:
            ax.set_ylim(0, max(values) * 1.15)
        if unit == "":  # parameter counts: 120k reads better than 120000
            ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v / 1e3:,.0f}k" if v >= 1e3 else f"{v:.0f}"))
        ax.set_title(series["title"])
        bottom = ax
        if axa is not None:
            axa.grid(axis="y")
            axa.set_axisbelow(True)
            _overshoot_spans(axa, rounds, verdicts)
            apts = [(r, a) for r, a in zip(rounds, accuracy, strict=True) if a is not None]
            axa.plot(*_columns(apts), color=ACCURACY, lw=1.4, marker="s", ms=5, label="validation accuracy")
            floor = series.get("accuracy_floor")
            if floor is not None:
                axa.axhline(floor, color=DEADLINE, lw=1.2, ls=":", label=f"allowed minimum {floor:.2f}")
            lows = [a for _, a in apts] + ([floor] if floor is not None else [])
            highs = [a for _, a in apts]
            pad = max(1.0, (max(highs) - min(lows)) * 0.25)
            axa.set_ylim(min(lows) - pad, min(100.0, max(highs) + pad) if max(highs) <= 100 else max(highs) + pad)
            axa.set_ylabel("accuracy (%)")
            bottom = axa
        bottom.set_xlabel("round (0 = the unpruned model)")
        bottom.set_xticks(rounds)
        bottom.set_xlim(min(rounds) - 0.6, max(rounds) + 0.6)
        # one legend under the plot, where it can never hide a point
        handles, labels = [], []
        for a in (ax, axa) if axa is not None else (ax,):
            h, lab = a.get_legend_handles_labels()
            handles, labels = handles + h, labels + lab
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=4, markerscale=0.8)
        _save(fig, path, dpi=REPORT_DPI)
        plt.close(fig)
