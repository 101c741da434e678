"""The pytest plugin: a project's test fails with the measured figures when its model is too slow."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points

import pytest

pytest_plugins = ["pytester"]

PLUGIN = "edgeprune.pytest_plugin"

# A tiny ONNX model built in the user's test session itself (no torch needed).
MAKE_NET = '''
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

def make_net(path, width=8):
    w = numpy_helper.from_array(np.full((width, 3, 3, 3), 0.01, np.float32), "conv0.weight")
    nodes = [helper.make_node("Conv", ["input", "conv0.weight"], ["c0"], name="conv0", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c0"], ["output"], name="relu0")]
    graph = helper.make_graph(nodes, "net", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, width, 16, 16])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return str(path)

FAST = dict(warmup=2, iterations=10, min_time_s=0.05, blocks=2)
'''


@pytest.fixture(autouse=True)
def _extensions_loaded_once():
    """pytester's in-process runs drop the modules they imported; importing C extensions (numpy, onnx)
    a second time aborts the interpreter, so they are imported here, outside those runs."""
    import numpy  # noqa: F401
    import onnx  # noqa: F401
    import scipy.stats  # noqa: F401

    import edgeprune.check  # noqa: F401


def _plugin_args() -> list[str]:
    """Load the plugin by hand unless its pytest11 entry point is installed (loading it twice is an error)."""
    registered = any(ep.value == PLUGIN for ep in entry_points(group="pytest11"))
    return [] if registered else ["-p", PLUGIN]


def test_plugin_import_is_light():
    code = (f"import sys, {PLUGIN}; heavy = [m for m in ('torch', 'numpy', 'onnxruntime', 'onnx', 'scipy') "
            "if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, f"importing the plugin pulled in {proc.stdout.strip()} {proc.stderr[-500:]}"


def test_assert_latency_fixture_fails_with_measured_figures(pytester: pytest.Pytester):
    pytester.makepyfile(MAKE_NET + '''
def test_too_slow(assert_latency, tmp_path):
    assert_latency(make_net(tmp_path / "net.onnx"), target="cpu", max_ms=1e-6, **FAST)

def test_fast_enough(assert_latency, tmp_path):
    result = assert_latency(make_net(tmp_path / "net.onnx"), max_ms=10_000, metric="p90", **FAST)
    assert result.passed and result.metric == "p90"
''')
    res = pytester.runpytest(*_plugin_args())
    res.assert_outcomes(passed=1, failed=1)
    res.stdout.fnmatch_lines([
        "*edgeprune latency check failed*",
        "FAILED *net.onnx on cpu: p50 * ms (n=*)*budget 1e-06 ms*over-budget*",
        "measured: p50 * ms, p90 * ms, p99 * ms, mean * ms, std * ms, n=*",
        "on: *onnxruntime 1.*threads *",
    ])


def test_assert_latency_helper_against_baseline_model(pytester: pytest.Pytester):
    pytester.makepyfile(MAKE_NET + '''
from edgeprune.pytest_plugin import assert_latency

def test_wider_is_slower(tmp_path):
    narrow, wide = make_net(tmp_path / "n.onnx", 4), make_net(tmp_path / "w.onnx", 96)
    assert_latency(wide, baseline_model=narrow, max_regression="20%", **FAST)
''')
    res = pytester.runpytest(*_plugin_args())
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines(["*vs baseline * ms: +*regression*", "measured: p50 *"])
