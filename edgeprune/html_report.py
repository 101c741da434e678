"""`report.html`: one self-contained page (inline CSS, plots as data URIs) explaining a prune run.

Everything comes from the run directory's report.json; fields the latency policy adds (deadline,
per-round measured/predicted latency, per-layer latency) are used when present, and the page falls
back to parameters, memory and channels when they are not. It opens offline: no external resources.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .io import write_text_atomic
from .log import log
from .plots import fmt_ms

PLOTS_DIR = "plots"


# ---- reading report.json (tolerant: older runs and other policies lack the latency fields)


def _metric(report: dict[str, Any]) -> str:
    return report.get("metric") or (report.get("target") or {}).get("metric") or "p50"


def _as_ms(value: Any, metric: str) -> float | None:
    """A latency given as a number or as a statistics dict ({p50, p90, ...} or {value_ms})."""
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, dict):
        for key in (metric, "value_ms", "p50"):
            if isinstance(value.get(key), (int, float)):
                return float(value[key])
    return None


def _deadline(report: dict[str, Any]) -> float | None:
    return report.get("deadline_ms") or (report.get("config") or {}).get("latency_ms")


def final_latency_stats(report: dict[str, Any]) -> dict[str, Any] | None:
    """The delivered model's latency statistics: the policy's final measurement, else the export's."""
    if isinstance(report.get("final_latency_ms"), dict):
        return report["final_latency_ms"]
    art = ((report.get("artifact") or {}).get("latency_ms") or {})
    return art.get("latency_ms") if art.get("measured", True) else None


def latency_before_after(report: dict[str, Any]) -> tuple[float | None, float | None]:
    """The deadline metric of the unpruned and the delivered model, where they were measured."""
    metric = _metric(report)
    before = after = None
    top = report.get("latency_ms")
    if isinstance(top, dict) and ("before" in top or "after" in top):
        before, after = _as_ms(top.get("before"), metric), _as_ms(top.get("after"), metric)
    if before is None:
        before = _as_ms(report.get("dense_latency_ms"), metric)
    if after is None:
        after = _as_ms(report.get("final_metric_ms"), metric) or _as_ms(final_latency_stats(report), metric)
    return before, after


def _budgets(report: dict[str, Any]) -> dict[str, float]:
    cfg, before = report.get("config") or {}, report.get("params", {}).get("before")
    out: dict[str, float] = {}
    if _deadline(report) is not None:
        out["latency"] = float(_deadline(report))
    if cfg.get("max_params") is not None:
        out["params"] = float(cfg["max_params"])
    elif cfg.get("params_reduction") is not None and before:
        out["params"] = float(int(before * (1 - cfg["params_reduction"] / 100)))
    if cfg.get("memory_mb") is not None:
        out["memory"] = float(cfg["memory_mb"])
    return out


def trajectory_series(report: dict[str, Any]) -> dict[str, Any]:
    """What the trajectory plot draws: round 0 is the unpruned model, then every round as it ran."""
    rounds = report.get("rounds") or []
    cfg, metric, budgets = report.get("config") or {}, _metric(report), _budgets(report)
    slack = cfg.get("slack") or 0.0
    measured_latency = [r.get("latency_ms") for r in rounds]
    if "latency" in budgets or any(v is not None for v in measured_latency):
        before, _ = latency_before_after(report)
        series = {"label": f"{metric} latency", "unit": "ms", "key": "latency",
                  "measured": [before] + [_as_ms(v, metric) for v in measured_latency],
                  "predicted": [None] + [r.get("predicted_latency_ms") for r in rounds]}
        what = f"measured {metric} latency per round"
        budget_label = "deadline {} ms"
    elif "memory" in budgets:
        series = {"label": "peak memory", "unit": "MB", "key": "memory",
                  "measured": [report.get("memory_mb", {}).get("before")] + [r.get("memory_mb") for r in rounds]}
        what = "measured peak memory per round"
        budget_label = "budget {} MB"
    else:
        series = {"label": "parameters", "unit": "", "key": "params",
                  "measured": [report.get("params", {}).get("before")] + [r.get("params") for r in rounds]}
        what = "parameters per round"
        budget_label = "budget {:,.0f}"
    budget = budgets.get(series["key"])
    acc_before = (report.get("accuracy") or {}).get("before")
    floor = acc_before - cfg["max_acc_drop"] if cfg.get("max_acc_drop") is not None and acc_before is not None else None
    series.update(
        accuracy_floor=floor,
        rounds=[0] + [r["round"] for r in rounds],
        verdicts=["dense"] + [r.get("verdict", "") for r in rounds],
        accuracy=[report.get("accuracy", {}).get("before")] + [r.get("accuracy") for r in rounds],
        budget=budget, budget_low=budget * (1 - slack) if budget is not None and slack else None,
        budget_label=(budget_label.format(fmt_ms(budget) if series["key"] == "latency" else budget)
                      if budget is not None else ""),
        delivered=report.get("best_round"),
        title=f"How the run got there: {what}" + (" against the " + budget_label.split()[0]
                                                  if budget is not None else ""),
    )
    return series


# ---- plots


@dataclass
class Figure:
    name: str
    path: Path
    caption: str
    error: str | None = None


def write_plots(report: dict[str, Any], run_dir: Path) -> list[Figure]:
    """Every plot the report has data for, as PNGs under run_dir/plots/ (a failed plot is noted, not fatal)."""
    from .plots import plot_layer_channels, plot_layer_latency, plot_trajectory

    target = (report.get("target") or {}).get("name", "")
    out = run_dir / PLOTS_DIR
    jobs = []
    layer_latency = report.get("layer_latency") or {}
    if layer_latency.get("before") or layer_latency.get("after"):
        jobs.append(("latency_per_layer", lambda p: plot_layer_latency(layer_latency, p, target=target),
                     "Per-layer latency of the unpruned and the delivered model, measured by the target's "
                     "profiler and summed per PyTorch module, in execution order."))
    if report.get("rounds"):
        jobs.append(("trajectory", lambda p: plot_trajectory(trajectory_series(report), p),
                     "Every round in the order it ran. Red crosses are rounds that overshot and were backed "
                     "off (the next round restarts from the last kept one with a smaller step); the circled "
                     "point is the model delivered."
                     + (" Dashed: the cost model's prediction, made before the round was measured."
                        if any(r.get("predicted_latency_ms") is not None for r in report["rounds"]) else "")))
    channels = report.get("channels") or {}
    if channels.get("before"):
        note = "" if jobs and jobs[0][0] == "latency_per_layer" else (
            " No per-layer latency was recorded for this run (it had no deadline), so channels stand in.")
        jobs.append(("channels_per_layer", lambda p: plot_layer_channels(channels, p),
                     "Output channels of each convolution before and after pruning." + note))
    figures = []
    for name, draw, caption in jobs:
        path = out / f"{name}.png"
        try:
            draw(path)
            figures.append(Figure(name, path, caption))
        except Exception as exc:  # a plot must never cost the user the run it describes
            log(f"warning: could not draw the {name} plot: {exc}")
            figures.append(Figure(name, path, caption, error=f"{type(exc).__name__}: {exc}"))
    return figures


# ---- HTML pieces

def _e(value: Any) -> str:
    return html.escape(str(value))


def _num(value: Any, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return _e(value)


def _reduction(before: float | None, after: float | None) -> str:
    if not before or after is None:
        return ""
    return f"−{(1 - after / before) * 100:.1f}%" if after <= before else f"+{(after / before - 1) * 100:.1f}%"


def _card(title: str, value: str, sub: str = "", tone: str = "") -> str:
    return (f'<div class="card {tone}"><div class="card-title">{_e(title)}</div>'
            f'<div class="card-value">{value}</div><div class="card-sub">{sub}</div></div>')


def _kv_table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td>{v if isinstance(v, _Html) else _e(v)}</td></tr>"
                   for k, v in rows if v is not None and v != "")
    return f'<table class="kv">{body}</table>'


class _Html(str):
    """Already-escaped markup (so _kv_table does not escape it twice)."""


def _headline(report: dict[str, Any]) -> str:
    metric, deadline = _metric(report), _deadline(report)
    before, after = latency_before_after(report)
    met = report.get("deadline_met", report.get("met"))
    parts = _constraint_summary(report)
    if deadline is not None:
        verdict = "Deadline met" if met else "Deadline NOT met"
        upper = report.get("final_metric_upper_ms")
        decided = upper if upper is not None else after  # the deadline is decided on the upper bound
        bound = (f" (upper {report.get('confidence', 0.95) * 100:.0f}% bound {fmt_ms(upper)} ms)"
                 if upper is not None else "")
        parts.insert(0, f"{metric} {fmt_ms(after)} ms{bound} "
                        f"{'≤' if decided is not None and decided <= deadline else '>'} "
                        f"{fmt_ms(deadline)} ms on {(report.get('target') or {}).get('name', 'the target')}")
        share = report.get("deadline_share") or {}
        if share.get("share_upper") is not None:  # a share deadline is decided as a share, not on the ms above
            parts.insert(1, f"deadline {share['share'] * 100:g}% of dense: the artifact reads "
                            f"{share['share_upper']:.3f} of the dense model timed beside it (upper bound)")
    else:
        verdict = "Constraints met" if met else "Constraints NOT met"
    detail = " · ".join(parts)
    binding = report.get("binding") or []
    if binding and not met:
        detail += f" — binding: {', '.join(binding)}"
    tone = "ok" if met else "bad"
    cards = []
    if before is not None or after is not None:
        speed = f"{before / after:.2f}× faster" if before and after else "measured on the target"
        together = report.get("speedup_now") or {}
        if together.get("speedup"):  # the figure to trust on a shared machine: both timed in one process
            speed = (f"{together['speedup']:.2f}× faster (dense and pruned timed close together at the end: "
                     f"{together.get('how', 'one process, alternating per pair')})")
        vs = f" · deadline {fmt_ms(deadline)} ms" if deadline is not None else ""
        if report.get("latency_frame") == "dense":
            vs += " · rounds judged in the dense model's frame (each model timed between readings of it)"
        drift = report.get("machine_drift") or {}
        if drift and abs(drift["ratio"] - 1) > ((report.get("config") or {}).get("slack") or 0.05):
            way = f"{drift['ratio'] - 1:.0%} slower" if drift["ratio"] >= 1 else f"{1 - drift['ratio']:.0%} faster"
            vs += (f" · the target read the dense model {way} at the end than at the start: at the start's speed "
                   f"{fmt_ms(drift['final_as_at_start_ms'])} ms")
        cards.append(_card(f"Latency ({metric})", f"{fmt_ms(before)} → <b>{fmt_ms(after)}</b> ms"
                           if before is not None else f"<b>{fmt_ms(after)}</b> ms", _e(speed + vs),
                           "ok" if deadline is None or (after is not None and after <= deadline) else "bad"))
    p, f = report.get("params") or {}, report.get("flops") or {}
    if p:
        cards.append(_card("Parameters", f"{_num(p.get('before'))} → <b>{_num(p.get('after'))}</b>",
                           _e(f"{_reduction(p.get('before'), p.get('after'))} "
                              f"({report.get('compression_ratio') or 0:.2f}× smaller)")))
    if f:
        cards.append(_card("FLOPs", f"{_compact(f.get('before'))} → <b>{_compact(f.get('after'))}</b>",
                           _e(_reduction(f.get("before"), f.get("after")))))
    acc = report.get("accuracy") or {}
    if acc.get("after") is not None:
        delta = acc["after"] - (acc.get("before") or 0.0)
        tone_acc = "bad" if report.get("constraint_states", {}).get("accuracy") == "over" else ""
        sub = f"{delta:+.2f} points (validation)".replace("-", "−")
        test = report.get("test_accuracy") or {}
        if test.get("after") is not None:
            sub += f" · test {test['before']:.2f} → {test['after']:.2f}"
        cards.append(_card("Accuracy", f"{_num(acc.get('before'))} → <b>{_num(acc['after'])}</b> %", _e(sub),
                           tone_acc))
    else:
        cards.append(_card("Accuracy", "not measured", "no --data: fine-tune before deploying", "warn"))
    return (f'<section class="headline {tone}"><div class="verdict">{_e(verdict)}</div>'
            f'<div class="verdict-detail">{_e(detail)}</div></section>'
            f'<div class="cards">{"".join(cards)}</div>')


def _constraint_summary(report: dict[str, Any]) -> list[str]:
    """The delivered model against each constraint other than the deadline, in one phrase each."""
    budgets, cfg, out = _budgets(report), report.get("config") or {}, []
    params, memory = (report.get("params") or {}).get("after"), (report.get("memory_mb") or {}).get("after")
    acc = report.get("accuracy") or {}
    if "params" in budgets and params is not None:
        out.append(f"params {params:,} {'≤' if params <= budgets['params'] else '>'} {budgets['params']:,.0f}")
    if "memory" in budgets and memory is not None:
        out.append(f"peak memory {memory:.1f} MB {'≤' if memory <= budgets['memory'] else '>'} "
                   f"{budgets['memory']:g} MB")
    if cfg.get("max_acc_drop") is not None and acc.get("after") is not None and acc.get("before") is not None:
        drop = acc["before"] - acc["after"]
        out.append(f"accuracy {acc['after']:.2f}, {drop:.2f} pts below the unpruned model "
                   f"(allowed {cfg['max_acc_drop']:g})".replace("-", "−"))
    return out


def _compact(n: Any) -> str:
    if not isinstance(n, (int, float)):
        return "n/a"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:,.0f}"


def _lineage(report: dict[str, Any]) -> set[int]:
    """The rounds the delivered model was built through (following each round's starting point)."""
    by_id = {r["round"]: r for r in report.get("rounds") or []}
    out, cur = set(), report.get("best_round")
    while cur is not None and cur in by_id and cur not in out:
        out.add(cur)
        cur = by_id[cur].get("base_round")
    return out


def _why(report: dict[str, Any], r: dict[str, Any], nxt: dict[str, Any] | None) -> str:
    """Why a round was kept or backed off, in the words of its constraints."""
    budgets, metric = _budgets(report), _metric(report)
    cfg, acc_before = report.get("config") or {}, (report.get("accuracy") or {}).get("before")
    reasons = []
    for name, state in (r.get("constraints") or {}).items():
        if name == "accuracy":
            if r.get("accuracy") is not None and acc_before is not None:
                drop = acc_before - r["accuracy"]
                text = (f"accuracy {r['accuracy']:.2f} ({-drop:+.2f} pts; allowed −{cfg.get('max_acc_drop')})"
                        .replace("-", "−"))
            else:
                text = "accuracy"
            reasons.append((state, text + (" broke the tolerance" if state == "over" else "")))
            continue
        value = {"latency": _as_ms(r.get("latency_ms"), metric), "params": r.get("params"),
                 "memory": r.get("memory_mb")}.get(name)
        budget = budgets.get(name)
        fmt = (lambda v: f"{fmt_ms(v)} ms") if name == "latency" else (
            (lambda v: f"{v:,.0f}") if name == "params" else (lambda v: f"{v:.1f} MB"))
        label = f"{metric} latency" if name == "latency" else name
        if value is None or budget is None:
            reasons.append((state, f"{label}: {state}"))
        elif state == "below":
            reasons.append((state, f"{label} {fmt(value)} still above {fmt(budget)}"))
        elif state == "met":
            reasons.append((state, f"{label} {fmt(value)} within the slack under {fmt(budget)}"))
        else:
            reasons.append((state, f"{label} {fmt(value)}: pruned past {fmt(budget)} by more than the slack"))
    verdict = r.get("verdict")
    if r["round"] == report.get("best_round"):
        return _why_round(verdict, reasons, nxt) + _delivered_note(report, verdict)
    return _why_round(verdict, reasons, nxt)


def _delivered_note(report: dict[str, Any], verdict: str | None) -> str:
    if not any(c != "accuracy" for c in report.get("constraint_states") or {}):
        return "<br><b>delivered</b>: the last round that kept accuracy within the tolerance"
    if verdict == "overshoot":
        return ("<br><b>delivered anyway</b>: no round landed inside the slack window, and this is the "
                "least-pruned round that meets every budget with accuracy intact")
    return "<br><b>delivered</b>: the least-pruned round that meets every budget"


def _why_round(verdict: str | None, reasons: list[tuple[str, str]], nxt: dict[str, Any] | None) -> str:
    if verdict == "overshoot":
        shown = [t for s, t in reasons if s == "over"] or [t for _, t in reasons]
        if nxt is not None:
            base = nxt.get("base_round")
            then = f"round {nxt['round']} retried from {'the unpruned model' if base is None else f'round {base}'}" \
                   " with a smaller step"
        else:
            then = "the run ended"
        return f"<b>backed off</b>: {_e('; '.join(shown))} → {_e(then)}"
    text = "; ".join(t for _, t in reasons)
    if verdict == "done":
        return f"<b>kept</b>: {_e(text)} → every budget met, stop"
    return f"<b>kept</b>: {_e(text)} → prune further from here"


_MAX_GROUP_ROWS = 8


def _groups_cell(r: dict[str, Any]) -> str:
    """The channel groups a round cut: with the cost model's saving and the importance lost when known."""
    groups = r.get("groups")
    before = r.get("groups_before") or {}
    if isinstance(groups, list) and groups:
        head = "<tr><th>group</th><th>cut</th><th>saves</th><th>importance</th></tr>"
        rows = [(g.get("removed") or 0, f"<tr><td>{_e(g.get('group', '?'))}</td><td>−{g.get('removed', '?')}</td>"
                 f"<td>{fmt_ms(g.get('latency_saving_ms'))} ms</td>"
                 f"<td>{_num(g.get('importance_lost'), 3) if g.get('importance_lost') is not None else 'n/a'}</td></tr>")
                for g in groups]
    else:
        head = "<tr><th>group</th><th>channels</th></tr>"
        rows = [(n, f"<tr><td>{_e(g)}</td><td>{before.get(g, '?')} → "
                 f"{before[g] - n if g in before else '?'}</td></tr>") for g, n in (r.get("removed") or {}).items()]
    rows.sort(key=lambda t: -t[0])
    more = len(rows) - _MAX_GROUP_ROWS
    tail = f'<tr><td colspan="4">… and {more} more groups</td></tr>' if more > 0 else ""
    return f'<table class="mini">{head}{"".join(t for _, t in rows[:_MAX_GROUP_ROWS])}{tail}</table>'


def _replanned(r: dict[str, Any]) -> str:
    """The plans of a round measured before fine-tuning and set aside, if any: the allocator's re-plans, and
    the uniform-share plan compared with the allocator's (or the allocator's, where the uniform one won)."""
    from .probing import STATUS_WORDS

    probes = r.get("probes") or []
    lines = []
    for family, words in (("allocator", "re-planned before fine-tuning"), ("uniform", "uniform-share plan, set aside"),
                          ("regrown", "regrown uniform-share plan, set aside")):
        rejected = [p for p in probes if not p.get("accepted") and p.get("family", "allocator") == family]
        if rejected:
            text = "; ".join(f"{fmt_ms(p.get('measured_ms'))} ms, {STATUS_WORDS.get(p.get('status'), p.get('status'))}"
                             + (f", {p['params']:,} params" if p.get("params") is not None else "") for p in rejected)
            lines.append(f'<div class="muted">{words}: {_e(text)}</div>')
    chosen = next((p for p in probes if p.get("accepted")), None)
    if chosen is not None and chosen.get("family") == "uniform":
        lines.append(f'<div class="muted">fine-tuned: the uniform-share plan ({chosen.get("share", 0):.3f} of every '
                     "dense width), in the slack window with more parameters</div>")
    if chosen is not None and chosen.get("family") == "regrown":
        back = sum(t.get("restored", 0) for t in r.get("restored") or [])
        lines.append(f'<div class="muted">fine-tuned: the uniform-share plan ({chosen.get("share") or 0:.3f} of every '
                     f"dense width) with {back} units given back where they cost least latency, in the slack window"
                     "</div>")
    return "".join(lines)


def _rounds_table(report: dict[str, Any]) -> str:
    rounds = report.get("rounds") or []
    if not rounds:
        return "<p>No rounds ran.</p>"
    metric, lineage, best = _metric(report), _lineage(report), report.get("best_round")
    has_lat = any(r.get("latency_ms") is not None for r in rounds)
    has_pred = any(r.get("predicted_latency_ms") is not None for r in rounds)
    has_mem = any(r.get("memory_mb") is not None for r in rounds)
    head = ["Round", "From", "T", "Channels removed", "Params", "FLOPs", "Accuracy"]
    if has_lat:
        head.append(f"{metric} ms" + (" (predicted)" if has_pred else ""))
    if has_mem:
        head.append("Memory MB")
    head += ["Time", "Decision"]
    rows = []
    for i, r in enumerate(rounds):
        nxt = rounds[i + 1] if i + 1 < len(rounds) else None
        base = r.get("base_round")
        total = sum((r.get("removed") or {}).values())
        cells = [
            f"{r['round']}" + ('<br><span class="badge ok">delivered</span>' if r["round"] == best else ""),
            "dense" if base is None else str(base),
            f"{r.get('threshold', 0):.3f}",
            f"{total}<div class=\"groups\">{_groups_cell(r)}</div>",
            _num(r.get("params")), _compact(r.get("flops")), _num(r.get("accuracy")),
        ]
        if has_lat:
            pred = r.get("predicted_latency_ms")
            cells.append(fmt_ms(_as_ms(r.get("latency_ms"), metric))
                         + (f' <span class="muted">({fmt_ms(pred)})</span>' if pred is not None else "")
                         + _replanned(r))
        if has_mem:
            cells.append(_num(r.get("memory_mb"), 1))
        cells.append(f"{(r.get('seconds') or {}).get('total', 0):.1f} s")
        cells.append(_why(report, r, nxt))
        cls = {"overshoot": "overshoot", "done": "done"}.get(r.get("verdict", ""), "")
        if r["round"] in lineage:
            cls += " lineage"
        kinds = ["num"] * 3 + ["what"] + ["num"] * (len(cells) - 5) + ["why"]
        rows.append(f'<tr class="{cls.strip()}">'
                    + "".join(f'<td class="{k}">{c}</td>' for k, c in zip(kinds, cells, strict=True)) + "</tr>")
    thead = "".join(f"<th>{_e(h)}</th>" for h in head)
    return (f'<div class="scroll"><table class="rounds"><thead><tr>{thead}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>'
            '<p class="note">Each round starts from the model in “From”, removes channels, fine-tunes and is '
            "measured (in latency mode the plan is measured before fine-tuning, and one landing outside the "
            "slack window is re-planned first). Rounds in bold built the delivered model; red rows overshot a "
            f"constraint and were backed off. Stopped because: {_e(report.get('stop_reason') or 'n/a')}.</p>")


def _conditions(report: dict[str, Any]) -> str:
    target = report.get("target") or {}
    stats = final_latency_stats(report) or {}
    art = (report.get("artifact") or {}).get("latency_ms") or {}
    settings, cond = art.get("settings") or {}, art.get("conditions") or {}
    measure = target.get("measure") or {}
    left = _kv_table([
        ("Target", target.get("name")), ("Description", target.get("description")),
        ("Runtime", f"{target.get('runtime', '')} {cond.get('runtime_version', '')}".strip()),
        ("Execution provider", target.get("execution_provider")), ("Precision", target.get("precision")),
        ("Threads", settings.get("threads", target.get("threads"))),
        ("Graph optimisation", target.get("graph_optimization_level")),
        ("Latency metric", _metric(report)), ("Host", target.get("host") or "this machine"),
        ("Latency floor", f"{fmt_ms(report['floor_ms'])} ms (the thinnest model the graph allows, measured)"
         if report.get("floor_ms") is not None else None),
        ("Cost model", _cost_model_text(report.get("cost_model"))),
        ("Measurement", f"{measure.get('warmup', '?')} warm-up runs, ≥ {measure.get('iterations', '?')} timed "
                        f"runs and ≥ {measure.get('min_time_s', '?')} s") if measure else None,
    ])
    right = _kv_table([
        ("Machine", cond.get("hostname")), ("CPU", cond.get("cpu_model")),
        ("Cores", f"{cond.get('physical_cores')} physical / {cond.get('logical_cores')} logical"
         if cond.get("physical_cores") else None),
        ("OS", cond.get("os")), ("Python", cond.get("python_version")), ("GPUs", cond.get("gpus")),
        ("Jetson", cond.get("jetson")), ("CPU governor", cond.get("cpu_governor")),
        ("How timed", settings.get("timing") or art.get("how")),
    ])
    stat_row = ""
    if stats:
        keys = [k for k in ("p50", "p90", "p99", "mean", "std", "min", "max") if stats.get(k) is not None]
        stat_row = ("<h3>Delivered model, end to end</h3><table class=\"stats\"><tr>"
                    + "".join(f"<th>{k}</th>" for k in keys) + "<th>n</th></tr><tr>"
                    + "".join(f"<td>{fmt_ms(stats[k])} ms</td>" for k in keys)
                    + f"<td>{_num(stats.get('n'))}</td></tr></table>")
    return f'<div class="two">{left}{right}</div>{stat_row}'


def _cost_model_text(cm: dict[str, Any] | None) -> str | None:
    if not cm or cm.get("mean_abs_error") is None:
        return None
    n = len(cm.get("prediction_errors") or [])
    return (f"predictions off by {cm['mean_abs_error'] * 100:.0f}% on average over {n} measured round(s) "
            "(|predicted − measured| / measured; corrected after every round)")


def _configuration(report: dict[str, Any]) -> str:
    cfg, budget, data = report.get("config") or {}, report.get("budget") or {}, report.get("data") or {}
    constraints = "".join(f"<li>{_e(c)}</li>" for c in report.get("constraints") or [])
    method = _kv_table([
        ("Model", (report.get("model") or {}).get("spec") or cfg.get("model")),
        ("Input shape", "×".join(str(d) for d in (report.get("model") or {}).get("input_shape") or [])),
        ("Method", cfg.get("method")), ("Importance", cfg.get("importance")),
        ("Allocator", cfg.get("allocator") if _deadline(report) is not None else None),
        ("Weighting", cfg.get("weighting") if cfg.get("method") == "aiap" and _deadline(report) is None else None),
        ("Slack", f"{cfg['slack'] * 100:.0f}%" if cfg.get("slack") is not None else None),
        ("Max rounds", cfg.get("max_rounds")), ("Seed", cfg.get("seed")),
        ("Data", f"{data.get('data')} — {data.get('train_samples')} train / {data.get('val_samples')} validation "
                 f"({data.get('val_source')})" if data else "none (accuracy not measured)"),
    ])
    spent = _kv_table([
        ("Rounds run", budget.get("rounds")), ("Fine-tuning per round", f"{budget.get('finetune_epochs')} epoch(s)"),
        ("Final fine-tuning", f"{budget.get('final_epochs')} epoch(s)"), ("Retraining", budget.get("retrain")),
        ("Batch size / LR", f"{budget.get('batch_size')} / {budget.get('lr')}"),
        ("Training samples", budget.get("train_limit") or "all"),
        ("Fine-tuning time", f"{budget.get('finetune_seconds', 0):.1f} s"),
        ("Run time (rounds)", f"{sum((r.get('seconds') or {}).get('total', 0) for r in report.get('rounds') or []):.1f} s"),
        ("Resumed after rounds", ", ".join(map(str, report.get("resumed_after_rounds") or [])) or None),
    ]) if budget else ""
    full = _e(json.dumps(cfg, indent=2))
    return (f"<h3>Constraints</h3><ul>{constraints}</ul><div class=\"two\">{method}{spent}</div>"
            f"<details><summary>Full configuration</summary><pre>{full}</pre></details>")


_ARTIFACTS = [
    ("model.onnx", "the pruned model, exported for the target"),
    ("model.onnx.data", "its weights (ONNX external data; keep next to model.onnx)"),
    ("model.onnx.json", "sidecar: how it was built, parity and latency"),
    ("weights.pt", "pruned PyTorch weights (load with edgeprune.loading.load(run_dir))"),
    ("manifest.json", "the pruned architecture: channels kept per layer"),
    ("source.json", "where the original model came from"),
    ("report.json", "everything on this page, machine-readable"),
    ("rounds", "every round's checkpoint and metrics"),
    ("plots", "the plots on this page as PNG files"),
]


def _size(path: Path) -> str:
    if path.is_dir():
        return f"{sum(1 for _ in path.iterdir())} entries"
    n = path.stat().st_size
    return next((f"{n / s:.1f} {u}" for u, s in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)) if n >= s), f"{n} B")


def _artifacts(report: dict[str, Any], run_dir: Path) -> str:
    rows = []
    for name, what in _ARTIFACTS:
        path = run_dir / name
        if path.exists():
            rows.append(f'<tr><td><a href="{_e(name)}"><code>{_e(name)}</code></a></td>'
                        f"<td>{_e(what)}</td><td>{_e(_size(path))}</td></tr>")
    art = report.get("artifact") or {}
    parity = art.get("parity") or {}
    parity_text = ""
    if parity:
        worst = max((o.get("max_abs_error", 0.0) for o in parity.get("outputs") or []), default=None)
        ok = parity.get("passed")
        parity_text = (f'<p><span class="badge {"ok" if ok else "bad"}">parity {"passed" if ok else "FAILED"}'
                       f"</span> {_e(parity.get('artifact', 'the artifact'))} vs PyTorch on "
                       f"{_e(parity.get('samples'))} samples: max abs error {worst:.2g}, top-1 agreement "
                       f"{(parity.get('top1_agreement') or 0) * 100:.1f}% "
                       f"<span class=\"muted\">({_e(parity.get('checked_with', ''))})</span></p>"
                       if worst is not None else "")
    return (f"<p>Run directory: <code>{_e(run_dir.resolve())}</code></p>{parity_text}"
            f'<table class="files">{"".join(rows)}</table>')


def _figures(figures: list[Figure]) -> str:
    parts = []
    for fig in figures:
        if fig.error:
            parts.append(f'<figure><div class="missing">The {_e(fig.name)} plot could not be drawn: '
                         f"{_e(fig.error)}</div></figure>")
            continue
        data = base64.b64encode(fig.path.read_bytes()).decode("ascii")
        parts.append(f'<figure><img alt="{_e(fig.name.replace("_", " "))}" src="data:image/png;base64,{data}">'
                     f'<figcaption>{_e(fig.caption)} <span class="muted">'
                     f"({_e(PLOTS_DIR)}/{_e(fig.path.name)})</span></figcaption></figure>")
    return "".join(parts)


_CSS = """
:root{--ink:#24292f;--muted:#57606a;--line:#d0d7de;--soft:#f6f8fa;--ok:#1a7f37;--okbg:#dafbe1;--bad:#cf222e;
--badbg:#ffebe9;--warn:#9a6700;--warnbg:#fff8c5;--accent:#1f6feb}
*{box-sizing:border-box}
body{margin:0;font:15px/1.5 -apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,"Liberation Sans",
"DejaVu Sans",sans-serif;color:var(--ink);background:#fff}
main{max-width:1120px;margin:0 auto;padding:28px 28px 60px}
header h1{font-size:22px;margin:0}
header .sub{color:var(--muted);margin-top:2px}
h2{font-size:18px;margin:40px 0 12px;padding-bottom:6px;border-bottom:1px solid var(--line)}
h3{font-size:15px;margin:20px 0 8px}
.headline{margin:20px 0 16px;padding:16px 20px;border-radius:10px;border:1px solid}
.headline.ok{background:var(--okbg);border-color:#aceebb}
.headline.bad{background:var(--badbg);border-color:#ffcecb}
.verdict{font-size:24px;font-weight:700}
.headline.ok .verdict{color:var(--ok)}.headline.bad .verdict{color:var(--bad)}
.verdict-detail{font-size:15px;margin-top:2px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(210px,1fr));gap:12px}
.card{border:1px solid var(--line);border-radius:10px;padding:12px 16px;background:#fff}
.card-title{font-size:13px;font-weight:600;color:var(--muted)}
.card-value{font-size:20px;margin:2px 0;white-space:nowrap}
.card-sub{font-size:13px;color:var(--muted)}
.card.ok{border-top:4px solid var(--ok)}.card.bad{border-top:4px solid var(--bad)}
.card.warn{border-top:4px solid var(--warn);background:var(--warnbg)}
figure{margin:18px 0 28px}
figure img{display:block;max-width:100%;height:auto;margin:0 auto}
figcaption{font-size:13px;color:var(--muted);margin-top:6px;max-width:860px}
.missing{padding:20px;background:var(--badbg);border-radius:8px}
table{border-collapse:collapse;font-size:13.5px}
.scroll{overflow-x:auto}
table.rounds{width:100%}
table.rounds>thead>tr>th,table.rounds>tbody>tr>td{padding:7px 7px;border-bottom:1px solid var(--line);
text-align:left;vertical-align:top}
table.rounds>thead>tr>th{background:var(--soft);font-weight:600}
table.rounds td.num{white-space:nowrap;font-variant-numeric:tabular-nums}
table.rounds td.what{white-space:nowrap}
table.rounds td.why{min-width:240px}
table.rounds>tbody>tr.overshoot>td{background:#fff5f5}
table.rounds tr.lineage td.num{font-weight:600}
.groups{margin-top:2px}
table.mini{font-size:11.5px;color:var(--muted);line-height:1.35}
table.mini th{font-weight:500;text-align:left;padding:0 8px 1px 0;border-bottom:1px solid var(--line)}
table.mini td{padding:1px 8px 0 0;white-space:nowrap;border:0;background:none}
.badge{display:inline-block;font-size:11px;font-weight:600;padding:1px 7px;border-radius:10px}
.badge.ok{background:var(--okbg);color:var(--ok)}.badge.bad{background:var(--badbg);color:var(--bad)}
.muted{color:var(--muted)}
.note{font-size:13px;color:var(--muted)}
.two{display:grid;grid-template-columns:1fr 1fr;gap:24px;align-items:start}
@media (max-width:800px){.two{grid-template-columns:1fr}}
table.kv{width:100%}
table.kv th{text-align:left;font-weight:500;color:var(--muted);padding:4px 12px 4px 0;width:38%;vertical-align:top}
table.kv td{padding:4px 0;word-break:break-word;vertical-align:top}
table.stats th,table.stats td,table.files td{padding:5px 14px 5px 0;text-align:left}
table.stats th{color:var(--muted);font-weight:500}
table.files td{border-bottom:1px solid var(--line)}
code,pre{font-family:ui-monospace,"SFMono-Regular",Menlo,Consolas,"DejaVu Sans Mono",monospace;font-size:12.5px}
pre{background:var(--soft);padding:12px;border-radius:8px;overflow-x:auto}
details summary{cursor:pointer;color:var(--accent);margin-top:12px}
footer{margin-top:48px;font-size:12px;color:var(--muted)}
"""


def render_html(report: dict[str, Any], run_dir: Path, figures: list[Figure]) -> str:
    """The page for one report (figures already written)."""
    model = (report.get("model") or {}).get("spec") or (report.get("config") or {}).get("model", "model")
    target = (report.get("target") or {}).get("name", "?")
    stamp = _dt.datetime.fromtimestamp((run_dir / "report.json").stat().st_mtime).strftime("%Y-%m-%d %H:%M") \
        if (run_dir / "report.json").exists() else ""
    title = f"edgeprune: {Path(str(model).split(':')[0]).name} on {target}"
    predicted = any(r.get("predicted_latency_ms") is not None for r in report.get("rounds") or [])
    measured_note = "Every number on this page was measured" + (
        ", except the cost model's predictions, which are labelled as such." if predicted else ".")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title><style>{_CSS}</style></head>
<body><main>
<header><h1>Pruning report: {_e(model)}</h1>
<div class="sub">target <b>{_e(target)}</b> · run <code>{_e(run_dir.name)}</code>{' · ' + _e(stamp) if stamp else ''}
</div></header>
{_headline(report)}
<h2>Plots</h2>
{_figures(figures)}
<h2>Rounds: what was kept, what was backed off, and why</h2>
{_rounds_table(report)}
<h2>Target and measured conditions</h2>
{_conditions(report)}
<h2>Configuration and budget</h2>
{_configuration(report)}
<h2>Artifacts</h2>
{_artifacts(report, run_dir)}
<footer>{_e(measured_note)} Generated by edgeprune from <code>report.json</code>
(schema {_e(report.get("schema_version", "?"))}).</footer>
</main></body></html>
"""


def write_html_report(run_dir: str | Path) -> Path:
    """Read run_dir/report.json; write run_dir/plots/*.png and the self-contained run_dir/report.html."""
    from .errors import EdgepruneError

    run_dir = Path(run_dir)
    source = run_dir / "report.json"
    if not source.is_file():
        raise EdgepruneError(f"{source} not found: give the output directory of a finished `edgeprune prune`")
    report = json.loads(source.read_text())
    figures = write_plots(report, run_dir)
    out = run_dir / "report.html"
    write_text_atomic(out, render_html(report, run_dir, figures))
    return out
