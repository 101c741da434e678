"""Parity: does a deployable artifact compute what the PyTorch model computes, on the same inputs?

Each output is compared element-wise with numpy.allclose semantics (|artifact - torch| <= atol + rtol*|torch|)
and summarised by its largest absolute error and largest relative error (relative error is taken only over
elements with |torch| > atol: smaller references are judged by atol alone). For classifier outputs the
top-1 agreement between the two is checked too, and with labels both models' top-1 accuracy is recorded.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .errors import EdgepruneError


@dataclass(frozen=True)
class Tolerance:
    """How far an artifact may stray from PyTorch: element-wise atol/rtol, and the least top-1 agreement."""

    atol: float
    rtol: float
    min_top1_agreement: float

    def with_overrides(self, atol: float | None = None, rtol: float | None = None) -> Tolerance:
        for name, value in (("atol", atol), ("rtol", rtol)):
            if value is not None and (not math.isfinite(value) or value < 0):
                raise EdgepruneError(f"--{name} {value} must be a finite number >= 0")
        return replace(self, atol=self.atol if atol is None else atol, rtol=self.rtol if rtol is None else rtol)


# Defaults per precision. fp32: reordered float arithmetic only. fp16: a 10-bit mantissa through a deep
# network moves logits by about 1e-2. int8: quantisation noise of a few percent of the logit range.
DEFAULT_TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(atol=1e-4, rtol=1e-3, min_top1_agreement=0.99),
    "fp16": Tolerance(atol=5e-2, rtol=2e-2, min_top1_agreement=0.95),
    "int8": Tolerance(atol=0.5, rtol=0.2, min_top1_agreement=0.90),
}


def tolerance_for(precision: str, atol: float | None = None, rtol: float | None = None) -> Tolerance:
    if precision not in DEFAULT_TOLERANCES:
        raise EdgepruneError(f"no parity tolerance for precision {precision!r}; use one of {list(DEFAULT_TOLERANCES)}")
    return DEFAULT_TOLERANCES[precision].with_overrides(atol, rtol)


@dataclass
class OutputParity:
    name: str
    shape: list[int]
    max_abs_error: float
    max_rel_error: float
    worst_index: list[int]
    torch_value: float
    artifact_value: float
    within_tolerance: bool
    nonfinite: int = 0


@dataclass
class ParityReport:
    """The outcome of one comparison; `raise_if_failed` turns a failure into a user-facing error."""

    artifact: str
    precision: str
    tolerance: Tolerance
    samples: int
    inputs: str
    outputs: list[OutputParity]
    top1_agreement: float | None = None
    top1_torch: float | None = None
    top1_artifact: float | None = None
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "artifact": self.artifact,
            "precision": self.precision,
            "tolerance": asdict(self.tolerance),
            "samples": self.samples,
            "inputs": self.inputs,
            "outputs": [asdict(o) for o in self.outputs],
            "top1_agreement": self.top1_agreement,
            "top1_torch_on_samples": self.top1_torch,
            "top1_artifact_on_samples": self.top1_artifact,
            "failures": list(self.failures),
        }

    def raise_if_failed(self) -> None:
        if self.failures:
            raise EdgepruneError(
                f"parity check failed for {self.artifact} ({self.precision}, {self.samples} samples of "
                f"{self.inputs}): {'; '.join(self.failures)}. Nothing was written; if the difference is "
                "expected, loosen --atol/--rtol"
            )


def _fmt_index(index: Sequence[int]) -> str:
    return "[" + ", ".join(map(str, index)) + "]"


def compare_output(name: str, torch_out: np.ndarray, artifact_out: np.ndarray, tol: Tolerance) -> OutputParity:
    """Element-wise comparison of one output."""
    ref = np.asarray(torch_out, dtype=np.float64)
    act = np.asarray(artifact_out, dtype=np.float64)
    if ref.shape != act.shape:
        raise EdgepruneError(
            f"output {name!r}: the artifact gives shape {list(act.shape)} but PyTorch gives {list(ref.shape)}"
        )
    if ref.size == 0:
        return OutputParity(name, list(ref.shape), 0.0, 0.0, [], 0.0, 0.0, True)
    nonfinite = int((~np.isfinite(act)).sum() - (~np.isfinite(ref)).sum())
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(act - ref)
    diff = np.where(act == ref, 0.0, np.where(np.isnan(diff), np.inf, diff))  # a NaN is as wrong as it gets
    allowed = tol.atol + tol.rtol * np.abs(ref)
    excess = np.where(allowed > 0, diff / np.where(allowed > 0, allowed, 1), np.where(diff > 0, np.inf, 0))
    worst = np.unravel_index(int(np.argmax(excess)), ref.shape)
    big = np.abs(ref) > tol.atol
    max_rel = float((diff[big] / np.abs(ref[big])).max()) if big.any() else 0.0
    return OutputParity(
        name=name,
        shape=list(ref.shape),
        max_abs_error=float(diff.max()),
        max_rel_error=max_rel,
        worst_index=[int(i) for i in worst],
        torch_value=float(ref[worst]),
        artifact_value=float(act[worst]),
        within_tolerance=bool(excess[worst] <= 1.0) and nonfinite <= 0,
        nonfinite=max(nonfinite, 0),
    )


def compare(
    torch_outputs: Sequence[np.ndarray],
    artifact_outputs: dict[str, np.ndarray],
    tolerance: Tolerance,
    *,
    artifact: str,
    precision: str,
    inputs: str,
    labels: np.ndarray | None = None,
) -> ParityReport:
    """Compare PyTorch's outputs (in order) with the artifact's (by name, in the artifact's output order)."""
    names = list(artifact_outputs)
    if len(names) != len(torch_outputs):
        raise EdgepruneError(
            f"{artifact} has {len(names)} output(s) ({', '.join(names)}) but the PyTorch model returns "
            f"{len(torch_outputs)}"
        )
    samples = int(np.asarray(torch_outputs[0]).shape[0]) if np.ndim(torch_outputs[0]) else 1
    report = ParityReport(artifact=artifact, precision=precision, tolerance=tolerance, samples=samples,
                          inputs=inputs, outputs=[])
    for name, ref in zip(names, torch_outputs, strict=True):
        out = compare_output(name, ref, artifact_outputs[name], tolerance)
        report.outputs.append(out)
        if not out.within_tolerance:
            extra = f", {out.nonfinite} non-finite value(s)" if out.nonfinite else ""
            report.failures.append(
                f"output {name!r} differs from PyTorch by up to {out.max_abs_error:.3g} absolute / "
                f"{out.max_rel_error:.3g} relative{extra} (worst at {_fmt_index(out.worst_index)}: artifact "
                f"{out.artifact_value:.6g}, PyTorch {out.torch_value:.6g}; allowed atol {tolerance.atol:g} + "
                f"rtol {tolerance.rtol:g} x |PyTorch|)"
            )
    first_ref, first_act = np.asarray(torch_outputs[0]), np.asarray(artifact_outputs[names[0]])
    if first_ref.ndim == 2 and first_ref.shape[1] > 1 and first_ref.shape == first_act.shape:
        ref_top, act_top = first_ref.argmax(1), first_act.argmax(1)
        report.top1_agreement = float((ref_top == act_top).mean())
        if report.top1_agreement < tolerance.min_top1_agreement:
            report.failures.append(
                f"output {names[0]!r}: top-1 class agrees with PyTorch on {report.top1_agreement:.1%} of "
                f"samples (at least {tolerance.min_top1_agreement:.0%} required)"
            )
        if labels is not None and len(labels) == len(ref_top):
            report.top1_torch = float((ref_top == labels).mean())
            report.top1_artifact = float((act_top == labels).mean())
    return report


# ---------------------------------------------------------------------------------------------------
# running artifacts


class ArtifactSession(Protocol):
    """Runs one deployable artifact on float32 NCHW batches."""

    input_name: str
    output_names: list[str]
    max_batch: int | None  # None: any batch size; else the largest (a static batch is its only size)
    fixed_batch: bool

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


class OrtSession:
    """An ONNX or .ort model in onnxruntime on this machine."""

    def __init__(self, path: Path, *, provider: str = "CPUExecutionProvider", threads: int = 0,
                 opt_level: str = "all", disabled_optimizers: Sequence[str] = ()):
        import onnxruntime as ort

        available = ort.get_available_providers()
        if provider not in available:
            raise EdgepruneError(
                f"onnxruntime {ort.__version__} here has no {provider} (available: {', '.join(available)}): "
                "cannot run the artifact for its parity check"
            )
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.log_severity_level = 3
        so.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[opt_level]
        try:
            self._sess = ort.InferenceSession(str(path), sess_options=so, providers=[provider],
                                              disabled_optimizers=list(disabled_optimizers) or None)
        except Exception as exc:  # onnxruntime's own exception types
            raise EdgepruneError(f"onnxruntime cannot load {Path(path).name}: {' '.join(str(exc).split())[:400]}") from exc
        inputs = self._sess.get_inputs()
        if len(inputs) != 1:
            raise EdgepruneError(f"{Path(path).name} has {len(inputs)} inputs; parity checks support one image input")
        self.input_name = inputs[0].name
        self._input_type = np.float16 if inputs[0].type == "tensor(float16)" else np.float32
        batch = inputs[0].shape[0] if inputs[0].shape else None
        self.fixed_batch = isinstance(batch, int)
        self.max_batch = batch if self.fixed_batch else None
        self.output_names = [o.name for o in self._sess.get_outputs()]

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        outs = self._sess.run(self.output_names, {self.input_name: x.astype(self._input_type, copy=False)})
        return dict(zip(self.output_names, outs, strict=True))

    def close(self) -> None:
        self._sess = None


def _open_engine(path: Path, **kwargs: Any) -> ArtifactSession:
    from .trt_engine import EngineSession

    return EngineSession(path)


# artifact format -> how to open it for running here
SESSIONS: dict[str, Callable[..., ArtifactSession]] = {
    "onnx": OrtSession,
    "ort": OrtSession,
    "engine": _open_engine,
}


def open_session(fmt: str, path: Path, **kwargs: Any) -> ArtifactSession:
    if fmt not in SESSIONS:
        raise EdgepruneError(f"no way to run artifact format {fmt!r}; known: {', '.join(SESSIONS)}")
    return SESSIONS[fmt](Path(path), **kwargs)


def _batches(n: int, session: ArtifactSession, preferred: int) -> list[tuple[int, int]]:
    size = session.max_batch if session.max_batch else preferred
    return [(i, min(i + size, n)) for i in range(0, n, size)]


def run_session(session: ArtifactSession, x: np.ndarray, batch_size: int = 32) -> dict[str, np.ndarray]:
    """Run all of `x` through `session`, batch by batch; a fixed-batch artifact gets padded last batches."""
    parts: dict[str, list[np.ndarray]] = {n: [] for n in session.output_names}
    for lo, hi in _batches(len(x), session, batch_size):
        chunk = x[lo:hi]
        if session.fixed_batch and len(chunk) < session.max_batch:
            pad = np.repeat(chunk[-1:], session.max_batch - len(chunk), axis=0)
            chunk = np.concatenate([chunk, pad])
        for name, arr in session.run(np.ascontiguousarray(chunk)).items():
            parts[name].append(np.asarray(arr)[: hi - lo])
    return {name: np.concatenate(arrs) for name, arrs in parts.items()}


def torch_outputs(module: Any, x: np.ndarray, batch_size: int = 32) -> list[np.ndarray]:
    """The PyTorch model's outputs on `x`, flattened to a list in the order ONNX export lists them."""
    import torch

    module.eval()
    parts: list[list[np.ndarray]] = []
    with torch.no_grad():
        for lo in range(0, len(x), batch_size):
            out = module(torch.from_numpy(np.ascontiguousarray(x[lo:lo + batch_size])))
            flat = _flatten(out)
            if not parts:
                parts = [[] for _ in flat]
            for store, t in zip(parts, flat, strict=True):
                store.append(t.detach().float().cpu().numpy())
    return [np.concatenate(p) for p in parts]


def _flatten(out: Any) -> list[Any]:
    if isinstance(out, (list, tuple)):
        return [t for item in out for t in _flatten(item)]
    if isinstance(out, dict):
        return [t for v in out.values() for t in _flatten(v)]
    return [out]


def check_artifact(
    session: ArtifactSession,
    module: Any,
    x: np.ndarray,
    tolerance: Tolerance,
    *,
    artifact: str,
    precision: str,
    inputs: str,
    labels: np.ndarray | None = None,
    batch_size: int = 32,
) -> ParityReport:
    """Run the artifact and the PyTorch model on the same `x` and compare (does not raise on failure)."""
    ref = torch_outputs(module, x, batch_size)
    got = run_session(session, x, batch_size)
    return compare(ref, got, tolerance, artifact=artifact, precision=precision, inputs=inputs, labels=labels)


def top1_accuracy(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, y: np.ndarray,
                  batch_size: int = 256) -> float:
    """Top-1 accuracy (fraction) of `predict` (batch -> logits) over `x`, `y`."""
    correct = 0
    for lo in range(0, len(x), batch_size):
        correct += int((np.asarray(predict(x[lo:lo + batch_size])).argmax(1) == y[lo:lo + batch_size]).sum())
    return correct / max(len(x), 1)


# ---------------------------------------------------------------------------------------------------
# inputs


def normalise_images(x: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 N x H x W x C -> float32 N x C x H x W, scaled to [0, 1] then (x - mean) / std per channel."""
    c = x.shape[-1]
    m = np.asarray(mean, dtype=np.float32)
    s = np.asarray(std, dtype=np.float32)
    if m.size == 1:
        m, s = np.repeat(m, c), np.repeat(s, c)
    if m.size != c or s.size != c:
        raise EdgepruneError(f"the images have {c} channel(s) but the model's mean/std have {m.size}")
    out = (x.astype(np.float32) / 255.0 - m) / s
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def load_images(spec: str, input_shape: Sequence[int], num_classes: int | None,
                limit: int | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """(uint8 NHWC images, labels, description) from an .npz (x, y) or a named set of edgeprune.data."""
    from . import data

    if spec in data.NAMED_DATA:
        x, y = data.NAMED_DATA[spec]()
    elif str(spec).lower().endswith(".npz"):
        x, y = data.load_npz(spec)
    else:
        raise EdgepruneError(
            f"data {spec!r}: give an .npz with x (uint8 N x H x W x C) and y (labels), or one of "
            f"{', '.join(data.NAMED_DATA)}"
        )
    x, y = data.check_arrays(x, y, str(spec), input_shape=tuple(input_shape), num_classes=num_classes)
    if limit is not None:
        x, y = x[:limit], y[:limit]
    return x, y, f"{Path(str(spec)).name} (first {len(x)})"


def parity_inputs(input_shape: Sequence[int], mean: Sequence[float], std: Sequence[float], *,
                  data: str | None, samples: int, num_classes: int | None = None,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray | None, str]:
    """The float32 NCHW inputs both models see: the first `samples` images of `data`, or seeded N(0, 1)."""
    if samples < 1:
        raise EdgepruneError(f"--samples must be >= 1, got {samples}")
    if data:
        images, labels, desc = load_images(data, input_shape, num_classes, samples)
        return normalise_images(images, mean, std), labels, desc
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((samples, *tuple(input_shape)[1:])).astype(np.float32)
    return x, None, f"random N(0,1) inputs (seed {seed})"
