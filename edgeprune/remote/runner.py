"""Profile a model on a remote device: copy the profiler and the model over, run it there, read the JSON back.

Per run of edgeprune: one SSH master connection and one preflight. Per profile: a private (0700) temp dir
on the device, one tar upload, one run under the device-wide lock, the profile fetched back and checked,
and the temp dir removed whatever happens. The lock is an fcntl lock held by the shipped agent
(edgeprune/remote/agent.py) on `${XDG_CACHE_HOME:-~/.cache}/edgeprune/device.lock` on the device: it
needs nothing but the Python that runs the profiler, and the kernel drops it when the holder dies.
"""

from __future__ import annotations

import importlib.resources
import io
import json
import logging
import re
import tarfile
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import EdgepruneError
from ..io import write_bytes_atomic
from ..targets import TargetSpec
from .preflight import AGENT_SOURCE_PATH, agent_source, parse_agent_output, preflight
from .ssh import TRANSIENT_ERRORS, SSHConnection, SSHError

log = logging.getLogger("edgeprune.remote")

PROFILE_KIND = "edgeprune.raw_profile"
REMOTE_MODEL = "model.onnx"
REMOTE_PROFILE = "profile.json"
AGENT_NAME = "_edgeprune_agent.py"
# The A/B mode's second model goes into a folder of its own: its weights sidecar keeps its recorded name
# (often the same `model.onnx.data` as the first model's) without clashing.
AB_DIR = "ab"
_RESERVED = {REMOTE_MODEL, REMOTE_PROFILE, AGENT_NAME, "profilers", ".alive", AB_DIR}
_MODULE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
CLEANUP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class FileOption:
    """A profiler option whose value is a local file: it is renamed for the device and moved across."""

    remote_name: str
    upload: bool  # copy the local file there first (when it exists)
    download: bool  # copy the device's file back after a successful run
    required: bool = True  # a missing file after the run is an error (else it is skipped)


# profiler option -> how its file travels (engines are built on the device and come back)
FILE_OPTIONS: dict[str, FileOption] = {
    "--engine-out": FileOption("engine.plan", upload=False, download=True),
    "--timing-cache": FileOption("timing.cache", upload=True, download=True, required=False),
}
# runtime -> the profilers/ module that measures it
PROFILER_MODULES: dict[str, str] = {"onnxruntime": "ort_profiler", "tensorrt": "trt_profiler"}


def profilers_dir() -> Path:
    """The local `profilers/` package that is copied to devices."""
    return Path(str(importlib.resources.files("edgeprune.profilers")))


def rewrite_file_options(args: Sequence[str]) -> tuple[list[str], dict[str, tuple[FileOption, Path]]]:
    """Replace local paths in FILE_OPTIONS by their device names; return the args and the mapping."""
    out: list[str] = []
    files: dict[str, tuple[FileOption, Path]] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, value = arg.partition("=")
        if arg == "--out" or name == "--out":
            raise EdgepruneError("profiler args must not set --out: the remote runner chooses it")
        if name in FILE_OPTIONS:
            if not eq:
                if i + 1 >= len(args):
                    raise EdgepruneError(f"profiler option {name} needs a value")
                value, i = args[i + 1], i + 1
            spec = FILE_OPTIONS[name]
            files[name] = (spec, Path(value))
            out += [name, spec.remote_name]
        else:
            out.append(arg)
        i += 1
    return out, files


def validate_profile(data: bytes, where: str) -> dict[str, Any]:
    try:
        profile = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EdgepruneError(f"the profile from {where} is not valid JSON ({exc})") from exc
    if not isinstance(profile, dict) or profile.get("kind") != PROFILE_KIND:
        raise EdgepruneError(f"the profile from {where} is not an {PROFILE_KIND} document")
    if not isinstance(profile.get("schema_version"), int):
        raise EdgepruneError(f"the profile from {where} has no integer schema_version")
    return profile


def _add_tree(tar: tarfile.TarFile, root: Path, arcroot: str) -> None:
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if "__pycache__" in rel.parts or path.suffix == ".pyc" or path.is_symlink():
            continue
        if path.is_file():
            tar.add(str(path), arcname=str(PurePosixPath(arcroot, *rel.parts)), recursive=False)


def _sidecar(onnx_path: Path) -> list[Path]:
    sidecar = onnx_path.with_name(onnx_path.name + ".data")
    return [sidecar] if sidecar.is_file() else []


def ab_remote_path(ab_model: Path) -> str:
    """Where the A/B mode's second model lies in the device's run dir (relative)."""
    return f"{AB_DIR}/{ab_model.name}"


def build_bundle(onnx_path: Path, extra_files: Sequence[Path], uploads: dict[str, Path], out: io.IOBase,
                 ab_model: Path | None = None) -> None:
    """Write the tar the device unpacks: agent, profilers/, the model as model.onnx, sidecars, extras, and
    the A/B mode's second model (with its sidecar) under ab/."""
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        tar.add(str(AGENT_SOURCE_PATH), arcname=AGENT_NAME)
        _add_tree(tar, profilers_dir(), "profilers")
        tar.add(str(onnx_path), arcname=REMOTE_MODEL)
        if ab_model is not None:
            for path in [ab_model, *_sidecar(ab_model)]:
                tar.add(str(path), arcname=f"{AB_DIR}/{path.name}")
        names = set(_RESERVED) | {spec for spec in uploads}
        # External weights are found by the file name recorded in the model, i.e. the local one.
        extras = _sidecar(onnx_path) + [Path(p) for p in extra_files]
        for path in extras:
            if not path.is_file():
                raise EdgepruneError(f"extra file {path} does not exist")
            if path.name in names:
                raise EdgepruneError(f"extra file name {path.name!r} clashes with another file sent to the device")
            names.add(path.name)
            tar.add(str(path), arcname=path.name)
        for remote_name, path in uploads.items():
            tar.add(str(path), arcname=remote_name)


class RemoteRunner:
    """`with RemoteRunner(target) as r: r.profile(model, args)` — one connection and preflight per run."""

    def __init__(self, target: TargetSpec, *, retries: int = 2, backoff_s: float = 2.0,
                 connection: SSHConnection | None = None, check: bool = True):
        if target.host is None:
            raise EdgepruneError(f"target {target.name} has no [host]: pass --host user@device")
        self.target = target
        self.host = target.host
        self.retries = max(0, retries)
        self.backoff_s = backoff_s
        self.conn = connection or SSHConnection(self.host, retries=retries, backoff_s=backoff_s)
        self._check = check
        self.preflight_info: dict[str, Any] | None = None

    def __enter__(self) -> RemoteRunner:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> RemoteRunner:
        try:
            self.conn.open()
            if self._check and self.preflight_info is None:
                ep = self.target.execution_provider if self.target.runtime == "onnxruntime" else None
                self.preflight_info = preflight(self.conn, self.target.runtime, execution_provider=ep)
        except BaseException:
            self.conn.close()
            raise
        return self

    def close(self) -> None:
        self.conn.close()

    # ---------------------------------------------------------------- profiling

    def profile(self, onnx_path: Path, profiler_args: Sequence[str] = (), module: str | None = None,
                extra_files: Sequence[Path] = (), ab_model: Path | None = None) -> dict[str, Any]:
        """Profile `onnx_path` on the device with `profilers.<module>`; return the validated profile.

        `module` defaults to the target runtime's profiler (ort_profiler / trt_profiler). Local paths given
        to --engine-out / --timing-cache are mapped to files in the run dir and copied back afterwards.
        Connection losses are retried (the whole profile, from a fresh temp dir) `retries` times; after
        that an EdgepruneError says so and nothing is returned. A failing profiler is not retried.
        `ab_model` is copied too (under ab/, with its sidecar) and given to the profiler's A/B mode (--ab).
        """
        onnx_path = Path(onnx_path)
        if ab_model is not None:
            ab_model = Path(ab_model)
            if not ab_model.is_file():
                raise EdgepruneError(f"model {ab_model} does not exist")
        module = module or PROFILER_MODULES[self.target.runtime]
        if not onnx_path.is_file():
            raise EdgepruneError(f"model {onnx_path} does not exist")
        if not _MODULE_RE.match(module) or not (profilers_dir() / f"{module}.py").is_file():
            raise EdgepruneError(f"unknown profiler module {module!r} (looked in {profilers_dir()})")
        args, files = rewrite_file_options(profiler_args)
        if ab_model is not None:
            args += ["--ab", ab_remote_path(ab_model)]
        uploads = {spec.remote_name: path for spec, path in files.values() if spec.upload and path.is_file()}
        attempts = 1 + self.retries
        for attempt in range(1, attempts + 1):
            try:
                profile = self._attempt(onnx_path, args, module, extra_files, uploads, files, ab_model)
            except TRANSIENT_ERRORS as exc:
                if attempt >= attempts:
                    raise type(exc)(
                        f"profiling on {self.conn.label} failed after {attempts} attempt(s): {exc}. No profile "
                        "was written; check the device is up and reachable, then run again") from exc
                delay = self.backoff_s * (2 ** (attempt - 1))
                log.warning("%s; retrying the profile in %.1f s (attempt %d of %d)", exc, delay, attempt + 1,
                            attempts)
                time.sleep(delay)
                continue
            profile.setdefault("remote", {})["attempts"] = attempt
            return profile
        raise AssertionError("unreachable")

    def _attempt(self, onnx_path: Path, args: list[str], module: str, extra_files: Sequence[Path],
                 uploads: dict[str, Path], files: dict[str, tuple[Any, Path]],
                 ab_model: Path | None = None) -> dict[str, Any]:
        python = self.host.python
        run_dir: str | None = None
        try:
            with tempfile.TemporaryFile() as bundle:
                build_bundle(onnx_path, extra_files, uploads, bundle, ab_model)  # type: ignore[arg-type]
                bundle.seek(0)
                # Not retried by the connection: a repeat would leave the first dir behind.
                proc = self.conn.run([python, "-c", agent_source(), "unpack", self.host.workdir or ""],
                                     stdin=bundle, retry=False)
            info = parse_agent_output(proc.stdout)
            if proc.returncode != 0 or info is None:
                raise EdgepruneError(f"cannot set up a private directory on {self.conn.label} "
                                     f"(workdir {self.host.workdir or 'the device TMPDIR'}): {_tail(proc.stderr)}")
            run_dir = str(info["dir"])
            self._check_run_dir(run_dir)
            run = self._run_profiler(run_dir, python, module, args)
            with tempfile.TemporaryDirectory(prefix="edgeprune-fetch-") as tmp:
                local = self.conn.get(f"{run_dir}/{REMOTE_PROFILE}", Path(tmp) / REMOTE_PROFILE)
                profile = validate_profile(local.read_bytes(), self.conn.label)
                fetched = []
                for spec, path in files.values():
                    if spec.download and self._fetch_output(run_dir, spec, Path(tmp) / spec.remote_name):
                        fetched.append((spec, path))
                # Written only once everything arrived: a lost connection leaves no partial outputs.
                for spec, path in fetched:
                    write_bytes_atomic(path, (Path(tmp) / spec.remote_name).read_bytes())
        finally:
            if run_dir is not None:
                self._remove_run_dir(run_dir)
        conditions = profile.get("conditions") or {}
        if isinstance(profile.get("model"), dict):
            profile["model"]["path"] = str(onnx_path)  # the model the user gave; remote name in "remote"
        other = (profile.get("ab") or {}).get("other") if ab_model is not None else None
        if isinstance(other, dict) and isinstance(other.get("model"), dict):
            other["model"]["path"] = str(ab_model)
        profile["remote"] = {
            "host": self.host.address,
            "port": self.host.port,
            "interpreter": conditions.get("interpreter") or conditions.get("python_executable")
            or (self.preflight_info or {}).get("python", {}).get("executable") or python,
            "python": python,
            "run_dir": run_dir,
            "model_path": f"{run_dir}/{REMOTE_MODEL}",
            "lock_file": run.get("lock_file"),
            "lock_wait_s": run.get("lock_wait_s"),
            "run_started_unix": run.get("started_unix"),
            "run_ended_unix": run.get("ended_unix"),
            "connect_s": self.conn.connect_s,
        }
        return profile

    def _run_profiler(self, run_dir: str, python: str, module: str, args: list[str]) -> dict[str, Any]:
        timeout = self.host.command_timeout_s
        argv = [python, f"{run_dir}/{AGENT_NAME}", "run", "--dir", run_dir, "--lock-timeout", str(timeout),
                "--watch-stdin", "--", python, "-m", f"profilers.{module}", REMOTE_MODEL, "--out", REMOTE_PROFILE,
                *args]
        # Lock wait and measurement each get the command timeout; not retried here (the caller redoes
        # the whole profile from a fresh directory).
        proc = self.conn.run(argv, timeout=2 * timeout + 30, keep_stdin_open=True, retry=False)
        run = parse_agent_output(proc.stdout) or {}
        if run.get("error") == "lock-timeout":
            raise EdgepruneError(f"{self.conn.label} stayed busy: another edgeprune held the device lock "
                                 f"{run.get('lock_file')} ({run.get('holder')}) for {run.get('waited_s', 0):.0f} s")
        if proc.returncode != 0:
            raise EdgepruneError(f"the profiler failed on {self.conn.label} (exit {proc.returncode}): "
                                 f"{_tail(proc.stderr) or 'no message'}")
        return run

    def _fetch_output(self, run_dir: str, spec: FileOption, local: Path) -> bool:
        try:
            self.conn.get(f"{run_dir}/{spec.remote_name}", local)
        except SSHError:
            raise
        except EdgepruneError:
            if spec.required:
                raise
            return False
        return True

    def _check_run_dir(self, run_dir: str) -> None:
        # It is about to be removed with rm -rf: make sure it is the kind of path the agent creates.
        p = PurePosixPath(run_dir)
        if not p.is_absolute() or not p.name.startswith("edgeprune.") or ".." in p.parts or len(p.parts) < 3:
            raise EdgepruneError(f"the device returned an unexpected run directory {run_dir!r}")

    def _remove_run_dir(self, run_dir: str) -> None:
        try:
            proc = self.conn.run(["rm", "-rf", "--", run_dir], timeout=CLEANUP_TIMEOUT_S, retry=False)
            if proc.returncode == 0:
                return
            why = _tail(proc.stderr)
        except (SSHError, EdgepruneError) as exc:
            why = str(exc)
        log.warning("could not remove %s on %s (%s); a later run removes it once it is stale", run_dir,
                    self.conn.label, why)

    def measure(self, onnx_path: Path, *, per_node: bool = True, extra_args: list[str] | None = None,
                ab_model: Path | None = None) -> dict:
        """The `edgeprune.runners.Runner` interface: profile with the target's own settings."""
        from ..runners import ab_args, profiler_args  # late: runners imports this module lazily too

        if ab_model is not None:
            ab_args(self.target)  # raises for runtimes without the A/B mode
        args = profiler_args(self.target, per_node=per_node and ab_model is None) + list(extra_args or [])
        return self.profile(onnx_path, args, ab_model=ab_model)

    def fetch_file(self, remote_path: str, local_path: Path) -> Path:
        """Copy a file from the device to `local_path` atomically (complete or not there at all)."""
        return self.conn.get(remote_path, local_path)


def _tail(data: bytes) -> str:
    lines = [ln.strip() for ln in data.decode(errors="replace").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def profile_remote(target: TargetSpec, onnx_path: Path, profiler_args: Sequence[str] = (),
                   module: str | None = None) -> dict[str, Any]:
    """One-shot convenience: connect, preflight, profile, disconnect."""
    with RemoteRunner(target) as runner:
        return runner.profile(onnx_path, profiler_args, module=module)


