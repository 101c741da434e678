"""The A/B mode: two models timed in one onnxruntime process, alternating per iteration, and `edgeprune check
--baseline-model` deciding on it. Real onnxruntime on tiny Conv stacks; no absolute time is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeprune.check import ABSession, CheckConfig, InterleavedSession, _session_for, _Subject, check
from edgeprune.cli import main
from edgeprune.errors import EdgepruneError
from edgeprune.profilers import common, ort_profiler
from edgeprune.profilers.common import ProfilerError
from edgeprune.runners import LocalRunner, ab_args, profiler_args
from edgeprune.targets import load_target

FAST = dict(warmup=2, iterations=30, min_time_s=0.0, threads=1)


def stack(path: Path, layers: int, batch: int | str = 1, external: bool = False) -> Path:
    """Conv(16)-ReLU x `layers` on 1x16x16x16: time grows with `layers`."""
    rng = np.random.default_rng(0)
    inits, nodes, x, cin = [], [], "x", 3
    for i in range(layers):
        w = numpy_helper.from_array((rng.standard_normal((16, cin, 3, 3)) * 0.1).astype(np.float32), f"w{i}")
        inits.append(w)
        nodes.append(helper.make_node("Conv", [x, w.name], [f"c{i}"], name=f"conv{i}", pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}"))
        x, cin = f"r{i}", 16
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["y"], name="pool"))
    graph = helper.make_graph(nodes, "stack", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    if external:
        onnx.save(model, str(path), save_as_external_data=True, location=path.name + ".data", size_threshold=0)
    else:
        onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ab")
    return {"fast": stack(d / "fast.onnx", 1), "slow": stack(d / "slow.onnx", 12),
            "dynamic": stack(d / "dynamic.onnx", 1, batch="N")}


# ---------------------------------------------------------------------------------------------------
# the paired loop


def test_paired_loop_balances_the_order():
    log: list[str] = []
    a, b, a_first = common.paired_timed_loop(lambda: log.append("a"), lambda: log.append("b"), warmup=3,
                                             iterations=7, min_time_s=0.0, seed=1)
    assert log[:6] == ["a", "b"] * 3  # warm-up alternates
    assert len(a) == len(b) == len(a_first) == 8  # at least 7 pairs, an even number
    timed = log[6:]
    pairs = [timed[i:i + 2] for i in range(0, len(timed), 2)]
    assert [p == ["a", "b"] for p in pairs] == a_first  # what was recorded is what ran
    assert all(a_first[i] != a_first[i + 1] for i in range(0, len(a_first), 2))  # one of each per two pairs
    _, _, other_seed = common.paired_timed_loop(lambda: None, lambda: None, 0, 64, 0.0, seed=2)
    _, _, same_seed = common.paired_timed_loop(lambda: None, lambda: None, 0, 64, 0.0, seed=2)
    assert other_seed == same_seed and any(other_seed[0::2]) and not all(other_seed[0::2])  # seeded, not fixed
    *_, capped = common.paired_timed_loop(lambda: None, lambda: None, 0, 10, 3600.0, max_iterations=5)
    assert len(capped) == 5


# ---------------------------------------------------------------------------------------------------
# the profiler's A/B mode


@pytest.fixture(scope="module")
def ab_profile(models):
    return ort_profiler.profile_onnx_ab(models["slow"], models["fast"], **FAST)


def test_ab_profile_sizes_and_ranking(ab_profile, models):
    slow, fast = ab_profile["samples_ms"], ab_profile["ab"]["other"]["samples_ms"]
    assert len(slow) == len(fast) == len(ab_profile["ab"]["primary_first"]) == 30
    assert ab_profile["latency_ms"]["n"] == ab_profile["ab"]["other"]["latency_ms"]["n"] == 30
    # 12 conv layers against 1: the slower model is slower in most pairs, and in the medians
    assert ab_profile["latency_ms"]["p50"] > ab_profile["ab"]["other"]["latency_ms"]["p50"]
    assert np.mean(np.array(slow) > np.array(fast)) > 0.8
    assert sum(ab_profile["ab"]["primary_first"]) == 15


def test_ab_profile_json_shape(ab_profile, models):
    base_keys = set(ort_profiler.profile_onnx(models["fast"], per_node=False, **FAST))
    assert set(ab_profile) == base_keys | {"ab"}  # the primary model's fields are all still there
    assert ab_profile["kind"] == "edgeprune.raw_profile" and ab_profile["schema_version"] == 1
    assert ab_profile["nodes"] == [] and ab_profile["settings"]["mode"] == "ab"
    assert ab_profile["model"]["path"] == str(models["slow"])
    other = ab_profile["ab"]["other"]
    assert set(other) == {"model", "input_shapes", "session_providers", "latency_ms", "samples_ms", "model_file_mb"}
    assert other["model"]["path"] == str(models["fast"]) and other["input_shapes"] == {"x": [1, 3, 16, 16]}
    assert set(other["latency_ms"]) == set(ab_profile["latency_ms"])
    json.dumps(ab_profile, allow_nan=False)


def test_ab_cli_shares_one_thread_pool_so_a_model_reads_like_itself(models, tmp_path):
    # With a pool per session, the idle session's spinning workers competed with the running one: on 2
    # cores the same model against itself read 0.88-1.44 in 12 fresh processes (2026-11-22); with one
    # shared pool 0.97-1.02. A ratio in one process, not an absolute time.
    out = tmp_path / "ab.json"
    proc = subprocess.run([sys.executable, "-m", "edgeprune.profilers.ort_profiler", str(models["fast"]), "--out",
                           str(out), "--ab", str(models["fast"]), "--threads", "2", "--warmup", "5",
                           "--iterations", "200", "--min-time", "0"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert data["settings"]["thread_pool"] == "shared by both sessions" and data["settings"]["threads"] == 2
    ratio = float(np.median(data["samples_ms"]) / np.median(data["ab"]["other"]["samples_ms"]))
    assert 0.85 < ratio < 1.15, ratio


def test_in_process_ab_says_its_pools_are_per_session(ab_profile):
    assert ab_profile["settings"]["thread_pool"].startswith("one per session")


def test_ab_cli_with_shapes_and_errors(models, tmp_path):
    out = tmp_path / "ab.json"
    cmd = [sys.executable, "-m", "edgeprune.profilers.ort_profiler", str(models["fast"]), "--out", str(out),
           "--threads", "1", "--warmup", "1", "--iterations", "6", "--min-time", "0"]
    proc = subprocess.run(cmd + ["--ab", str(models["dynamic"]), "--ab-shape", "x=2x3x16x16"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    summary = json.loads(proc.stdout)
    assert summary["n"] == 6 and summary["ab_p50_ms"] == data["ab"]["other"]["latency_ms"]["p50"]
    assert data["ab"]["other"]["input_shapes"] == {"x": [2, 3, 16, 16]}
    assert data["conditions"]["input_shapes"] == {"x": [1, 3, 16, 16]}
    proc = subprocess.run(cmd + ["--ab", str(models["dynamic"])], capture_output=True, text=True)
    assert proc.returncode == 1 and "dynamic dims" in proc.stderr and "--shape x=" in proc.stderr
    proc = subprocess.run(cmd + ["--ab-shape", "x=1x3x16x16"], capture_output=True, text=True)
    assert proc.returncode == 1 and "give --ab OTHER.onnx too" in proc.stderr
    with pytest.raises(ProfilerError, match="model file not found"):
        ort_profiler.profile_onnx_ab(models["fast"], tmp_path / "missing.onnx", **FAST)


# ---------------------------------------------------------------------------------------------------
# runners


def test_runner_args_for_the_ab_mode():
    cpu, trt = load_target("cpu"), load_target("desktop-cuda")
    assert ab_args(cpu, ["--shape", "x=1x3x8x8", "--shape=y=2"]) == ["--ab-shape", "x=1x3x8x8", "--ab-shape=y=2"]
    with pytest.raises(ValueError, match="only --shape"):
        ab_args(cpu, ["--threads", "2"])
    with pytest.raises(EdgepruneError, match="desktop-cuda runs tensorrt"):
        ab_args(trt)
    args = profiler_args(cpu, per_node=False, ab_model="b.onnx")
    assert args[-2:] == ["--ab", "b.onnx"] and "--no-nodes" not in args


def test_local_runner_ab(models):
    target = load_target("cpu").with_measure(warmup=1, iterations=8, min_time_s=0.0)
    raw = LocalRunner(target).measure(models["slow"], per_node=False, ab_model=models["fast"])
    assert len(raw["samples_ms"]) == len(raw["ab"]["other"]["samples_ms"]) == 8
    assert raw["ab"]["other"]["model"]["path"] == str(models["fast"])


# ---------------------------------------------------------------------------------------------------
# check


def test_session_kind_follows_the_runtime(models):
    subjects = [_Subject(n, models[n], {}, None, [], False) for n in ("slow", "fast")]
    assert _session_for(subjects, load_target("cpu")) is ABSession
    assert _session_for(subjects, load_target("desktop-cuda")) is InterleavedSession  # TensorRT: alternating runs
    assert _session_for(subjects[:1], load_target("cpu")) is InterleavedSession  # nothing to pair


def test_check_baseline_model_uses_one_ab_run(models, monkeypatch):
    calls: list[dict] = []
    measure = LocalRunner.measure

    def spy(self, onnx_path, **kw):
        calls.append({"path": onnx_path, **kw})
        return measure(self, onnx_path, **kw)

    monkeypatch.setattr(LocalRunner, "measure", spy)
    result = check(CheckConfig(model=str(models["slow"]), baseline_model=str(models["fast"]), warmup=2,
                               iterations=40, min_time_s=0.0, blocks=4, max_regression=0.2))
    per_node = [c for c in calls if c.get("ab_model") is None]
    ab = [c for c in calls if c.get("ab_model") is not None]
    assert [c["path"] for c in per_node] == [models["slow"], models["fast"]] and all(c["per_node"] for c in per_node)
    assert len(ab) == 1 and ab[0]["path"] == models["slow"] and ab[0]["ab_model"] == models["fast"]
    assert not result.passed and result.regression.verdict == "regression" and result.regression.paired
    assert result.candidate["samples_blocks"] == result.baseline["samples_blocks"] == [10] * 4
    settings = result.candidate["target"]["settings"]
    assert settings["mode"] == "ab" and settings["pairs"] == 40 and settings["ran_first_share"] == 0.5
    assert result.baseline["model"]["spec"] == str(models["fast"])
    # per-layer times come from the per-node runs: the candidate's extra layers have no baseline time
    assert any(r["baseline_ms"] is None and r["candidate_ms"] for r in result.layer_changes)
    assert len(result.candidate["layers"]) > len(result.baseline["layers"]) > 0


def test_cli_check_json_with_baseline_model(models, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["check", str(models["fast"]), "--baseline-model", str(models["fast"]), "--format", "json",
              "--warmup", "2", "--iterations", "60", "--min-time", "0", "--blocks", "4", "--max-regression", "30%",
              "--no-layers", "--no-config", "-q"])
    out, err = capsys.readouterr()
    assert exc.value.code == 0, err
    data = json.loads(out)
    assert data["status"] == "PASSED" and data["regression"]["paired"] and data["regression"]["blocks"] == [4, 4]
    assert data["candidate"]["settings"]["mode"] == "ab"
    assert data["candidate"]["samples_blocks"] == data["baseline"]["samples_blocks"] and sum(
        data["candidate"]["samples_blocks"]) == 60


# ---------------------------------------------------------------------------------------------------
# remote: the second model travels too (real sshd on 127.0.0.1, see sshd_fixture.py)


def test_remote_runner_ab_copies_both_models(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from sshd_fixture import SSHServer, remote_python, sshd_missing_reason

    from edgeprune.remote import RemoteRunner
    from edgeprune.targets import HostSpec

    if sshd_missing_reason():
        pytest.skip(sshd_missing_reason())
    python, why = remote_python()
    if python is None:
        pytest.skip(why)
    # Both exported as model.onnx with a model.onnx.data sidecar: the names the check's exports have.
    (tmp_path / "cand").mkdir()
    (tmp_path / "base").mkdir()
    cand = stack(tmp_path / "cand" / "model.onnx", 6, external=True)
    base = stack(tmp_path / "base" / "model.onnx", 1, external=True)
    srv = SSHServer(tmp_path / "sshd").start()
    try:
        target = load_target("cpu").with_host(HostSpec(**srv.host_fields(python=str(python)))).with_measure(
            warmup=1, iterations=10, min_time_s=0.0)
        with RemoteRunner(target, backoff_s=0.1) as runner:
            raw = runner.measure(cand, per_node=False, ab_model=base)
    finally:
        srv.kill_all()
    other = raw["ab"]["other"]
    assert len(raw["samples_ms"]) == len(other["samples_ms"]) == 10
    assert raw["model"]["path"] == str(cand) and other["model"]["path"] == str(base)
    assert other["model"]["sha256"] == common.sha256_file(base) and other["model"]["external_data_bytes"] > 0
    assert raw["model"]["external_data_bytes"] > 0 and raw["remote"]["host"]
