"""Remote profiling over SSH, against a real OpenSSH server on 127.0.0.1 (see sshd_fixture.py).

The "device" runs the profiler with a Python environment of its own that cannot import torch.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import onnx
import psutil
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeprune.errors import EdgepruneError
from edgeprune.remote import (
    AuthenticationFailed,
    ConnectionLost,
    HostKeyError,
    HostUnreachable,
    RemoteRunner,
    SSHConnection,
    classify_ssh_failure,
    remote_command,
    validate_profile,
)
from edgeprune.remote import agent as device_agent
from edgeprune.remote import runner as runner_mod
from edgeprune.remote.preflight import REQUIREMENTS, install_command, missing_requirements, parse_agent_output
from edgeprune.targets import HostSpec, load_target

sys.path.insert(0, str(Path(__file__).parent))
from sshd_fixture import SSHServer, bare_python, keygen, remote_python, sshd_missing_reason  # noqa: E402

FAST = ["--warmup", "2", "--iterations", "10", "--min-time", "0", "--node-iterations", "2"]

needs_sshd = pytest.mark.skipif(sshd_missing_reason() is not None, reason=sshd_missing_reason() or "")


# ---------------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def device_python() -> Path:
    python, why = remote_python()
    if python is None:
        pytest.skip(why)
    return python


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    srv = SSHServer(tmp_path_factory.mktemp("sshd")).start()
    yield srv
    srv.kill_all()


@pytest.fixture
def own_server(tmp_path: Path):
    """A server this test may stop or kill."""
    srv = SSHServer(tmp_path / "sshd").start()
    yield srv
    srv.kill_all()


def make_target(srv: SSHServer, python: Path | str, **host: object):
    return load_target("cpu").with_host(HostSpec(**srv.host_fields(python=str(python), **host)))  # type: ignore[arg-type]


def tiny_model(path: Path, external: bool = False) -> Path:
    w = numpy_helper.from_array(np.random.RandomState(0).randn(4, 3, 3, 3).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
         helper.make_node("Relu", ["c"], ["y"], name="relu")],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if external:
        onnx.save(model, str(path), save_as_external_data=True, location=path.name + ".data", size_threshold=0)
    else:
        onnx.save(model, str(path))
    return path


def run_dirs(srv: SSHServer) -> list[str]:
    return sorted(p.name for p in srv.device_tmp.iterdir() if p.name.startswith("edgeprune."))


STAND_IN = '''
import argparse, json, os, sys, time
p = argparse.ArgumentParser()
p.add_argument("model"); p.add_argument("--out", required=True); p.add_argument("--sleep", type=float, default=0)
p.add_argument("--engine-out"); p.add_argument("--fail", action="store_true"); p.add_argument("--tag")
p.add_argument("--timing-cache")
a = p.parse_args()
if a.fail:
    print("error: the stand-in was told to fail", file=sys.stderr); sys.exit(1)
time.sleep(a.sleep)
if a.engine_out:
    open(a.engine_out, "wb").write(b"ENGINE:" + open(a.model, "rb").read()[:4])
json.dump({"schema_version": 1, "kind": "edgeprune.raw_profile", "runtime": "stand-in", "model": a.model,
           "settings": {}, "conditions": {"python_executable": sys.executable}, "latency_ms": {"p50": 1.0},
           "samples_ms": [1.0], "nodes": [], "memory": {}}, open(a.out, "w"))
'''


@pytest.fixture
def stand_in_profilers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Ship a tiny `profilers/` with a controllable profiler instead of the real one."""
    pkg = tmp_path / "stand-in" / "profilers"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "fake_profiler.py").write_text(STAND_IN)
    monkeypatch.setattr(runner_mod, "profilers_dir", lambda: pkg)
    return pkg


# ---------------------------------------------------------------------------------------------------
# pure logic (no server)


def test_classify_ssh_failure() -> None:
    assert classify_ssh_failure("root@h: Permission denied (publickey).") == "auth"
    assert classify_ssh_failure("No ED25519 host key is known for [h]:22 and you have requested strict "
                                "checking.\nHost key verification failed.") == "hostkey-unknown"
    assert classify_ssh_failure("@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @\nHost key verification "
                                "failed.") == "hostkey-changed"
    assert classify_ssh_failure("ssh: connect to host h port 22: Connection refused") == "unreachable"
    assert classify_ssh_failure("ssh: Could not resolve hostname nope: Name or service not known") == "resolve"
    assert classify_ssh_failure("Connection to h closed by remote host.") == "lost"
    assert classify_ssh_failure("Timeout, server h not responding.") == "lost"
    assert classify_ssh_failure("error: the profiler failed") is None


def test_remote_command_quotes_every_element() -> None:
    argv = ["python3", "-m", "profilers.ort_profiler", "a;touch /tmp/pwned.onnx", "$(reboot)", "`id`", "it's", ""]
    line = remote_command(argv)
    assert shlex.split(line) == argv  # the remote shell sees exactly these words, nothing interpreted


def test_ssh_options_strict_by_default(tmp_path: Path) -> None:
    key = keygen(tmp_path / "k")
    strict = SSHConnection(HostSpec(address="u@h", identity_file=str(key)))._options()
    assert "StrictHostKeyChecking=yes" in strict and "BatchMode=yes" in strict
    assert "IdentitiesOnly=yes" in strict
    relaxed = SSHConnection(HostSpec(address="u@h", accept_new_host_key=True))._options()
    assert "StrictHostKeyChecking=accept-new" in relaxed
    with pytest.raises(EdgepruneError, match="identity file"):
        SSHConnection(HostSpec(address="u@h", identity_file=str(tmp_path / "missing")))


def test_file_options_are_renamed_for_the_device(tmp_path: Path) -> None:
    args, files = runner_mod.rewrite_file_options(["--threads", "2", "--engine-out", str(tmp_path / "e.plan"),
                                                   f"--timing-cache={tmp_path / 't.cache'}"])
    assert args == ["--threads", "2", "--engine-out", "engine.plan", "--timing-cache", "timing.cache"]
    assert files["--engine-out"][1] == tmp_path / "e.plan" and files["--engine-out"][0].download
    with pytest.raises(EdgepruneError, match="--out"):
        runner_mod.rewrite_file_options(["--out", "x.json"])


def test_validate_profile_rejects_foreign_documents() -> None:
    assert validate_profile(b'{"kind": "edgeprune.raw_profile", "schema_version": 1}', "d")["schema_version"] == 1
    for bad in (b"{not json", b'{"kind": "other", "schema_version": 1}', b'{"kind": "edgeprune.raw_profile"}'):
        with pytest.raises(EdgepruneError):
            validate_profile(bad, "d")


def test_missing_requirements_and_install_command() -> None:
    mods = {"onnxruntime": {"ok": False}, "numpy": {"ok": True}, "psutil": {"ok": False}}
    missing = missing_requirements("onnxruntime", mods)
    assert [r.label for r in missing] == ["onnxruntime", "psutil"]
    assert install_command("python3", missing) == "python3 -m pip install onnxruntime psutil"
    trt = missing_requirements("tensorrt", {"tensorrt": {"ok": True}, "torch": {"ok": True}, "numpy": {"ok": True},
                                            "psutil": {"ok": True}})
    assert trt == []  # torch stands in for pycuda
    assert set(REQUIREMENTS) == {"onnxruntime", "tensorrt"}


def test_agent_jetson_probe_reads_power_mode_and_clocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Jetson logic against a fake /etc and /sys (unverified on a real Jetson)."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/nv_tegra_release").write_text("# R36 (release), REVISION: 4.0\n")
    for cpu, (lo, hi) in enumerate([("729600", "2201600"), ("2201600", "2201600")]):
        d = root / f"sys/devices/system/cpu/cpu{cpu}/cpufreq"
        d.mkdir(parents=True)
        (d / "scaling_min_freq").write_text(lo)
        (d / "scaling_max_freq").write_text(hi)
    gpu = root / "sys/class/devfreq/17000000.ga10b"
    gpu.mkdir(parents=True)
    (gpu / "min_freq").write_text("1300500000")
    (gpu / "max_freq").write_text("1300500000")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvpmodel").write_text("#!/bin/sh\necho 'NV Power Mode: MAXN'\necho 0\n")
    (bin_dir / "nvpmodel").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    info = device_agent.jetson_state(str(root))
    assert info["power_mode"] == "MAXN" and info["power_mode_id"] == 0
    assert info["cpu_locked"] is False and info["gpu_locked"] is True and info["clocks_locked"] is False
    (root / "sys/devices/system/cpu/cpu0/cpufreq/scaling_min_freq").write_text("2201600")
    assert device_agent.jetson_state(str(root))["clocks_locked"] is True
    assert device_agent.jetson_state(str(tmp_path / "not-a-jetson")) is None


def test_agent_refuses_escaping_tar_members(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = b"x"
        info = tarfile.TarInfo("../escaped")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    (tmp_path / "dest").mkdir()
    with pytest.raises(ValueError, match="refusing"):
        device_agent.extract(buf, str(tmp_path / "dest"))
    assert not (tmp_path / "escaped").exists()


def test_agent_sweeps_only_stale_unlocked_run_dirs(tmp_path: Path) -> None:
    old, fresh, busy = (tmp_path / f"edgeprune.{n}" for n in ("old", "fresh", "busy"))
    for d in (old, fresh, busy):
        d.mkdir()
    long_ago = time.time() - device_agent.STALE_AFTER_S - 60
    for d in (old, busy):
        os.utime(d, (long_ago, long_ago))
    held = device_agent._try_lock(str(busy / device_agent.ALIVE_FILE))
    os.utime(busy, (long_ago, long_ago))
    try:
        removed = device_agent.sweep_stale(str(tmp_path))
    finally:
        os.close(held)
    assert removed == [str(old)]
    assert fresh.exists() and busy.exists() and not old.exists()


# ---------------------------------------------------------------------------------------------------
# against a real sshd


@needs_sshd
def test_remote_profile_is_a_local_profile_made_by_a_torch_free_interpreter(
        server: SSHServer, device_python: Path, tmp_path: Path) -> None:
    model = tiny_model(tmp_path / "tiny.onnx")
    local_out = tmp_path / "local.json"
    subprocess.run([sys.executable, "-m", "edgeprune.profilers.ort_profiler", str(model), "--out", str(local_out),
                    *FAST], check=True, capture_output=True)
    local = json.loads(local_out.read_text())

    probe = subprocess.run([str(device_python), "-c", "import importlib.util as u; print(u.find_spec('torch'))"],
                           capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "None"  # the device's interpreter really cannot import torch

    with RemoteRunner(make_target(server, device_python), backoff_s=0.1) as runner:
        assert runner.preflight_info is not None
        assert runner.preflight_info["python"]["executable"] == str(device_python)
        assert runner.preflight_info["modules"]["onnxruntime"]["ok"]
        remote = runner.profile(model, FAST)

    assert set(remote) - {"remote"} == set(local)
    assert set(remote["latency_ms"]) == set(local["latency_ms"])
    assert [n["name"] for n in remote["nodes"]] == [n["name"] for n in local["nodes"]]
    assert remote["conditions"]["python_executable"] == str(device_python) != local["conditions"]["python_executable"]
    assert remote["remote"]["interpreter"] == str(device_python)
    assert remote["model"]["path"] == str(model) and remote["model"]["sha256"] == local["model"]["sha256"]
    assert remote["remote"]["host"] == server.host_fields()["address"]
    assert run_dirs(server) == []  # the private run dir is gone
    assert (server.device_cache / "edgeprune" / "device.lock").is_file()


@needs_sshd
def test_open_runner_measures_a_remote_target(server: SSHServer, device_python: Path, tmp_path: Path) -> None:
    from edgeprune.runners import open_runner

    target = make_target(server, device_python).with_measure(warmup=2, iterations=10, min_time_s=0.0)
    with open_runner(target) as runner:
        assert isinstance(runner, RemoteRunner)
        profile = runner.measure(tiny_model(tmp_path / "m.onnx"), per_node=False)
    assert profile["settings"]["iterations"] == 10 and profile["nodes"] == []
    assert profile["remote"]["interpreter"] == str(device_python)


@needs_sshd
def test_hostile_names_are_inert(server: SSHServer, device_python: Path, tmp_path: Path) -> None:
    marker_dir = tmp_path / "markers"
    marker_dir.mkdir()
    hostile = f"a;touch {marker_dir}/pwned"
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    # The model keeps its weights in a sidecar whose (hostile) name is recorded inside the model.
    model = tiny_model(model_dir / "a;touch pwned-model;$(touch pwned-model2).onnx", external=True)
    assert Path(str(model) + ".data").is_file()
    extra = model_dir / "$(touch pwned2) `touch pwned3`.txt"
    extra.write_text("extra")
    workdir = tmp_path / f"{hostile}'\"$(touch {marker_dir}/pwned4)"
    target = make_target(server, device_python, workdir=str(workdir))
    with RemoteRunner(target, backoff_s=0.1) as runner:
        profile = runner.profile(model, FAST, extra_files=[extra])
    assert profile["kind"] == "edgeprune.raw_profile" and profile["remote"]["run_dir"].startswith(str(workdir))
    assert list(marker_dir.iterdir()) == []
    assert not any("pwned" in p.name for p in Path.home().iterdir())
    assert [p for p in workdir.iterdir() if p.name.startswith("edgeprune.")] == []


@needs_sshd
def test_wrong_key_is_a_clear_auth_error(server: SSHServer, tmp_path: Path) -> None:
    wrong = keygen(tmp_path / "wrong_key")
    conn = SSHConnection(HostSpec(**server.host_fields(identity_file=str(wrong))), backoff_s=0.1)  # type: ignore[arg-type]
    with pytest.raises(AuthenticationFailed, match="authentication .* failed.*identity_file"):
        conn.open()
    conn.close()


@needs_sshd
def test_unknown_host_key_needs_opt_in(server: SSHServer, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    fields = server.host_fields(known_hosts_file=str(known))
    with pytest.raises(HostKeyError, match="--accept-new-host-key"):
        SSHConnection(HostSpec(**fields)).open()  # type: ignore[arg-type]
    with SSHConnection(HostSpec(**{**fields, "accept_new_host_key": True})) as conn:  # type: ignore[arg-type]
        assert conn.run(["true"]).returncode == 0
    assert "ssh-ed25519" in known.read_text()
    with SSHConnection(HostSpec(**fields)) as conn:  # type: ignore[arg-type]
        assert conn.run(["true"]).returncode == 0  # strict checking passes now that the key is recorded


@needs_sshd
def test_missing_runtime_is_named_with_its_install_command(server: SSHServer, tmp_path: Path) -> None:
    bare = bare_python(tmp_path / "bare-venv")
    with pytest.raises(EdgepruneError) as err:
        RemoteRunner(make_target(server, bare), backoff_s=0.1).open()
    msg = str(err.value)
    assert "onnxruntime, numpy, psutil" in msg
    assert f"{bare} -m pip install onnxruntime numpy psutil" in msg
    with pytest.raises(EdgepruneError, match="no Python interpreter"):
        RemoteRunner(make_target(server, tmp_path / "no" / "python3"), backoff_s=0.1).open()


OLD_PYTHON = Path("/root/.pyenv/versions/3.6.15/bin/python")  # present on this project's machine image


@needs_sshd
@pytest.mark.skipif(not OLD_PYTHON.exists(), reason=f"no old interpreter at {OLD_PYTHON}")
def test_too_old_python_is_named(server: SSHServer) -> None:
    with pytest.raises(EdgepruneError, match=r"is Python 3\.6\.15; the profiler needs >= 3\.8"):
        RemoteRunner(make_target(server, OLD_PYTHON), backoff_s=0.1).open()


def test_agent_parses_on_old_pythons() -> None:
    """The agent must run far enough on an old device Python to report its version."""
    import ast

    ast.parse(Path(device_agent.__file__).read_text(), feature_version=(3, 6))


@needs_sshd
def test_engine_comes_back_and_profiler_errors_are_not_retried(
        server: SSHServer, device_python: Path, tmp_path: Path, stand_in_profilers: Path) -> None:
    model = tiny_model(tmp_path / "m.onnx")
    engine = tmp_path / "out" / "m.plan"
    with RemoteRunner(make_target(server, device_python), retries=2, backoff_s=0.1) as runner:
        cache = tmp_path / "out" / "timing.cache"  # optional: the stand-in writes none, so none comes back
        profile = runner.profile(model, ["--engine-out", str(engine), "--timing-cache", str(cache)],
                                 module="fake_profiler")
        assert profile["remote"]["attempts"] == 1
        assert engine.read_bytes() == b"ENGINE:" + model.read_bytes()[:4]
        assert not cache.exists()
        with pytest.raises(EdgepruneError, match="exit 1.*told to fail"):
            runner.profile(model, ["--fail"], module="fake_profiler")
        with pytest.raises(EdgepruneError, match="unknown profiler module"):
            runner.profile(model, [], module="nope")
    assert run_dirs(server) == []


@needs_sshd
def test_concurrent_profiles_serialise_on_the_device_lock(
        server: SSHServer, device_python: Path, tmp_path: Path, stand_in_profilers: Path) -> None:
    model = tiny_model(tmp_path / "m.onnx")
    target = make_target(server, device_python)
    tag = f"tag-{uuid.uuid4()}"
    results: dict[str, dict] = {}
    errors: list[BaseException] = []

    def one(name: str, runner: RemoteRunner, args: list[str]) -> None:
        try:
            results[name] = runner.profile(model, args, module="fake_profiler")["remote"]
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    # Two runners with their own connections stand for two edgeprune processes.
    with RemoteRunner(target, check=False) as a, RemoteRunner(target, check=False) as b:
        first = threading.Thread(target=one, args=("first", a, ["--sleep", "1.0", "--tag", tag]))
        first.start()
        assert _wait_for(lambda: _profiler_running(tag))  # the first one is measuring now...
        second = threading.Thread(target=one, args=("second", b, []))
        second.start()  # ...when the second one asks for the device
        for t in (first, second):
            t.join(timeout=60)
    assert not errors and set(results) == {"first", "second"}, errors
    assert results["first"]["run_ended_unix"] <= results["second"]["run_started_unix"]  # no overlap
    assert results["second"]["lock_wait_s"] > 0


@needs_sshd
def test_control_master_is_reused(own_server: SSHServer) -> None:
    host = HostSpec(**own_server.host_fields())  # type: ignore[arg-type]
    fresh, reused = [], []
    with SSHConnection(host) as conn:
        for _ in range(3):  # interleaved, so that load on the machine hits both alike
            t0 = time.perf_counter()
            with SSHConnection(host) as other:
                other.run(["true"], check=True)
            fresh.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            conn.run(["true"], check=True)
            reused.append(time.perf_counter() - t0)
        assert sorted(reused)[1] < 0.7 * sorted(fresh)[1]
        # And the proof that does not depend on timing: with the listener gone, no new connection can be
        # made, yet commands still run through the established master.
        own_server.stop_listener()
        assert conn.run(["echo", "still here"], check=True).stdout.strip() == b"still here"
        with pytest.raises(HostUnreachable):
            SSHConnection(host, retries=0).open()


def _profiler_running(tag: str) -> bool:
    """Whether a stand-in profiler started with `--tag tag` runs anywhere on this machine (orphans too)."""
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if "profilers.fake_profiler" in cmd and tag in cmd:
            return True
    return False


def _wait_for(cond, timeout: float = 30.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


@needs_sshd
def test_server_killed_mid_profile_fails_clearly_after_bounded_retries(
        own_server: SSHServer, device_python: Path, tmp_path: Path, stand_in_profilers: Path,
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    local_tmp = tmp_path / "local-tmp"
    local_tmp.mkdir()
    model = tiny_model(tmp_path / "m.onnx")
    tag = f"tag-{uuid.uuid4()}"
    engine = tmp_path / "m.plan"
    outcome: dict[str, object] = {}
    caplog.set_level(logging.WARNING, logger="edgeprune.remote")
    runner = RemoteRunner(make_target(own_server, device_python), retries=2, backoff_s=0.2).open()
    monkeypatch.setattr("tempfile.tempdir", str(local_tmp))

    def go() -> None:
        try:
            outcome["profile"] = runner.profile(model, ["--sleep", "30", "--tag", tag, "--engine-out", str(engine)],
                                                module="fake_profiler")
        except BaseException as exc:
            outcome["error"] = exc

    t = threading.Thread(target=go)
    t.start()
    assert _wait_for(lambda: _profiler_running(tag))
    own_server.kill_all()  # the device "reboots" mid-profile and does not come back
    t.join(timeout=60)
    runner.close()
    assert not t.is_alive()
    err = outcome.get("error")
    assert isinstance(err, (ConnectionLost, HostUnreachable)), err
    assert "after 3 attempt(s)" in str(err) and "No profile was written" in str(err)
    assert len([r for r in caplog.records if "retrying the profile" in r.getMessage()]) == 2
    assert "profile" not in outcome and not engine.exists()
    assert list(local_tmp.iterdir()) == []  # nothing half-fetched left behind either


@needs_sshd
def test_device_rebooting_mid_profile_is_retried(
        own_server: SSHServer, device_python: Path, tmp_path: Path, stand_in_profilers: Path) -> None:
    model = tiny_model(tmp_path / "m.onnx")
    tag = f"tag-{uuid.uuid4()}"
    outcome: dict[str, object] = {}
    runner = RemoteRunner(make_target(own_server, device_python), retries=3, backoff_s=1.0).open()

    def go() -> None:
        try:
            outcome["profile"] = runner.profile(model, ["--sleep", "1.5", "--tag", tag], module="fake_profiler")
        except BaseException as exc:
            outcome["error"] = exc

    t = threading.Thread(target=go)
    t.start()
    assert _wait_for(lambda: _profiler_running(tag))
    own_server.kill_all()
    own_server.start(port=own_server.port)  # back up before the first retry
    t.join(timeout=60)
    runner.close()
    assert "error" not in outcome, outcome.get("error")
    assert outcome["profile"]["remote"]["attempts"] >= 2  # type: ignore[index]


@needs_sshd
def test_interrupt_stops_the_remote_profiler_and_removes_the_run_dir(
        server: SSHServer, device_python: Path, tmp_path: Path, stand_in_profilers: Path) -> None:
    model = tiny_model(tmp_path / "m.onnx")
    tag = f"tag-{uuid.uuid4()}"
    sent_at: list[float] = []
    caught = threading.Event()
    main = threading.main_thread().ident
    # Ctrl-C as a terminal delivers it: Python's own handler, whatever an earlier test left installed. In full
    # suite runs (twice in session 13, never alone) one SIGINT sent to the main thread raised nothing and the
    # profile returned after its full 30 s; the cause is not known, so the signal is sent again every 5 s (longer
    # than the runner's cleanup takes) until the main thread has caught it or the profiler is gone.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with RemoteRunner(make_target(server, device_python), check=False) as runner:
            def interrupt() -> None:
                if not _wait_for(lambda: _profiler_running(tag)):
                    return
                while not caught.is_set() and _profiler_running(tag) and len(sent_at) < 5:
                    sent_at.append(time.monotonic())
                    signal.pthread_kill(main, signal.SIGINT)
                    caught.wait(5.0)

            threading.Thread(target=interrupt, daemon=True).start()
            started = time.monotonic()
            try:
                returned = runner.profile(model, ["--sleep", "30", "--tag", tag], module="fake_profiler")
            except KeyboardInterrupt:
                caught.set()
                returned = None
            # what happened, if it did not: when the watcher sent SIGINT, and which handler was there before
            assert returned is None, (
                f"no KeyboardInterrupt: profile returned after {time.monotonic() - started:.1f} s; SIGINT sent at "
                f"{[round(t - started, 1) for t in sent_at]} s; the handler before this test: {previous!r}")
    finally:
        signal.signal(signal.SIGINT, previous)
    # The agent saw its stdin close and stopped the profiler; the runner removed the dir on the way out.
    assert _wait_for(lambda: not _profiler_running(tag), timeout=15)
    assert run_dirs(server) == []


def test_agent_output_parser_ignores_login_noise() -> None:
    out = b"Welcome to the board!\nEDGEPRUNE-AGENT {\"dir\": \"/tmp/edgeprune.x\"}\nbye\n"
    assert parse_agent_output(out) == {"dir": "/tmp/edgeprune.x"}
    assert parse_agent_output(b"nothing here") is None
