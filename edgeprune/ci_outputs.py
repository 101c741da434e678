"""What a CI server reads from a check: JUnit XML, a markdown job summary, github-action-benchmark JSON.

Every writer takes a `CheckResult` (or its `to_dict()` form) and writes atomically.
"""

from __future__ import annotations

import datetime as _dt
import socket
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .io import write_json_atomic, write_text_atomic

SUITE_NAME = "edgeprune.check"


def _as_dict(result: Any) -> dict[str, Any]:
    return result if isinstance(result, dict) else result.to_dict()


def _conf(alpha: float) -> str:
    return f"{(1 - alpha) * 100:g}%"


def _pct(fraction: float) -> str:
    return f"{fraction * 100:+.1f}%"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


# ---------------------------------------------------------------------------------------------------
# JUnit XML


def _cases(d: dict[str, Any]) -> list[tuple[str, bool, str]]:
    """(name, failed, detail) per criterion checked."""
    label = f"{d['model']} on {d['target']}"
    metric = d["metric"]
    cases = []
    if d.get("regression"):
        r = d["regression"]
        detail = (f"{metric} {_ms(r['candidate_ms'])} ms vs baseline {_ms(r['baseline_ms'])} ms: "
                  f"{_pct(r['change'])}; {_conf(r['alpha'])} lower bound {_pct(r['ratio_ci'][0] - 1)}, "
                  f"limit {_pct(r['limit_ratio'] - 1)}"
                  + (f", Mann-Whitney p={r['p_value']:.3g}" if r.get("p_value") is not None else "")
                  + f"; n={r['n_candidate']}/{r['n_baseline']} (candidate/baseline); verdict {r['verdict']}")
        cases.append((f"{label}: {metric} regression vs baseline", r["failed"], detail))
    if d.get("budget"):
        b = d["budget"]
        detail = (f"{metric} {_ms(b['value_ms'])} ms, budget {b['budget_ms']:g} ms; {_conf(b['alpha'])} "
                  f"lower bound {_ms(b['ci_ms'][0])} ms; n={b['n']}; verdict {b['verdict']}")
        cases.append((f"{label}: {metric} within {b['budget_ms']:g} ms", b["failed"], detail))
    if not cases:  # --update-baseline with no budget: record the measurement itself
        lat = d["candidate"]["latency_ms"]
        cases.append((f"{label}: measured", False, f"{metric} {_ms(lat.get(metric))} ms; n={lat.get('n')}"))
    return cases


def junit_xml(result: Any) -> str:
    """JUnit XML: one test case per criterion (budget, regression), a <failure> on each that failed."""
    d = _as_dict(result)
    cases = _cases(d)
    failures = sum(1 for _, failed, _ in cases if failed)
    wall = f"{float(d.get('wall_s') or 0.0):.3f}"
    suites = ET.Element("testsuites", name="edgeprune", tests=str(len(cases)), failures=str(failures),
                        errors="0", time=wall)
    suite = ET.SubElement(
        suites, "testsuite", name=SUITE_NAME, tests=str(len(cases)), failures=str(failures), errors="0",
        skipped="0", time=wall, hostname=socket.gethostname(),
        timestamp=_dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
    )
    props = ET.SubElement(suite, "properties")
    cond = d.get("conditions") or {}
    for key, value in (("model", d["model"]), ("target", d["target"]), ("metric", d["metric"]),
                       ("cpu_model", cond.get("cpu_model")), ("runtime", cond.get("runtime")),
                       ("runtime_version", cond.get("runtime_version")), ("threads", cond.get("threads"))):
        ET.SubElement(props, "property", name=key, value="" if value is None else str(value))
    for name, failed, detail in cases:
        case = ET.SubElement(suite, "testcase", classname=SUITE_NAME, name=name, time=wall)
        if failed:
            ET.SubElement(case, "failure", message=detail, type="LatencyRegression").text = d["summary"]
        ET.SubElement(case, "system-out").text = detail + ("\n" + "\n".join(d["notes"]) if d.get("notes") else "")
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def junit_error_xml(name: str, message: str) -> str:
    """JUnit XML for a check that could not run (a user error): one test case with an <error>."""
    suites = ET.Element("testsuites", name="edgeprune", tests="1", failures="0", errors="1", time="0")
    suite = ET.SubElement(suites, "testsuite", name=SUITE_NAME, tests="1", failures="0", errors="1",
                          skipped="0", time="0", hostname=socket.gethostname())
    case = ET.SubElement(suite, "testcase", classname=SUITE_NAME, name=name, time="0")
    ET.SubElement(case, "error", message=message, type="EdgepruneError").text = message
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


# ---------------------------------------------------------------------------------------------------
# markdown summary


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_summary(result: Any, top: int = 10) -> str:
    """A job summary / PR comment: verdict, the figures, the conditions, the layers that moved most."""
    d = _as_dict(result)
    lat = d["candidate"]["latency_ms"]
    icon = "✅" if d["passed"] else "❌"
    lines = [f"## {icon} edgeprune check {d['status']}: `{_md(d['model'])}` on `{_md(d['target'])}`", "",
             f"`{_md(d['summary'])}`", ""]
    base = d.get("baseline")
    blat = (base or {}).get("latency_ms") or {}
    lines += ["| | p50 ms | p90 ms | p99 ms | mean ms | n |", "|---|---:|---:|---:|---:|---:|"]
    lines.append(f"| candidate | {_ms(lat.get('p50'))} | {_ms(lat.get('p90'))} | {_ms(lat.get('p99'))} | "
                 f"{_ms(lat.get('mean'))} | {lat.get('n')} |")
    if base:
        lines.append(f"| baseline ({_md(base.get('source'))}) | {_ms(blat.get('p50'))} | {_ms(blat.get('p90'))} | "
                     f"{_ms(blat.get('p99'))} | {_ms(blat.get('mean'))} | {blat.get('n')} |")
    lines.append("")
    metric = d["metric"]
    if d.get("regression"):
        r = d["regression"]
        p = f"{r['p_value']:.3g}" if r.get("p_value") is not None else "n/a (tail metric)"
        lines += [
            f"**Regression test** ({metric}): change {_pct(r['change'])}, {_conf(r['alpha'])} confidence lower "
            f"bound {_pct(r['ratio_ci'][0] - 1)} (upper {_pct(r['ratio_ci'][1] - 1)}), allowed "
            f"{_pct(r['limit_ratio'] - 1)}; Mann-Whitney p = {p} (reported, not deciding); "
            f"{'interleaved, paired blocks' if r['paired'] else 'stored baseline, unpaired'} "
            f"({r['blocks'][1]}/{r['blocks'][0]} blocks) → **{r['verdict']}**", ""]
    if d.get("budget"):
        b = d["budget"]
        lines += [f"**Budget** ({metric}): {_ms(b['value_ms'])} ms against {b['budget_ms']:g} ms, "
                  f"{_conf(b['alpha'])} confidence bounds {_ms(b['ci_ms'][0])}–{_ms(b['ci_ms'][1])} ms "
                  f"→ **{b['verdict']}**", ""]
    changes = [c for c in d.get("layer_changes") or [] if c["delta_ms"]][:top]
    if changes:
        lines += [f"### Layers whose latency moved most (top {len(changes)})", "",
                  "| layer | op | baseline ms | candidate ms | change ms | ratio |",
                  "|---|---|---:|---:|---:|---:|"]
        for c in changes:
            ratio = f"{c['ratio']:.2f}x" if c.get("ratio") is not None else ("new" if c["baseline_ms"] is None
                                                                               else "gone")
            lines.append(f"| `{_md(c['layer'])}` | {_md(c['op'])} | {_ms(c['baseline_ms'])} | "
                         f"{_ms(c['candidate_ms'])} | {c['delta_ms']:+.4f} | {ratio} |")
        lines += ["", "_Per-layer times come from onnxruntime's profiler (one block each), for orientation; "
                  "the verdict rests on the end-to-end samples._", ""]
    cond = d.get("conditions") or {}
    keys = ("cpu_model", "threads", "runtime", "runtime_version", "precision", "execution_provider",
            "graph_optimization_level", "input_shapes")
    lines += ["<details><summary>Measurement conditions</summary>", "", "| field | value |", "|---|---|"]
    lines += [f"| {k} | {_md(cond.get(k))} |" for k in keys if k in cond]
    for diff in d.get("condition_differences_ignored") or []:
        lines.append(f"| {diff['field']} (ignored difference) | baseline {_md(diff['baseline'])} |")
    lines += ["", "</details>", ""]
    for note in d.get("notes") or []:
        lines.append(f"> {_md(note)}")
    return "\n".join(lines).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------------
# github-action-benchmark


def benchmark_entries(result: Any) -> list[dict[str, Any]]:
    """github-action-benchmark `customSmallerIsBetter` entries: the chosen metric, in ms, with its range."""
    d = _as_dict(result)
    lat = d["candidate"]["latency_ms"]
    metric = d["metric"]
    lo, hi = d["candidate"]["metric_ci_ms"]
    value = float(lat[metric]) if metric in lat else (lo + hi) / 2
    extra = (f"p50 {_ms(lat.get('p50'))} ms, p90 {_ms(lat.get('p90'))} ms, p99 {_ms(lat.get('p99'))} ms, "
             f"mean {_ms(lat.get('mean'))} ms, n {lat.get('n')}; status {d['status']}")
    return [{
        "name": f"{d['model']} on {d['target']} ({metric})",
        "unit": "ms",
        "value": value,
        "range": f"± {max(value - lo, hi - value):.4g}",
        "extra": extra,
    }]


# ---------------------------------------------------------------------------------------------------
# writing


def write_junit(result: Any, path: str | Path) -> None:
    write_text_atomic(Path(path), junit_xml(result))


def write_summary(result: Any, path: str | Path) -> None:
    write_text_atomic(Path(path), markdown_summary(result))


def write_benchmark_json(result: Any, path: str | Path) -> None:
    write_json_atomic(Path(path), benchmark_entries(result))


# output option name -> writer; the CLI walks this table
WRITERS: dict[str, Callable[[Any, str | Path], None]] = {
    "junit": write_junit,
    "summary": write_summary,
    "benchmark_json": write_benchmark_json,
}


def write_outputs(result: Any, **paths: str | Path | None) -> list[str]:
    """Write every output whose path is given (junit=, summary=, benchmark_json=); returns what was written."""
    unknown = set(paths) - set(WRITERS)
    if unknown:
        raise ValueError(f"unknown output(s) {', '.join(sorted(unknown))}; known: {', '.join(WRITERS)}")
    written = []
    for name, path in paths.items():
        if path:
            WRITERS[name](result, path)
            written.append(str(path))
    return written
