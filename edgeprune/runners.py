"""Runners: how a target's profiler program is executed (locally in a clean process, or on a remote device).

The profilers are always run as a separate, torch-free process: that keeps the measured peak memory the
model's own, and runs the exact program that would run on a device.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from .errors import EdgepruneError
from .targets import TargetSpec, usability

PROFILER_MODULES = {"onnxruntime": "ort_profiler", "tensorrt": "trt_profiler"}


AB_RUNTIMES = ("onnxruntime",)  # runtimes whose profiler has the A/B mode (--ab)


class Runner(Protocol):
    def __enter__(self) -> Runner: ...
    def __exit__(self, *exc: object) -> None: ...
    def measure(self, onnx_path: Path, *, per_node: bool = True, extra_args: list[str] | None = None,
                ab_model: Path | None = None) -> dict:
        """Run the target's profiler on `onnx_path` and return its raw JSON profile.

        With `ab_model`, the profiler also times that model in the same process, alternating per
        iteration (A/B mode; end to end only, so `per_node` does not apply); its samples come back in the
        profile's `ab` field. Only for targets whose runtime is in AB_RUNTIMES.
        """
        ...


_RUNNERS: dict[str, Callable[[TargetSpec], Runner]] = {}


def register_runner(kind: str) -> Callable:
    def deco(factory: Callable[[TargetSpec], Runner]) -> Callable[[TargetSpec], Runner]:
        _RUNNERS[kind] = factory
        return factory

    return deco


def ab_args(target: TargetSpec, other_extra_args: list[str] | None = None) -> list[str]:
    """Profiler arguments that belong to the A/B mode's second model: its `--shape`s become `--ab-shape`s.
    Raises EdgepruneError when the target's profiler has no A/B mode."""
    if target.runtime not in AB_RUNTIMES:
        raise EdgepruneError(f"target {target.name} runs {target.runtime}, whose profiler cannot time two models "
                             f"in one process (A/B mode is for {', '.join(AB_RUNTIMES)})")
    out: list[str] = []
    args = iter(other_extra_args or [])
    for arg in args:
        if arg == "--shape" and (value := next(args, None)) is not None:
            out += ["--ab-shape", value]
        elif arg.startswith("--shape="):
            out.append("--ab-shape=" + arg.split("=", 1)[1])
        else:
            raise ValueError(f"only --shape NAME=DIMS can be given for the A/B mode's second model, not {arg!r}")
    return out


def profiler_args(target: TargetSpec, *, per_node: bool = True, ab_model: str | None = None) -> list[str]:
    """The profiler command-line arguments a target's settings translate to (same locally and remotely)."""
    m = target.measure
    args = [
        "--threads", str(target.threads),
        "--precision", target.precision,
        "--warmup", str(m.warmup),
        "--iterations", str(m.iterations),
        "--min-time", str(m.min_time_s),
    ]
    if target.runtime == "onnxruntime":
        args += ["--provider", target.execution_provider, "--opt-level", target.graph_optimization_level]
    if target.runtime == "tensorrt" and target.tensorrt.get("workspace"):
        args += ["--workspace", str(target.tensorrt["workspace"])]
    if ab_model is not None:
        ab_args(target)  # raises for runtimes without the A/B mode
        args += ["--ab", ab_model]
    elif not per_node:
        args.append("--no-nodes")
    return args


@register_runner("local")
class LocalRunner:
    """Runs the profiler with this interpreter in a fresh process."""

    def __init__(self, target: TargetSpec):
        self.target = target

    def __enter__(self) -> LocalRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def measure(self, onnx_path: Path, *, per_node: bool = True, extra_args: list[str] | None = None,
                ab_model: Path | None = None) -> dict:
        module = f"edgeprune.profilers.{PROFILER_MODULES[self.target.runtime]}"
        with tempfile.TemporaryDirectory(prefix="edgeprune-prof-") as tmp:
            out = Path(tmp) / "profile.json"
            cmd = [sys.executable, "-m", module, str(onnx_path), "--out", str(out)]
            ab = None if ab_model is None else str(ab_model)
            cmd += profiler_args(self.target, per_node=per_node, ab_model=ab) + list(extra_args or [])
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0 or not out.is_file():
                lines = (proc.stderr or proc.stdout or "").strip().splitlines()
                detail = lines[-1] if lines else f"exit code {proc.returncode}"
                raise EdgepruneError(f"profiling {onnx_path.name} on target {self.target.name} failed: {detail}")
            try:
                profile = json.loads(out.read_text())
            except json.JSONDecodeError as exc:
                raise EdgepruneError(f"the profiler wrote an unreadable profile ({exc})") from exc
        if profile.get("kind") != "edgeprune.raw_profile":
            raise EdgepruneError("the profiler's output is not an edgeprune raw profile")
        return profile


def _remote_runner(target: TargetSpec) -> Runner:
    from .remote.runner import RemoteRunner

    return RemoteRunner(target)


register_runner("remote")(_remote_runner)


def open_runner(target: TargetSpec) -> Runner:
    """The runner for a target, after checking the target can be measured from here."""
    ok, why = usability(target)
    if not ok:
        raise EdgepruneError(f"target {target.name} cannot be measured here: {why}")
    return _RUNNERS["remote" if target.is_remote else "local"](target)
