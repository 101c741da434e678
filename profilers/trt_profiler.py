"""Profile an ONNX model with TensorRT: build an engine, time it end to end, then per layer.

UNVERIFIED: written against the TensorRT 10 and 11 Python API as documented; TensorRT cannot be
installed where this was written, so this file has not run against the real library. Its pure logic
(callback aggregation, inspector parsing, fused-name mapping) lives in trt_parsing and is tested.

    python -m profilers.trt_profiler model.onnx --out profile.json --precision fp16 --workspace 1G

- Engine: OnnxParser; FP16 by BuilderFlag.FP16 on TensorRT <= 10; TensorRT 11 removed the precision
  flags (networks are strongly typed), so FP16 there must come from an FP16 ONNX; INT8 needs an
  explicitly quantized (Q/DQ) ONNX. ProfilingVerbosity.DETAILED so the inspector can name fused layers.
- End-to-end: execute_async_v3 + stream sync, timed with perf_counter_ns, no profiler attached.
- Per layer: a second execution context with an IProfiler subclass, in a separate run.
- Device buffers: one small interface, three implementations (pycuda, cuda-python, torch CUDA tensors);
  each imports its library lazily, so this module imports with none of them (and never imports torch
  unless the torch backend is chosen).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
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
    parse_shape_args,
    peak_rss_mb,
    run_cli,
    timed_loop,
    write_bytes_atomic,
)
from .cuda_buffers import BACKENDS, DeviceBackend, open_backend
from .trt_parsing import LayerTimeAggregator, build_trt_nodes, metadata_onnx_nodes, parse_engine_information

RUNTIME = "tensorrt"
PRECISIONS = ("fp32", "fp16", "int8")
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
_NODE_WARMUP_MAX = 5
_NODE_ITERATIONS_MAX = 100
_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(?:[iI]?[bB])?\s*$")


def parse_size(text: str | int) -> int:
    """'1G' -> 1073741824; also '512M', '2GiB', '1.5G', '4096' (bytes)."""
    if isinstance(text, int) and not isinstance(text, bool):
        value, unit = float(text), ""
    else:
        m = _SIZE_RE.match(str(text))
        if not m:
            raise ProfilerError(f"bad size {text!r}: write it like 1G, 512M or a byte count")
        value, unit = float(m.group(1)), m.group(2).upper()
    if value <= 0:
        raise ProfilerError(f"bad size {text!r}: must be positive")
    return int(value * _SIZE_UNITS[unit])


# ---------------------------------------------------------------------------------------------------
# TensorRT


def _trt():
    try:
        import tensorrt
    except ImportError as exc:
        raise ProfilerError(
            f"tensorrt is not importable here ({exc}); run this on the device that has TensorRT "
            "(JetPack ships it) or pip install tensorrt"
        ) from None
    return tensorrt


def trt_major(version: str) -> int:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return 0


def _network_layers(network: Any) -> list[Any]:
    return [network.get_layer(i) for i in range(network.num_layers)]


def _network_has_dtype(network: Any, dtype: Any) -> bool:
    for i in range(network.num_inputs):
        if network.get_input(i).dtype == dtype:
            return True
    for layer in _network_layers(network):
        for j in range(layer.num_outputs):
            if layer.get_output(j).dtype == dtype:
                return True
    return False


def _network_has_qdq(trt: Any, network: Any) -> bool:
    qdq = {getattr(trt.LayerType, n) for n in ("QUANTIZE", "DEQUANTIZE") if hasattr(trt.LayerType, n)}
    return any(layer.type in qdq for layer in _network_layers(network))


def _network_onnx_nodes(network: Any) -> list[str]:
    """ONNX node names in graph order, read from the parsed network (no onnx package needed): each
    layer's metadata names its ONNX node on TensorRT >= 10; older parsers name layers after nodes."""
    names: list[str] = []
    for layer in _network_layers(network):
        from_meta = metadata_onnx_nodes(getattr(layer, "metadata", None))
        names.extend(from_meta or [layer.name])
    return list(dict.fromkeys(names))


def _apply_precision(
    trt: Any, network: Any, config: Any, precision: str, *, calibrated: bool = False
) -> dict[str, Any]:
    """Set builder flags for `precision`, or check that a strongly typed network already carries it."""
    major = trt_major(trt.__version__)
    has_flag = major <= 10 and hasattr(trt.BuilderFlag, "FP16")
    if precision == "fp32":
        if not has_flag and _network_has_dtype(network, trt.DataType.HALF):
            # strongly typed: FP16 tensors in the ONNX run in FP16 whatever we call the profile
            raise ProfilerError(
                f"this ONNX carries FP16 tensors, which TensorRT {trt.__version__} runs in FP16 "
                "(strongly typed); profile it with --precision fp16 or export an FP32 ONNX"
            )
        tf32 = None
        if hasattr(trt.BuilderFlag, "TF32") and hasattr(config, "get_flag"):
            tf32 = bool(config.get_flag(trt.BuilderFlag.TF32))  # on by default: FP32 convs may use TF32
        return {"mode": "fp32", "flags": [], "tf32": tf32}
    if precision == "fp16":
        if has_flag:
            config.set_flag(trt.BuilderFlag.FP16)
            return {"mode": "builder-flag", "flags": ["FP16"]}
        if not _network_has_dtype(network, trt.DataType.HALF):
            raise ProfilerError(
                f"TensorRT {trt.__version__} builds strongly typed networks only (no FP16 builder flag): "
                "precision comes from the ONNX, and this ONNX has no FP16 tensors; export an FP16 ONNX "
                "(e.g. ModelOpt AutoCast) or profile with --precision fp32"
            )
        return {"mode": "strongly-typed", "flags": []}
    if precision == "int8":
        if not calibrated and not _network_has_qdq(trt, network):
            raise ProfilerError(
                "int8 needs an explicitly quantized ONNX (QuantizeLinear/DequantizeLinear nodes); "
                "this ONNX has none. Quantize it first or profile with --precision fp16"
            )
        flags = []
        if major <= 10 and hasattr(trt.BuilderFlag, "INT8"):
            config.set_flag(trt.BuilderFlag.INT8)
            flags.append("INT8")
            if hasattr(trt.BuilderFlag, "FP16"):  # let non-quantized layers run in FP16, as trtexec --best
                config.set_flag(trt.BuilderFlag.FP16)
                flags.append("FP16")
        mode = "calibration" if calibrated else "builder-flag" if flags else "strongly-typed"
        return {"mode": mode, "flags": flags}
    raise ProfilerError(f"unknown precision {precision!r}; use one of {list(PRECISIONS)}")


def build_engine(
    model_path: Path,
    *,
    precision: str,
    workspace_bytes: int,
    timing_cache: Path | None,
    input_shapes: dict[str, list[int]],
    shapes_min: dict[str, list[int]],
    shapes_opt: dict[str, list[int]],
    shapes_max: dict[str, list[int]],
    builder_optimization_level: int | None = None,
    calibrator: Any = None,
) -> tuple[bytes, dict[str, Any]]:
    """Parse the ONNX, build a serialized engine; returns (plan bytes, build facts).

    calibrator: an IInt8Calibrator for implicit INT8 calibration (TensorRT <= 10 only; int8 precision
    then needs no Q/DQ nodes in the ONNX).
    """
    trt = _trt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if trt_major(trt.__version__) < 10 and hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    # parse_from_file resolves external-data sidecars relative to the model
    if not parser.parse_from_file(str(model_path)):
        errors = [" ".join(str(parser.get_error(i)).split()) for i in range(parser.num_errors)]
        raise ProfilerError(f"TensorRT cannot parse {model_path}: {'; '.join(errors) or 'unknown error'}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if builder_optimization_level is not None:
        config.builder_optimization_level = builder_optimization_level
    precision_info = _apply_precision(trt, network, config, precision, calibrated=calibrator is not None)
    if calibrator is not None:
        if not hasattr(config, "int8_calibrator"):
            raise ProfilerError(
                f"TensorRT {trt.__version__} has no implicit INT8 calibration; use an explicitly quantized ONNX"
            )
        config.int8_calibrator = calibrator

    # one optimisation profile when any input is dynamic: min/opt/max default to the --shape value
    dynamic = {}
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = list(tensor.shape)
        if any(d < 0 for d in shape):
            name = tensor.name
            opt = shapes_opt.get(name) or input_shapes.get(name)
            if opt is None:
                raise ProfilerError(
                    f"input {name!r} has dynamic dims {shape}; pass --shape {name}=... "
                    "(and optionally --shapes-min/--shapes-max)"
                )
            mn, mx = shapes_min.get(name, opt), shapes_max.get(name, opt)
            for label, s in (("min", mn), ("opt", opt), ("max", mx)):
                if len(s) != len(shape) or any(d >= 0 and d != v for d, v in zip(shape, s, strict=True)):
                    raise ProfilerError(
                        f"{label} shape {s} for input {name!r} does not fit the model's {shape}"
                    )
            dynamic[name] = {"min": list(mn), "opt": list(opt), "max": list(mx)}
    if dynamic:
        profile = builder.create_optimization_profile()
        for name, s in dynamic.items():
            profile.set_shape(name, s["min"], s["opt"], s["max"])
        config.add_optimization_profile(profile)
        if calibrator is not None:  # calibration runs at one shape: the profile's opt
            config.set_calibration_profile(profile)

    cache = None
    if timing_cache is not None:
        blob = timing_cache.read_bytes() if timing_cache.is_file() else b""
        cache = config.create_timing_cache(blob)
        config.set_timing_cache(cache, ignore_mismatch=False)

    onnx_nodes = _network_onnx_nodes(network)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ProfilerError(f"TensorRT failed to build an engine from {model_path} (see the log above)")
    plan_bytes = bytes(plan)
    if timing_cache is not None:
        write_bytes_atomic(timing_cache, bytes(config.get_timing_cache().serialize()))
    return plan_bytes, {
        "precision": precision_info,
        "workspace_bytes": workspace_bytes,
        "optimization_profile": dynamic or None,
        "timing_cache": str(timing_cache) if timing_cache else None,
        "onnx_nodes": onnx_nodes,
        "builder_optimization_level": builder_optimization_level,
    }


def _io_tensors(trt: Any, engine: Any) -> list[tuple[str, bool]]:
    return [
        (
            engine.get_tensor_name(i),
            engine.get_tensor_mode(engine.get_tensor_name(i)) == trt.TensorIOMode.INPUT,
        )
        for i in range(engine.num_io_tensors)
    ]


class _Bindings:
    """Input/output buffers of one execution context."""

    def __init__(
        self, trt: Any, engine: Any, context: Any, backend: DeviceBackend, feeds: dict[str, np.ndarray]
    ):
        self.outputs: dict[str, np.ndarray] = {}
        for name, is_input in _io_tensors(trt, engine):
            if is_input:
                if not context.set_input_shape(name, tuple(feeds[name].shape)):
                    raise ProfilerError(
                        f"TensorRT rejected input shape {list(feeds[name].shape)} for {name!r} "
                        "(outside the engine's optimisation profile?)"
                    )
        for name, is_input in _io_tensors(trt, engine):
            if is_input:
                arr = feeds[name]
            else:
                shape = tuple(context.get_tensor_shape(name))
                if any(d < 0 for d in shape):
                    raise ProfilerError(
                        f"output {name!r} has a data-dependent shape {list(shape)}; not supported"
                    )
                arr = np.empty(shape, dtype=trt.nptype(engine.get_tensor_dtype(name)))
                self.outputs[name] = arr
            ptr = backend.alloc(arr.nbytes)
            if is_input:
                backend.upload(ptr, arr)
            context.set_tensor_address(name, ptr)


def _make_profiler(trt: Any, aggregator: LayerTimeAggregator) -> Any:
    class _LayerProfiler(trt.IProfiler):
        def __init__(self) -> None:
            trt.IProfiler.__init__(self)

        def report_layer_time(self, layer_name: str, ms: float) -> None:
            aggregator.record(layer_name, ms)

    return _LayerProfiler()


def _feeds_for(trt: Any, engine: Any, input_shapes: dict[str, list[int]], seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for name, is_input in _io_tensors(trt, engine):
        if not is_input:
            continue
        declared = list(engine.get_tensor_shape(name))
        shape = input_shapes.get(name)
        if shape is None:
            if any(d < 0 for d in declared):
                raise ProfilerError(f"input {name!r} has dynamic dims {declared}; pass --shape {name}=...")
            shape = declared
        dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
        if dtype.kind == "f":
            feeds[name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[name] = rng.integers(0, 2, size=shape).astype(bool)
        else:
            feeds[name] = rng.integers(0, 2, size=shape).astype(dtype)
    return feeds


def profile_trt(
    model_path: str | Path,
    *,
    precision: str = "fp16",
    warmup: int = 20,
    iterations: int = 200,
    min_time_s: float = 2.0,
    node_iterations: int | None = None,
    per_node: bool = True,
    input_shapes: dict[str, list[int]] | None = None,
    shapes_min: dict[str, list[int]] | None = None,
    shapes_opt: dict[str, list[int]] | None = None,
    shapes_max: dict[str, list[int]] | None = None,
    workspace: str | int = "1G",
    timing_cache: str | Path | None = None,
    engine_out: str | Path | None = None,
    backend: str = "auto",
    builder_optimization_level: int | None = None,
    threads: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """Build (or load, for .engine/.plan files) a TensorRT engine and return a raw profile (schema 1).

    UNVERIFIED against real TensorRT (see the module docstring).
    """
    trt = _trt()
    model_path = Path(model_path)
    if precision not in PRECISIONS:
        raise ProfilerError(f"unknown precision {precision!r}; use one of {list(PRECISIONS)}")
    if warmup < 0 or iterations < 1 or min_time_s < 0:
        raise ProfilerError("warmup must be >= 0, iterations >= 1 and min_time_s >= 0")
    file_info = model_file_info(model_path)
    # the shape to run at: --shape, else the profile's opt shape
    input_shapes = {**(shapes_opt or {}), **(input_shapes or {})}
    if node_iterations is None:
        node_iterations = min(iterations, _NODE_ITERATIONS_MAX)
    node_warmup = min(warmup, _NODE_WARMUP_MAX)
    workspace_bytes = parse_size(workspace)

    dev = open_backend(backend)
    try:
        if model_path.suffix.lower() in ENGINE_SUFFIXES:
            plan = model_path.read_bytes()
            build_info: dict[str, Any] = {
                "loaded_engine": True,
                "precision": {"mode": "from-engine"},
                "onnx_nodes": None,
            }
        else:
            plan, build_info = build_engine(
                model_path,
                precision=precision,
                workspace_bytes=workspace_bytes,
                timing_cache=Path(timing_cache) if timing_cache else None,
                input_shapes=input_shapes,
                shapes_min=dict(shapes_min or {}),
                shapes_opt=dict(shapes_opt or {}),
                shapes_max=dict(shapes_max or {}),
                builder_optimization_level=builder_optimization_level,
            )
            if engine_out:
                write_bytes_atomic(engine_out, plan)
        logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(logger)
        engine = runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise ProfilerError(f"TensorRT could not deserialize the engine for {model_path}")
        feeds = _feeds_for(trt, engine, input_shapes, seed)

        # end-to-end: no profiler attached
        context = engine.create_execution_context()
        bindings = _Bindings(trt, engine, context, dev, feeds)
        stream = dev.stream_handle

        def run_once() -> None:
            if not context.execute_async_v3(stream):
                raise ProfilerError("TensorRT execute_async_v3 failed")
            dev.synchronize()

        run_once()
        samples = timed_loop(run_once, warmup, iterations, min_time_s)
        outputs = [
            {"name": n, "shape": list(a.shape), "dtype": a.dtype.name} for n, a in bindings.outputs.items()
        ]

        inspector = engine.create_engine_inspector()
        inspector.execution_context = context  # resolves dynamic shapes in the layer records
        info_json = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
        parsed = parse_engine_information(info_json)
        del inspector

        nodes: list[dict[str, Any]] = []
        if per_node:
            del context, bindings
            nodes = _profile_layers(
                trt, engine, dev, feeds, node_warmup, node_iterations, parsed["layers"], build_info
            )

        device_memory = getattr(engine, "device_memory_size_v2", None)
        if device_memory is None:
            device_memory = engine.device_memory_size
        mib = 1024 * 1024
        params_bytes = sum(layer["parameter_bytes"] for layer in parsed["layers"])
        result = {
            "schema_version": SCHEMA_VERSION,
            "kind": PROFILE_KIND,
            "runtime": RUNTIME,
            "model": {
                **file_info,
                "inputs": [
                    {"name": n, "shape": list(a.shape), "dtype": a.dtype.name} for n, a in feeds.items()
                ],
                "outputs": outputs,
            },
            "settings": {
                "warmup": warmup,
                "iterations": iterations,
                "min_time_s": min_time_s,
                "node_iterations": node_iterations if per_node else None,
                "node_warmup": node_warmup if per_node else None,
                "threads": None,  # the GPU does the work; the requested CPU threads are only recorded
                "threads_requested": threads,
                "execution_provider": "TensorRT",
                "graph_optimization_level": builder_optimization_level,
                "precision": precision,
                "seed": seed,
                "device_backend": dev.name,
                "workspace_bytes": workspace_bytes,
                "timing": "perf_counter_ns around execute_async_v3 + stream synchronize, no profiler",
            },
            "conditions": collect_conditions(
                RUNTIME,
                trt.__version__,
                threads,
                precision,
                {
                    "cuda_device": dev.device_name(),
                    "device_backend": dev.name,
                    "input_shapes": {n: list(a.shape) for n, a in feeds.items()},
                },
            ),
            "latency_ms": latency_stats(samples),
            "samples_ms": samples,
            "nodes": nodes,
            "node_latency_sum_ms": float(sum(n["latency_ms"] for n in nodes)),
            "memory": {
                "peak_rss_mb": peak_rss_mb(),
                "params_mb": params_bytes / mib if parsed["detailed"] else None,
                "model_file_mb": (file_info["file_bytes"] + file_info["external_data_bytes"]) / mib,
                "device_memory_mb": int(device_memory) / mib,
            },
            "engine": {
                "path": str(engine_out)
                if engine_out
                else (str(model_path) if build_info.get("loaded_engine") else None),
                "bytes": len(plan),
                "device_memory_bytes": int(device_memory),
                "precision": precision,
                "build": {k: v for k, v in build_info.items() if k != "onnx_nodes"},
                "tensorrt_version": trt.__version__,
                "inspector_detailed": parsed["detailed"],
                "io_tensors": parsed["io_tensors"],
                "layers": parsed["layers"],
            },
        }
        return result
    finally:
        dev.close()


def _profile_layers(
    trt: Any,
    engine: Any,
    dev: DeviceBackend,
    feeds: dict[str, np.ndarray],
    warmup: int,
    iterations: int,
    layers: list[dict[str, Any]],
    build_info: dict[str, Any],
) -> list[dict[str, Any]]:
    """Per-layer times from an IProfiler on a fresh execution context, in a run of its own."""
    aggregator = LayerTimeAggregator()
    context = engine.create_execution_context()
    _Bindings(trt, engine, context, dev, feeds)
    profiler = _make_profiler(trt, aggregator)  # keep a Python reference while TensorRT calls it
    context.profiler = profiler
    # report after each synchronised run, so run boundaries are exact
    manual = hasattr(context, "report_to_profiler") and hasattr(context, "enqueue_emits_profile")
    if manual:
        context.enqueue_emits_profile = False
    stream = dev.stream_handle
    for _ in range(warmup + iterations):
        aggregator.begin_run()
        if not context.execute_async_v3(stream):
            raise ProfilerError("TensorRT execute_async_v3 failed during layer profiling")
        dev.synchronize()
        if manual:
            context.report_to_profiler()
    timings = aggregator.summary(skip_runs=warmup)
    onnx_nodes = build_info.get("onnx_nodes")
    return build_trt_nodes(timings, layers, known_nodes=onnx_nodes, node_order=onnx_nodes)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m profilers.trt_profiler",
        description="Build a TensorRT engine from an ONNX model and profile it; write a versioned JSON profile.",
    )
    p.add_argument("model", help="path to the .onnx file (or a prebuilt .engine/.plan)")
    p.add_argument("--out", required=True, help="where to write the JSON profile (written atomically)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp16")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--iterations", type=int, default=200)
    p.add_argument("--min-time", type=float, default=2.0)
    p.add_argument("--node-iterations", type=int, default=None)
    p.add_argument("--no-nodes", action="store_true", help="skip the per-layer profiling run")
    p.add_argument("--shape", action="append", default=[], metavar="NAME=1x3x224x224")
    p.add_argument("--shapes-min", action="append", default=[], metavar="NAME=1x3x224x224")
    p.add_argument("--shapes-opt", action="append", default=[], metavar="NAME=1x3x224x224")
    p.add_argument("--shapes-max", action="append", default=[], metavar="NAME=1x3x224x224")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="recorded only: TensorRT runs on the GPU")
    p.add_argument("--engine-out", default=None, help="save the built engine here")
    p.add_argument("--timing-cache", default=None, help="timing cache file, read if present and updated")
    p.add_argument("--workspace", default="1G", help="builder workspace limit, e.g. 1G, 512M")
    p.add_argument("--builder-opt-level", type=int, choices=range(0, 6), default=None, metavar="0-5")
    p.add_argument("--backend", choices=["auto", *BACKENDS], default="auto", help="device-buffer library")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: 0 on success (a one-line JSON summary on stdout), 1 with one line on stderr for user errors."""
    args = build_parser().parse_args(argv)
    return run_cli(
        args.out,
        lambda: profile_trt(
            args.model,
            precision=args.precision,
            warmup=args.warmup,
            iterations=args.iterations,
            min_time_s=args.min_time,
            node_iterations=args.node_iterations,
            per_node=not args.no_nodes,
            input_shapes=parse_shape_args(args.shape),
            shapes_min=parse_shape_args(args.shapes_min),
            shapes_opt=parse_shape_args(args.shapes_opt),
            shapes_max=parse_shape_args(args.shapes_max),
            workspace=args.workspace,
            timing_cache=args.timing_cache,
            engine_out=args.engine_out,
            backend=args.backend,
            builder_optimization_level=args.builder_opt_level,
            threads=args.threads,
            seed=args.seed,
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
