"""Target profiles: TOML files validated into a typed spec, and the registry of built-in ones."""

from __future__ import annotations

import dataclasses
import importlib.resources
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import EdgepruneError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

RUNTIMES = ("onnxruntime", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")
METRICS = ("p50", "p90", "p99", "mean")
GRAPH_LEVELS = ("disable", "basic", "extended", "all")


@dataclass(frozen=True)
class HostSpec:
    """Where a remote target runs: an SSH destination and the interpreter to use there."""

    address: str  # user@host or host
    port: int = 22
    identity_file: str | None = None
    python: str = "python3"
    workdir: str | None = None  # parent of the private temp dir on the device; None = the device's TMPDIR
    accept_new_host_key: bool = False
    known_hosts_file: str | None = None
    connect_timeout_s: float = 10.0
    command_timeout_s: float = 900.0

    @classmethod
    def parse(cls, destination: str, **overrides: Any) -> HostSpec:
        """Parse `user@host[:port]` as given to --host."""
        dest, port = destination, overrides.pop("port", None)
        if dest.count(":") == 1 and not dest.startswith("["):
            dest, port_text = dest.split(":")
            try:
                port = int(port_text)
            except ValueError as exc:
                raise EdgepruneError(f"--host {destination!r}: port must be a number") from exc
        if not dest or dest.startswith("-") or any(c.isspace() for c in dest):
            raise EdgepruneError(f"--host {destination!r} is not a valid SSH destination (user@host[:port])")
        return cls(address=dest, port=int(port) if port else 22, **overrides)


@dataclass(frozen=True)
class MeasureSettings:
    warmup: int = 20
    iterations: int = 200
    min_time_s: float = 2.0


@dataclass(frozen=True)
class TargetSpec:
    """Everything needed to measure a model the way it will be deployed."""

    name: str
    runtime: str
    execution_provider: str
    precision: str = "fp32"
    threads: int = 0  # 0: all physical cores of the machine that runs it
    metric: str = "p50"
    graph_optimization_level: str = "all"
    description: str = ""
    device: str = "cpu"  # cpu | gpu | jetson
    input_shape: tuple[int, ...] | None = None
    measure: MeasureSettings = field(default_factory=MeasureSettings)
    tensorrt: dict[str, Any] = field(default_factory=dict)
    host: HostSpec | None = None
    requires_host: bool = False
    source: str = "builtin"

    @property
    def is_remote(self) -> bool:
        return self.host is not None

    def with_host(self, host: HostSpec | None) -> TargetSpec:
        return dataclasses.replace(self, host=host) if host is not None else self

    def with_measure(self, **changes: Any) -> TargetSpec:
        changes = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, measure=dataclasses.replace(self.measure, **changes)) if changes else self

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["input_shape"] = list(self.input_shape) if self.input_shape else None
        return d


def _require(cond: bool, where: str, message: str) -> None:
    if not cond:
        raise EdgepruneError(f"target {where}: {message}")


def parse_target(data: dict[str, Any], where: str) -> TargetSpec:
    """Validate a TOML table into a TargetSpec; every problem names the field and the allowed values."""
    known = {f.name for f in dataclasses.fields(TargetSpec)} | {"input"}
    unknown = sorted(set(data) - known)
    _require(not unknown, where, f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
    _require(isinstance(data.get("name"), str) and data["name"], where, "needs a 'name' string")
    runtime = data.get("runtime")
    _require(runtime in RUNTIMES, where, f"runtime must be one of {', '.join(RUNTIMES)} (got {runtime!r})")
    precision = data.get("precision", "fp32")
    _require(precision in PRECISIONS, where, f"precision must be one of {', '.join(PRECISIONS)} (got {precision!r})")
    metric = data.get("metric", "p50")
    _require(metric in METRICS, where, f"metric must be one of {', '.join(METRICS)} (got {metric!r})")
    level = data.get("graph_optimization_level", "all")
    _require(level in GRAPH_LEVELS, where, f"graph_optimization_level must be one of {', '.join(GRAPH_LEVELS)}")
    threads = data.get("threads", 0)
    _require(isinstance(threads, int) and threads >= 0, where, "threads must be an integer >= 0 (0 = all cores)")

    measure_raw = data.get("measure", {})
    _require(isinstance(measure_raw, dict), where, "[measure] must be a table")
    bad = set(measure_raw) - {"warmup", "iterations", "min_time_s"}
    _require(not bad, where, f"[measure] has unknown field(s) {', '.join(sorted(bad))}")
    measure = MeasureSettings(**measure_raw)
    _require(measure.warmup >= 0 and measure.iterations >= 5, where, "measure.iterations must be >= 5")

    shape = data.get("input_shape") or (data.get("input") or {}).get("shape")
    if shape is not None:
        _require(isinstance(shape, list) and all(isinstance(s, int) and s > 0 for s in shape), where,
                 "input shape must be a list of positive integers")
    host_raw = data.get("host")
    host = None
    if host_raw is not None:
        _require(isinstance(host_raw, dict) and isinstance(host_raw.get("address"), str), where,
                 "[host] needs an 'address' such as 'user@jetson.local'")
        fields = {f.name for f in dataclasses.fields(HostSpec)}
        bad = set(host_raw) - fields
        _require(not bad, where, f"[host] has unknown field(s) {', '.join(sorted(bad))}")
        host = HostSpec.parse(host_raw["address"], **{k: v for k, v in host_raw.items() if k != "address"})

    ep_default = "CPUExecutionProvider" if runtime == "onnxruntime" else "TensorRT"
    return TargetSpec(
        name=data["name"],
        runtime=runtime,
        execution_provider=data.get("execution_provider", ep_default),
        precision=precision,
        threads=threads,
        metric=metric,
        graph_optimization_level=level,
        description=data.get("description", ""),
        device=data.get("device", "cpu"),
        input_shape=tuple(shape) if shape else None,
        measure=measure,
        tensorrt=dict(data.get("tensorrt", {})),
        host=host,
        requires_host=bool(data.get("requires_host", False)),
        source=where,
    )


def _read_toml(text: str, where: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise EdgepruneError(f"target {where}: not valid TOML ({exc})") from exc


def builtin_targets() -> dict[str, TargetSpec]:
    """The registry of built-in targets, read from the TOML files shipped in the package."""
    specs: dict[str, TargetSpec] = {}
    for entry in sorted(importlib.resources.files("edgeprune.builtin_targets").iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".toml"):
            spec = parse_target(_read_toml(entry.read_text(), entry.name), f"builtin:{entry.name}")
            specs[spec.name] = spec
    return specs


def load_target(name_or_path: str | TargetSpec, host: HostSpec | None = None) -> TargetSpec:
    """Resolve a built-in target name or a path to a user's TOML profile."""
    if isinstance(name_or_path, TargetSpec):
        return name_or_path.with_host(host)
    builtins = builtin_targets()
    if name_or_path in builtins:
        return builtins[name_or_path].with_host(host)
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise EdgepruneError(f"target file {name_or_path} does not exist")
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise EdgepruneError(f"target file {name_or_path} cannot be read: {exc}") from exc
        return parse_target(_read_toml(text, str(path)), str(path)).with_host(host)
    raise EdgepruneError(
        f"unknown target {name_or_path!r}; known targets: {', '.join(builtins)} "
        "(or give a path to your own .toml profile; `edgeprune targets` lists them)"
    )


def runtime_importable(runtime: str) -> tuple[bool, str]:
    """Whether a runtime's Python module can be imported here (without importing it)."""
    module = {"onnxruntime": "onnxruntime", "tensorrt": "tensorrt"}[runtime]
    if importlib.util.find_spec(module) is None:
        return False, f"{module} is not importable here"
    return True, f"{module} importable"


def usability(spec: TargetSpec) -> tuple[bool, str]:
    """Can this target be measured from this machine now? Returns (usable, reason)."""
    if spec.requires_host and spec.host is None:
        return False, "runs on a remote board: pass --host user@board or set [host] in a copy of its profile"
    if spec.host is not None:
        return True, f"remote: measured over SSH on {spec.host.address} (checked at preflight)"
    ok, why = runtime_importable(spec.runtime)
    if not ok:
        if spec.runtime == "tensorrt":
            return False, (f"{why}: install the 'tensorrt' extra on an NVIDIA machine, run edgeprune on the "
                           "device itself, or pass --host user@device to measure there over SSH")
        return False, why
    if spec.runtime == "tensorrt":
        cuda_ok = importlib.util.find_spec("pycuda") is not None or importlib.util.find_spec("torch") is not None
        if not cuda_ok:
            return False, "tensorrt is importable but neither pycuda nor torch is there to hold device buffers"
    return True, "local"
