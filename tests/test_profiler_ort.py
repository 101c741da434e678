"""onnxruntime profiler and the shared profiler helpers, on tiny ONNX graphs built with onnx.helper."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import psutil
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeprune.profilers import common, ort_profiler
from edgeprune.profilers.common import ProfilerError

REPO = Path(__file__).resolve().parents[1]
FAST = dict(warmup=2, iterations=10, min_time_s=0.0, threads=1)
SCHEMA_KEYS = {
    "schema_version",
    "kind",
    "runtime",
    "model",
    "settings",
    "conditions",
    "latency_ms",
    "samples_ms",
    "nodes",
    "node_latency_sum_ms",
    "memory",
}
GRAPH_NODES = ["conv1", "relu1", "conv2", "add", "relu2"]


def _model(path: Path, batch: int | str = "N") -> Path:
    """Conv-Relu-Conv-Add(residual)-Relu on 3x16x16; the batch dim is symbolic unless given."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.standard_normal((8, 8, 3, 3)).astype(np.float32), "w2"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "r1"], ["s"], name="add"),
        helper.make_node("Relu", ["s"], ["y"], name="relu2"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    # ir_version 10: onnx 1.23 writes IR 14 by default, which onnxruntime 1.31 refuses
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), path)
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return _model(tmp_path_factory.mktemp("ort") / "tiny.onnx")


@pytest.fixture(scope="module")
def static_model(tmp_path_factory) -> Path:
    return _model(tmp_path_factory.mktemp("ort") / "static.onnx", batch=1)


@pytest.fixture(scope="module")
def profile_all(model):
    return ort_profiler.profile_onnx(model, input_shapes={"x": [1, 3, 16, 16]}, **FAST)


# ------------------------------------------------------------------------------------------------
# profile_onnx


def test_schema_and_statistics(profile_all, model):
    res = profile_all
    assert SCHEMA_KEYS <= set(res)
    assert (
        res["schema_version"] == 1
        and res["kind"] == "edgeprune.raw_profile"
        and res["runtime"] == "onnxruntime"
    )
    lat = res["latency_ms"]
    assert set(lat) == {"p50", "p90", "p99", "mean", "std", "n", "min", "max"}
    assert lat["n"] >= 10 and len(res["samples_ms"]) == lat["n"]
    assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert lat["p50"] == pytest.approx(float(np.median(res["samples_ms"])))
    assert res["model"]["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert res["model"]["file_bytes"] == model.stat().st_size
    assert res["model"]["inputs"] == [
        {"name": "x", "shape": [1, 3, 16, 16], "dtype": "float", "declared_shape": ["N", 3, 16, 16]}
    ]
    assert res["model"]["outputs"] == [{"name": "y", "shape": [1, 8, 16, 16], "dtype": "float"}]
    settings = res["settings"]
    assert settings["threads"] == 1 and res["conditions"]["threads"] == 1
    assert settings["graph_optimization_level"] == "all" and settings["node_iterations"] == 10
    assert set(res["memory"]) == {"peak_rss_mb", "params_mb", "model_file_mb"}
    assert res["memory"]["peak_rss_mb"] > 0 and res["memory"]["params_mb"] > 0
    assert res["node_latency_sum_ms"] == pytest.approx(sum(n["latency_ms"] for n in res["nodes"]))
    json.dumps(res, allow_nan=False)


def test_conditions_recorded(profile_all):
    cond = profile_all["conditions"]
    for key in (
        "hostname",
        "cpu_model",
        "physical_cores",
        "logical_cores",
        "os",
        "python_version",
        "python_executable",
        "numpy_version",
        "runtime_version",
        "precision",
        "cpu_governor",
        "jetson",
        "gpus",
        "execution_provider",
        "input_shapes",
    ):
        assert key in cond
    assert cond["python_executable"] == sys.executable
    assert cond["input_shapes"] == {"x": [1, 3, 16, 16]}
    assert cond["runtime_version"] == __import__("onnxruntime").__version__


def test_nodes_at_disable_are_the_graph_nodes(static_model):
    res = ort_profiler.profile_onnx(static_model, graph_optimization_level="disable", **FAST)
    nodes = res["nodes"]
    assert [n["name"] for n in nodes] == GRAPH_NODES  # execution order
    assert [n["op"] for n in nodes] == ["Conv", "Relu", "Conv", "Add", "Relu"]
    conv1 = nodes[0]
    assert conv1["provider"] == "CPUExecutionProvider" and conv1["calls"] == 1
    assert conv1["input_shapes"] == [[1, 3, 16, 16], [8, 3, 3, 3]]
    assert conv1["output_shapes"] == [[1, 8, 16, 16]]
    assert conv1["memory"]["parameter_bytes"] == 8 * 3 * 3 * 3 * 4
    assert conv1["memory"]["output_bytes"] == 8 * 16 * 16 * 4
    assert res["memory"]["params_mb"] * 2**20 == pytest.approx((8 * 27 + 8 * 72) * 4)


def _optimised_node_names(model: Path, level: str, tmp: Path) -> set[str]:
    """Node names of the graph onnxruntime runs at `level`, from its own saved optimised model."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, ort_profiler.OPT_LEVELS[level])
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    so.optimized_model_filepath = str(tmp / f"opt_{level}.onnx")
    ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    return {n.name for n in onnx.load(so.optimized_model_filepath).graph.node}


@pytest.mark.parametrize("level", ["extended", "all"])
def test_nodes_are_the_optimised_graph_nodes(static_model, tmp_path, level):
    res = ort_profiler.profile_onnx(static_model, graph_optimization_level=level, **FAST)
    names = [n["name"] for n in res["nodes"]]
    assert set(names) == _optimised_node_names(static_model, level, tmp_path)
    assert len(names) < len(GRAPH_NODES)  # something was fused at this level


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="NCHWc layout is x86-only")
def test_nodes_at_all_use_nchwc_on_x86(profile_all):
    names = [n["name"] for n in profile_all["nodes"]]
    # the NCHWc transformer replaces Convs by nodes named after their output tensor, fusing Add/Relu
    assert any(n.endswith("_nchwc") for n in names)
    assert "conv1" not in names and "relu1" not in names


def test_threads_zero_means_physical_cores(static_model):
    res = ort_profiler.profile_onnx(static_model, per_node=False, **{**FAST, "threads": 0})
    assert res["settings"]["threads"] == psutil.cpu_count(logical=False)
    assert res["settings"]["threads_requested"] == 0
    assert res["nodes"] == [] and res["memory"]["params_mb"] is None


def test_shape_override(model):
    res = ort_profiler.profile_onnx(
        model, input_shapes={"x": [2, 3, 16, 16]}, graph_optimization_level="disable", **FAST
    )
    assert res["model"]["inputs"][0]["shape"] == [2, 3, 16, 16]
    assert res["model"]["outputs"][0]["shape"] == [2, 8, 16, 16]
    assert res["nodes"][0]["input_shapes"][0] == [2, 3, 16, 16]


@pytest.mark.parametrize(
    ("shapes", "message"),
    [
        (None, r"dynamic dims \['N', 3, 16, 16\].*--shape x=1x3x16x16"),
        ({"x": [1, 4, 16, 16]}, "does not fit"),
        ({"x": [1, 3, 16]}, "rank 3"),
        ({"z": [1, 3, 16, 16]}, "unknown input"),
    ],
)
def test_shape_errors(model, shapes, message):
    with pytest.raises(ProfilerError, match=message):
        ort_profiler.profile_onnx(model, input_shapes=shapes, **FAST)


def test_missing_provider_and_bad_level(static_model):
    with pytest.raises(ProfilerError, match="not available"):
        ort_profiler.profile_onnx(static_model, execution_provider="NoSuchExecutionProvider", **FAST)
    with pytest.raises(ProfilerError, match="optimisation level"):
        ort_profiler.profile_onnx(static_model, graph_optimization_level="max", **FAST)


def test_aggregate_node_events_runs_calls_and_order():
    def node(name, ts, dur, idx):
        return {
            "cat": "Node",
            "name": f"{name}_kernel_time",
            "ts": ts,
            "dur": dur,
            "args": {"op_name": "Op", "provider": "CPU", "node_index": str(idx), "parameter_size": "4"},
        }

    events = []
    for run, base in enumerate((0, 1000, 2000)):
        # node "b" has the higher node_index but runs first; "loop" runs twice per run
        events += [
            node("b", base + 1, 100 + run, 5),
            node("a", base + 200, 10, 1),
            node("loop", base + 300, 5, 2),
            node("loop", base + 400, 7, 2),
        ]
        events.append({"cat": "Session", "name": "model_run", "ts": base, "dur": 900})
    recs = ort_profiler.aggregate_node_events(events, skip_runs=1, total_runs=3)
    assert [r["name"] for r in recs] == ["b", "a", "loop"]
    by = {r["name"]: r for r in recs}
    assert by["b"]["latency_ms"] == pytest.approx(0.1015)  # median of 101, 102 us; warm-up run 0 dropped
    assert by["loop"]["calls"] == 2 and by["loop"]["latency_ms"] == pytest.approx(0.012)
    assert by["a"]["memory"] == {"parameter_bytes": 4}
    # without model_run events the runs are split evenly
    plain = [e for e in events if e["cat"] == "Node"]
    recs2 = {r["name"]: r for r in ort_profiler.aggregate_node_events(plain, skip_runs=1, total_runs=3)}
    assert recs2["loop"]["calls"] == 2 and recs2["b"]["latency_ms"] == pytest.approx(0.1015)


# ------------------------------------------------------------------------------------------------
# CLI: errors, torch-free, copied directory


def _cli(args, cwd=None, blocked=("torch", "onnx"), module="edgeprune.profilers.ort_profiler"):
    """Run the profiler CLI in a fresh interpreter where importing any `blocked` package raises, and
    report which of them ended up in sys.modules anyway."""
    wrapper = (
        "import sys, runpy, json\n"
        f"BLOCKED = {tuple(blocked)!r}\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in BLOCKED:\n"
        "            raise ImportError('blocked import of ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        f"sys.argv = ['x'] + {list(args)!r}\n"
        "code = 0\n"
        "try:\n"
        f"    runpy.run_module({module!r}, run_name='__main__', alter_sys=True)\n"
        "except SystemExit as exc:\n"
        "    code = exc.code or 0\n"
        "print('LOADED=' + json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in BLOCKED)), file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, "-c", wrapper], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def _loaded(proc) -> list[str]:
    line = [x for x in proc.stderr.splitlines() if x.startswith("LOADED=")][-1]
    return json.loads(line[len("LOADED=") :])


def test_blocker_can_fail():
    """The guard used below is real: a blocked import fails in the wrapped interpreter."""
    proc = _cli(["unused"], module="torch")
    assert proc.returncode != 0 and "blocked import of torch" in proc.stderr


def test_cli_installed_module_is_torch_free(static_model, tmp_path):
    out = tmp_path / "p.json"
    proc = _cli(
        [str(static_model), "--out", str(out), "--warmup", "2", "--iterations", "10", "--min-time", "0"]
    )
    assert proc.returncode == 0, proc.stderr
    assert _loaded(proc) == []
    data = json.loads(out.read_text())
    assert data["latency_ms"]["n"] >= 10 and data["nodes"]
    summary = json.loads(proc.stdout)
    assert summary["out"] == str(out) and summary["n"] == data["latency_ms"]["n"]


def test_cli_runs_from_a_copied_profilers_folder(static_model, tmp_path):
    """The SSH runner copies only profilers/: it must run there with edgeprune, torch and onnx absent."""
    shutil.copytree(REPO / "profilers", tmp_path / "profilers", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "p.json"
    proc = _cli(
        [
            str(static_model),
            "--out",
            str(out),
            "--warmup",
            "2",
            "--iterations",
            "10",
            "--min-time",
            "0",
            "--threads",
            "1",
            "--opt-level",
            "disable",
        ],
        cwd=tmp_path,
        blocked=("torch", "onnx", "edgeprune"),
        module="profilers.ort_profiler",
    )
    assert proc.returncode == 0, proc.stderr
    assert _loaded(proc) == []
    data = json.loads(out.read_text())
    assert [n["name"] for n in data["nodes"]] == GRAPH_NODES


def test_cli_corrupt_model_one_line_exit_1(model, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(model.read_bytes()[:300])
    out = tmp_path / "p.json"
    proc = subprocess.run(
        [sys.executable, "-m", "edgeprune.profilers.ort_profiler", str(bad), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: onnxruntime cannot load") and str(bad) in lines[0]
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert not out.exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "dynamic dims"),
        (["--shape", "x=1xfoo"], "bad shape"),
        (["--shape", "1x3x16x16"], "NAME=1x3x224x224"),
    ],
)
def test_cli_user_errors(model, tmp_path, capsys, extra, message):
    out = tmp_path / "p.json"
    rc = ort_profiler.main([str(model), "--out", str(out), *extra])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not out.exists()


def test_cli_missing_model(tmp_path, capsys):
    rc = ort_profiler.main([str(tmp_path / "nope.onnx"), "--out", str(tmp_path / "p.json")])
    assert rc == 1 and "model file not found" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# common helpers


def test_latency_stats_values():
    s = common.latency_stats([1.0, 2.0, 3.0, 4.0])
    assert s["p50"] == 2.5 and s["mean"] == 2.5 and s["n"] == 4 and s["min"] == 1.0 and s["max"] == 4.0
    assert s["std"] == pytest.approx(np.std([1, 2, 3, 4], ddof=1))
    assert s["p90"] == pytest.approx(3.7) and s["p99"] == pytest.approx(3.97)
    assert common.latency_stats([5.0])["std"] == 0.0
    with pytest.raises(ProfilerError):
        common.latency_stats([])


def test_timed_loop_counts():
    calls = []
    samples = common.timed_loop(lambda: calls.append(1), warmup=3, iterations=5, min_time_s=0.0)
    assert len(samples) == 5 and len(calls) == 8 and all(s >= 0 for s in samples)
    # a no-op loop needs far more than 5 calls to fill 50 ms
    assert len(common.timed_loop(lambda: None, warmup=0, iterations=5, min_time_s=0.05)) > 5
    # the hard cap stops a long --min-time
    assert (
        len(common.timed_loop(lambda: None, warmup=0, iterations=1, min_time_s=3600, max_iterations=50)) == 50
    )


def test_write_json_atomic_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "sub" / "out.json"
    common.write_json_atomic(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    with pytest.raises(TypeError):
        common.write_json_atomic(target, {"a": object()})
    with pytest.raises(ValueError):
        common.write_json_atomic(target, {"a": float("nan")})
    assert json.loads(target.read_text()) == {"a": 1}  # the old file is intact
    fresh = tmp_path / "fresh.json"
    with pytest.raises(TypeError):
        common.write_json_atomic(fresh, {"a": object()})
    assert not fresh.exists()
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["out.json", "sub"]  # no temp files left


def test_cpu_model_and_jetson_parsing():
    x86 = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) CPU\n"
    assert common.cpu_model(x86) == "Intel(R) Xeon(R) CPU"
    pi5 = "processor\t: 0\nBogoMIPS\t: 108.00\n\nHardware\t: BCM2835\nModel\t\t: Raspberry Pi 5 Model B Rev 1.0\n"
    assert common.cpu_model(pi5) == "BCM2835"
    orin = "processor\t: 0\nmodel name\t: ARMv8 Processor rev 1 (v8l)\n"
    assert common.cpu_model(orin) == "ARMv8 Processor rev 1 (v8l)"
    rel = "# R36 (release), REVISION: 3.0, GCID: 36923193, BOARD: generic, EABI: aarch64, DATE: Fri Jul 19 23:24:25 UTC 2024\n"
    assert common.jetson_release(rel).startswith("L4T R36.3.0")
    assert common.jetson_release(None) is None
    show = "SOC family:tegra234  Machine:Jetson AGX Orin\nGPU MinFreq=306000000 MaxFreq=1300500000 CurrentFreq=306000000\n"
    assert common.clocks_locked_from_show(show) is False
    assert (
        common.clocks_locked_from_show(
            show.replace("MinFreq=306000000", "MinFreq=1300500000").replace(
                "CurrentFreq=306000000", "CurrentFreq=1300500000"
            )
        )
        is True
    )
    assert common.clocks_locked_from_show("cpu0: Online=1") is None


def test_collect_conditions_keys_and_extra():
    cond = common.collect_conditions("onnxruntime", "9.9", 3, "fp16", {"execution_provider": "X"})
    assert cond["runtime"] == "onnxruntime" and cond["runtime_version"] == "9.9"
    assert cond["threads"] == 3 and cond["precision"] == "fp16" and cond["execution_provider"] == "X"
    assert cond["logical_cores"] == psutil.cpu_count(logical=True)
    assert cond["physical_cores"] == psutil.cpu_count(logical=False)
    assert cond["numpy_version"] == np.__version__
    assert common.peak_rss_mb() > 0


def test_parse_shape_args():
    assert common.parse_shape_args(["x=1x3x32x32", "mask=1x32"]) == {"x": [1, 3, 32, 32], "mask": [1, 32]}
    for bad in (["x=1x0"], ["x="], ["1x3"]):
        with pytest.raises(ProfilerError):
            common.parse_shape_args(bad)
