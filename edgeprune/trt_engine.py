"""TensorRT engines for `edgeprune export --to engine`: the build plan, the calibrator, and running an engine.

The pure logic (which precision mechanism a TensorRT version needs, optimisation-profile shapes, sizes)
is tested here. Everything that touches TensorRT is UNVERIFIED: it is written against the TensorRT 10/11
Python API as documented, and TensorRT cannot be installed where this was written. The engine itself is
built by the TensorRT profiler's `build_engine` (edgeprune.profilers.trt_profiler), so the exported engine
and a profiled engine come from the same code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import EdgepruneError
from .progress import Progress

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


# ---------------------------------------------------------------------------------------------------
# pure logic


def trt_major(version: str) -> int:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return 0


@dataclass(frozen=True)
class EngineBuildPlan:
    """How a precision is obtained with a given TensorRT: builder flags, an FP16 ONNX, or INT8 calibration."""

    precision: str
    tensorrt_version: str
    fp16_onnx: bool = False  # convert the ONNX to float16 first (TensorRT >= 11: strongly typed only)
    int8_mode: str | None = None  # "calibration" (implicit, TensorRT <= 10) or "qdq" (explicit)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"precision": self.precision, "tensorrt_version": self.tensorrt_version,
                "fp16_onnx": self.fp16_onnx, "int8_mode": self.int8_mode, "notes": list(self.notes)}


def plan_engine_build(
    precision: str,
    tensorrt_version: str,
    *,
    onnx_has_qdq: bool = False,
    has_calibration_data: bool = False,
    calibrator_api: bool = True,
) -> EngineBuildPlan:
    """Decide how to build `precision` with this TensorRT; a combination it cannot do is a user error.

    FP16: the FP16 builder flag up to TensorRT 10; TensorRT 11 removed it, so the ONNX itself is converted
    to float16. INT8: an explicitly quantized (Q/DQ) ONNX builds on any version; otherwise implicit
    calibration from --data, which only TensorRT <= 10 offers (IInt8EntropyCalibrator2).
    """
    major = trt_major(tensorrt_version)
    if precision == "fp32":
        return EngineBuildPlan("fp32", tensorrt_version)
    if precision == "fp16":
        if major >= 11:
            return EngineBuildPlan("fp16", tensorrt_version, fp16_onnx=True,
                                   notes=["TensorRT >= 11 is strongly typed: FP16 comes from an FP16 ONNX"])
        return EngineBuildPlan("fp16", tensorrt_version, notes=["BuilderFlag.FP16"])
    if precision == "int8":
        if onnx_has_qdq:
            return EngineBuildPlan("int8", tensorrt_version, int8_mode="qdq")
        if major >= 11 or not calibrator_api:
            raise EdgepruneError(
                f"INT8 with TensorRT {tensorrt_version} needs an explicitly quantized ONNX (QuantizeLinear/"
                "DequantizeLinear nodes): implicit calibration was removed in TensorRT 11. Quantize the model "
                "first (e.g. NVIDIA Model Optimizer), or export with --precision fp16"
            )
        if not has_calibration_data:
            raise EdgepruneError("INT8 calibration needs images: pass --data (an .npz with x uint8 NHWC, y labels)")
        return EngineBuildPlan("int8", tensorrt_version, int8_mode="calibration",
                               notes=["implicit INT8 calibration (IInt8EntropyCalibrator2) from --data"])
    raise EdgepruneError(f"unknown precision {precision!r}; use fp32, fp16 or int8")


def profile_shapes(
    input_shape: tuple[int, ...],
    *,
    dynamic_batch: bool,
    min_shape: tuple[int, ...] | None = None,
    opt_shape: tuple[int, ...] | None = None,
    max_shape: tuple[int, ...] | None = None,
) -> dict[str, list[int]] | None:
    """The optimisation profile (min/opt/max) for a dynamic-batch engine; None for a static one.

    Defaults: min batch 1, opt = the model's input shape, max = opt. Only the batch dimension may vary.
    """
    given = [s for s in (min_shape, opt_shape, max_shape) if s is not None]
    if not dynamic_batch:
        if given:
            raise EdgepruneError("--min-shape/--opt-shape/--max-shape need --dynamic-batch (the model has a fixed batch)")
        return None
    opt = tuple(opt_shape or input_shape)
    mn = tuple(min_shape or (1, *opt[1:]))
    mx = tuple(max_shape or opt)
    for label, s in (("min", mn), ("opt", opt), ("max", mx)):
        if len(s) != len(input_shape) or tuple(s[1:]) != tuple(input_shape[1:]):
            shape = "x".join(map(str, input_shape[1:]))
            raise EdgepruneError(
                f"--{label}-shape {'x'.join(map(str, s))} must be BATCHx{shape}: only the batch dimension is dynamic"
            )
    if not (1 <= mn[0] <= opt[0] <= mx[0]):
        raise EdgepruneError(f"batch sizes must satisfy 1 <= min ({mn[0]}) <= opt ({opt[0]}) <= max ({mx[0]})")
    return {"min": list(mn), "opt": list(opt), "max": list(mx)}


def workspace_bytes(text: str | int) -> int:
    """'4G' -> 4294967296 (the TensorRT profiler's parser, with edgeprune's error type)."""
    from .profilers.common import ProfilerError
    from .profilers.trt_profiler import parse_size

    try:
        return parse_size(text)
    except ProfilerError as exc:
        raise EdgepruneError(f"--workspace: {exc}") from None


def onnx_has_qdq(model: Any) -> bool:
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


def calibration_batches(x: np.ndarray, batch_size: int, limit: int = 512) -> list[np.ndarray]:
    """Fixed-size float32 batches for the calibrator (a short last batch is dropped, as TensorRT needs)."""
    x = np.ascontiguousarray(x[:limit], dtype=np.float32)
    n = (len(x) // batch_size) * batch_size
    if n == 0:
        raise EdgepruneError(f"INT8 calibration needs at least {batch_size} image(s) from --data, got {len(x)}")
    return [x[i:i + batch_size] for i in range(0, n, batch_size)]


# ---------------------------------------------------------------------------------------------------
# TensorRT (UNVERIFIED)


def _trt() -> Any:
    try:
        import tensorrt
    except ImportError as exc:
        raise EdgepruneError(
            f"tensorrt is not importable here ({exc}): build engines on the NVIDIA machine that runs them "
            "(install the 'tensorrt' extra there), or export --to onnx here"
        ) from None
    return tensorrt


def tensorrt_version() -> str:
    return str(_trt().__version__)


def make_calibrator(batches: list[np.ndarray], input_name: str, cache_file: Path | None = None) -> Any:
    """An IInt8EntropyCalibrator2 feeding `batches` (UNVERIFIED: TensorRT <= 10 only)."""
    trt = _trt()
    from .profilers.cuda_buffers import open_backend

    class _Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._batches = batches
            self._next = 0
            self._dev = open_backend("auto")
            self._ptr = self._dev.alloc(batches[0].nbytes)

        def get_batch_size(self) -> int:
            return int(self._batches[0].shape[0])

        def get_batch(self, names: list[str]) -> list[int] | None:
            if self._next >= len(self._batches):
                return None
            self._dev.upload(self._ptr, self._batches[self._next])
            self._next += 1
            return [self._ptr]

        def read_calibration_cache(self) -> bytes | None:
            return cache_file.read_bytes() if cache_file is not None and cache_file.is_file() else None

        def write_calibration_cache(self, cache: Any) -> None:
            if cache_file is not None:
                from .io import write_bytes_atomic

                write_bytes_atomic(cache_file, bytes(cache))

        def close(self) -> None:
            self._dev.close()

    return _Calibrator()


def build_engine_file(
    onnx_path: Path,
    dest: Path,
    plan: EngineBuildPlan,
    *,
    input_name: str,
    input_shape: tuple[int, ...],
    shapes: dict[str, list[int]] | None,
    workspace: str | int,
    timing_cache: Path | None,
    calibration: np.ndarray | None = None,
) -> dict[str, Any]:
    """Build the engine for `onnx_path` into `dest` with the TensorRT profiler's builder (UNVERIFIED)."""
    from .io import write_bytes_atomic
    from .profilers.common import ProfilerError
    from .profilers.trt_profiler import build_engine

    kwargs: dict[str, Any] = {}
    calibrator = None
    if plan.int8_mode == "calibration":
        batch = shapes["opt"][0] if shapes else input_shape[0]
        calibrator = make_calibrator(calibration_batches(calibration, batch), input_name)
        kwargs["calibrator"] = calibrator
    shape = list(input_shape)
    with Progress(1, f"building the TensorRT engine ({plan.precision})") as bar:
        try:
            plan_bytes, facts = build_engine(
                onnx_path,
                precision=plan.precision,
                workspace_bytes=workspace_bytes(workspace),
                timing_cache=timing_cache,
                input_shapes={input_name: shapes["opt"] if shapes else shape},
                shapes_min={input_name: shapes["min"]} if shapes else {},
                shapes_opt={input_name: shapes["opt"]} if shapes else {},
                shapes_max={input_name: shapes["max"]} if shapes else {},
                **kwargs,
            )
        except ProfilerError as exc:
            raise EdgepruneError(str(exc)) from None
        finally:
            if calibrator is not None:
                calibrator.close()
        bar.advance(description="built the TensorRT engine")
    write_bytes_atomic(dest, plan_bytes)
    facts = {k: v for k, v in facts.items() if k != "onnx_nodes"}
    return {**facts, "plan": plan.to_dict(), "engine_bytes": len(plan_bytes)}


class EngineSession:
    """Run a serialized engine on this machine's GPU for parity and accuracy checks (UNVERIFIED)."""

    def __init__(self, path: Path):
        from .profilers.common import ProfilerError
        from .profilers.cuda_buffers import open_backend

        trt = _trt()
        self._trt = trt
        logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(logger)
        self._engine = self._runtime.deserialize_cuda_engine(Path(path).read_bytes())
        if self._engine is None:
            raise EdgepruneError(f"TensorRT cannot deserialize {Path(path).name} (built by another TensorRT "
                                 "version or GPU?)")
        self._context = self._engine.create_execution_context()
        try:
            self._dev = open_backend("auto")
        except ProfilerError as exc:
            raise EdgepruneError(str(exc)) from None
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if len(inputs) != 1:
            raise EdgepruneError(f"{Path(path).name} has {len(inputs)} inputs; parity checks support one")
        self.input_name = inputs[0]
        self.output_names = [n for n in names if n not in inputs]
        declared = list(self._engine.get_tensor_shape(self.input_name))
        self.fixed_batch = declared[0] >= 0
        if self.fixed_batch:
            self.max_batch = int(declared[0])
        else:
            self.max_batch = int(self._engine.get_tensor_profile_shape(self.input_name, 0)[2][0])
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, capacity in bytes)

    def _buffer(self, name: str, nbytes: int) -> int:
        ptr, cap = self._buffers.get(name, (0, 0))
        if cap < nbytes:
            ptr = self._dev.alloc(nbytes)
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        trt, eng, ctx = self._trt, self._engine, self._context
        x = np.ascontiguousarray(x, dtype=trt.nptype(eng.get_tensor_dtype(self.input_name)))
        if not ctx.set_input_shape(self.input_name, tuple(x.shape)):
            raise EdgepruneError(f"the engine rejects input shape {list(x.shape)} (outside its optimisation profile)")
        ptr = self._buffer(self.input_name, x.nbytes)
        self._dev.upload(ptr, x)
        ctx.set_tensor_address(self.input_name, ptr)
        outs = {}
        for name in self.output_names:
            arr = np.empty(tuple(ctx.get_tensor_shape(name)), dtype=trt.nptype(eng.get_tensor_dtype(name)))
            outs[name] = (arr, self._buffer(name, arr.nbytes))
            ctx.set_tensor_address(name, outs[name][1])
        if not ctx.execute_async_v3(self._dev.stream_handle):
            raise EdgepruneError("TensorRT execute_async_v3 failed")
        self._dev.synchronize()
        result = {}
        for name, (arr, p) in outs.items():
            self._dev.download(arr, p)
            result[name] = arr.astype(np.float32, copy=False)
        return result

    def close(self) -> None:
        self._dev.close()
        self._context = None
        self._engine = None
