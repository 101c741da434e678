"""The device-side helper: a stdlib-only script that edgeprune runs with the device's own Python.

It is never imported on the device: edgeprune passes its source with `python -c SOURCE <command> ...`
(before anything is copied) or runs the copy shipped into the private run directory. Keep it free of
anything newer than Python 3.6 syntax so that an old interpreter still gets far enough to say it is old.

Commands (the result is one line on stdout: MARKER followed by JSON; everything else is noise to ignore,
e.g. what a user's login files print):
  probe [--root DIR] MODULE...   interpreter, platform, which modules import (and their versions), Jetson state
  unpack PARENT                  sweep stale run dirs, create a private (0700) run dir, extract a tar from stdin
  run --dir DIR [--lock-file F] [--lock-timeout S] [--watch-stdin] -- ARGV...
                                 take the device-wide lock, run ARGV in DIR, report the run window
"""

import errno
import fcntl
import glob
import json
import os
import platform
import re
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import tempfile
import threading
import time

MARKER = "EDGEPRUNE-AGENT "
RUN_DIR_PREFIX = "edgeprune."
ALIVE_FILE = ".alive"
# A run dir left behind by a dropped connection is removed by a later run once it is this old and no
# agent holds its .alive lock.
STALE_AFTER_S = 6 * 3600
EXIT_LOCK_TIMEOUT = 75
EXIT_ABANDONED = 76


def emit(obj):
    sys.stdout.write(MARKER + json.dumps(obj) + "\n")
    sys.stdout.flush()


# ------------------------------------------------------------------------------------------------
# probe


def _read_first_line(path):
    try:
        with open(path) as fh:
            return fh.readline().strip()
    except OSError:
        return None


def _module_status(name):
    try:
        mod = __import__(name)
    except Exception as exc:  # an ImportError, or a broken install that fails while importing
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    info = {"ok": True, "version": str(getattr(mod, "__version__", "") or "")}
    if name == "onnxruntime":
        try:
            info["providers"] = list(mod.get_available_providers())
        except Exception:
            info["providers"] = []
    return info


def parse_nvpmodel(text):
    """`nvpmodel -q` prints `NV Power Mode: MAXN` then the mode id."""
    mode, mode_id = None, None
    for line in text.splitlines():
        line = line.strip()
        m = re.match(r"NV Power Mode\s*:\s*(.+)$", line)
        if m:
            mode = m.group(1).strip()
        elif mode is not None and mode_id is None and re.match(r"^\d+$", line):
            mode_id = int(line)
    return mode, mode_id


def _freq_pair_locked(min_path, max_path):
    lo, hi = _read_first_line(min_path), _read_first_line(max_path)
    if lo is None or hi is None:
        return None
    return lo == hi


GPU_DEVFREQ_HINTS = ("gpu", "ga10b", "gv11b", "gp10b", "gm20b")


def clock_state(root="/"):
    """Whether CPU and GPU clocks are pinned (min == max, as `jetson_clocks` leaves them)."""
    cpus = []
    for d in sorted(glob.glob(os.path.join(root, "sys/devices/system/cpu/cpu[0-9]*/cpufreq"))):
        state = _freq_pair_locked(os.path.join(d, "scaling_min_freq"), os.path.join(d, "scaling_max_freq"))
        if state is not None:
            cpus.append(state)
    gpus = []
    for d in sorted(glob.glob(os.path.join(root, "sys/class/devfreq/*"))):
        name = os.path.basename(d).lower()
        if any(h in name for h in GPU_DEVFREQ_HINTS):
            state = _freq_pair_locked(os.path.join(d, "min_freq"), os.path.join(d, "max_freq"))
            if state is not None:
                gpus.append(state)
    cpu_locked = all(cpus) if cpus else None
    gpu_locked = all(gpus) if gpus else None
    known = [s for s in (cpu_locked, gpu_locked) if s is not None]
    return {"cpu_locked": cpu_locked, "gpu_locked": gpu_locked, "clocks_locked": all(known) if known else None}


def jetson_state(root="/"):
    release = _read_first_line(os.path.join(root, "etc/nv_tegra_release"))
    if release is None:
        return None
    info = {"release": release, "power_mode": None, "power_mode_id": None, "power_mode_error": None}
    tool = shutil.which("nvpmodel")
    if tool is None:
        info["power_mode_error"] = "nvpmodel not found"
    else:
        try:
            out = subprocess.run([tool, "-q"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 timeout=15, universal_newlines=True).stdout  # noqa: UP021 (3.6 has no text=)
            info["power_mode"], info["power_mode_id"] = parse_nvpmodel(out)
            if info["power_mode"] is None:
                info["power_mode_error"] = (out.strip().splitlines() or ["no output"])[-1]
        except (OSError, subprocess.SubprocessError) as exc:
            info["power_mode_error"] = str(exc)
    info.update(clock_state(root))
    return info


def cmd_probe(args):
    root = "/"
    if args[:1] == ["--root"]:
        root, args = args[1], args[2:]
    emit({
        "python": {
            "executable": sys.executable,
            "version": platform.python_version(),
            "version_info": list(sys.version_info[:3]),
            "implementation": platform.python_implementation(),
        },
        "platform": {"system": platform.system(), "machine": platform.machine(), "release": platform.release(),
                     "node": platform.node()},
        "modules": {name: _module_status(name) for name in args},
        "jetson": jetson_state(root),
        "tmpdir": tempfile.gettempdir(),
    })
    return 0


# ------------------------------------------------------------------------------------------------
# unpack


def _try_lock(path):
    """Lock `path` without waiting; return the open fd, or None when someone else holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return None
        raise
    return fd


def sweep_stale(parent, now=None, stale_after_s=STALE_AFTER_S):
    """Remove this user's old run dirs that no live agent holds (left by dropped connections)."""
    now = time.time() if now is None else now
    removed = []
    try:
        names = os.listdir(parent)
    except OSError:
        return removed
    for name in names:
        path = os.path.join(parent, name)
        if not name.startswith(RUN_DIR_PREFIX):
            continue
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or now - st.st_mtime < stale_after_s:
            continue
        fd = None
        try:
            fd = _try_lock(os.path.join(path, ALIVE_FILE))
        except OSError:
            pass
        if fd is None:
            continue
        try:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        finally:
            os.close(fd)
    return removed


def _safe_member(member):
    name = member.name
    parts = name.split("/")
    if name.startswith("/") or ".." in parts or not (member.isfile() or member.isdir()):
        raise ValueError(f"refusing tar member {name!r}")
    return name


def extract(stream, dest):
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            target = os.path.join(dest, _safe_member(member))
            if member.isdir():
                os.makedirs(target, mode=0o700, exist_ok=True)
                continue
            os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
            src = tar.extractfile(member)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)


def cmd_unpack(args):
    parent = os.path.expanduser(args[0]) if args and args[0] else tempfile.gettempdir()
    os.makedirs(parent, mode=0o700, exist_ok=True)
    swept = sweep_stale(parent)
    path = tempfile.mkdtemp(prefix=RUN_DIR_PREFIX, dir=parent)  # mode 0700
    try:
        extract(sys.stdin.buffer, path)
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    emit({"dir": os.path.abspath(path), "swept": swept})
    return 0


# ------------------------------------------------------------------------------------------------
# run


def default_lock_file():
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "edgeprune", "device.lock")


class _Abandoned(Exception):
    pass


def _kill_group(proc, grace_s=5.0):
    if proc is None or proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except OSError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def cmd_run(args):
    opts = {"--dir": None, "--lock-file": None, "--lock-timeout": "0"}
    watch_stdin = False
    while args and args[0] != "--":
        if args[0] == "--watch-stdin":
            watch_stdin, args = True, args[1:]
        elif args[0] in opts and len(args) > 1:
            opts[args[0]], args = args[1], args[2:]
        else:
            sys.stderr.write(f"agent run: unexpected argument {args[0]!r}\n")
            return 2
    argv = args[1:]
    run_dir = opts["--dir"]
    lock_file = opts["--lock-file"] or default_lock_file()
    lock_timeout = float(opts["--lock-timeout"])
    if not run_dir or not argv:
        sys.stderr.write("agent run: needs --dir DIR -- ARGV...\n")
        return 2

    abandoned = threading.Event()
    state = {"proc": None}

    def hang_up(*_):
        abandoned.set()
        _kill_group(state["proc"], grace_s=2.0)

    if watch_stdin:
        # The client keeps our stdin open for the whole run; EOF means its connection went away, so
        # nobody will collect the result: stop measuring and free the device.
        def watch():
            try:
                while os.read(0, 65536):
                    pass
            except OSError:
                pass
            hang_up()

        threading.Thread(target=watch, daemon=True).start()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: (hang_up(), sys.exit(EXIT_ABANDONED)))

    alive = _try_lock(os.path.join(run_dir, ALIVE_FILE))  # marks the dir in use for sweep_stale
    os.makedirs(os.path.dirname(lock_file), mode=0o700, exist_ok=True)
    t_ask = time.time()
    lock_fd, told = None, False
    try:
        while lock_fd is None:
            if abandoned.is_set():
                raise _Abandoned()
            lock_fd = _try_lock(lock_file)
            if lock_fd is None:
                if not told:
                    holder = _read_first_line(lock_file) or "another process"
                    sys.stderr.write(f"edgeprune: waiting for the device lock {lock_file} (held by {holder})\n")
                    sys.stderr.flush()
                    told = True
                if lock_timeout > 0 and time.time() - t_ask > lock_timeout:
                    emit({"error": "lock-timeout", "lock_file": lock_file, "holder": _read_first_line(lock_file),
                          "waited_s": time.time() - t_ask})
                    return EXIT_LOCK_TIMEOUT
                time.sleep(0.1)
        os.ftruncate(lock_fd, 0)
        os.write(lock_fd, f"pid {os.getpid()} since {time.strftime('%Y-%m-%dT%H:%M:%S')}\n".encode())
        t_start = time.time()
        # The child's stdout goes to our stderr so that our stdout carries only the result line.
        state["proc"] = subprocess.Popen(argv, cwd=run_dir, stdin=subprocess.DEVNULL, stdout=2,
                                         start_new_session=True)
        if abandoned.is_set():
            _kill_group(state["proc"], grace_s=2.0)
        rc = state["proc"].wait()
        t_end = time.time()
    except _Abandoned:
        return EXIT_ABANDONED
    finally:
        _kill_group(state["proc"], grace_s=2.0)
        if lock_fd is not None:
            os.close(lock_fd)
        if alive is not None:
            os.close(alive)
    if abandoned.is_set():
        return EXIT_ABANDONED
    emit({"returncode": rc, "lock_file": lock_file, "lock_wait_s": t_start - t_ask,
          "started_unix": t_start, "ended_unix": t_end, "agent_pid": os.getpid()})
    return rc


COMMANDS = {"probe": cmd_probe, "unpack": cmd_unpack, "run": cmd_run}


def main(argv):
    if not argv or argv[0] not in COMMANDS:
        sys.stderr.write("usage: agent {{{}}} ...\n".format(",".join(sorted(COMMANDS))))
        return 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
