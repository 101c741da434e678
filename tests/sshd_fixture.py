"""A real OpenSSH server on 127.0.0.1 for the remote-profiling tests, and a torch-free Python for it.

The server runs as the current user with throwaway ed25519 keys in a temp dir. The "device" interpreter is
a venv of its own with only onnxruntime, numpy and psutil (the versions this venv has), built once and
cached under ~/.cache/edgeprune/test-remote-env/<key>; set EDGEPRUNE_TEST_REMOTE_PYTHON to use another.
"""

from __future__ import annotations

import fcntl
import getpass
import importlib.metadata
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

SSHD = Path("/usr/sbin/sshd")
REMOTE_PACKAGES = ("onnxruntime", "numpy", "psutil")


def sshd_missing_reason() -> str | None:
    if not SSHD.exists():
        return f"{SSHD} is missing: apt-get install -y --no-install-recommends openssh-server"
    if shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        return "the OpenSSH client (ssh, ssh-keygen) is missing: apt-get install -y openssh-client"
    if os.geteuid() == 0:
        try:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
        except OSError as exc:
            return f"cannot create /run/sshd for sshd: {exc}"
    return None


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgeprune-test", "-f", str(path)],
                   check=True, stdin=subprocess.DEVNULL)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SSHServer:
    """sshd on 127.0.0.1:<free port>, accepting `client_key` for the current user."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.user = getpass.getuser()
        self.host_key = keygen(root / "host_key")
        self.client_key = keygen(root / "client_key")
        (root / "authorized_keys").write_text((root / "client_key.pub").read_text())
        self.device_tmp = root / "device-tmp"  # the device's TMPDIR: private run dirs appear here
        self.device_cache = root / "device-cache"  # XDG_CACHE_HOME there: the device lock lives here
        self.device_tmp.mkdir()
        self.device_cache.mkdir()
        self.known_hosts = root / "known_hosts"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def _write_config(self) -> Path:
        r = self.root
        cfg = r / "sshd_config"
        cfg.write_text("\n".join([
            f"Port {self.port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {r / 'host_key'}",
            f"AuthorizedKeysFile {r / 'authorized_keys'}",
            f"PidFile {r / 'sshd.pid'}",
            "StrictModes no",  # the keys live under /tmp
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "PermitRootLogin prohibit-password",
            "Subsystem sftp internal-sftp",
            "LogLevel ERROR",
            # SHLVL=1 keeps bash from sourcing ~/.bashrc for each command (this machine's takes 0.25 s);
            # TMPDIR and XDG_CACHE_HOME keep the device's files inside the test's temp dir.
            f"SetEnv SHLVL=1 TMPDIR={self.device_tmp} XDG_CACHE_HOME={self.device_cache}",
            "",
        ]))
        return cfg

    def start(self, port: int | None = None) -> SSHServer:
        for _ in range(5):
            self.port = port or free_port()
            cfg = self._write_config()
            log = open(self.root / "sshd.log", "ab")
            self.proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(cfg)], stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log)
            log.close()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                        break
                except OSError:
                    time.sleep(0.05)
            if self.proc.poll() is None:
                self._record_host_key()
                return self
            if port:
                break
        raise RuntimeError(f"sshd did not start: {(self.root / 'sshd.log').read_text()[-2000:]}")

    def _record_host_key(self) -> None:
        pub = (self.root / "host_key.pub").read_text().split()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {pub[0]} {pub[1]}\n")

    def kill_all(self) -> None:
        """Like a reboot: the listener, every connection and every command they started die at once."""
        if self.proc is None:
            return
        try:
            parent = psutil.Process(self.proc.pid)
            procs = [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            procs = []
        for p in procs:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        self.proc.wait(timeout=5)
        psutil.wait_procs(procs[1:], timeout=0.5)  # orphans are reaped by init; SIGKILL has landed anyway
        self.proc = None

    def stop_listener(self) -> None:
        """Stop accepting new connections; established ones (an SSH master) live on."""
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=5)
            self.proc = None

    def host_fields(self, **overrides: object) -> dict[str, object]:
        fields: dict[str, object] = {
            "address": f"{self.user}@127.0.0.1",
            "port": self.port,
            "identity_file": str(self.client_key),
            "known_hosts_file": str(self.known_hosts),
            "connect_timeout_s": 5.0,
            "command_timeout_s": 120.0,
        }
        fields.update(overrides)
        return fields


# ---------------------------------------------------------------------------------------------------
# the device's Python


def _env_key() -> str:
    versions = "-".join(f"{name}{importlib.metadata.version(name)}" for name in REMOTE_PACKAGES)
    return f"py{sys.version_info[0]}.{sys.version_info[1]}-{versions}"


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "edgeprune" / "test-remote-env"


def _works(python: Path) -> bool:
    code = "import onnxruntime, numpy, psutil, importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is not None)"
    return python.is_file() and subprocess.run([str(python), "-c", code], capture_output=True).returncode == 0


def base_python() -> str:
    """The interpreter this venv was made from (a venv made from a venv's python inherits nothing)."""
    return getattr(sys, "_base_executable", None) or sys.executable


def build_remote_env(dest: Path) -> Path:
    """A venv at `dest` with this environment's onnxruntime, numpy and psutil versions, and no torch."""
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in REMOTE_PACKAGES]
    tmp = Path(tempfile.mkdtemp(prefix=dest.name + ".build-", dir=dest.parent))
    try:
        subprocess.run([base_python(), "-m", "venv", str(tmp)], check=True, capture_output=True)
        subprocess.run([str(tmp / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        *pins], check=True, capture_output=True, timeout=600)
        # venvs locate their site-packages relative to bin/python, so the finished one can be moved in.
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest / "bin" / "python"


def remote_python() -> tuple[Path | None, str]:
    """(a torch-free python with the runtime, "") or (None, why not)."""
    override = os.environ.get("EDGEPRUNE_TEST_REMOTE_PYTHON")
    if override:
        p = Path(override)
        return (p, "") if _works(p) else (None, f"EDGEPRUNE_TEST_REMOTE_PYTHON={override} cannot import "
                                                "onnxruntime/numpy/psutil, or can import torch")
    root = _cache_root()
    root.mkdir(parents=True, exist_ok=True)
    dest = root / _env_key()
    python = dest / "bin" / "python"
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test processes build it once
        if _works(python):
            return python, ""
        shutil.rmtree(dest, ignore_errors=True)
        try:
            build_remote_env(dest)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
            detail = getattr(exc, "stderr", b"") or b""
            tail = detail.decode(errors="replace").strip().splitlines()[-1:] if detail else []
            return None, f"cannot build the device venv at {dest} ({exc}; {' '.join(tail)}): run `make remote-test-env`"
    if not _works(python):
        return None, f"the device venv at {dest} does not import the runtime, or imports torch"
    return python, ""


def bare_python(dest: Path) -> Path:
    """A venv with nothing installed: a device where the runtime is missing."""
    subprocess.run([base_python(), "-m", "venv", "--without-pip", str(dest)], check=True, capture_output=True)
    return dest / "bin" / "python"


if __name__ == "__main__":  # `python tests/sshd_fixture.py`: build the cached device venv ahead of the tests
    py, why = remote_python()
    print(py if py else why)
    sys.exit(0 if py else 1)
