"""Shared pieces of the on-device profilers: measurement conditions, timing, statistics, atomic output.

This package is copied to devices on its own and run there with only a runtime, numpy and psutil
installed: nothing here may import torch, onnx or edgeprune.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA_VERSION = 1
PROFILE_KIND = "edgeprune.raw_profile"
# A safety net for a tiny model with a long --min-time: the loop stops here whatever the clock says.
MAX_ITERATIONS = 100_000
_CMD_TIMEOUT_S = 5.0


class ProfilerError(Exception):
    """A user-facing failure (unreadable model, bad shape, missing runtime): one line, no traceback."""


# ---------------------------------------------------------------------------------------------------
# statistics and timing


def latency_stats(samples_ms: Sequence[float]) -> dict[str, float | int]:
    """p50/p90/p99/mean/std (ddof=1)/n/min/max of per-iteration latencies in milliseconds."""
    arr = np.asarray(samples_ms, dtype=np.float64)
    if arr.size == 0:
        raise ProfilerError("no latency samples were collected")
    p50, p90, p99 = np.percentile(arr, [50, 90, 99])
    return {
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "mean": float(arr.mean()),
        "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
        "n": int(arr.size),
        "min": float(arr.min()),
        "max": float(arr.max()),
    }


def timed_loop(
    fn: Callable[[], Any],
    warmup: int,
    iterations: int,
    min_time_s: float,
    max_iterations: int = MAX_ITERATIONS,
) -> list[float]:
    """Call `fn` `warmup` times untimed, then time each call (ms) until both `iterations` calls and
    `min_time_s` seconds of measuring are reached, or `max_iterations` calls were made."""
    if iterations < 1:
        raise ProfilerError(f"iterations must be >= 1, got {iterations}")
    for _ in range(max(0, warmup)):
        fn()
    samples: list[float] = []
    min_ns = int(max(0.0, min_time_s) * 1e9)
    clock = time.perf_counter_ns
    start = clock()
    while True:
        t0 = clock()
        fn()
        t1 = clock()
        samples.append((t1 - t0) / 1e6)
        if len(samples) >= max_iterations:
            break
        if len(samples) >= iterations and t1 - start >= min_ns:
            break
    return samples


def paired_timed_loop(
    fn_a: Callable[[], Any],
    fn_b: Callable[[], Any],
    warmup: int,
    iterations: int,
    min_time_s: float,
    seed: int = 0,
    max_iterations: int = MAX_ITERATIONS,
) -> tuple[list[float], list[float], list[bool]]:
    """Time `fn_a` and `fn_b` in pairs, one right after the other, so both see the same machine state.

    Warm-up alternates too (`warmup` untimed calls of each). The order is balanced: of every two
    consecutive pairs one runs A first and one B first, which of them a coin seeded by `seed` decides,
    so neither always runs first and the order has no fixed period. Pairs are timed until `iterations`
    pairs and `min_time_s` seconds of timed calls of each function are reached (an even number of pairs,
    so the orders balance), or `max_iterations` pairs were made. Returns A's samples (ms), B's, and per
    pair whether A ran first.
    """
    if iterations < 1:
        raise ProfilerError(f"iterations must be >= 1, got {iterations}")
    for _ in range(max(0, warmup)):
        fn_a()
        fn_b()
    rng = np.random.default_rng(seed)
    a_samples: list[float] = []
    b_samples: list[float] = []
    a_first: list[bool] = []
    min_ns = int(max(0.0, min_time_s) * 1e9)
    spent = [0, 0]  # timed ns of A, of B
    clock = time.perf_counter_ns
    while True:
        first = bool(rng.random() < 0.5)
        for a_leads in (first, not first):
            calls = ((0, fn_a), (1, fn_b)) if a_leads else ((1, fn_b), (0, fn_a))
            for which, fn in calls:
                t0 = clock()
                fn()
                dt = clock() - t0
                spent[which] += dt
                (a_samples if which == 0 else b_samples).append(dt / 1e6)
            a_first.append(a_leads)
            if len(a_first) >= max_iterations:
                return a_samples, b_samples, a_first
        if len(a_first) >= iterations and min(spent) >= min_ns:
            return a_samples, b_samples, a_first


# ---------------------------------------------------------------------------------------------------
# files


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    """Write JSON through a temp file in the same directory and os.replace: a reader never sees half a
    file, and a failure (unserialisable object, full disk) leaves no file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=2, allow_nan=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Binary twin of write_json_atomic (engines, timing caches)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run_cli(out: str | os.PathLike[str], produce: Callable[[], dict[str, Any]]) -> int:
    """The profilers' shared CLI tail: run `produce`, write its profile atomically, print a one-line JSON
    summary; a user error is one stderr line and exit 1, an interrupt exit 130."""
    try:
        result = produce()
        try:
            write_json_atomic(out, result)
        except OSError as exc:
            raise ProfilerError(f"cannot write {out}: {exc.strerror or exc}") from None
    except ProfilerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    lat = result["latency_ms"]
    summary = {"out": str(out), "p50_ms": lat["p50"], "n": lat["n"], "nodes": len(result["nodes"])}
    if result.get("ab"):
        summary["ab_p50_ms"] = result["ab"]["other"]["latency_ms"]["p50"]
    print(json.dumps(summary))
    return 0


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_file_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Path, sha256 and size of an ONNX file, plus the `<file>.data` sidecar the dynamo exporter writes."""
    p = Path(path)
    if not p.is_file():
        raise ProfilerError(f"model file not found: {p}")
    info: dict[str, Any] = {"path": str(p), "sha256": sha256_file(p), "file_bytes": p.stat().st_size}
    sidecar = p.with_name(p.name + ".data")
    info["external_data_bytes"] = sidecar.stat().st_size if sidecar.is_file() else 0
    return info


# ---------------------------------------------------------------------------------------------------
# process memory


def _vm_hwm_bytes() -> int | None:
    """Linux's per-address-space RSS high-water mark (VmHWM), which starts afresh at execve."""
    text = _read_text("/proc/self/status")
    for line in (text or "").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return None


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB.

    Not getrusage's ru_maxrss: Linux keeps that across execve, so a profiler started by a large parent
    (edgeprune with torch loaded) would report the parent's peak. VmHWM belongs to this program alone;
    elsewhere psutil's peak (Windows) or current RSS is the best available.
    """
    hwm = _vm_hwm_bytes() if sys.platform.startswith("linux") else None
    if hwm is not None:
        return hwm / (1024 * 1024)
    best = 0
    try:
        import psutil

        mem = psutil.Process().memory_info()
        best = max(int(getattr(mem, "peak_wset", 0) or 0), int(mem.rss))
    except Exception:  # psutil missing or not permitted
        pass
    return best / (1024 * 1024)


# ---------------------------------------------------------------------------------------------------
# measurement conditions


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read().strip()
    except OSError:
        return None


def _run(cmd: list[str]) -> str | None:
    """Output of a diagnostic command, or None when it is missing, fails or hangs."""
    if shutil.which(cmd[0]) is None:
        return None
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=_CMD_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if res.returncode != 0:
        return None
    return res.stdout.strip()


def cpu_model(cpuinfo: str | None = None) -> str | None:
    """CPU model from /proc/cpuinfo ("model name" on x86; "Hardware"/"Model" on ARM boards)."""
    text = cpuinfo if cpuinfo is not None else _read_text("/proc/cpuinfo")
    if text:
        fields: dict[str, str] = {}
        for line in text.splitlines():
            key, sep, value = line.partition(":")
            if sep and value.strip():
                fields.setdefault(key.strip().lower(), value.strip())
        for key in ("model name", "hardware", "model", "cpu model", "processor"):
            value = fields.get(key)
            # on ARM "processor" is just the core index: skip bare numbers
            if value and not value.isdigit():
                return value
    return platform.processor() or platform.machine() or None


def _core_counts() -> tuple[int | None, int | None]:
    try:
        import psutil

        return psutil.cpu_count(logical=False), psutil.cpu_count(logical=True)
    except Exception:
        return None, os.cpu_count()


def physical_cores() -> int:
    """Physical core count (psutil), falling back to logical cores, then 1."""
    phys, logical = _core_counts()
    return int(phys or logical or 1)


def jetson_release(text: str | None) -> str | None:
    """L4T release string from the first line of /etc/nv_tegra_release, e.g. 'R36 (release), REVISION: 3.0'
    -> 'L4T R36.3.0 (...)'; the raw first line when it does not parse."""
    if not text:
        return None
    first = text.splitlines()[0].lstrip("# ").strip()
    major = None
    revision = None
    for part in first.split(","):
        part = part.strip()
        if part.startswith("R") and "(" in part:
            major = part.split()[0]
        elif part.upper().startswith("REVISION:"):
            revision = part.split(":", 1)[1].strip()
    if major and revision:
        return f"L4T {major}.{revision} ({first})"
    return first


def _nvpmodel_mode(out: str | None) -> str | None:
    if not out:
        return None
    for line in out.splitlines():
        if "power mode" in line.lower():
            return line.split(":", 1)[-1].strip() or line.strip()
    return out.splitlines()[0].strip() or None


def clocks_locked_from_show(text: str | None) -> bool | None:
    """From `jetson_clocks --show` output ("GPU MinFreq=... MaxFreq=... CurrentFreq=..."): True when the
    GPU's floor, ceiling and current clock are equal; None when the line is absent."""
    for line in (text or "").splitlines():
        words = line.lower().replace("=", " ").split()
        if not words or not words[0].startswith("gpu"):
            continue
        vals: dict[str, int] = {}
        for key in ("minfreq", "maxfreq", "currentfreq"):
            if key in words:
                idx = words.index(key)
                if idx + 1 < len(words) and words[idx + 1].isdigit():
                    vals[key] = int(words[idx + 1])
        if len(vals) == 3:
            return vals["minfreq"] == vals["maxfreq"] == vals["currentfreq"]
    return None


def _jetson_clocks_locked() -> bool | None:
    """Best effort: are GPU clocks pinned?  None when it cannot be told."""
    locked = clocks_locked_from_show(_run(["jetson_clocks", "--show"]))
    if locked is not None:
        return locked
    # devfreq of the integrated GPU: locked when the floor equals the ceiling
    base = Path("/sys/class/devfreq")
    if base.is_dir():
        for dev in sorted(base.iterdir()):
            name = (_read_text(str(dev / "name")) or dev.name).lower()
            if "gpu" not in name and "gv11b" not in name and "ga10b" not in name and "gp10b" not in name:
                continue
            cur, mn, mx = (_read_text(str(dev / f)) for f in ("cur_freq", "min_freq", "max_freq"))
            if cur and mn and mx and cur.isdigit() and mn.isdigit() and mx.isdigit():
                return int(mn) == int(mx) == int(cur)
    return None


def _gpu_info() -> list[dict[str, str]] | None:
    out = _run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"])
    if not out:
        return None
    gpus = []
    for line in out.splitlines():
        name, _, driver = line.partition(",")
        if name.strip():
            gpus.append({"name": name.strip(), "driver": driver.strip() or None})
    return gpus or None


def collect_conditions(
    runtime: str,
    runtime_version: str,
    threads: int,
    precision: str,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything a later reader needs to judge whether two profiles were measured alike."""
    phys, logical = _core_counts()
    try:
        import psutil

        psutil_version: str | None = psutil.__version__
    except Exception:
        psutil_version = None
    cond: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "cpu_model": cpu_model(),
        "machine": platform.machine(),
        "physical_cores": phys,
        "logical_cores": logical,
        "os": platform.platform(),
        "python_version": platform.python_version(),
        "python_executable": sys.executable,
        "numpy_version": np.__version__,
        "psutil_version": psutil_version,
        "runtime": runtime,
        "runtime_version": runtime_version,
        "threads": threads,
        "precision": precision,
        "cpu_governor": _read_text("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "gpus": _gpu_info(),
    }
    tegra = _read_text("/etc/nv_tegra_release")
    if tegra is not None:
        cond["jetson"] = {
            "l4t": jetson_release(tegra),
            "power_mode": _nvpmodel_mode(_run(["nvpmodel", "-q"])),
            "clocks_locked": _jetson_clocks_locked(),
        }
    else:
        cond["jetson"] = None
    if extra:
        cond.update(extra)
    return cond


def parse_shape(text: str) -> list[int]:
    """'1x3x32x32' -> [1, 3, 32, 32]."""
    try:
        dims = [int(d) for d in text.lower().replace("*", "x").split("x")]
    except ValueError:
        raise ProfilerError(f"bad shape {text!r}: write it like 1x3x224x224") from None
    if not dims or any(d <= 0 for d in dims):
        raise ProfilerError(f"bad shape {text!r}: every dimension must be a positive integer")
    return dims


def parse_shape_args(items: Sequence[str] | None) -> dict[str, list[int]]:
    """['x=1x3x32x32', ...] -> {'x': [1, 3, 32, 32]}."""
    shapes: dict[str, list[int]] = {}
    for item in items or []:
        name, sep, shape = item.rpartition("=")
        if not sep or not name:
            raise ProfilerError(f"bad --shape {item!r}: write it like NAME=1x3x224x224")
        shapes[name] = parse_shape(shape)
    return shapes
