"""`edgeprune check`: a CI latency gate against an absolute budget or a baseline, decided statistically.

A check measures the model (and, with `baseline_model`, the baseline model too), refuses to compare
measurements taken under different conditions, and applies the rule documented in `edgeprune.stats`.
The result carries everything the CI outputs (`edgeprune.ci_outputs`) render.

How two models measured now are interleaved:

* onnxruntime targets (A/B mode, `ABSession`): both models run in ONE profiler process, one right after
  the other, pair after pair, in a balanced seeded order (of every two pairs one runs the candidate
  first, one the baseline), until each has the target's iterations and minimum time. The pairs of a run
  are cut into `blocks` consecutive stretches of equal length; stretch i of the candidate and stretch i
  of the baseline cover the same moments, and `stats.compare_to_baseline(..., paired=True)` resamples
  them as paired blocks. Drift and load bursts longer than a pair (a few ms) reach both models alike
  and cancel in the ratio. While the verdict is inconclusive, another A/B run is measured and cut into
  `blocks` more blocks (the two models swap roles as the profiler's first and second session from run
  to run), up to `max_blocks`. Per-layer times come from a separate, short per-node run of each model.
* other runtimes (TensorRT; `InterleavedSession`): each block is a fresh profiler process with a share
  of the iterations and time, the models' blocks alternating A B, B A, ...
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import stats
from .errors import EdgepruneError
from .io import write_json_atomic
from .models import LoadedModel
from .targets import TargetSpec

SCHEMA_VERSION = 1
RESULT_KIND = "edgeprune.check"
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
RUN_DIR_MODEL = "model.onnx"
DEFAULT_BLOCKS = 6
BUSY_SHARE = 0.25  # above this share of slow iterations (> 2x the fastest tenth) a note warns of a busy machine

# Conditions two measurements must share to be compared (dotted = nested). Hostname is deliberately not
# here: CI runners of one kind differ in name only.
CONDITION_FIELDS: tuple[str, ...] = (
    "cpu_model", "machine", "physical_cores", "runtime", "runtime_version", "threads", "precision",
    "execution_provider", "graph_optimization_level", "input_shapes", "gpus", "jetson.l4t",
    "jetson.power_mode",
)


@dataclass
class CheckConfig:
    """Options of `edgeprune check` (CLI options already merged over `[tool.edgeprune]`)."""

    model: str | LoadedModel
    target: str | TargetSpec = "cpu"
    latency_ms: float | None = None
    baseline: str | None = None  # a stored profile report (JSON)
    baseline_model: str | LoadedModel | None = None  # measure this now, interleaved with `model`
    max_regression: float = 0.05
    metric: str | None = None  # None: the target's metric
    alpha: float = stats.DEFAULT_ALPHA
    blocks: int = DEFAULT_BLOCKS
    max_blocks: int | None = None  # None: 3 x blocks; rounds are added only while the verdict is inconclusive
    update_baseline: bool = False
    weights: str | None = None
    baseline_weights: str | None = None
    shape: tuple[int, ...] | None = None
    allow_pickle: bool = False
    host: str | None = None
    accept_new_host_key: bool = False
    warmup: int | None = None
    iterations: int | None = None
    min_time_s: float | None = None
    per_node: bool = True
    ignore_conditions: tuple[str, ...] = ()
    seed: int = 0


@dataclass
class Measurement:
    """One model measured for a check: its profile report and its samples cut into measurement blocks."""

    label: str
    report: Any  # edgeprune.profiling.ProfileReport
    blocks: list[list[float]]

    def report_dict(self) -> dict[str, Any]:
        d = self.report.to_dict()
        d["samples_blocks"] = [len(b) for b in self.blocks]
        return d


@dataclass
class CheckResult:
    """What a check found; `to_dict()` is its versioned JSON form (`--format json`)."""

    model: str
    target: str
    metric: str
    candidate: dict[str, Any]  # the candidate's profile report (dict form, samples included)
    candidate_ci_ms: tuple[float, float]
    baseline: dict[str, Any] | None = None
    baseline_source: str | None = None  # "file:<path>" or "model:<spec>"
    budget: stats.BudgetDecision | None = None
    regression: stats.RegressionDecision | None = None
    layer_changes: list[dict[str, Any]] = field(default_factory=list)
    condition_differences: list[dict[str, Any]] = field(default_factory=list)  # ignored on request
    noise: dict[str, float] = field(default_factory=dict)  # share of iterations > 2x the fastest tenth
    baseline_written: str | None = None
    notes: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def passed(self) -> bool:
        return not ((self.budget and self.budget.failed) or (self.regression and self.regression.failed))

    @property
    def status(self) -> str:
        return "PASSED" if self.passed else "FAILED"

    @property
    def candidate_latency(self) -> dict[str, float]:
        return self.candidate["latency_ms"]

    def summary_line(self) -> str:
        """The final one-line verdict with its numbers."""
        lat = self.candidate_latency
        value = stats.metric_value(self.candidate["samples_ms"], self.metric)
        parts = [f"{self.status} {self.model} on {self.target}: {self.metric} {value:.4g} ms (n={lat['n']})"]
        conf = f"{(1 - self._alpha()) * 100:g}%"
        if self.regression is not None:
            r = self.regression
            parts.append(
                f"vs baseline {r.baseline_ms:.4g} ms: {_pct(r.change)} ({conf} lower bound {_pct(r.ratio_ci[0] - 1)}, "
                f"limit {_pct(r.limit_ratio - 1)}) {r.verdict}"
            )
        if self.budget is not None:
            b = self.budget
            parts.append(f"budget {b.budget_ms:g} ms ({conf} lower bound {b.ci_ms[0]:.4g} ms) {b.verdict}")
        if self.baseline_written:
            parts.append(f"baseline written to {self.baseline_written}")
        return "; ".join(parts)

    def _alpha(self) -> float:
        for decision in (self.regression, self.budget):
            if decision is not None:
                return decision.alpha
        return stats.DEFAULT_ALPHA

    def to_dict(self) -> dict[str, Any]:
        lat = self.candidate_latency
        base = self.baseline
        return {
            "schema_version": SCHEMA_VERSION,
            "kind": RESULT_KIND,
            "status": self.status,
            "passed": self.passed,
            "summary": self.summary_line(),
            "model": self.model,
            "target": self.target,
            "metric": self.metric,
            "candidate": {
                "model": self.candidate["model"],
                "latency_ms": lat,
                "metric_ci_ms": list(self.candidate_ci_ms),
                "samples_blocks": self.candidate.get("samples_blocks"),
                "settings": self.candidate["target"].get("settings"),
            },
            "baseline": None if base is None else {
                "source": self.baseline_source,
                "model": base.get("model"),
                "latency_ms": base.get("latency_ms"),
                "samples_blocks": base.get("samples_blocks"),
            },
            "conditions": self.candidate["target"].get("conditions"),
            "condition_differences_ignored": self.condition_differences,
            "noise": self.noise,
            "budget": self.budget.to_dict() if self.budget else None,
            "regression": self.regression.to_dict() if self.regression else None,
            "layer_changes": self.layer_changes,
            "baseline_written": self.baseline_written,
            "notes": self.notes,
            "wall_s": round(self.wall_s, 3),
        }


def _pct(fraction: float) -> str:
    return f"{fraction * 100:+.1f}%"


# ---------------------------------------------------------------------------------------------------
# conditions


def _lookup(conditions: dict[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = conditions
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _normalise(name: str, value: Any) -> Any:
    # Input names differ between exporters ("input" vs "x"); the shapes are what matter.
    if name == "input_shapes" and isinstance(value, dict):
        return [list(v) for v in value.values()]
    return value


def condition_differences(baseline: dict[str, Any], candidate: dict[str, Any],
                          fields: tuple[str, ...] = CONDITION_FIELDS) -> list[dict[str, Any]]:
    """Fields of the measurement conditions that differ; a field missing on either side is not compared."""
    diffs = []
    for name in fields:
        has_b, b = _lookup(baseline, name)
        has_c, c = _lookup(candidate, name)
        if has_b and has_c and _normalise(name, b) != _normalise(name, c):
            diffs.append({"field": name, "baseline": b, "candidate": c})
    return diffs


def ensure_comparable(baseline: dict[str, Any], candidate: dict[str, Any], *, source: str,
                      ignore: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Raise naming every differing condition field; returns the differences that were ignored on request."""
    unknown = sorted(set(ignore) - set(CONDITION_FIELDS))
    if unknown:
        raise EdgepruneError(f"--ignore-condition {', '.join(unknown)}: not a condition field; "
                             f"fields: {', '.join(CONDITION_FIELDS)}")
    diffs = condition_differences(baseline, candidate)
    blocking = [d for d in diffs if d["field"] not in ignore]
    if blocking:
        detail = "; ".join(f"{d['field']}: {d['baseline']!r} (baseline) vs {d['candidate']!r} (now)"
                           for d in blocking)
        raise EdgepruneError(
            f"refusing to compare with {source}: measured under other conditions ({detail}). Re-create the "
            "baseline under these conditions (--update-baseline), or pass --ignore-condition FIELD if the "
            "difference is intended"
        )
    return [d for d in diffs if d["field"] in ignore]


# ---------------------------------------------------------------------------------------------------
# baselines


def load_baseline(path: str | Path) -> dict[str, Any]:
    """A stored profile report with raw samples, validated."""
    import json

    p = Path(path)
    fix = "create it with `edgeprune check MODEL --baseline FILE --update-baseline` or `edgeprune profile -o FILE`"
    if not p.is_file():
        raise EdgepruneError(f"baseline {p} does not exist; {fix}")
    try:
        data = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EdgepruneError(f"baseline {p} is not readable JSON ({exc}); {fix}") from exc
    if not isinstance(data, dict) or data.get("kind") != "edgeprune.profile":
        raise EdgepruneError(f"baseline {p} is not an edgeprune profile report (kind 'edgeprune.profile'); {fix}")
    from .profiling import SCHEMA_VERSION as PROFILE_SCHEMA

    if data.get("schema_version") != PROFILE_SCHEMA:
        raise EdgepruneError(f"baseline {p} has schema_version {data.get('schema_version')!r}, this edgeprune "
                             f"reads {PROFILE_SCHEMA}; {fix}")
    samples = data.get("samples_ms")
    if not isinstance(samples, list) or not samples or not all(isinstance(s, (int, float)) for s in samples):
        raise EdgepruneError(f"baseline {p} has no raw samples_ms to compare against; {fix}")
    if not isinstance(data.get("target"), dict):
        raise EdgepruneError(f"baseline {p} records no target conditions; {fix}")
    return data


def write_baseline(path: str | Path, measurement: Measurement) -> str:
    write_json_atomic(Path(path), measurement.report_dict())
    return str(path)


# ---------------------------------------------------------------------------------------------------
# per-layer changes


def _layer_totals(layers: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    totals: dict[tuple[str, str], dict[str, Any]] = {}
    for layer in layers or []:
        key = ("module", layer["module"]) if layer.get("module") else ("name", layer.get("name", "?"))
        row = totals.setdefault(key, {"latency_ms": 0.0, "ops": []})
        row["latency_ms"] += float(layer.get("latency_ms") or 0.0)
        if layer.get("op") and layer["op"] not in row["ops"]:
            row["ops"].append(layer["op"])
    return totals


def layer_changes(baseline_layers: list[dict[str, Any]], candidate_layers: list[dict[str, Any]],
                  top: int | None = None) -> list[dict[str, Any]]:
    """Per-layer latency changes, largest absolute change first; layers join by module, else by node name."""
    base, cand = _layer_totals(baseline_layers), _layer_totals(candidate_layers)
    rows = []
    for key in list(base) + [k for k in cand if k not in base]:
        b, c = base.get(key), cand.get(key)
        b_ms = b["latency_ms"] if b else None
        c_ms = c["latency_ms"] if c else None
        delta = (c_ms or 0.0) - (b_ms or 0.0)
        rows.append({
            "layer": key[1], "joined_by": key[0], "op": "+".join((c or b)["ops"]),
            "baseline_ms": b_ms, "candidate_ms": c_ms, "delta_ms": delta,
            "ratio": (c_ms / b_ms) if b_ms and c_ms is not None else None,
        })
    rows.sort(key=lambda r: -abs(r["delta_ms"]))
    return rows[:top] if top is not None else rows


# ---------------------------------------------------------------------------------------------------
# measuring


@dataclass
class _Subject:
    label: str
    path: Path
    info: dict[str, Any]
    module_names: set[str] | None
    extra_args: list[str]
    engine: bool


def _resolve_model_path(spec: str) -> str:
    """A run directory of `edgeprune prune` stands for the model.onnx inside it."""
    p = Path(spec)
    if p.is_dir():
        onnx = p / RUN_DIR_MODEL
        if not onnx.is_file():
            raise EdgepruneError(f"{spec} is a directory without {RUN_DIR_MODEL}; give a run directory of "
                                 "`edgeprune prune`, an .onnx file or a model spec")
        return str(onnx)
    return spec


def _prepare(model: str | LoadedModel, spec: TargetSpec, cfg: CheckConfig, weights: str | None,
             directory: Path) -> _Subject:
    from .models import load_model, sha256_file
    from .profiling import export_for_target

    if isinstance(model, str) and Path(model).suffix in ENGINE_SUFFIXES:
        path = Path(model)
        if spec.runtime != "tensorrt":
            raise EdgepruneError(f"{model} is a TensorRT engine: check it on a tensorrt target "
                                 f"(e.g. --target desktop-cuda or jetson), not {spec.name} ({spec.runtime})")
        if not path.is_file():
            raise EdgepruneError(f"engine {model} does not exist")
        return _Subject(model, path, {"spec": model, "engine_sha256": sha256_file(path)}, None, [], True)
    shape = cfg.shape or spec.input_shape
    if isinstance(model, LoadedModel):
        loaded = model
    else:
        loaded = load_model(_resolve_model_path(model), weights=weights, shape=shape,
                            allow_pickle=cfg.allow_pickle)
    module_names = ({n for n, _ in loaded.module.named_modules() if n}  # type: ignore[attr-defined]
                    if loaded.module is not None else None)
    directory.mkdir(parents=True, exist_ok=True)
    onnx_path, export_info = export_for_target(loaded, directory)
    extra: list[str] = []
    if loaded.onnx_path is not None and loaded.input_shape:
        import onnx

        first_input = onnx.load(str(onnx_path), load_external_data=False).graph.input[0].name
        extra = ["--shape", f"{first_input}=" + "x".join(map(str, loaded.input_shape))]
    label = model if isinstance(model, str) else loaded.spec
    return _Subject(label, onnx_path, {**loaded.describe(), **export_info}, module_names, extra, False)


def _block_target(spec: TargetSpec, blocks: int) -> TargetSpec:
    """Each block is a fresh profiler process: full warm-up, a share of the iterations and of the time."""
    m = spec.measure
    return spec.with_measure(iterations=max(5, math.ceil(m.iterations / blocks)), min_time_s=m.min_time_s / blocks)


class InterleavedSession:
    """Measures subjects in alternating rounds (A B, B A, ...), so slow drift of the machine reaches all of
    them alike; more rounds can be added when a verdict is inconclusive. Per-layer times come from the
    first round only."""

    def __init__(self, subjects: list[_Subject], spec: TargetSpec, *, blocks: int, per_node: bool,
                 progress: Callable[[str], None] | None = None):
        self.subjects = subjects
        self.spec = spec
        self.block_spec = _block_target(spec, blocks)
        self.runner_spec = self.block_spec  # the settings the runner is opened with
        self.per_node = per_node
        self.progress = progress
        self.raws: list[list[dict]] = [[] for _ in subjects]

    @property
    def rounds(self) -> int:
        return len(self.raws[0])

    def measure(self, runner: Any, rounds: int) -> None:
        for _ in range(rounds):
            i = self.rounds
            order = list(range(len(self.subjects)))
            for j in order if i % 2 == 0 else reversed(order):
                s = self.subjects[j]
                if self.progress:
                    self.progress(f"block {i + 1}: measuring {s.label}")
                raw = runner.measure(s.path, per_node=self.per_node and i == 0 and not s.engine,
                                     extra_args=s.extra_args)
                if not raw.get("samples_ms"):
                    raise EdgepruneError(f"the profiler returned no latency samples for {s.label}")
                self.raws[j].append(raw)

    def measurements(self) -> list[Measurement]:
        """One report per subject, its samples pooled over all rounds (the ONNX files must still exist)."""
        from .profilers.common import latency_stats
        from .profiling import build_report

        out = []
        for s, runs in zip(self.subjects, self.raws, strict=True):
            report = build_report(runs[0], self.spec, s.info, s.path, s.module_names)
            sample_blocks = [list(map(float, r["samples_ms"])) for r in runs]
            flat = [x for b in sample_blocks for x in b]
            report.samples_ms = flat
            report.latency_ms = latency_stats(flat)
            report.target["settings"] = {**report.target.get("settings", {}), "blocks": len(runs),
                                         "iterations_per_block": self.block_spec.measure.iterations,
                                         "min_time_s_per_block": self.block_spec.measure.min_time_s}
            out.append(Measurement(s.label, report, sample_blocks))
        return out


def _cut(samples: list[float], blocks: int) -> list[list[float]]:
    """Consecutive stretches of (nearly) equal length; the same cut for both models keeps pairs together."""
    import numpy as np

    return [list(map(float, part)) for part in np.array_split(np.asarray(samples), min(blocks, len(samples)))]


class ABSession:
    """Measures two subjects in one profiler process per run, alternating per iteration (the profiler's
    A/B mode); each run is cut into `blocks` paired blocks. Same interface as InterleavedSession."""

    def __init__(self, subjects: list[_Subject], spec: TargetSpec, *, blocks: int, per_node: bool,
                 progress: Callable[[str], None] | None = None):
        if len(subjects) != 2 or any(s.engine for s in subjects):
            raise ValueError("the A/B mode measures exactly two ONNX models")
        self.subjects = subjects
        self.spec = spec
        self.runner_spec = spec  # one A/B run takes the target's full iterations and minimum time
        self.blocks = blocks
        self.per_node = per_node
        self.progress = progress
        self.runs: list[dict] = []  # raw A/B profiles; run r has subject r % 2 as its primary
        self.sample_blocks: list[list[list[float]]] = [[], []]
        self.layer_raws: list[dict | None] = [None, None]

    @property
    def rounds(self) -> int:
        return len(self.sample_blocks[0])

    def _layer_args(self) -> list[str]:
        # Only the per-node medians of this run are used: a few timed runs, as many node runs as a block had.
        m = self.spec.measure
        nodes = min(100, max(5, math.ceil(m.iterations / self.blocks)))
        return ["--iterations", "5", "--min-time", "0", "--node-iterations", str(nodes)]

    def measure(self, runner: Any, rounds: int) -> None:
        """One A/B run, cut into `rounds` blocks per subject (and, the first time, each subject's layers)."""
        from .runners import ab_args

        if self.per_node and not self.runs:
            for j, s in enumerate(self.subjects):
                if self.progress:
                    self.progress(f"per-layer times of {s.label}")
                self.layer_raws[j] = runner.measure(s.path, per_node=True, extra_args=s.extra_args + self._layer_args())
        first, second = self.subjects if len(self.runs) % 2 == 0 else self.subjects[::-1]
        if self.progress:
            self.progress(f"blocks {self.rounds + 1}-{self.rounds + rounds}: {first.label} and {second.label} "
                          "alternating in one process")
        raw = runner.measure(first.path, per_node=False, ab_model=second.path,
                             extra_args=first.extra_args + ab_args(self.spec, second.extra_args))
        samples = raw.get("samples_ms")
        other = (raw.get("ab") or {}).get("other") or {}
        if not samples or len(other.get("samples_ms") or []) != len(samples):
            raise EdgepruneError(f"the profiler's A/B run of {first.label} and {second.label} returned no "
                                 "paired latency samples")
        self.runs.append(raw)
        by_subject = (samples, other["samples_ms"]) if first is self.subjects[0] else (other["samples_ms"], samples)
        for j, subject_samples in enumerate(by_subject):
            self.sample_blocks[j] += _cut(list(subject_samples), rounds)

    def _raw_for(self, j: int) -> dict:
        """The first run's profile as subject j's own raw profile (its model, inputs and nodes)."""
        raw = self.runs[0]
        if j != 0:
            other = raw["ab"]["other"]
            conditions = {**raw.get("conditions", {}), "input_shapes": other.get("input_shapes"),
                          "session_providers": other.get("session_providers")}
            raw = {**raw, "model": other.get("model"), "conditions": conditions, "latency_ms": other["latency_ms"],
                   "memory": {"peak_rss_mb": None, "params_mb": None, "model_file_mb": other.get("model_file_mb")}}
        layers = self.layer_raws[j]
        nodes = (layers.get("nodes") or []) if layers else []
        return {**raw, "nodes": nodes}

    def measurements(self) -> list[Measurement]:
        """One report per subject, its samples pooled over all runs (the ONNX files must still exist)."""
        from .profilers.common import latency_stats
        from .profiling import build_report

        out = []
        for j, s in enumerate(self.subjects):
            sample_blocks = self.sample_blocks[j]
            flat = [x for b in sample_blocks for x in b]
            raw = {**self._raw_for(j), "latency_ms": latency_stats(flat), "samples_ms": flat}
            report = build_report(raw, self.spec, s.info, s.path, s.module_names)
            # run k has subject k % 2 as the profiler's primary model
            ran_first = sum(f == (k % 2 == j) for k, r in enumerate(self.runs) for f in r["ab"]["primary_first"])
            report.target["settings"] = {**report.target.get("settings", {}), "mode": "ab", "blocks": len(sample_blocks),
                                         "ab_runs": len(self.runs), "pairs": len(flat),
                                         "ran_first_share": ran_first / len(flat)}
            out.append(Measurement(s.label, report, sample_blocks))
        return out


def _session_for(subjects: list[_Subject], spec: TargetSpec) -> type[InterleavedSession] | type[ABSession]:
    """A/B in one process where the target's profiler has that mode; alternating processes otherwise."""
    from .runners import AB_RUNTIMES

    if len(subjects) == 2 and spec.runtime in AB_RUNTIMES and not any(s.engine for s in subjects):
        return ABSession
    return InterleavedSession


# ---------------------------------------------------------------------------------------------------
# the check


def _validate(cfg: CheckConfig) -> None:
    if cfg.baseline and cfg.baseline_model is not None:
        raise EdgepruneError("give either --baseline FILE (stored) or --baseline-model MODEL (measured now), not both")
    if cfg.update_baseline and not cfg.baseline:
        raise EdgepruneError("--update-baseline needs --baseline FILE: the file to (re)write")
    if cfg.latency_ms is None and not cfg.baseline and cfg.baseline_model is None:
        raise EdgepruneError("nothing to check against: give --latency-ms N, --baseline FILE or --baseline-model "
                             "MODEL (or set latency_ms / baseline in [tool.edgeprune] of pyproject.toml)")
    if cfg.latency_ms is not None and not cfg.latency_ms > 0:
        raise EdgepruneError(f"--latency-ms must be > 0, got {cfg.latency_ms}")
    if not 0 <= cfg.max_regression < 10:
        raise EdgepruneError(f"--max-regression must be between 0% and 1000%, got {cfg.max_regression:.0%}")
    if not 0 < cfg.alpha < 0.5:
        raise EdgepruneError(f"--alpha must be between 0 and 0.5, got {cfg.alpha}")
    if not 1 <= cfg.blocks <= 100:
        raise EdgepruneError(f"--blocks must be between 1 and 100, got {cfg.blocks}")
    if cfg.max_blocks is not None and not cfg.blocks <= cfg.max_blocks <= 300:
        raise EdgepruneError(f"--max-blocks must be between --blocks ({cfg.blocks}) and 300, got {cfg.max_blocks}")
    if cfg.metric is not None and cfg.metric not in stats.METRICS:
        raise EdgepruneError(f"--metric {cfg.metric!r}: use one of {', '.join(stats.METRICS)}")


def _inconclusive(result: CheckResult) -> bool:
    """The estimate is past the limit but the evidence does not yet show it: worth measuring more."""
    r, b = result.regression, result.budget
    return bool((r and r.verdict == "not-significant") or (b and not b.failed and b.value_ms > b.budget_ms))


def _decide(config: CheckConfig, spec: TargetSpec, metric: str, measured: list[Measurement],
            stored: dict[str, Any] | None) -> CheckResult:
    cand = measured[0]
    cand_dict = cand.report_dict()
    boot = stats.bootstrap_metric(cand.blocks, metric, seed=config.seed, alpha=config.alpha)
    result = CheckResult(model=cand.label, target=spec.name, metric=metric, candidate=cand_dict,
                         candidate_ci_ms=_quantiles(boot, config.alpha))
    result.noise = {"candidate_slow_share": stats.slow_share(cand_dict["samples_ms"])}
    baseline_blocks, paired = None, False
    if stored is not None:
        result.baseline, result.baseline_source = stored, f"file:{config.baseline}"
        baseline_blocks = stats.split_blocks(stored["samples_ms"], stored.get("samples_blocks"))
        result.notes.append("stored baseline: machine drift since it was measured cannot be told from a "
                            "regression; --baseline-model measures both now, interleaved")
    elif len(measured) > 1:
        base = measured[1]
        result.baseline, result.baseline_source = base.report_dict(), f"model:{base.label}"
        baseline_blocks, paired = base.blocks, True
    if result.baseline is not None:
        result.noise["baseline_slow_share"] = stats.slow_share(result.baseline["samples_ms"])
        result.condition_differences = ensure_comparable(
            result.baseline["target"].get("conditions") or {}, cand_dict["target"].get("conditions") or {},
            source=f"baseline {result.baseline_source.split(':', 1)[1]}", ignore=config.ignore_conditions)
        result.regression = stats.compare_to_baseline(
            baseline_blocks, cand.blocks, metric=metric, max_regression=config.max_regression,
            alpha=config.alpha, paired=paired, seed=config.seed)
        result.notes += result.regression.notes
        result.layer_changes = layer_changes(result.baseline.get("layers") or [], cand_dict.get("layers") or [])
    if config.latency_ms is not None:
        result.budget = stats.compare_to_budget(cand.blocks, budget_ms=config.latency_ms, metric=metric,
                                                alpha=config.alpha, seed=config.seed)
        result.notes += result.budget.notes
    busy = max(result.noise.values())
    if stored is not None and result.noise["candidate_slow_share"] - result.noise["baseline_slow_share"] > 0.1:
        result.notes.append(
            f"the machine is busier now than when the baseline was stored ({result.noise['candidate_slow_share']:.0%} "
            f"vs {result.noise['baseline_slow_share']:.0%} of iterations over twice the fastest tenth): part of "
            "any change may be the machine's; re-run, or compare with --baseline-model")
    if busy > BUSY_SHARE:
        result.notes.append(f"busy machine: {busy:.0%} of iterations took over twice the fastest tenth's time; "
                            "expect wide intervals (raise --min-time, or use a quieter runner)")
    return result


def check(config: CheckConfig, progress: Callable[[str], None] | None = None) -> CheckResult:
    """Measure `config.model` and decide PASSED/FAILED; the caller reports a failure (the CLI exits 3).

    When the first `blocks` rounds leave the verdict inconclusive (the estimate past the limit, its
    confidence bound not), further rounds of `blocks` are measured, up to `max_blocks` in all.
    """
    from .profiling import resolve_target
    from .runners import open_runner

    started = time.perf_counter()
    _validate(config)
    spec = resolve_target(config.target, config.host, config.accept_new_host_key, warmup=config.warmup,
                          iterations=config.iterations, min_time_s=config.min_time_s)
    metric = config.metric or spec.metric
    max_blocks = config.max_blocks if config.max_blocks is not None else 3 * config.blocks
    stored = None
    if config.baseline and not config.update_baseline:
        stored = load_baseline(config.baseline)  # before measuring: a bad file fails fast
    with tempfile.TemporaryDirectory(prefix="edgeprune-check-") as tmp:
        subjects = [_prepare(config.model, spec, config, config.weights, Path(tmp) / "candidate")]
        if config.baseline_model is not None:
            subjects.append(_prepare(config.baseline_model, spec, config, config.baseline_weights,
                                     Path(tmp) / "baseline"))
        session = _session_for(subjects, spec)(subjects, spec, blocks=config.blocks, per_node=config.per_node,
                                               progress=progress)
        with open_runner(session.runner_spec) as runner:
            session.measure(runner, config.blocks)
            result = _decide(config, spec, metric, session.measurements(), stored)
            while _inconclusive(result) and session.rounds + config.blocks <= max_blocks:
                if progress:
                    progress(f"inconclusive after {session.rounds} blocks: measuring {config.blocks} more")
                session.measure(runner, config.blocks)
                result = _decide(config, spec, metric, session.measurements(), stored)
        if session.rounds > config.blocks:
            result.notes.append(f"the first {config.blocks} blocks were inconclusive: {session.rounds} measured")
        measured = session.measurements()
    if config.update_baseline:
        result.baseline_written = write_baseline(config.baseline, measured[0])
    result.wall_s = time.perf_counter() - started
    return result


def _quantiles(boot: Any, alpha: float) -> tuple[float, float]:
    import numpy as np

    lo, hi = np.quantile(boot, [alpha, 1.0 - alpha])
    return float(lo), float(hi)
