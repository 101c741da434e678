"""Profile an ONNX model with onnxruntime: end-to-end latency and per-node time and memory.

Runs standalone on a device that has only onnxruntime, numpy and psutil:

    python -m profilers.ort_profiler model.onnx --out profile.json --threads 4 --shape x=1x3x224x224

End-to-end latency comes from a session without profiling; per-node times from a second session with
onnxruntime's own profiler, so the profiler's overhead never reaches the end-to-end numbers. Node names
are those of the graph onnxruntime actually runs at the chosen optimisation level (at "all" on x86, for
example, Convs become `<output>_nchwc` nodes): what is deployed is what is measured.

A/B mode (`--ab OTHER.onnx`, `profile_onnx_ab`) times two models in one process, alternating per
iteration, so that both see the same machine state; it measures end to end only (no per-node session):

    python -m profilers.ort_profiler new.onnx --ab old.onnx --out ab.json
"""

from __future__ import annotations

import argparse
import bisect
import json
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .common import (
    PROFILE_KIND,
    SCHEMA_VERSION,
    ProfilerError,
    collect_conditions,
    latency_stats,
    model_file_info,
    paired_timed_loop,
    parse_shape_args,
    peak_rss_mb,
    physical_cores,
    run_cli,
    timed_loop,
)

RUNTIME = "onnxruntime"
# --opt-level name -> onnxruntime.GraphOptimizationLevel member
OPT_LEVELS: dict[str, str] = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}
# onnxruntime type string -> numpy dtype
ORT_DTYPES: dict[str, type] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(int16)": np.int16,
    "tensor(uint16)": np.uint16,
    "tensor(int32)": np.int32,
    "tensor(uint32)": np.uint32,
    "tensor(int64)": np.int64,
    "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_,
}
# onnxruntime profiler memory fields (all bytes) -> our names, and how repeated values combine
_NODE_MEMORY_FIELDS: dict[str, tuple[str, str]] = {
    "activation_size": ("activation_bytes", "last"),
    "parameter_size": ("parameter_bytes", "last"),
    "output_size": ("output_bytes", "last"),
    "mem_in_use_peak": ("peak_in_use_bytes", "max"),
    "mem_arena_held": ("arena_held_bytes", "max"),
}
_KERNEL_SUFFIX = "_kernel_time"
_NODE_WARMUP_MAX = 5  # untimed runs at the start of the profiling session, dropped from the medians
_NODE_ITERATIONS_MAX = 100  # default cap: the profile file grows with every run
_MIB = 1024 * 1024


def _ort():
    try:
        import onnxruntime
    except ImportError as exc:
        raise ProfilerError(f"onnxruntime is not importable here ({exc}); pip install onnxruntime") from None
    return onnxruntime


# Intra-op threads of the process-wide pool every session of this process shares, once set up (A/B mode).
_shared_pool_threads: int | None = None


def share_thread_pool(threads: int) -> None:
    """Make every later session of this process run on one shared intra-op pool of `threads` threads.

    For A/B mode. With a pool per session, the idle model's workers keep spinning while the other model
    runs and compete with it for the cores: on a 2-core machine the same model against itself read
    0.88-1.44 over 12 processes (0.97-1.02 with one pool), for the whole life of a process, whichever ran
    first in each pair. onnxruntime accepts a global pool only before the process's first session and
    refuses per-session pools after it, so only the profiler's own command-line process calls this
    (`main` with `--ab`), first thing.
    """
    global _shared_pool_threads
    _ort().set_global_thread_pool_sizes(threads, 1)
    _shared_pool_threads = threads


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:500] if text else type(exc).__name__


def _session(
    model_path: Path,
    *,
    threads: int,
    provider: str,
    opt_level: str,
    profile_prefix: str | None = None,
):
    ort = _ort()
    so = ort.SessionOptions()
    if _shared_pool_threads is not None:
        if threads != _shared_pool_threads:
            raise ProfilerError(f"this process's sessions share a pool of {_shared_pool_threads} threads "
                                f"(share_thread_pool); {threads} were asked for: use a new process")
        so.use_per_session_threads = False  # the pool's size was set for the process (share_thread_pool)
    else:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPT_LEVELS[opt_level])
    so.log_severity_level = 3  # errors only: failures reach the user as one ProfilerError line
    if profile_prefix is not None:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    try:
        return ort.InferenceSession(str(model_path), sess_options=so, providers=[provider])
    except Exception as exc:  # onnxruntime raises its own pybind exception types
        raise ProfilerError(f"onnxruntime cannot load {model_path}: {_one_line(exc)}") from None


def _resolve_inputs(sess, input_shapes: dict[str, list[int]]) -> list[dict[str, Any]]:
    """Concrete shape and dtype of every model input; dynamic dims must come from `input_shapes`."""
    inputs = sess.get_inputs()
    names = [i.name for i in inputs]
    unknown = sorted(set(input_shapes) - set(names))
    if unknown:
        raise ProfilerError(f"--shape names unknown input(s) {unknown}; the model's inputs are {names}")
    resolved = []
    for inp in inputs:
        declared = [
            d if isinstance(d, int) and d > 0 else (d if isinstance(d, str) else None) for d in inp.shape
        ]
        if inp.type not in ORT_DTYPES:
            raise ProfilerError(f"input {inp.name!r} has type {inp.type}, which the profiler cannot feed")
        if inp.name in input_shapes:
            shape = list(input_shapes[inp.name])
            if len(shape) != len(declared):
                raise ProfilerError(
                    f"--shape {inp.name}={'x'.join(map(str, shape))} has rank {len(shape)} but the model "
                    f"declares {inp.name} as {declared} (rank {len(declared)})"
                )
            for got, want in zip(shape, declared, strict=True):
                if isinstance(want, int) and got != want:
                    raise ProfilerError(
                        f"--shape {inp.name}={'x'.join(map(str, shape))} does not fit the model's fixed "
                        f"shape {declared}"
                    )
        else:
            if any(not isinstance(d, int) for d in declared):
                example = "x".join(str(d) if isinstance(d, int) else "1" for d in declared)
                raise ProfilerError(
                    f"input {inp.name!r} has dynamic dims {declared}; pass a fixed shape, e.g. "
                    f"--shape {inp.name}={example}"
                )
            shape = list(declared)
        resolved.append(
            {"name": inp.name, "shape": shape, "declared_shape": declared, "dtype": inp.type[7:-1]}
        )
    return resolved


def _make_feeds(inputs: list[dict[str, Any]], seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for inp in inputs:
        dtype = np.dtype(ORT_DTYPES[f"tensor({inp['dtype']})"])
        shape = tuple(inp["shape"])
        if dtype.kind == "f":
            arr = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            arr = rng.integers(0, 2, size=shape).astype(bool)
        else:  # small non-negative integers: valid as indices or token ids for most models
            arr = rng.integers(0, 2, size=shape).astype(dtype)
        feeds[inp["name"]] = arr
    return feeds


def _shapes(type_shapes: Any) -> tuple[list[list[int]], list[str]]:
    """onnxruntime's [{"float": [1, 3, 8, 8]}, ...] -> ([[1, 3, 8, 8]], ["float"])."""
    shapes, dtypes = [], []
    for item in type_shapes or []:
        if isinstance(item, dict):
            for dtype, shape in item.items():
                dtypes.append(str(dtype))
                shapes.append([int(d) for d in shape])
    return shapes, dtypes


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def aggregate_node_events(
    events: list[dict[str, Any]], skip_runs: int, total_runs: int
) -> list[dict[str, Any]]:
    """Turn onnxruntime profile events into one record per node, in execution order.

    Each node's time per run is the sum of its kernel events in that run (a node inside a loop runs more
    than once); its latency is the median of those sums over the runs after the first `skip_runs`.
    Runs are delimited by the profiler's "model_run" events; without them, each node's events are split
    evenly into `total_runs` consecutive chunks.
    """
    node_events = [
        e for e in events if e.get("cat") == "Node" and str(e.get("name", "")).endswith(_KERNEL_SUFFIX)
    ]
    runs = sorted(
        (int(e["ts"]), int(e["ts"]) + int(e.get("dur", 0)))
        for e in events
        if e.get("cat") == "Session" and e.get("name") == "model_run"
    )
    per_node: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    if runs:
        starts = [r[0] for r in runs]
        for e in node_events:
            ts = int(e["ts"])
            idx = bisect.bisect_right(starts, ts) - 1
            if idx < 0 or ts > runs[idx][1]:
                continue  # outside every run (should not happen): ignore rather than misattribute
            per_node.setdefault(e["name"][: -len(_KERNEL_SUFFIX)], []).append((idx, e))
        n_runs = len(runs)
    else:
        by_name: dict[str, list[dict[str, Any]]] = {}
        for e in sorted(node_events, key=lambda e: int(e["ts"])):
            by_name.setdefault(e["name"][: -len(_KERNEL_SUFFIX)], []).append(e)
        n_runs = max(1, total_runs)
        for name, evs in by_name.items():
            calls = max(1, len(evs) // n_runs)
            per_node[name] = [(min(i // calls, n_runs - 1), e) for i, e in enumerate(evs)]
    counted = list(range(min(skip_runs, n_runs - 1) if n_runs > 1 else 0, n_runs))
    first_counted = counted[0]

    records = []
    for name, items in per_node.items():
        totals = dict.fromkeys(counted, 0)
        counts = dict.fromkeys(counted, 0)
        kept = [(run, e) for run, e in items if run in totals]
        if not kept:
            continue
        for run, e in kept:
            totals[run] += int(e.get("dur", 0))
            counts[run] += 1
        args = kept[-1][1].get("args", {})
        in_shapes, in_dtypes = _shapes(args.get("input_type_shape"))
        out_shapes, out_dtypes = _shapes(args.get("output_type_shape"))
        memory: dict[str, int] = {}
        for field, (key, how) in _NODE_MEMORY_FIELDS.items():
            values = [v for v in (_as_int(e.get("args", {}).get(field)) for _, e in kept) if v is not None]
            if values:
                memory[key] = max(values) if how == "max" else values[-1]
        first_in_run = [int(e["ts"]) for run, e in kept if run == first_counted]
        records.append(
            {
                "name": name,
                "op": args.get("op_name"),
                "provider": args.get("provider"),
                "latency_ms": float(np.median([totals[r] for r in counted])) / 1000.0,
                "calls": int(round(float(np.median([counts[r] for r in counted])))),
                "input_shapes": in_shapes,
                "output_shapes": out_shapes,
                "input_dtypes": in_dtypes,
                "output_dtypes": out_dtypes,
                "node_index": _as_int(args.get("node_index")),
                "memory": memory,
                "_order": (0, min(first_in_run)) if first_in_run else (1, min(int(e["ts"]) for _, e in kept)),
            }
        )
    records.sort(key=lambda r: r["_order"])
    for r in records:
        del r["_order"]
    return records


def _profile_nodes(
    model_path: Path,
    feeds: dict[str, np.ndarray],
    *,
    threads: int,
    provider: str,
    opt_level: str,
    warmup: int,
    iterations: int,
) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="edgeprune-ort-prof-") as tmp:
        sess = _session(
            model_path,
            threads=threads,
            provider=provider,
            opt_level=opt_level,
            profile_prefix=str(Path(tmp) / "p"),
        )
        for _ in range(warmup + iterations):
            sess.run(None, feeds)
        profile_file = sess.end_profiling()
        with open(profile_file, encoding="utf-8") as fh:
            events = json.load(fh)
        del sess
    return aggregate_node_events(events, skip_runs=warmup, total_runs=warmup + iterations)


def _open_timed(
    model_path: Path,
    *,
    threads: int,
    provider: str,
    opt_level: str,
    input_shapes: dict[str, list[int]],
    seed: int,
) -> tuple[Any, list[dict[str, Any]], dict[str, np.ndarray], list[dict[str, Any]], Callable[[], Any]]:
    """A session without profiling, run once to check it works: (session, inputs, feeds, outputs, run)."""
    sess = _session(model_path, threads=threads, provider=provider, opt_level=opt_level)
    inputs = _resolve_inputs(sess, input_shapes)
    feeds = _make_feeds(inputs, seed)
    output_names = [o.name for o in sess.get_outputs()]
    try:
        first = sess.run(output_names, feeds)
    except Exception as exc:
        shapes = {i["name"]: "x".join(map(str, i["shape"])) for i in inputs}
        raise ProfilerError(
            f"running the model {model_path.name} with input shapes {shapes} failed: {_one_line(exc)}"
        ) from None
    outputs = [
        {
            "name": o.name,
            "shape": list(np.shape(arr)),
            "dtype": o.type[7:-1] if o.type.startswith("tensor(") else o.type,
        }
        for o, arr in zip(sess.get_outputs(), first, strict=True)
    ]
    return sess, inputs, feeds, outputs, lambda: sess.run(output_names, feeds)


def _measure_end_to_end(
    model_path: Path,
    *,
    threads: int,
    provider: str,
    opt_level: str,
    input_shapes: dict[str, list[int]],
    seed: int,
    warmup: int,
    iterations: int,
    min_time_s: float,
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray], list[dict[str, Any]], list[float], list[str]]:
    """Timed runs in a session without profiling (freed on return, before the profiling session)."""
    sess, inputs, feeds, outputs, run = _open_timed(
        model_path, threads=threads, provider=provider, opt_level=opt_level, input_shapes=input_shapes, seed=seed
    )
    samples = timed_loop(run, warmup, iterations, min_time_s)
    return inputs, feeds, outputs, samples, list(sess.get_providers())


def _check_settings(
    execution_provider: str, graph_optimization_level: str, threads: int, warmup: int, iterations: int,
    min_time_s: float,
) -> list[str]:
    """Raise for settings no run could use; return the providers this onnxruntime build has."""
    ort = _ort()
    if graph_optimization_level not in OPT_LEVELS:
        raise ProfilerError(
            f"unknown graph optimisation level {graph_optimization_level!r}; use one of {sorted(OPT_LEVELS)}"
        )
    if threads < 0:
        raise ProfilerError(f"threads must be >= 0 (0 = all physical cores), got {threads}")
    if warmup < 0 or iterations < 1 or min_time_s < 0:
        raise ProfilerError("warmup must be >= 0, iterations >= 1 and min_time_s >= 0")
    available = list(ort.get_available_providers())
    if execution_provider not in available:
        raise ProfilerError(
            f"execution provider {execution_provider!r} is not available in this onnxruntime "
            f"{ort.__version__} build; available: {available}"
        )
    return available


def _model_record(file_info: dict[str, Any], inputs: list[dict[str, Any]], outputs: list[dict[str, Any]]) -> dict:
    return {
        **file_info,
        "inputs": [{k: i[k] for k in ("name", "shape", "dtype", "declared_shape")} for i in inputs],
        "outputs": outputs,
    }


def _settings(
    *, warmup: int, iterations: int, min_time_s: float, threads: int, threads_requested: int,
    execution_provider: str, graph_optimization_level: str, precision: str, seed: int,
) -> dict[str, Any]:
    return {
        "warmup": warmup,
        "iterations": iterations,
        "min_time_s": min_time_s,
        "node_iterations": None,
        "node_warmup": None,
        "threads": threads,
        "threads_requested": threads_requested,
        "inter_op_threads": 1,
        "execution_mode": "sequential",
        "execution_provider": execution_provider,
        "graph_optimization_level": graph_optimization_level,
        "precision": precision,
        "seed": seed,
        "timing": "perf_counter_ns around InferenceSession.run, profiling off",
    }


def _conditions(
    threads: int, precision: str, execution_provider: str, providers_used: list[str], available: list[str],
    graph_optimization_level: str, inputs: list[dict[str, Any]],
) -> dict[str, Any]:
    return collect_conditions(
        RUNTIME,
        _ort().__version__,
        threads,
        precision,
        {
            "execution_provider": execution_provider,
            "session_providers": providers_used,
            "available_providers": available,
            "graph_optimization_level": graph_optimization_level,
            "input_shapes": {i["name"]: i["shape"] for i in inputs},
        },
    )


def profile_onnx(
    model_path: str | Path,
    *,
    threads: int = 0,
    execution_provider: str = "CPUExecutionProvider",
    graph_optimization_level: str = "all",
    precision: str = "fp32",
    warmup: int = 20,
    iterations: int = 200,
    min_time_s: float = 2.0,
    node_iterations: int | None = None,
    per_node: bool = True,
    input_shapes: dict[str, list[int]] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Measure `model_path` with onnxruntime and return a raw profile (schema_version 1).

    threads=0 means all physical cores; the resolved number is recorded. Raises ProfilerError for user
    errors (unreadable model, unknown execution provider, missing or misfitting input shape).
    """
    model_path = Path(model_path)
    available = _check_settings(execution_provider, graph_optimization_level, threads, warmup, iterations,
                                min_time_s)
    file_info = model_file_info(model_path)
    resolved_threads = threads or physical_cores()
    if node_iterations is None:
        node_iterations = min(iterations, _NODE_ITERATIONS_MAX)
    if node_iterations < 1:
        raise ProfilerError(f"node_iterations must be >= 1, got {node_iterations}")
    node_warmup = min(warmup, _NODE_WARMUP_MAX)

    inputs, feeds, outputs, samples, providers_used = _measure_end_to_end(
        model_path,
        threads=resolved_threads,
        provider=execution_provider,
        opt_level=graph_optimization_level,
        input_shapes=dict(input_shapes or {}),
        seed=seed,
        warmup=warmup,
        iterations=iterations,
        min_time_s=min_time_s,
    )

    nodes: list[dict[str, Any]] = []
    if per_node:
        nodes = _profile_nodes(
            model_path,
            feeds,
            threads=resolved_threads,
            provider=execution_provider,
            opt_level=graph_optimization_level,
            warmup=node_warmup,
            iterations=node_iterations,
        )
    params_bytes = sum(n["memory"].get("parameter_bytes", 0) for n in nodes) if nodes else None
    settings = _settings(
        warmup=warmup, iterations=iterations, min_time_s=min_time_s, threads=resolved_threads,
        threads_requested=threads, execution_provider=execution_provider,
        graph_optimization_level=graph_optimization_level, precision=precision, seed=seed,
    )
    if per_node:
        settings.update(node_iterations=node_iterations, node_warmup=node_warmup)
    return {
        **_profile_head(file_info, inputs, outputs, settings,
                        _conditions(resolved_threads, precision, execution_provider, providers_used, available,
                                    graph_optimization_level, inputs), samples),
        "nodes": nodes,
        "node_latency_sum_ms": float(sum(n["latency_ms"] for n in nodes)),
        "memory": {
            "peak_rss_mb": peak_rss_mb(),
            "params_mb": params_bytes / _MIB if params_bytes is not None else None,
            "model_file_mb": _file_mb(file_info),
        },
    }


def profile_onnx_ab(
    model_path: str | Path,
    other_path: str | Path,
    *,
    threads: int = 0,
    execution_provider: str = "CPUExecutionProvider",
    graph_optimization_level: str = "all",
    precision: str = "fp32",
    warmup: int = 20,
    iterations: int = 200,
    min_time_s: float = 2.0,
    input_shapes: dict[str, list[int]] | None = None,
    other_input_shapes: dict[str, list[int]] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Measure two models in one process, alternating per iteration (A/B mode), end to end only.

    Both sessions are created with the same options and warmed up alternately; then pairs are timed one
    model right after the other, in a balanced seeded order (see common.paired_timed_loop), until each
    model has `iterations` runs and `min_time_s` seconds of them. The profile is the usual one for
    `model_path` (its samples in `samples_ms`), plus an `ab` field: `ab.other` holds the other model's
    record, statistics and samples (`ab.other.samples_ms[i]` was timed next to `samples_ms[i]`), and
    `ab.primary_first[i]` says whether `model_path` ran first in pair i. `memory.peak_rss_mb` covers both
    sessions. Per-node profiling is a separate run (`profile_onnx`).
    """
    model_path, other_path = Path(model_path), Path(other_path)
    available = _check_settings(execution_provider, graph_optimization_level, threads, warmup, iterations,
                                min_time_s)
    file_info, other_info = model_file_info(model_path), model_file_info(other_path)
    resolved_threads = threads or physical_cores()
    common = dict(threads=resolved_threads, provider=execution_provider, opt_level=graph_optimization_level,
                  seed=seed)
    sess, inputs, _, outputs, run = _open_timed(model_path, input_shapes=dict(input_shapes or {}), **common)
    o_sess, o_inputs, _, o_outputs, o_run = _open_timed(
        other_path, input_shapes=dict(other_input_shapes or {}), **common
    )
    samples, other_samples, primary_first = paired_timed_loop(run, o_run, warmup, iterations, min_time_s, seed)
    settings = _settings(
        warmup=warmup, iterations=iterations, min_time_s=min_time_s, threads=resolved_threads,
        threads_requested=threads, execution_provider=execution_provider,
        graph_optimization_level=graph_optimization_level, precision=precision, seed=seed,
    )
    shared = _shared_pool_threads is not None  # `_session` refused a different thread count
    settings.update(
        mode="ab", timing=settings["timing"] + "; two sessions in one process, alternating per pair",
        # per-session pools compete for the cores and can make one of two identical models read slower
        thread_pool="shared by both sessions" if shared else "one per session (share_thread_pool was not "
        "called first in this process; the idle session's spinning workers can bias one model)",
    )
    return {
        **_profile_head(file_info, inputs, outputs, settings,
                        _conditions(resolved_threads, precision, execution_provider, list(sess.get_providers()),
                                    available, graph_optimization_level, inputs), samples),
        "nodes": [],
        "node_latency_sum_ms": 0.0,
        "memory": {"peak_rss_mb": peak_rss_mb(), "params_mb": None, "model_file_mb": _file_mb(file_info)},
        "ab": {
            "order": "balanced: of every two pairs one runs this model first, one the other; seeded coin",
            "primary_first": primary_first,
            "other": {
                "model": _model_record(other_info, o_inputs, o_outputs),
                "input_shapes": {i["name"]: i["shape"] for i in o_inputs},
                "session_providers": list(o_sess.get_providers()),
                "latency_ms": latency_stats(other_samples),
                "samples_ms": other_samples,
                "model_file_mb": _file_mb(other_info),
            },
        },
    }


def _profile_head(file_info: dict[str, Any], inputs: list[dict[str, Any]], outputs: list[dict[str, Any]],
                  settings: dict[str, Any], conditions: dict[str, Any], samples: list[float]) -> dict[str, Any]:
    """The fields every profile of this runtime starts with (schema, model, settings, end-to-end timing)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": PROFILE_KIND,
        "runtime": RUNTIME,
        "model": _model_record(file_info, inputs, outputs),
        "settings": settings,
        "conditions": conditions,
        "latency_ms": latency_stats(samples),
        "samples_ms": samples,
    }


def _file_mb(file_info: dict[str, Any]) -> float:
    return (file_info["file_bytes"] + file_info["external_data_bytes"]) / _MIB


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m profilers.ort_profiler",
        description="Profile an ONNX model with onnxruntime; write a versioned JSON profile.",
    )
    p.add_argument("model", help="path to the .onnx file")
    p.add_argument("--out", required=True, help="where to write the JSON profile (written atomically)")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads; 0 = all physical cores")
    p.add_argument("--provider", default="CPUExecutionProvider", help="onnxruntime execution provider")
    p.add_argument("--opt-level", choices=sorted(OPT_LEVELS), default="all", help="graph optimisation level")
    p.add_argument("--precision", default="fp32", help="precision label recorded with the profile")
    p.add_argument("--warmup", type=int, default=20, help="untimed runs before measuring")
    p.add_argument("--iterations", type=int, default=200, help="minimum timed runs")
    p.add_argument("--min-time", type=float, default=2.0, help="minimum seconds of timed runs")
    p.add_argument("--node-iterations", type=int, default=None, help="runs in the per-node profiling session")
    p.add_argument("--no-nodes", action="store_true", help="skip the per-node profiling session")
    p.add_argument(
        "--shape", action="append", default=[], metavar="NAME=1x3x224x224", help="input shape (repeatable)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random input data (and of the --ab order)")
    p.add_argument(
        "--ab", metavar="OTHER.onnx", default=None,
        help="A/B mode: also time OTHER.onnx in this process, alternating per iteration (end to end only)",
    )
    p.add_argument(
        "--ab-shape", action="append", default=[], metavar="NAME=1x3x224x224",
        help="input shape of the --ab model (repeatable)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: 0 on success (a one-line JSON summary on stdout), 1 with one line on stderr for user errors."""
    args = build_parser().parse_args(argv)
    measure = dict(
        threads=args.threads,
        execution_provider=args.provider,
        graph_optimization_level=args.opt_level,
        precision=args.precision,
        warmup=args.warmup,
        iterations=args.iterations,
        min_time_s=args.min_time,
        seed=args.seed,
    )

    def produce() -> dict[str, Any]:
        shapes = parse_shape_args(args.shape)
        if args.ab is not None:
            share_thread_pool(args.threads or physical_cores())
            return profile_onnx_ab(args.model, args.ab, input_shapes=shapes,
                                   other_input_shapes=parse_shape_args(args.ab_shape), **measure)
        if args.ab_shape:
            raise ProfilerError("--ab-shape applies to the --ab model: give --ab OTHER.onnx too")
        return profile_onnx(args.model, node_iterations=args.node_iterations, per_node=not args.no_nodes,
                            input_shapes=shapes, **measure)

    return run_cli(args.out, produce)


if __name__ == "__main__":
    sys.exit(main())
