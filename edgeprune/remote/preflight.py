"""Preflight: before any work, check that the device can run the profiler, and say exactly what is missing."""

from __future__ import annotations

import json
import logging
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import EdgepruneError
from .ssh import SSHConnection

log = logging.getLogger("edgeprune.remote")

AGENT_SOURCE_PATH = Path(__file__).with_name("agent.py")
AGENT_MARKER = "EDGEPRUNE-AGENT "
MIN_PYTHON = (3, 8)
PROBE_TIMEOUT_S = 120.0  # importing tensorrt on a cold Jetson takes a while


@dataclass(frozen=True)
class Requirement:
    """A need of the profiler on the device: any one of `modules` must import."""

    label: str
    modules: tuple[str, ...]
    pip: str  # what `python -m pip install` needs
    hint: str = ""


_NUMPY = Requirement("numpy", ("numpy",), "numpy")
_PSUTIL = Requirement("psutil", ("psutil",), "psutil")

# runtime -> what the profiler for it imports on the device
REQUIREMENTS: dict[str, tuple[Requirement, ...]] = {
    "onnxruntime": (Requirement("onnxruntime", ("onnxruntime",), "onnxruntime",
                                "on a Jetson use NVIDIA's onnxruntime-gpu wheel for your JetPack"), _NUMPY, _PSUTIL),
    "tensorrt": (
        Requirement("tensorrt", ("tensorrt",), "tensorrt",
                    "on a Jetson TensorRT comes with JetPack: `sudo apt install nvidia-jetpack` (python3-libnvinfer)"),
        Requirement("pycuda or torch", ("pycuda", "torch"), "pycuda",
                    "device buffers need pycuda (or an existing torch with CUDA)"),
        _NUMPY,
        _PSUTIL,
    ),
}


def agent_source() -> str:
    return AGENT_SOURCE_PATH.read_text()


def parse_agent_output(stdout: bytes) -> dict[str, Any] | None:
    """The agent's result line (the last one with the marker); login-shell chatter around it is ignored."""
    found = None
    for line in stdout.decode(errors="replace").splitlines():
        if line.startswith(AGENT_MARKER):
            found = line[len(AGENT_MARKER):]
    if found is None:
        return None
    try:
        return json.loads(found)
    except json.JSONDecodeError:
        return None


def _tail(data: bytes) -> str:
    lines = [ln.strip() for ln in data.decode(errors="replace").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def missing_requirements(runtime: str, modules: dict[str, dict[str, Any]]) -> list[Requirement]:
    return [req for req in REQUIREMENTS[runtime] if not any(modules.get(m, {}).get("ok") for m in req.modules)]


def install_command(python: str, missing: list[Requirement]) -> str:
    return f"{shlex.quote(python)} -m pip install {' '.join(r.pip for r in missing)}"


def preflight(conn: SSHConnection, runtime: str, *, execution_provider: str | None = None) -> dict[str, Any]:
    """Check the device behind `conn` can profile with `runtime`; return what was found.

    Raises EdgepruneError naming everything missing and the command that installs it there. Warns (log,
    stderr) when a Jetson's clocks are not locked.
    """
    if runtime not in REQUIREMENTS:
        raise EdgepruneError(f"unknown runtime {runtime!r}; known: {', '.join(REQUIREMENTS)}")
    host, python = conn.host, conn.host.python
    modules = sorted({m for req in REQUIREMENTS[runtime] for m in req.modules})
    proc = conn.run([python, "-c", agent_source(), "probe", *modules], timeout=PROBE_TIMEOUT_S)
    if proc.returncode == 127:
        raise EdgepruneError(
            f"no Python interpreter {python!r} on {conn.label}: install Python >= {'.'.join(map(str, MIN_PYTHON))} "
            "there, or point [host] python at one (e.g. python = '/usr/bin/python3')")
    info = parse_agent_output(proc.stdout)
    if info is None:
        raise EdgepruneError(
            f"{python!r} on {conn.label} could not run the preflight probe (exit {proc.returncode}: "
            f"{_tail(proc.stderr) or 'no output'}); it must be Python >= {'.'.join(map(str, MIN_PYTHON))}")
    version = tuple(info["python"]["version_info"])
    if version < MIN_PYTHON:
        raise EdgepruneError(
            f"{python!r} on {conn.label} is Python {info['python']['version']}; the profiler needs "
            f">= {'.'.join(map(str, MIN_PYTHON))}: point [host] python at a newer interpreter")

    missing = missing_requirements(runtime, info["modules"])
    if missing:
        hints = "; ".join(r.hint for r in missing if r.hint)
        details = "; ".join(
            f"{m}: {info['modules'][m].get('error', '?')}" for r in missing for m in r.modules[:1])
        raise EdgepruneError(
            f"{python} on {conn.label} cannot import {', '.join(r.label for r in missing)} ({details}). "
            f"Install them there with `{install_command(python, missing)}`" + (f" ({hints})" if hints else ""))

    providers = info["modules"].get("onnxruntime", {}).get("providers")
    if runtime == "onnxruntime" and execution_provider and providers is not None \
            and execution_provider not in providers:
        raise EdgepruneError(
            f"onnxruntime on {conn.label} offers {', '.join(providers) or 'no providers'}, not "
            f"{execution_provider}: install the onnxruntime build with it there, or choose another target")

    warnings: list[str] = []
    jetson = info.get("jetson")
    if jetson is not None:
        if jetson.get("power_mode") is None:
            warnings.append(f"cannot read the Jetson power mode on {conn.label} "
                            f"({jetson.get('power_mode_error')}); latencies depend on it")
        if jetson.get("clocks_locked") is not True:
            warnings.append(f"clocks on {conn.label} are not locked (power mode {jetson.get('power_mode')}): "
                            "latencies will drift; run `sudo jetson_clocks` there before measuring")
    for w in warnings:
        log.warning(w)
    return {
        "host": host.address,
        "port": host.port,
        "reachable": True,
        "connect_s": conn.connect_s,
        "python": info["python"],
        "platform": info["platform"],
        "runtime": runtime,
        "modules": info["modules"],
        "jetson": jetson,
        "device_tmpdir": info.get("tmpdir"),
        "warnings": warnings,
    }
