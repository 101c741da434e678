"""One SSH connection to a device, through the system's OpenSSH client.

Everything goes through one ControlMaster per connection object (a control socket in a private local
temp dir), so a whole prune pays one handshake. Remote commands are given as argument lists and every
element is quoted with `shlex.quote`: sshd hands the command line to the user's login shell, so quoting
is what keeps hostile paths and names inert. BatchMode is always on: no password or passphrase is ever
asked for, typed or logged.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TypeVar

from ..errors import EdgepruneError
from ..targets import HostSpec

log = logging.getLogger("edgeprune.remote")
T = TypeVar("T")

SERVER_ALIVE_INTERVAL_S = 5
SERVER_ALIVE_COUNT_MAX = 3
# Idle seconds before the background master exits by itself: a crashed edgeprune leaves none for long.
CONTROL_PERSIST_S = 300
_SOCKET_PATH_MAX = 100  # unix socket paths are limited to ~108 bytes


class SSHError(EdgepruneError):
    """The SSH connection itself failed (as opposed to the remote command)."""


class HostUnreachable(SSHError):
    """No connection could be made (refused, timed out, unknown name)."""


class ConnectionLost(SSHError):
    """An established connection dropped (network loss, device reboot)."""


class AuthenticationFailed(SSHError):
    """The device refused our key."""


class HostKeyError(SSHError):
    """The device's host key is unknown, or has changed."""


class RemoteTimeout(EdgepruneError):
    """A remote command ran past its time limit."""


# Connection failures worth another try: the device may be booting or the network may come back.
TRANSIENT_ERRORS: tuple[type[SSHError], ...] = (HostUnreachable, ConnectionLost)

# ssh's own stderr lines -> failure kind; the first matching pattern wins (order matters).
_FAILURE_PATTERNS: tuple[tuple[str, str], ...] = (
    ("hostkey-changed", r"REMOTE HOST IDENTIFICATION HAS CHANGED|Host key for .* has changed"),
    ("hostkey-unknown", r"No \S+ host key is known for|Host key verification failed"),
    ("auth", r"Permission denied \(|Too many authentication failures|no mutual signature"),
    ("resolve", r"Could not resolve hostname|Name or service not known"),
    ("unreachable", r"Connection refused|Connection timed out|No route to host|Network is unreachable|"
                    r"Operation timed out|kex_exchange_identification|banner exchange|Connection closed by \S+ port"),
    ("lost", r"closed by remote host|Connection reset|Broken pipe|not responding|client_loop|"
             r"packet_write_wait|mux_client|Control socket|lost connection|Connection closed"),
)


def classify_ssh_failure(stderr: str) -> str | None:
    """Which kind of connection failure ssh's stderr describes, or None when it names none."""
    for kind, pattern in _FAILURE_PATTERNS:
        if re.search(pattern, stderr):
            return kind
    return None


def remote_command(argv: Sequence[str | os.PathLike[str]]) -> str:
    """The command line for the device's login shell: every element quoted, none interpreted."""
    if not argv:
        raise ValueError("empty remote command")
    return " ".join(shlex.quote(os.fspath(a)) for a in argv)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _relevant_line(stderr: str, kind: str) -> str:
    pattern = dict(_FAILURE_PATTERNS)[kind]
    for line in stderr.splitlines():
        if re.search(pattern, line):
            return line.strip()
    return _last_line(stderr)


class SSHConnection:
    """A reusable connection to `host`: `open()` (or `with`), then `run`, `put`, `get`; `close()` ends it.

    Connection-level failures (ssh exit 255 with a connection error) are retried `retries` times with
    exponential backoff when the call allows it; a remote command that fails is never retried.
    """

    def __init__(self, host: HostSpec, *, retries: int = 2, backoff_s: float = 1.0, ssh: str = "ssh"):
        if not host.address or host.address.startswith("-"):
            raise EdgepruneError(f"invalid SSH destination {host.address!r}: use user@host")
        if host.identity_file and not Path(host.identity_file).expanduser().is_file():
            raise EdgepruneError(f"SSH identity file {host.identity_file} does not exist: fix [host] identity_file")
        self.host = host
        self.retries = max(0, retries)
        self.backoff_s = backoff_s
        self._ssh = shutil.which(ssh)
        if self._ssh is None:
            raise EdgepruneError("the OpenSSH client `ssh` is not installed here: install openssh-client")
        self._dir: str | None = None
        self._control_path: str | None = None
        self._finalizer: weakref.finalize | None = None
        self.connect_s: float | None = None  # seconds the master took to connect and authenticate

    # ---------------------------------------------------------------- lifecycle

    @property
    def destination(self) -> str:
        return self.host.address

    @property
    def label(self) -> str:
        return f"{self.host.address}:{self.host.port}" if self.host.port != 22 else self.host.address

    def __enter__(self) -> SSHConnection:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> SSHConnection:
        """Start the master connection (retrying transient failures); raises a clear SSHError."""
        if self._dir is None:
            base = tempfile.gettempdir()
            if len(base) > _SOCKET_PATH_MAX - 30:
                base = "/tmp"  # a long TMPDIR would overflow the socket path limit
            self._dir = tempfile.mkdtemp(prefix="edgeprune-ssh-", dir=base)  # 0700: the socket is ours alone
            self._control_path = os.path.join(self._dir, "cm")
            self._finalizer = weakref.finalize(self, _teardown, self._ssh, self._control_path, self._dir,
                                               self.destination)
        self._with_retries(self._start_master, retry=True)
        return self

    def close(self) -> None:
        """Stop the master and remove the local control dir. Safe to call twice."""
        if self._finalizer is not None:
            self._finalizer()
        self._dir = self._control_path = self._finalizer = None

    def master_alive(self) -> bool:
        if self._control_path is None or not os.path.exists(self._control_path):
            return False
        proc = subprocess.run([self._ssh, "-o", f"ControlPath={self._control_path}", "-O", "check", "--",
                               self.destination], stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
        return proc.returncode == 0

    def _options(self) -> list[str]:
        h = self.host
        opts = [
            "-T", "-x", "-a", "-p", str(int(h.port)),
            "-o", "BatchMode=yes",
            "-o", "PasswordAuthentication=no",
            "-o", "KbdInteractiveAuthentication=no",
            "-o", f"ConnectTimeout={max(1, math.ceil(h.connect_timeout_s))}",
            "-o", f"ServerAliveInterval={SERVER_ALIVE_INTERVAL_S}",
            "-o", f"ServerAliveCountMax={SERVER_ALIVE_COUNT_MAX}",
            "-o", f"StrictHostKeyChecking={'accept-new' if h.accept_new_host_key else 'yes'}",
            "-o", "ClearAllForwardings=yes",
            "-o", f"ControlPath={self._control_path}",
        ]
        if h.identity_file:
            opts += ["-i", str(Path(h.identity_file).expanduser()), "-o", "IdentitiesOnly=yes"]
        if h.known_hosts_file:
            opts += ["-o", f"UserKnownHostsFile={Path(h.known_hosts_file).expanduser()}"]
        return opts

    def _start_master(self) -> None:
        if self._control_path is None:
            raise EdgepruneError("SSHConnection used before open()")
        if os.path.exists(self._control_path) and self.master_alive():
            return
        argv = [self._ssh, *self._options(), "-o", "ControlMaster=yes", "-o", f"ControlPersist={CONTROL_PERSIST_S}",
                "-f", "-N", "--", self.destination]
        # The master forks into the background and keeps its stderr: a pipe would never reach EOF, so
        # give it a file and read that.
        err_path = os.path.join(self._dir or tempfile.gettempdir(), "master.err")
        t0 = time.perf_counter()
        with open(err_path, "w+b") as err:
            try:
                proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                      timeout=self.host.connect_timeout_s + 30)
                rc = proc.returncode
            except subprocess.TimeoutExpired:
                rc = None
            err.seek(0)
            stderr = err.read().decode(errors="replace")
        if rc is None:
            raise HostUnreachable(f"cannot reach {self.label}: no SSH session within "
                                  f"{self.host.connect_timeout_s + 30:.0f} s (is the device on the network?)")
        if rc != 0:
            raise self._failure(classify_ssh_failure(stderr) or "unreachable", stderr)
        self.connect_s = time.perf_counter() - t0
        log.debug("ssh master to %s up in %.2f s", self.label, self.connect_s)

    # ---------------------------------------------------------------- errors and retries

    def _failure(self, kind: str, stderr: str) -> SSHError:
        h, where = self.host, self.label
        line = _relevant_line(stderr, kind) if kind in dict(_FAILURE_PATTERNS) else _last_line(stderr)
        if kind == "auth":
            key = h.identity_file or "ssh's default keys"
            return AuthenticationFailed(
                f"SSH authentication to {where} failed ({line}): the key ({key}) was refused. Set [host] "
                "identity_file to a key whose public half is in ~/.ssh/authorized_keys on the device "
                "(edgeprune never uses passwords)")
        if kind == "hostkey-unknown":
            kh = h.known_hosts_file or "~/.ssh/known_hosts"
            return HostKeyError(
                f"the host key of {where} is not known ({kh}): check it and add it (e.g. connect once with "
                f"`ssh -p {h.port} {h.address}`), or pass --accept-new-host-key "
                "(accept_new_host_key = true in [host]) to trust it on first use")
        if kind == "hostkey-changed":
            return HostKeyError(
                f"the host key of {where} has CHANGED since it was recorded: this can be a man-in-the-middle. "
                "If the device was reinstalled, remove the old key with "
                f"`ssh-keygen -R '[{h.address.split('@')[-1]}]:{h.port}'` and connect again")
        if kind == "resolve":
            return HostUnreachable(f"cannot resolve the device name in {h.address!r} ({line}): check [host] address")
        if kind == "lost":
            return ConnectionLost(f"the SSH connection to {where} was lost ({line or 'connection closed'})")
        return HostUnreachable(f"cannot reach {where} ({line or 'ssh exited 255'}): is the device on and "
                               "on the network, and sshd running there?")

    def _with_retries(self, fn: Callable[[], T], *, retry: bool) -> T:
        attempts = 1 + (self.retries if retry else 0)
        for i in range(attempts):
            try:
                return fn()
            except TRANSIENT_ERRORS as exc:
                if i + 1 >= attempts:
                    if attempts > 1:
                        exc.args = (f"{exc.args[0]} (after {attempts} attempts)",)
                    raise
                delay = self.backoff_s * (2**i)
                log.warning("%s; retrying in %.1f s", exc, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

    # ---------------------------------------------------------------- commands

    def run(
        self,
        argv: Sequence[str | os.PathLike[str]],
        timeout: float | None = None,
        *,
        stdin: bytes | IO[bytes] | None = None,
        stdout: IO[bytes] | None = None,
        keep_stdin_open: bool = False,
        retry: bool = True,
        check: bool = False,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run `argv` on the device (each element quoted) and return its exit status and output.

        `stdin` feeds bytes or a file; `stdout` sends output to a file instead of memory. With
        `keep_stdin_open` the remote stdin stays open until the command ends (its EOF then tells the
        device that we went away). `retry` re-runs on connection failures: use it only for commands that
        are safe to repeat. `check` raises EdgepruneError when the remote command fails.
        """
        command = remote_command(argv)
        timeout = self.host.command_timeout_s if timeout is None else timeout
        if hasattr(stdin, "seek"):
            start_pos = stdin.tell()  # type: ignore[union-attr]

        def once() -> subprocess.CompletedProcess[bytes]:
            if self._control_path is None:
                raise EdgepruneError("SSHConnection used before open()")
            if not os.path.exists(self._control_path):
                self._start_master()  # it idled out (ControlPersist) or died with the connection
            if hasattr(stdin, "seek"):
                stdin.seek(start_pos)  # type: ignore[union-attr]
            if stdout is not None:
                stdout.seek(0)
                stdout.truncate()
            full = [self._ssh, *self._options(), "-o", "ControlMaster=no", "--", self.destination, command]
            return self._invoke(full, command, timeout, stdin, stdout, keep_stdin_open)

        proc = self._with_retries(once, retry=retry)
        if check and proc.returncode != 0:
            err = proc.stderr.decode(errors="replace")
            raise EdgepruneError(f"command on {self.label} failed (exit {proc.returncode}): "
                                 f"{_last_line(err) or argv[0]}")
        return proc

    def _invoke(self, full: list[str], command: str, timeout: float, stdin: bytes | IO[bytes] | None,
                stdout: IO[bytes] | None, keep_stdin_open: bool) -> subprocess.CompletedProcess[bytes]:
        log.debug("ssh %s: %s", self.label, command if len(command) < 300 else command[:300] + "...")
        hold_fd = None
        kwargs: dict = {"stdout": stdout if stdout is not None else subprocess.PIPE, "stderr": subprocess.PIPE}
        if isinstance(stdin, bytes):
            kwargs["input"] = stdin
        elif stdin is not None:
            kwargs["stdin"] = stdin
        elif keep_stdin_open:
            read_fd, hold_fd = os.pipe()
            kwargs["stdin"] = read_fd
        else:
            kwargs["stdin"] = subprocess.DEVNULL
        try:
            proc = subprocess.run(full, timeout=timeout, **kwargs)
        except subprocess.TimeoutExpired as exc:
            raise RemoteTimeout(
                f"a command on {self.label} did not finish within {timeout:.0f} s; raise [host] "
                "command_timeout_s if the device is just slow") from exc
        finally:
            if hold_fd is not None:
                os.close(kwargs["stdin"])
                os.close(hold_fd)
        if proc.stdout is None:
            proc.stdout = b""
        if proc.returncode == 255:
            stderr = proc.stderr.decode(errors="replace")
            kind = classify_ssh_failure(stderr)
            if kind is None and not self.master_alive():
                kind = "lost"  # the mux client says nothing when its master's connection dies
            if kind is not None:
                raise self._failure(kind, stderr)
        return proc

    def put(self, local: str | os.PathLike[str], remote: str) -> None:
        """Copy a local file to `remote` on the device (private mode, overwrites)."""
        with open(local, "rb") as fh:
            self.run(["sh", "-c", 'umask 077 && cat > "$1"', "sh", remote], stdin=fh, check=True)

    def get(self, remote: str, local: str | os.PathLike[str]) -> Path:
        """Copy `remote` from the device to `local`, atomically: `local` is complete or untouched."""
        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=local.parent, prefix=f".{local.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "w+b") as fh:
                proc = self.run(["cat", "--", remote], stdout=fh)
                if proc.returncode != 0:
                    raise EdgepruneError(f"cannot read {remote} on {self.label}: "
                                         f"{_last_line(proc.stderr.decode(errors='replace'))}")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, local)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return local


def _teardown(ssh: str, control_path: str, directory: str, destination: str) -> None:
    if os.path.exists(control_path):
        try:
            subprocess.run([ssh, "-o", f"ControlPath={control_path}", "-O", "exit", "--", destination],
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=15)
        except (OSError, subprocess.SubprocessError):
            pass
    shutil.rmtree(directory, ignore_errors=True)
