"""Latency-sensitive pruning (issue 5): deadlines met, and the loop's overhead.

Benchmark 1 — deadline met. `edgeprune prune MODEL --target cpu --latency-ms D` for zoo:cifar_resnet56 at
1x3x32x32 and 32x3x32x32, torchvision:resnet18 and torchvision:mobilenet_v2 at 1x3x224x224; D = 70 %, 50 %
and 35 % of the model's dense p50. By default (EDGEPRUNE_BENCH_DEADLINE=share) each run is given the deadline
as a share, `--latency-ms 70%`, resolves it from its own dense readings, and is judged as a share: the
exported artifact's p50 over the dense model's, timed in turn at the end (report.json `deadline_share`), and
slack = (share - that ratio) / share. With EDGEPRUNE_BENCH_DEADLINE=ms, D is fixed in ms from the dense p50
measured once per model with `edgeprune.profiling.profile` in the same bench run (sessions up to 18), and the
artifact's own p50 is judged against it: on this machine the dense model's own reading moves by up to a third
within minutes, which such a row judges as much as the model. These rows use the LATENCY-ONLY mode (no
--data): importance comes from random calibration inputs and nothing is fine-tuned, so accuracy is not
measured — it keeps the rows within a CPU budget.
ResNet-56 gets the shared pretrained weights where present; the torchvision models are randomly initialised
(latency does not depend on the values). Per row: whether the deadline was met according to the run's
report.json (`deadline_met`: the exported artifact measured afresh, its p50's 95 % upper bound against D),
final p50 and upper bound, slack = (D - p50) / D, rounds, wall time of the whole CLI call. A run that
refuses D as below the floor (exit 3 before pruning) is recorded as "unreachable" with the dense and floor
figures from its log. Goal: met wherever reachable, slack <= 10 %.

Benchmark 4 — overhead. One run of zoo:cifar_resnet56 at batch 32 with real data (CIFAR-10 train.npz under
$EDGEPRUNE_DATA, val.npz for selection), a small budget (BUDGET_FULL) and D = 70 % of dense. From each round's
`seconds` record in report.json: overhead = total - finetune (selection incl. importance and the cost-model
plan, measurement incl. accuracy, checkpointing) and its ratio to the fine-tuning time. The one-off phases are
timed from the run's stderr lines as they arrive: dense + importance + floor measurement, cost-model build,
final export and check.

Every model case gets a fresh, empty EDGEPRUNE_CACHE_DIR, so the first row of each model includes the
cost-model build (reported); later rows of that model reuse it. The runs are CLI subprocesses.

Subset: EDGEPRUNE_BENCH_MODELS (or `python -m bench deadline --models ...`), comma-separated case names
(cifar_resnet56_b1, cifar_resnet56_b32, resnet18, mobilenet_v2, overhead), a case@fraction for one row
(e.g. resnet18@0.5). Rows not rerun are kept from the previous bench/results/deadline.json (marked
`carried`). The results file is rewritten after every row, so an interrupted run keeps what finished.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .table import print_table

RESULTS_FILE = Path(__file__).parent / "results" / "deadline.json"
FRACTIONS = (0.70, 0.50, 0.35)
OVERHEAD_FRACTION = 0.70


@dataclass(frozen=True)
class Case:
    model: str
    shape: tuple[int, ...]
    pretrained: str | None = None  # file name under $EDGEPRUNE_DATA/weights
    timeout_s: int = 1500  # per CLI run


CASES: dict[str, Case] = {
    "cifar_resnet56_b1": Case("zoo:cifar_resnet56", (1, 3, 32, 32), "cifar_resnet56.th", 900),
    "cifar_resnet56_b32": Case("zoo:cifar_resnet56", (32, 3, 32, 32), "cifar_resnet56.th", 1500),
    "resnet18": Case("torchvision:resnet18", (1, 3, 224, 224)),
    "mobilenet_v2": Case("torchvision:mobilenet_v2", (1, 3, 224, 224)),
}
OVERHEAD_CASE = "cifar_resnet56_b32"
OVERHEAD = "overhead"

# benchmark 4's budget: fine-tuning on the first train_limit training images
BUDGET_FULL = {"train_limit": 2000, "finetune_epochs": 1, "final_epochs": 0}
BUDGET_QUICK = {"train_limit": 256, "finetune_epochs": 1, "final_epochs": 0, "max_rounds": 2}
QUICK_MEASURE = ["--iterations", "50", "--min-time", "0.5"]  # smoke runs only

# the run's own log lines (edgeprune/prune.py) that the bench reads
RE_DENSE_FLOOR = re.compile(r"dense (\w+) ([\d.]+) ms; floor \(thinnest model\) ([\d.]+) ms; deadline ([\d.]+) ms")
RE_FLOOR_UPPER = re.compile(r"Choose a deadline above ([\d.]+) ms")
RE_FLOOR_SHARE = re.compile(r"Choose a share above (\d+)%")
DEADLINE_MODES = ("share", "ms")
RE_BUILD = re.compile(r"cost model ready in ([\d.]+) s")
RE_ROUND = re.compile(r"round \d+: T=")


def slack(deadline_ms: float, final_ms: float) -> float:
    """(deadline - final) / deadline: the share of the deadline left unused (negative: missed)."""
    return (deadline_ms - final_ms) / deadline_ms


def share_figures(share: float, report: dict) -> dict[str, Any]:
    """A share deadline's row figures from report.json: the artifact's p50 and upper-bound ratios to the dense
    model timed in turn at the end, and slack = (share - p50 ratio) / share; empty where the run recorded no
    such pair (a runtime without one)."""
    judged = report.get("deadline_share") or {}
    if judged.get("share_p50") is None:
        return {}
    return {"share_p50": judged["share_p50"], "share_upper": judged["share_upper"],
            "dense_now_ms": judged.get("dense_now_ms"), "slack": slack(share, judged["share_p50"])}


def row_status(exit_code: int | None, report: dict | None, log_text: str) -> str:
    """met | missed | unreachable | no_round | timeout | error, from the CLI's exit code, report and log.

    no_round: exit 3 without a report after pruning started (no round was kept, e.g. every round measured
    slower than its start), as distinct from a deadline refused up front as below the floor."""
    if exit_code is None:
        return "timeout"
    if report is not None and report.get("deadline_met") is not None:
        return "met" if report["deadline_met"] else "missed"
    if exit_code == 3 and "below the floor" in log_text:
        return "unreachable"
    if exit_code == 3 and "no pruned model met the constraints" in log_text:
        return "no_round"
    return "error"


def parse_selection(text: str | None) -> dict[str, tuple[float, ...] | None] | None:
    """'resnet18,cifar_resnet56_b1@0.5' -> {name: fractions or None (all)}; None: everything."""
    if not text:
        return None
    chosen: dict[str, list[float] | None] = {}
    for item in (s.strip() for s in text.split(",") if s.strip()):
        name, _, frac = item.partition("@")
        if name not in CASES and name != OVERHEAD:
            raise SystemExit(f"EDGEPRUNE_BENCH_MODELS: unknown case {name!r}; known: {', '.join([*CASES, OVERHEAD])}")
        if not frac:
            chosen[name] = None
        elif chosen.get(name, []) is not None:
            value = float(frac)
            chosen.setdefault(name, []).append(value / 100 if value > 1 else value)  # 50 or 0.5
    return {k: (tuple(v) if v is not None else None) for k, v in chosen.items()}


def row_id(case: str, fraction: float) -> str:
    return f"{case}@{fraction:.2f}"


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def _data_root() -> Path:
    from edgeprune.data import data_root

    return data_root()


def _weights(case: Case) -> Path | None:
    if case.pretrained is None:
        return None
    path = _data_root() / "weights" / case.pretrained
    return path if path.is_file() else None


def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def measure_dense(case: Case, quick: bool) -> dict[str, Any]:
    """The dense model on `cpu` through edgeprune's profiler (end to end, as the deadline is checked)."""
    from edgeprune.latency import metric_value
    from edgeprune.models import load_model
    from edgeprune.profiling import profile

    weights = _weights(case)
    loaded = load_model(case.model, weights=str(weights) if weights else None, shape=case.shape)
    extra = {"iterations": 50, "min_time_s": 0.5} if quick else {}
    t0 = time.perf_counter()
    rep = profile(loaded, "cpu", per_node=False, **extra)
    p50, upper = metric_value(rep.latency_ms, rep.samples_ms, "p50")
    return {"p50_ms": p50, "p50_upper_ms": upper, "stats_ms": rep.latency_ms,
            "threads": rep.target["conditions"].get("threads"), "wall_s": round(time.perf_counter() - t0, 1)}


def _run_cli(args: list[str], env: dict[str, str], timeout_s: int) -> dict[str, Any]:
    """Run `python -m edgeprune ARGS`; stderr lines timestamped (seconds since start) as they arrive."""
    cmd = [sys.executable, "-m", "edgeprune", *args]
    started = time.perf_counter()
    lines: list[tuple[float, str]] = []
    with tempfile.TemporaryFile(mode="w+") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE, text=True, env=env)
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            proc.kill()

        timer = threading.Timer(timeout_s, kill)
        timer.start()
        try:
            for line in proc.stderr:  # type: ignore[union-attr]
                lines.append((round(time.perf_counter() - started, 2), line.rstrip("\n")))
            proc.wait()
        finally:
            timer.cancel()
        out.seek(0)
        stdout = out.read()
    return {"cmd": cmd, "exit_code": None if timed_out.is_set() else proc.returncode, "stderr": lines,
            "stdout": stdout, "wall_s": round(time.perf_counter() - started, 1)}


def _first_match(lines: list[tuple[float, str]], pattern: re.Pattern) -> tuple[float, re.Match] | None:
    for t, line in lines:
        m = pattern.search(line)
        if m:
            return t, m
    return None


def _phases(lines: list[tuple[float, str]]) -> dict[str, float | None]:
    """One-off phases from the stderr timestamps (seconds): dense+importance+floor, cost model, final."""
    def when(prefix: str) -> float | None:
        return next((t for t, line in lines if line.startswith(prefix)), None)

    t_dense = when("measuring the dense model")
    floor = _first_match(lines, RE_DENSE_FLOOR)
    t_build0, build = when("building the latency cost model"), _first_match(lines, RE_BUILD)
    rounds = [t for t, line in lines if line.startswith("round ")]
    t_report = when("report: ")
    return {
        "startup_s": t_dense,  # interpreter, imports, model and data loading
        "dense_and_floor_s": floor[0] - t_dense if floor and t_dense is not None else None,
        "cost_model_build_s": float(build[1].group(1)) if build else None,
        "cost_model_phase_s": build[0] - t_build0 if build and t_build0 is not None else None,
        "final_export_check_s": t_report - rounds[-1] if t_report is not None and rounds else None,
    }


def _prune_args(case: Case, deadline: float | str, out: Path, quick: bool, extra: list[str] | None = None) -> list[str]:
    """The CLI call; `deadline` in ms, or a share as the CLI takes it ('70%')."""
    weights = _weights(case)
    given = deadline if isinstance(deadline, str) else f"{deadline:.4f}"
    args = ["prune", case.model, "--target", "cpu", "--shape", _shape_text(case.shape),
            "--latency-ms", given, "-o", str(out), "--force"]
    if weights:
        args += ["--weights", str(weights)]
    return args + (extra or []) + (QUICK_MEASURE if quick else [])


def _read_report(out: Path) -> dict | None:
    path = out / "report.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _summary(name: str, case: Case, fraction: float | None, deadline_ms: float, dense: dict, res: dict,
             report: dict | None, load_before: tuple[float, ...], deadline_as: str = "ms") -> dict[str, Any]:
    log_text = "\n".join(line for _, line in res["stderr"])
    status = row_status(res["exit_code"], report, log_text)
    floor = _first_match(res["stderr"], RE_DENSE_FLOOR)
    floor_upper = _first_match(res["stderr"], RE_FLOOR_UPPER)
    floor_share = _first_match(res["stderr"], RE_FLOOR_SHARE)
    if deadline_as == "share" and floor:  # the ms the run resolved the share to
        deadline_ms = float(floor[1].group(4))
    row: dict[str, Any] = {
        "row": row_id(name, fraction) if fraction is not None else name, "case": name, "model": case.model,
        "shape": _shape_text(case.shape), "weights": case.pretrained if _weights(case) else None,
        "fraction": fraction, "deadline_as": deadline_as, "deadline_ms": deadline_ms,
        "bench_dense_p50_ms": dense["p50_ms"],
        "floor_share_to_choose": int(floor_share[1].group(1)) / 100 if floor_share else None,
        "status": status, "exit_code": res["exit_code"], "wall_s": res["wall_s"],
        "run_dense_p50_ms": float(floor[1].group(2)) if floor else None,
        "floor_ms": float(floor[1].group(3)) if floor else None,
        "floor_upper_ms": float(floor_upper[1].group(1)) if floor_upper else None,
        "phases": _phases(res["stderr"]),
        "command": shlex.join(["edgeprune", *res["cmd"][3:]]),
        "loadavg_before": list(load_before), "loadavg_after": list(os.getloadavg()),
    }
    if report is not None and report.get("deadline_ms") is not None:
        fl, rounds = report["final_latency_ms"], report["rounds"]
        cm = report.get("cost_model") or {}
        deadline_ms = report["deadline_ms"]
        judged = {"slack": slack(deadline_ms, fl["p50"])}
        if deadline_as == "share" and fraction is not None:
            judged.update(share_figures(fraction, report))
        row.update({
            "deadline_ms": deadline_ms, "deadline_met": report["deadline_met"],
            "final_p50_ms": fl["p50"], "final_p50_upper_ms": report["final_metric_upper_ms"],
            "final_latency_ms": fl, **judged, "slack_ms": slack(deadline_ms, fl["p50"]),
            "report_slack": report["slack"], "slack_within_10pct": 0 <= judged["slack"] <= 0.10,
            "rounds": len(rounds), "best_round": report["best_round"], "stop_reason": report["stop_reason"],
            "run_dense_stats_ms": report.get("dense_latency_ms"), "floor_ms": report.get("floor_ms") or row["floor_ms"],
            "params": report["params"], "flops": report["flops"],
            "round_latency_ms": [r.get("latency_ms") for r in rounds],
            "round_upper_ms": [r.get("latency_upper_ms") for r in rounds],
            "round_predicted_ms": [r.get("predicted_latency_ms") for r in rounds],
            "round_verdicts": [r["verdict"] for r in rounds],
            "round_thresholds": [r["threshold"] for r in rounds],
            "round_log": [line for _, line in res["stderr"] if RE_ROUND.match(line)],
            "prediction_mean_abs_error": cm.get("mean_abs_error"),
            "cost_model_build": {k: (cm.get("build") or {}).get(k) for k in
                                 ("build_s", "tables", "tables_measured", "tables_cached", "layers")},
        })
    if status in ("error", "timeout", "unreachable", "missed", "no_round"):
        row["log_tail"] = [line for _, line in res["stderr"][-15:]]
    return row


def _overhead(report: dict | None) -> dict[str, Any] | None:
    """Per round: overhead = total - finetune, split as the run records it, and its ratio to fine-tuning."""
    if report is None:
        return None
    rows = []
    for r in report["rounds"]:
        s = r["seconds"]
        probe = s.get("probe", 0.0)  # measuring the plan (and any re-plans) before fine-tuning
        other = s["total"] - s["select"] - probe - s["finetune"] - s["measure"]  # checkpoint, manifest, calibration
        overhead = s["total"] - s["finetune"]
        rows.append({"round": r["round"], "select_s": s["select"], "probe_s": probe, "measure_s": s["measure"],
                     "evaluate_s": s.get("measure_evaluate"), "latency_s": s.get("measure_latency"), "other_s": other,
                     "overhead_s": overhead, "finetune_s": s["finetune"],
                     "ratio": overhead / s["finetune"] if s["finetune"] > 0 else None,
                     "latency_ms": r.get("latency_ms"), "accuracy": r.get("accuracy"), "verdict": r["verdict"]})
    total_ft = sum(x["finetune_s"] for x in rows)
    total_oh = sum(x["overhead_s"] for x in rows)
    return {"rounds": rows, "finetune_s": total_ft, "overhead_s": total_oh,
            "ratio": total_oh / total_ft if total_ft > 0 else None,
            "accuracy": report.get("accuracy"), "deadline_met": report.get("deadline_met")}


def _load_previous(quick: bool) -> dict[str, Any]:
    """The last results file's figures, if it was a run of the same kind (smoke runs never mix with full)."""
    try:
        record = json.loads(RESULTS_FILE.read_text())
    except (OSError, ValueError):
        return {}
    return (record.get("figures") or {}) if bool(record.get("quick")) == quick else {}


def _write_partial(figures: dict[str, Any], quick: bool) -> None:
    RESULTS_FILE.parent.mkdir(exist_ok=True)
    tmp = RESULTS_FILE.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"benchmark": "deadline", "quick": quick, "partial": True, "figures": figures},
                              indent=2, default=str) + "\n")
    os.replace(tmp, RESULTS_FILE)


def _fmt(v: Any, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def print_tables(figures: dict[str, Any]) -> None:
    rows = figures.get("rows", [])
    print_table(
        "deadline met on cpu (latency-only mode: random calibration inputs, no fine-tuning); "
        "met = report.json deadline_met (p50 95% upper bound <= deadline; a share deadline: the artifact's upper "
        "bound over the dense model timed beside it <= the share, and slack = (share - p50 ratio) / share)",
        ["row", "deadline as", "dense p50", "deadline ms", "status", "final p50", "upper", "ratio to dense",
         "slack %", "rounds", "floor", "wall s", "cm build s"],
        [[r["row"] + (" *" if r.get("carried") else ""), r.get("deadline_as", "ms"), _fmt(r["bench_dense_p50_ms"]),
          _fmt(r["deadline_ms"]), r["status"], _fmt(r.get("final_p50_ms")), _fmt(r.get("final_p50_upper_ms")),
          _fmt(r.get("share_p50")),
          _fmt(100 * r["slack"], ".1f") if r.get("slack") is not None else "-", r.get("rounds", "-"),
          _fmt(r.get("floor_ms")), _fmt(r["wall_s"], ".0f"), _fmt(r["phases"].get("cost_model_build_s"), ".1f")]
         for r in rows],
    )
    if any(r.get("carried") for r in rows):
        print("* carried over from an earlier bench run (see its loadavg fields)")
    oh = figures.get(OVERHEAD)
    if oh and oh.get("overhead"):
        o = oh["overhead"]
        print_table(
            f"overhead per round: {oh['model']} {oh['shape']}, deadline {oh['deadline_ms']:.3f} ms "
            f"(70% of dense), budget {oh['budget']}",
            ["round", "select s", "probe s", "measure s", "(evaluate s", "latency s)", "other s", "overhead s", "finetune s",
             "overhead/finetune", "p50 ms", "acc", "verdict"],
            [[x["round"], x["select_s"], x.get("probe_s"), x["measure_s"], _fmt(x.get("evaluate_s"), ".1f"), _fmt(x.get("latency_s"), ".1f"),
              x["other_s"], x["overhead_s"], x["finetune_s"],
              _fmt(x["ratio"], ".2f"), _fmt(x["latency_ms"]), _fmt(x["accuracy"], ".2f"), x["verdict"]]
             for x in o["rounds"]],
        )
        p = oh["phases"]
        print(f"all rounds: overhead {o['overhead_s']:.1f} s / fine-tuning {o['finetune_s']:.1f} s = "
              f"{_fmt(o['ratio'], '.2f')}; one-off: dense+importance+floor {_fmt(p['dense_and_floor_s'], '.1f')} s, "
              f"cost-model build {_fmt(p['cost_model_build_s'], '.1f')} s, final export+check "
              f"{_fmt(p['final_export_check_s'], '.1f')} s, startup {_fmt(p['startup_s'], '.1f')} s; "
              f"status {oh['status']}, wall {oh['wall_s']:.0f} s")
    elif oh:
        print(f"overhead run: {oh['status']} (exit {oh['exit_code']}); log tail: {oh.get('log_tail')}")
    print(f"uptime at start: {figures.get('uptime_start')}\nuptime at end:   {figures.get('uptime_end')}")


def run(quick: bool = False) -> dict:
    selection = parse_selection(os.environ.get("EDGEPRUNE_BENCH_MODELS"))
    deadline_as = os.environ.get("EDGEPRUNE_BENCH_DEADLINE", "share")
    if deadline_as not in DEADLINE_MODES:
        raise SystemExit(f"EDGEPRUNE_BENCH_DEADLINE={deadline_as!r}: use one of {', '.join(DEADLINE_MODES)}")
    # cheap rows first: the CIFAR cases, the overhead run, then the 224x224 models
    order = [*(c for c in CASES if c.startswith("cifar")), OVERHEAD, *(c for c in CASES if not c.startswith("cifar"))]
    order = order if not quick else ["cifar_resnet56_b1", OVERHEAD]
    wanted = [c for c in order if selection is None or c in selection]
    fractions_of = {c: (selection or {}).get(c) or (FRACTIONS if not quick else (0.70,)) for c in wanted}
    root = _data_root()
    train, val = root / "cifar10" / "train.npz", root / "cifar10" / "val.npz"

    previous = _load_previous(quick) if selection is not None else {}
    fresh_ids = {row_id(c, f) for c in wanted if c != OVERHEAD for f in fractions_of[c]}
    figures: dict[str, Any] = {
        "uptime_start": _uptime(), "cpu_count": os.cpu_count(), "selection": os.environ.get("EDGEPRUNE_BENCH_MODELS"),
        "mode": "latency-only (no --data) for the deadline rows", "fractions": list(FRACTIONS),
        "deadline_as": deadline_as,
        "dense": dict(previous.get("dense", {})),
        "rows": [{**r, "carried": True} for r in previous.get("rows", []) if r["row"] not in fresh_ids],
    }
    if OVERHEAD not in wanted and previous.get(OVERHEAD):
        figures[OVERHEAD] = {**previous[OVERHEAD], "carried": True}
    started = time.perf_counter()
    dense_cache: dict[str, dict] = {}

    def dense_of(name: str) -> dict:
        if name not in dense_cache:
            print(f"[deadline] measuring dense {name} ...", file=sys.stderr, flush=True)
            dense_cache[name] = measure_dense(CASES[name], quick)
            figures["dense"][name] = dense_cache[name]
        return dense_cache[name]

    with tempfile.TemporaryDirectory(prefix="edgeprune-bench-deadline-") as tmp:
        for name in wanted:
            case_name = OVERHEAD_CASE if name == OVERHEAD else name
            case = CASES[case_name]
            dense = dense_of(case_name)
            env = {**os.environ, "EDGEPRUNE_CACHE_DIR": str(Path(tmp) / f"cache-{name}")}  # fresh per case
            if name == OVERHEAD:
                if not (train.is_file() and val.is_file()):
                    figures[OVERHEAD] = {"status": "skipped", "reason": f"missing {train} or {val}"}
                    continue
                budget = BUDGET_QUICK if quick else BUDGET_FULL
                extra = ["--data", str(train), "--val-data", str(val)]
                for k, v in budget.items():
                    extra += [f"--{k.replace('_', '-')}", str(v)]
                deadline = OVERHEAD_FRACTION * dense["p50_ms"]
                out = Path(tmp) / "run-overhead"
                load_before = os.getloadavg()
                print(f"[deadline] overhead run, deadline {deadline:.3f} ms ...", file=sys.stderr, flush=True)
                res = _run_cli(_prune_args(case, deadline, out, quick, extra), env, case.timeout_s)
                report = _read_report(out)
                row = _summary(OVERHEAD, case, OVERHEAD_FRACTION, deadline, dense, res, report, load_before)
                row.update(row="overhead", budget=budget, overhead=_overhead(report),
                           round_seconds=[r["seconds"] for r in report["rounds"]] if report else None)
                figures[OVERHEAD] = row
                _write_partial(figures, quick)
                continue
            for fraction in fractions_of[name]:
                deadline = fraction * dense["p50_ms"]
                out = Path(tmp) / f"run-{name}-{int(round(fraction * 100))}"
                load_before = os.getloadavg()
                print(f"[deadline] {row_id(name, fraction)}: deadline {deadline:.3f} ms ({deadline_as}) ...",
                      file=sys.stderr, flush=True)
                given = f"{fraction * 100:g}%" if deadline_as == "share" else deadline
                res = _run_cli(_prune_args(case, given, out, quick), env, case.timeout_s)
                row = _summary(name, case, fraction, deadline, dense, res, _read_report(out), load_before,
                               deadline_as)
                figures["rows"] = [r for r in figures["rows"] if r["row"] != row["row"]] + [row]
                print(f"[deadline] {row['row']}: {row['status']} in {row['wall_s']:.0f} s", file=sys.stderr,
                      flush=True)
                _write_partial(figures, quick)
    key = {row_id(c, f): (i, j) for i, c in enumerate(CASES) for j, f in enumerate(FRACTIONS)}
    figures["rows"].sort(key=lambda r: key.get(r["row"], (99, 0)))
    figures["uptime_end"] = _uptime()
    figures["wall_s"] = round(time.perf_counter() - started, 1)
    print_tables(figures)
    return figures


if __name__ == "__main__":
    result = run(quick="--quick" in sys.argv)
    RESULTS_FILE.write_text(json.dumps({"benchmark": "deadline", "quick": "--quick" in sys.argv, "figures": result},
                                       indent=2, default=str) + "\n")
    print(f"[deadline] wrote {RESULTS_FILE}")
