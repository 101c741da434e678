"""edgeprune export: artifacts checked against PyTorch, sidecars, refusals, the fp16 pass, TensorRT plan logic."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from edgeprune.cli import main
from edgeprune.errors import EdgepruneError
from edgeprune.export import FORMATS, ExportConfig, export
from edgeprune.onnx_export import export_onnx
from edgeprune.onnx_fp16 import convert_to_fp16
from edgeprune.parity import OrtSession, Tolerance, check_artifact, compare, tolerance_for
from edgeprune.sidecar import read_sidecar, sidecar_path
from edgeprune.trt_engine import calibration_batches, plan_engine_build, profile_shapes, workspace_bytes

TINY = """
import torch
from torch import nn

class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.conv2(x))
        return self.fc(torch.flatten(self.pool(x), 1))

def make():
    torch.manual_seed(0)
    m = Tiny()
    with torch.no_grad():
        m.bn1.running_mean.uniform_(-0.5, 0.5)
        m.bn1.running_var.uniform_(0.5, 2.0)
    return m
"""
FAST = {"warmup": 1, "iterations": 5, "min_time_s": 0.0}


@pytest.fixture
def tiny_spec(tmp_path: Path) -> str:
    f = tmp_path / "tiny.py"
    f.write_text(TINY)
    return f"{f}:make"


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """The console entry point as a user runs it: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exc:
        main(args)
    captured = capsys.readouterr()
    return exc.value.code, captured.out, captured.err


def _tiny_module(tiny_spec: str) -> torch.nn.Module:
    from edgeprune.models import load_model

    return load_model(tiny_spec, shape=(1, 3, 16, 16)).module


# ---------------------------------------------------------------------------------------------------
# parity


def test_perturbed_weight_in_the_artifact_fails_parity(tmp_path, tiny_spec):
    module = _tiny_module(tiny_spec)
    good = export_onnx(module, (1, 3, 16, 16), tmp_path / "good.onnx").path
    x = np.random.default_rng(0).standard_normal((8, 3, 16, 16)).astype(np.float32)
    tol = tolerance_for("fp32")
    ok = check_artifact(OrtSession(good), module, x, tol, artifact="good.onnx", precision="fp32", inputs="random")
    assert ok.passed and ok.outputs[0].max_abs_error < 1e-4

    model = onnx.load(str(good))
    weight = next(t for t in model.graph.initializer if t.name == "fc.weight")
    arr = numpy_helper.to_array(weight).copy()
    arr[3, 5] += 0.5  # one weight of the classifier
    weight.CopyFrom(numpy_helper.from_array(arr, weight.name))
    bad = tmp_path / "bad.onnx"
    onnx.save(model, str(bad))
    report = check_artifact(OrtSession(bad), module, x, tol, artifact="bad.onnx", precision="fp32", inputs="random")
    assert not report.passed
    worst = report.outputs[0]
    assert worst.worst_index[1] == 3 and worst.max_abs_error > 1e-3  # class 3 is the perturbed row
    with pytest.raises(EdgepruneError, match=r"output 'output' differs from PyTorch by up to [0-9.e-]+ absolute"):
        report.raise_if_failed()


def test_compare_judges_tolerance_nan_and_top1():
    ref = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]], dtype=np.float32)
    tol = Tolerance(atol=1e-3, rtol=1e-2, min_top1_agreement=1.0)
    assert compare([ref], {"y": ref + 0.005}, tol, artifact="a", precision="fp32", inputs="t").passed
    off = compare([ref], {"y": ref + np.array([[0, 0, 0.2], [0, 0, 0]])}, tol, artifact="a", precision="fp32", inputs="t")
    assert not off.passed and off.outputs[0].worst_index == [0, 2]
    assert "0.2 absolute" in off.failures[0]
    nan = ref.copy()
    nan[1, 1] = np.nan
    assert not compare([ref], {"y": nan}, tol, artifact="a", precision="fp32", inputs="t").passed
    flipped = ref.copy()
    flipped[0] = [3.0, 2.0, 1.0]
    loose = Tolerance(atol=10, rtol=0, min_top1_agreement=1.0)
    rep = compare([ref], {"y": flipped}, loose, artifact="a", precision="fp32", inputs="t",
                  labels=np.array([2, 0]))
    assert rep.top1_agreement == 0.5 and not rep.passed and "top-1" in rep.failures[0]
    assert rep.top1_torch == 1.0 and rep.top1_artifact == 0.5
    with pytest.raises(EdgepruneError, match="shape"):
        compare([ref], {"y": ref[:1]}, tol, artifact="a", precision="fp32", inputs="t")
    with pytest.raises(EdgepruneError, match="--atol"):
        tolerance_for("fp16", atol=-1.0)
    assert tolerance_for("fp16").atol > tolerance_for("fp32").atol


# ---------------------------------------------------------------------------------------------------
# the export pipeline


def test_export_cli_writes_artifact_and_sidecar(tmp_path, tiny_spec, capsys):
    out = tmp_path / "deploy" / "tiny.onnx"
    args = ["export", tiny_spec, "--shape", "1x3x16x16", "-o", str(out), "--format", "json", "--warmup", "1",
            "--iterations", "5", "--min-time", "0", "--samples", "6"]
    code, stdout, stderr = run_cli(args, capsys)
    assert code == 0, stderr
    data = json.loads(stdout)
    assert data["artifact_path"] == str(out) and out.is_file()
    side = read_sidecar(out)
    assert side == {k: v for k, v in data.items() if k not in ("artifact_path", "sidecar_path", "wall_s")}
    assert side["parity"]["passed"] and side["parity"]["samples"] == 6
    assert side["io"]["inputs"][0] == {"name": "input", "shape": [1, 3, 16, 16], "dtype": "float32"}
    assert side["latency"]["measured"] and side["latency"]["latency_ms"]["n"] >= 5
    assert side["latency"]["conditions"]["runtime"] == "onnxruntime"
    assert side["target"]["name"] == "cpu" and side["precision"] == "fp32"
    assert len(side["source"]["model_hash"]) == 64 and side["runtime_versions"]["onnxruntime"] == ort.__version__
    # the artifact is a plain ONNX: onnxruntime loads it as it is
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["output"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["tiny.onnx", "tiny.onnx.json"]

    code, stdout, stderr = run_cli(args, capsys)
    assert code == 1 and stdout == "" and "already exists; pass --force" in stderr
    code, stdout, stderr = run_cli(["export", tiny_spec, "--shape", "1x3x16x16", "-o", str(out), "--force",
                                    "--no-measure", "--samples", "2"], capsys)
    assert code == 0, stderr
    assert stdout.splitlines()[-1] == "PASSED" and "not measured (--no-measure)" in stdout
    assert read_sidecar(out)["latency"] == {"measured": False, "reason": "--no-measure"}


def test_failed_parity_inside_the_pipeline_writes_nothing(tmp_path, tiny_spec, monkeypatch):
    original = FORMATS["onnx"]

    def perturbing_build(ctx):
        built = original.build(ctx)
        model = onnx.load(str(built.path))
        w = next(t for t in model.graph.initializer if t.name == "fc.bias")
        w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w) + 1.0, w.name))
        onnx.save(model, str(built.path))
        return built

    monkeypatch.setitem(FORMATS, "onnx", dataclasses.replace(original, build=perturbing_build))
    out = tmp_path / "out" / "m.onnx"
    config = ExportConfig(source=tiny_spec, output=str(out), shape=(1, 3, 16, 16), samples=4, measure=False)
    with pytest.raises(EdgepruneError, match=r"parity check failed for m.onnx .*output 'output' differs"):
        export(config)
    assert list(out.parent.iterdir()) == []  # no artifact, no sidecar, no staging directory


def test_ort_format_dynamic_batch_and_measured(tmp_path, tiny_spec):
    out = tmp_path / "tiny.ort"
    result = export(ExportConfig(source=tiny_spec, output=str(out), to="ort", shape=(1, 3, 16, 16), samples=5,
                                 dynamic_batch=True, **FAST))
    assert out.read_bytes()[4:8] == b"ORTM"
    side = result.metadata
    assert side["io"]["inputs"][0]["shape"][0] == "batch"
    assert side["build"]["execution_provider"] == "CPUExecutionProvider"
    assert side["build"]["disabled_optimizers"] == []  # local target: measured as deployed
    assert side["parity"]["passed"] and side["parity"]["outputs"][0]["shape"] == [5, 10]
    assert side["latency"]["conditions"]["input_shapes"] == {"input": [1, 3, 16, 16]}


def test_fp16_onnx_export_passes_fp16_parity(tmp_path, tiny_spec):
    out = tmp_path / "half.onnx"
    result = export(ExportConfig(source=tiny_spec, output=str(out), precision="fp16", shape=(1, 3, 16, 16),
                                 samples=8, measure=False))
    model = onnx.load(str(out))
    types = {t.name: t.data_type for t in model.graph.initializer}
    assert types["fc.weight"] == TensorProto.FLOAT16
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT  # fp32 IO kept
    assert result.precision == "fp16" and result.parity["tolerance"]["atol"] == tolerance_for("fp16").atol
    assert result.parity["outputs"][0]["max_abs_error"] > 0  # it really is float16 arithmetic on the weights


def test_val_data_accuracy_of_artifact_and_torch(tmp_path, shared_data):
    out = tmp_path / "r20.onnx"
    result = export(ExportConfig(source="zoo:cifar_resnet20", weights=str(shared_data / "weights" / "cifar_resnet20.th"),
                                 output=str(out), data=str(shared_data / "cifar10" / "val.npz"), samples=16,
                                 val_data=str(shared_data / "cifar10" / "val.npz"), val_limit=300, measure=False))
    acc = result.accuracy
    assert acc["samples"] == 300 and acc["torch"] > 0.8
    assert abs(acc["delta"]) <= 1 / 300  # fp32: at most one borderline image may flip
    assert result.parity["top1_torch_on_samples"] is not None


def test_bad_inputs_are_named(tmp_path, tiny_spec):
    base = {"source": tiny_spec, "shape": (1, 3, 16, 16), "measure": False}
    with pytest.raises(EdgepruneError, match="must end in .ort"):
        export(ExportConfig(output=str(tmp_path / "x.onnx"), to="ort", **base))
    with pytest.raises(EdgepruneError, match="--to engine does not run on target cpu"):
        export(ExportConfig(output=str(tmp_path / "x.engine"), to="engine", **base))
    with pytest.raises(EdgepruneError, match="int8 is not available for --to onnx"):
        export(ExportConfig(output=str(tmp_path / "x.onnx"), precision="int8", **base))
    with pytest.raises(EdgepruneError, match="ONNX file"):
        onnx_file = export_onnx(_tiny_module(tiny_spec), (1, 3, 16, 16), tmp_path / "m.onnx").path
        export(ExportConfig(source=str(onnx_file), output=str(tmp_path / "y.onnx"), measure=False))
    with pytest.raises(EdgepruneError, match="need --dynamic-batch"):
        export(ExportConfig(output=str(tmp_path / "x.onnx"), max_shape=(4, 3, 16, 16), **base))
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.skipif(__import__("importlib").util.find_spec("tensorrt") is not None, reason="TensorRT is installed")
def test_tensorrt_target_without_tensorrt_gives_usability_message(tmp_path, tiny_spec):
    with pytest.raises(EdgepruneError, match=r"desktop-cuda cannot build an engine here \(tensorrt is not importable"):
        export(ExportConfig(source=tiny_spec, output=str(tmp_path / "m.engine"), target="desktop-cuda",
                            shape=(1, 3, 16, 16)))
    with pytest.raises(EdgepruneError, match="cannot be measured here: tensorrt is not importable.*--no-measure"):
        export(ExportConfig(source=tiny_spec, output=str(tmp_path / "m.onnx"), target="desktop-cuda", to="onnx",
                            shape=(1, 3, 16, 16)))
    res = export(ExportConfig(source=tiny_spec, output=str(tmp_path / "m.onnx"), target="desktop-cuda", to="onnx",
                              shape=(1, 3, 16, 16), measure=False, samples=2))
    assert res.precision == "fp32" and "onnxruntime" in res.parity["checked_with"]


def test_unexportable_op_names_op_and_module(tmp_path):
    @torch.library.custom_op("edgeprune_test::wobble", mutates_args=())
    def wobble(x: torch.Tensor) -> torch.Tensor:
        return x * 2

    @wobble.register_fake
    def _(x):
        return torch.empty_like(x)

    class Inner(torch.nn.Module):
        def forward(self, x):
            return wobble(x)

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Sequential(torch.nn.ReLU(), Inner())).eval()
    with pytest.raises(EdgepruneError, match=r"cannot express operator edgeprune_test::wobble \(called in 1\.1 \(Inner\)\)"):
        export_onnx(model, (1, 3, 8, 8), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_runtime_errors_name_the_module_of_the_node(tmp_path, tiny_spec):
    from edgeprune.attribution import index_graph
    from edgeprune.export import explain_nodes

    module = _tiny_module(tiny_spec)
    path = export_onnx(module, (1, 3, 16, 16), tmp_path / "m.onnx").path
    index = index_graph(path, {n for n, _ in module.named_modules() if n})
    conv = next(n for n in index.nodes.values() if n.op == "Conv" and n.module == "conv2")
    message = f"Could not find an implementation for Conv(11) node with name '{conv.name}'"
    assert explain_nodes(message, index).endswith(f"[node {conv.name} (Conv) comes from module conv2]")
    assert explain_nodes("no node named here 'nothing'", index) == "no node named here 'nothing'"


# ---------------------------------------------------------------------------------------------------
# the float16 pass, checked with onnxruntime on CPU


def _graph_model(nodes, inits, out_shape=(1, 4, 8, 8), opset=17):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)


def _run(model, x):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feed_type = np.float16 if sess.get_inputs()[0].type == "tensor(float16)" else np.float32
    return sess.run(None, {"x": x.astype(feed_type)})[0]


def test_fp16_pass_converts_weights_keeps_io_and_fp32_islands():
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "conv.weight")
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    roi = numpy_helper.from_array(np.array([], np.float32), "roi")
    big = numpy_helper.from_array(np.array([1e6], np.float32), "big")
    nodes = [
        helper.make_node("Conv", ["x", "conv.weight"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Resize", ["r", "roi", "scales"], ["u"], mode="nearest"),  # scales must stay float32
        helper.make_node("Constant", [], ["half"], value_float=0.5),
        helper.make_node("Mul", ["u", "half"], ["m"]),
        helper.make_node("Min", ["m", "big"], ["mn"]),  # 1e6 is clamped to 65504, not turned into inf
        helper.make_node("Erf", ["mn"], ["e"]),
        helper.make_node("Range", ["start", "limit", "delta"], ["rng"]),  # no float16 Range: stays float32
        helper.make_node("Constant", [], ["start"], value_float=0.0),
        helper.make_node("Constant", [], ["limit"], value_float=8.0),
        helper.make_node("Constant", [], ["delta"], value_float=1.0),
        helper.make_node("Add", ["e", "rng"], ["y"]),
    ]
    # Range's inputs must be produced before it: reorder the constants first
    nodes = nodes[:7] + nodes[8:11] + [nodes[7], nodes[11]]
    model = _graph_model(nodes, [w, scales, roi, big])
    onnx.checker.check_model(model)
    x = rng.standard_normal((1, 3, 4, 4)).astype(np.float32)
    ref = _run(model, x)

    half, report = convert_to_fp16(model)
    types = {t.name: t.data_type for t in half.graph.initializer}
    assert types["conv.weight"] == TensorProto.FLOAT16 and types["scales"] == TensorProto.FLOAT
    assert half.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert half.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert report.kept_fp32 == {"Range": 1} and report.values_clamped == 1
    got = _run(half, x)
    assert got.dtype == np.float32 and got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=2e-2, rtol=1e-2)
    assert not np.array_equal(got, ref)  # weights really were rounded to float16

    half_io, _ = convert_to_fp16(model, keep_io_types=False)
    assert half_io.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    got16 = _run(half_io, x)
    assert got16.dtype == np.float16
    np.testing.assert_allclose(got16.astype(np.float32), ref, atol=3e-2, rtol=2e-2)


def test_fp16_pass_on_an_exported_resnet(tmp_path):
    from edgeprune.models import load_model

    loaded = load_model("zoo:cifar_resnet20")
    path = export_onnx(loaded.module, loaded.input_shape, tmp_path / "r.onnx").path
    model = onnx.load(str(path))
    half, report = convert_to_fp16(model)
    assert report.initializers_converted > 0 and report.kept_fp32 == {}
    x = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    got = ort.InferenceSession(half.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, ref, atol=tolerance_for("fp16").atol, rtol=tolerance_for("fp16").rtol)


def test_fp16_pass_refuses_subgraphs():
    then = helper.make_graph([helper.make_node("Identity", ["x"], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, [1, 3, 4, 4])])
    cond = numpy_helper.from_array(np.array(True), "cond")
    model = _graph_model([helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=then)], [cond],
                         out_shape=(1, 3, 4, 4))
    with pytest.raises(EdgepruneError, match="has a subgraph"):
        convert_to_fp16(model)


# ---------------------------------------------------------------------------------------------------
# TensorRT: the logic that runs without TensorRT


def test_engine_precision_plan_by_tensorrt_version():
    assert plan_engine_build("fp16", "10.9.0").fp16_onnx is False
    assert plan_engine_build("fp16", "11.0.0").fp16_onnx is True
    assert plan_engine_build("int8", "11.1", onnx_has_qdq=True).int8_mode == "qdq"
    assert plan_engine_build("int8", "10.3", has_calibration_data=True).int8_mode == "calibration"
    with pytest.raises(EdgepruneError, match="pass --data"):
        plan_engine_build("int8", "10.3")
    with pytest.raises(EdgepruneError, match="QuantizeLinear/DequantizeLinear"):
        plan_engine_build("int8", "11.0", has_calibration_data=True)
    with pytest.raises(EdgepruneError, match="QuantizeLinear"):
        plan_engine_build("int8", "10.3", has_calibration_data=True, calibrator_api=False)


def test_optimisation_profile_shapes():
    assert profile_shapes((1, 3, 32, 32), dynamic_batch=False) is None
    assert profile_shapes((4, 3, 32, 32), dynamic_batch=True) == {
        "min": [1, 3, 32, 32], "opt": [4, 3, 32, 32], "max": [4, 3, 32, 32]}
    assert profile_shapes((1, 3, 32, 32), dynamic_batch=True, max_shape=(16, 3, 32, 32))["max"] == [16, 3, 32, 32]
    with pytest.raises(EdgepruneError, match="need --dynamic-batch"):
        profile_shapes((1, 3, 32, 32), dynamic_batch=False, max_shape=(8, 3, 32, 32))
    with pytest.raises(EdgepruneError, match="only the batch dimension"):
        profile_shapes((1, 3, 32, 32), dynamic_batch=True, max_shape=(8, 3, 64, 64))
    with pytest.raises(EdgepruneError, match="min .* <= opt .* <= max"):
        profile_shapes((8, 3, 32, 32), dynamic_batch=True, max_shape=(2, 3, 32, 32))


def test_workspace_and_calibration_batches():
    assert workspace_bytes("4G") == 4 << 30 and workspace_bytes("512M") == 512 << 20
    with pytest.raises(EdgepruneError, match="--workspace"):
        workspace_bytes("four gigs")
    batches = calibration_batches(np.zeros((10, 3, 4, 4), np.float32), 4)
    assert [b.shape[0] for b in batches] == [4, 4]
    with pytest.raises(EdgepruneError, match="at least 4"):
        calibration_batches(np.zeros((3, 3, 4, 4), np.float32), 4)


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_engine_export_on_a_tensorrt_machine(tmp_path, tiny_spec):
    out = tmp_path / "tiny.engine"
    result = export(ExportConfig(source=tiny_spec, output=str(out), target="desktop-cuda", shape=(1, 3, 16, 16),
                                 samples=8, timing_cache=str(tmp_path / "timing.cache"), **FAST))
    assert out.is_file() and sidecar_path(out).is_file()
    assert result.parity["passed"] and result.latency["measured"]
    assert (tmp_path / "timing.cache").is_file()
