"""TensorRT profiler: the pure logic (callback aggregation, inspector parsing, fused-name mapping) on
hand-built fixtures, and the orchestration of trt_profiler against a stand-in `tensorrt` module.

The stand-in checks control flow and output schema only; it says nothing about the real API. Tests that
need TensorRT itself carry @pytest.mark.tensorrt and skip where it is not importable.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from edgeprune.profilers import cuda_buffers, trt_profiler
from edgeprune.profilers.common import ProfilerError
from edgeprune.profilers.trt_parsing import (
    LayerTimeAggregator,
    aggregate_layer_times,
    build_trt_nodes,
    map_layers_to_onnx,
    metadata_onnx_nodes,
    onnx_nodes_for_layer,
    parse_engine_information,
    parse_tensor,
    split_fused_name,
    strip_profile_suffix,
    tensor_bytes,
)

FIX = Path(__file__).parent / "fixtures" / "trt"
CONV1 = "/conv1/Conv + /relu/Relu"
REFORMAT = f"Reformatting CopyNode for Input Tensor 0 to {CONV1}"
CONV2 = "/layer1/conv2/Conv + /layer1/Add + /layer1/relu/Relu"
PWN = "PWN(PWN(/act/Sigmoid), /act/Mul)"
POOL = "/pool/GlobalAveragePool"
FOREIGN = "{ForeignNode[/Flatten.../fc/Gemm]}"


def _load(name: str):
    return json.loads((FIX / name).read_text())


@pytest.fixture(scope="module")
def callbacks():
    return _load("profiler_callbacks.json")


@pytest.fixture(scope="module")
def onnx_order():
    return _load("onnx_nodes.json")


# ------------------------------------------------------------------------------------------------
# metadata and fused names


def test_metadata_both_separators_and_concatenated():
    assert metadata_onnx_nodes("[ONNX Layer: /a/Conv]\x1e[ONNX Layer: /a/Relu]") == ["/a/Conv", "/a/Relu"]
    assert metadata_onnx_nodes("[ONNX Layer: a]\x1f[ONNX Layer: b]\x1e[ONNX Layer: c]") == ["a", "b", "c"]
    assert metadata_onnx_nodes("[ONNX Layer: a][ONNX Layer: b]") == ["a", "b"]
    # a bracket inside a node name does not end the entry early
    assert metadata_onnx_nodes("[ONNX Layer: /blocks[0]/Conv]") == ["/blocks[0]/Conv"]
    assert metadata_onnx_nodes("[ONNX Layer: a]\x1e[ONNX Layer: a]") == ["a"]
    assert metadata_onnx_nodes("") == []
    assert metadata_onnx_nodes(None) == []
    assert metadata_onnx_nodes("no marker here") == []


def test_split_fused_name_forms():
    assert split_fused_name(CONV1) == {"names": ["/conv1/Conv", "/relu/Relu"], "kind": "fused", "range": None}
    pwn = split_fused_name(PWN)
    assert pwn["names"] == ["/act/Sigmoid", "/act/Mul"] and pwn["kind"] == "pointwise"
    mixed = split_fused_name("/c/Conv + PWN(/c/Sigmoid, /c/Mul)")
    assert mixed["names"] == ["/c/Conv", "/c/Sigmoid", "/c/Mul"] and mixed["kind"] == "fused"
    foreign = split_fused_name(FOREIGN)
    assert foreign["kind"] == "foreign" and foreign["range"] == ["/Flatten", "/fc/Gemm"]
    reformat = split_fused_name(REFORMAT)
    assert reformat["kind"] == "reformat" and reformat["names"] == ["/conv1/Conv", "/relu/Relu"]
    assert split_fused_name("Reformatting CopyNode for Network Input x")["names"] == []
    plain = split_fused_name("/fc/Gemm [profile 1]")
    assert plain == {"names": ["/fc/Gemm"], "kind": "plain", "range": None}


def test_strip_profile_suffix():
    assert strip_profile_suffix("/a/Conv [profile 2]") == ("/a/Conv", 2)
    assert strip_profile_suffix("/a/Conv") == ("/a/Conv", 0)


def test_onnx_nodes_for_layer_prefers_metadata_and_filters_known(onnx_order):
    names, source = onnx_nodes_for_layer("fused_whatever", "[ONNX Layer: /conv1/Conv]", onnx_order)
    assert (names, source) == (["/conv1/Conv"], "metadata")
    # an old-style name carries weight tensors and quantize nodes: keep only real node names
    known = {"QuantizeLinear_7", "Conv_9", "Clip_13"}
    names, source = onnx_nodes_for_layer(
        "features.0.0.weight + QuantizeLinear_7 + Conv_9 + PWN(Clip_13)", None, known
    )
    assert names == ["QuantizeLinear_7", "Conv_9", "Clip_13"] and source == "name"
    # ForeignNode: the range expands through the graph order
    names, source = onnx_nodes_for_layer(FOREIGN, None, onnx_order, onnx_order)
    assert names == ["/Flatten", "/fc/Gemm"] and source == "name"
    names, _ = onnx_nodes_for_layer("{ForeignNode[/layer1/Add.../act/Mul]}", None, onnx_order, onnx_order)
    assert names == ["/layer1/Add", "/layer1/relu/Relu", "/act/Sigmoid", "/act/Mul"]
    assert onnx_nodes_for_layer("(Unnamed Layer* 7) [Shuffle]", None, onnx_order) == ([], None)


# ------------------------------------------------------------------------------------------------
# inspector JSON


def _check_layers(parsed, onnx_order):
    layers = parsed["layers"]
    assert [layer["name"] for layer in layers] == [REFORMAT, CONV1, CONV2, PWN, POOL, FOREIGN]
    conv1 = layers[1]
    assert conv1["type"] == "Convolution" and conv1["layer_type"] == "CaskConvolution"
    assert conv1["inputs"][0]["shape"] == [1, 3, 32, 32] and conv1["inputs"][0]["dtype"] == "float16"
    assert conv1["outputs"][0]["shape"] == [1, 16, 32, 32]
    assert conv1["parameter_bytes"] == (432 + 16) * 2  # Half weights and bias
    assert layers[0]["inputs"][0]["dtype"] == "float32"
    assert parsed["detailed"] is True
    mapping = map_layers_to_onnx(layers, onnx_order, onnx_order)
    assert mapping[CONV2] == {
        "onnx_nodes": ["/layer1/conv2/Conv", "/layer1/Add", "/layer1/relu/Relu"],
        "source": "metadata",
    }
    assert mapping[PWN]["onnx_nodes"] == ["/act/Sigmoid", "/act/Mul"]
    assert mapping[FOREIGN] == {"onnx_nodes": ["/Flatten", "/fc/Gemm"], "source": "name"}
    assert mapping[REFORMAT] == {"onnx_nodes": ["/conv1/Conv", "/relu/Relu"], "source": "name"}
    # every ONNX node is covered by some layer
    covered = {n for m in mapping.values() for n in m["onnx_nodes"]}
    assert covered == set(onnx_order)


def test_inspector_trt10_schema(onnx_order):
    parsed = parse_engine_information((FIX / "inspector_trt10_detailed.json").read_text())
    _check_layers(parsed, onnx_order)
    assert [t["name"] for t in parsed["io_tensors"]] == ["input", "output"]
    assert parsed["io_tensors"][0]["mode"] is None  # TensorRT 10 bindings are bare names


def test_inspector_trt11_schema(onnx_order):
    parsed = parse_engine_information(_load("inspector_trt11_detailed.json"))  # dict form
    _check_layers(parsed, onnx_order)
    assert parsed["io_tensors"][0] == {
        "name": "input",
        "mode": "input",
        "dtype": "float32",
        "shape": [1, 3, 32, 32],
    }
    assert parsed["io_tensors"][1]["mode"] == "output"


def test_inspector_per_layer_json_strings():
    parsed = parse_engine_information(_load("inspector_layer_strings.json"))
    assert [layer["name"] for layer in parsed["layers"]] == [REFORMAT, CONV1, CONV2]
    assert parsed["layers"][1]["parameter_bytes"] == (432 + 16) * 2
    assert parsed["detailed"] is True


def test_inspector_names_only_is_not_detailed():
    parsed = parse_engine_information(_load("inspector_names_only.json"))
    assert parsed["detailed"] is False
    assert parsed["layers"][1]["name"] == CONV1 and parsed["layers"][1]["inputs"] == []


def test_inspector_bad_json():
    with pytest.raises(ProfilerError, match="not valid JSON"):
        parse_engine_information("{not json")


def test_tensor_formats_and_bytes():
    t = parse_tensor(
        {
            "Name": "a",
            "Dimensions": [1, 32, 8, 8],
            "Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format",
        }
    )
    assert t["dtype"] == "int8" and tensor_bytes(t) == 32 * 64
    t = parse_tensor(
        {
            "Name": "b",
            "Dimensions": [2, 4],
            "Format": "Row major linear FP32 format (kLINEAR)",
            "DataType": "Half",
        }
    )
    assert t["dtype"] == "float16" and tensor_bytes(t) == 16  # DataType wins over the format's word
    assert (
        tensor_bytes(
            parse_tensor({"Name": "c", "Dimensions": [-1, 4], "Format/Datatype": "Row major linear FP32"})
        )
        is None
    )
    assert (
        parse_tensor({"Name": "d", "Dimensions": [1], "Format/Datatype": "Unknown format"})["dtype"] is None
    )


# ------------------------------------------------------------------------------------------------
# IProfiler aggregation


def test_aggregate_callbacks_medians_calls_and_order(callbacks):
    timings = aggregate_layer_times(callbacks["runs"], skip_runs=callbacks["warmup_runs"])
    assert [t["name"] for t in timings] == [REFORMAT, CONV1, CONV2, PWN, POOL, FOREIGN]
    by = {t["name"]: t for t in timings}
    assert by[CONV1]["latency_ms"] == pytest.approx(0.051)  # median of 0.050 .052 .049 .054 .051
    assert by[CONV1]["calls"] == 1 and by[CONV1]["runs"] == 5
    assert by[FOREIGN]["calls"] == 2  # reported twice per run: summed within a run
    assert by[FOREIGN]["latency_ms"] == pytest.approx(0.0105)
    assert by[CONV1]["max_ms"] < 1.0  # the 1 ms warm-up runs were skipped
    with_warmup = {t["name"]: t for t in aggregate_layer_times(callbacks["runs"], skip_runs=0)}
    assert with_warmup[CONV1]["max_ms"] == pytest.approx(1.0)


def test_aggregator_edge_cases():
    agg = LayerTimeAggregator()
    assert agg.summary() == []
    agg.record("a", 1.0)  # no begin_run yet: opens one
    agg.begin_run()
    agg.record("b", 2.0)
    out = {t["name"]: t for t in agg.summary()}
    assert agg.n_runs == 2
    assert out["a"]["latency_ms"] == pytest.approx(0.5)  # absent in run 2 counts as 0 ms
    assert out["b"]["latency_ms"] == pytest.approx(1.0)


def test_build_trt_nodes_joins_timings_and_layers(callbacks, onnx_order):
    timings = aggregate_layer_times(callbacks["runs"], skip_runs=2)
    layers = parse_engine_information(_load("inspector_trt10_detailed.json"))["layers"]
    nodes = build_trt_nodes(timings, layers, onnx_order, onnx_order)
    by = {n["name"]: n for n in nodes}
    assert [n["name"] for n in nodes] == [t["name"] for t in timings]
    assert by[CONV1]["op"] == "Convolution" and by[CONV1]["provider"] == "TensorRT"
    assert (
        by[CONV1]["onnx_nodes"] == ["/conv1/Conv", "/relu/Relu"]
        and by[CONV1]["onnx_nodes_source"] == "metadata"
    )
    assert by[CONV1]["memory"] == {
        "parameter_bytes": 896,
        "activation_bytes": 3 * 32 * 32 * 2,
        "output_bytes": 16 * 32 * 32 * 2,
    }
    assert by[CONV1]["output_shapes"] == [[1, 16, 32, 32]]
    assert by[FOREIGN]["onnx_nodes"] == ["/Flatten", "/fc/Gemm"]
    # a timed layer the inspector does not know (names-only engine) keeps its time and name mapping
    extra = build_trt_nodes([{"name": "/fc/Gemm", "latency_ms": 0.1, "calls": 1}], [], onnx_order)
    assert extra[0]["onnx_nodes"] == ["/fc/Gemm"] and extra[0]["memory"] == {} and extra[0]["op"] == "plain"


# ------------------------------------------------------------------------------------------------
# trt_profiler against a stand-in tensorrt module (control flow and schema only)


class _FakeBackend(cuda_buffers.DeviceBackend):
    name = "fake"

    def __init__(self):
        self._next = 0x1000
        self.uploads = []

    def alloc(self, nbytes):
        self._next += max(256, nbytes)
        return self._next

    def upload(self, ptr, host):
        self.uploads.append((ptr, host.shape))

    def download(self, host, ptr):
        pass

    @property
    def stream_handle(self):
        return 7

    def synchronize(self):
        pass

    def device_name(self):
        return "Fake GPU"


def _fake_trt(version: str, callbacks, onnx_order, *, half=False, qdq=False, dynamic=False):
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    major = int(version.split(".")[0])
    ns = types.SimpleNamespace
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, sev=None: None})
    trt.NetworkDefinitionCreationFlag = ns(STRONGLY_TYPED=5)
    trt.MemoryPoolType = ns(WORKSPACE="workspace")
    trt.ProfilingVerbosity = ns(DETAILED="detailed")
    trt.BuilderFlag = ns(FP16="FP16", INT8="INT8", TF32="TF32") if major <= 10 else ns(DIRECT_IO="DIRECT_IO")
    trt.DataType = ns(FLOAT="float", HALF="half")
    trt.LayerType = ns(CONVOLUTION="conv", QUANTIZE="q", DEQUANTIZE="dq")
    trt.TensorIOMode = ns(INPUT="in", OUTPUT="out")
    trt.LayerInformationFormat = ns(JSON="json")
    trt.nptype = lambda dt: {"float": np.float32, "half": np.float16}[dt]
    trt.IProfiler = type("IProfiler", (), {"__init__": lambda self: None})
    state = trt.state = {"flags": [], "profiles": [], "executions": 0}
    in_shape = (-1, 3, 32, 32) if dynamic else (1, 3, 32, 32)
    dtype = "half" if half else "float"

    class Tensor:
        def __init__(self, name, shape, dt):
            self.name, self.shape, self.dtype = name, shape, dt

    class Layer:
        def __init__(self, name, type_):
            self.name, self.type, self.metadata = name, type_, f"[ONNX Layer: {name}]"
            self.num_outputs = 1

        def get_output(self, i):
            return Tensor(self.name + "_out", (1,), dtype)

    layers = [Layer(n, "q" if qdq and i == 0 else "conv") for i, n in enumerate(onnx_order)]

    class Network:
        num_inputs = 1
        num_layers = len(layers)

        def get_input(self, i):
            return Tensor("input", in_shape, dtype)

        def get_layer(self, i):
            return layers[i]

    class Config:
        def set_memory_pool_limit(self, pool, size):
            state["workspace"] = size

        def set_flag(self, flag):
            state["flags"].append(flag)

        def get_flag(self, flag):
            return flag == "TF32"  # TensorRT enables TF32 by default

        def add_optimization_profile(self, profile):
            state["profiles"].append(profile.shapes)

        if major <= 10:  # implicit INT8 calibration left TensorRT with version 11
            int8_calibrator = None

            def set_calibration_profile(self, profile):
                state["calibration_profile"] = profile.shapes

        def __setattr__(self, name, value):
            if name == "int8_calibrator":
                state["calibrator"] = value
            object.__setattr__(self, name, value)

        def create_timing_cache(self, blob):
            return ns(serialize=lambda: b"CACHE" + blob)

        def set_timing_cache(self, cache, ignore_mismatch):
            self.cache = cache
            return True

        def get_timing_cache(self):
            return self.cache

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, mn, opt, mx):
            self.shapes[name] = (list(mn), list(opt), list(mx))

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags=0):
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            return b"FAKEPLAN" * 4

    class Parser:
        num_errors = 0

        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            return Path(path).is_file()

    io = [("input", "in", in_shape), ("output", "out", (1, 10))]

    class Context:
        def __init__(self):
            self.profiler = None
            self.enqueue_emits_profile = True
            self.pending = []
            self.shapes = {}

        def set_input_shape(self, name, shape):
            self.shapes[name] = tuple(shape)
            return len(shape) == 4 and tuple(shape[1:]) == (3, 32, 32)

        def get_tensor_shape(self, name):
            return (self.shapes["input"][0], 10) if name == "output" else self.shapes[name]

        def set_tensor_address(self, name, ptr):
            assert ptr > 0

        def execute_async_v3(self, stream):
            assert stream == 7
            if self.profiler is not None:
                run = callbacks["runs"][state["executions"] % len(callbacks["runs"])]
                state["executions"] += 1
                if self.enqueue_emits_profile:
                    for name, ms in run:
                        self.profiler.report_layer_time(name, ms)
                else:
                    self.pending = run
            return True

        def report_to_profiler(self):
            for name, ms in self.pending:
                self.profiler.report_layer_time(name, ms)
            self.pending = []
            return True

    class Engine:
        num_io_tensors = 2
        device_memory_size_v2 = 3 * 1024 * 1024

        def get_tensor_name(self, i):
            return io[i][0]

        def get_tensor_mode(self, name):
            return dict((n, m) for n, m, _ in io)[name]

        def get_tensor_shape(self, name):
            return dict((n, s) for n, _, s in io)[name]

        def get_tensor_dtype(self, name):
            return "float"

        def create_execution_context(self):
            return Context()

        def create_engine_inspector(self):
            return ns(
                execution_context=None,
                get_engine_information=lambda fmt: (FIX / "inspector_trt10_detailed.json").read_text(),
            )

    trt.Builder, trt.OnnxParser = Builder, Parser
    trt.Runtime = type(
        "Runtime",
        (),
        {"__init__": lambda self, lg: None, "deserialize_cuda_engine": lambda self, plan: Engine()},
    )
    return trt


@pytest.fixture
def fake_env(monkeypatch, tmp_path, callbacks, onnx_order):
    monkeypatch.setitem(cuda_buffers.BACKENDS, "fake", _FakeBackend)
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not really onnx: the stand-in parser does not read it")

    def install(version="10.3.0", **kw):
        trt = _fake_trt(version, callbacks, onnx_order, **kw)
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        return trt

    return install, model, tmp_path


def _run(model, **kw):
    args = dict(warmup=2, iterations=5, min_time_s=0.0, backend="fake")
    args.update(kw)
    return trt_profiler.profile_trt(model, **args)


def test_fake_trt10_fp16_profile_schema(fake_env):
    install, model, tmp = fake_env
    trt = install("10.3.0")
    res = _run(model, engine_out=tmp / "m.engine", timing_cache=tmp / "tc.bin")
    assert set(res) >= {
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
        "engine",
    }
    assert res["runtime"] == "tensorrt" and res["schema_version"] == 1
    assert trt.state["flags"] == ["FP16"] and trt.state["workspace"] == 1 << 30
    assert res["latency_ms"]["n"] >= 5 and len(res["samples_ms"]) == res["latency_ms"]["n"]
    assert trt.state["executions"] == 7  # profiled runs: 2 warm-up + 5, all through report_to_profiler
    by = {n["name"]: n for n in res["nodes"]}
    assert by[CONV1]["latency_ms"] == pytest.approx(0.051)
    assert by[FOREIGN]["onnx_nodes"] == ["/Flatten", "/fc/Gemm"]
    assert res["node_latency_sum_ms"] == pytest.approx(sum(n["latency_ms"] for n in res["nodes"]))
    eng = res["engine"]
    assert eng["bytes"] == 32 and eng["device_memory_bytes"] == 3 * 1024 * 1024
    assert eng["tensorrt_version"] == "10.3.0" and len(eng["layers"]) == 6
    assert res["memory"]["device_memory_mb"] == pytest.approx(3.0)
    assert (tmp / "m.engine").read_bytes() == b"FAKEPLAN" * 4
    assert (tmp / "tc.bin").read_bytes() == b"CACHE"
    assert res["conditions"]["runtime"] == "tensorrt" and res["conditions"]["cuda_device"] == "Fake GPU"
    json.dumps(res, allow_nan=False)  # serialisable as written


def test_fake_trt11_fp16_needs_fp16_onnx(fake_env):
    install, model, _ = fake_env
    install("11.0.0", half=False)
    with pytest.raises(ProfilerError, match="strongly typed.*FP16 ONNX"):
        _run(model)
    trt = install("11.0.0", half=True)
    res = _run(model, per_node=False)
    assert trt.state["flags"] == [] and res["engine"]["build"]["precision"]["mode"] == "strongly-typed"
    assert res["nodes"] == [] and res["settings"]["node_iterations"] is None


def test_fake_trt_fp32_labels(fake_env):
    install, model, _ = fake_env
    trt = install("10.3.0")
    res = _run(model, precision="fp32", per_node=False)
    assert trt.state["flags"] == [] and res["engine"]["build"]["precision"] == {
        "mode": "fp32",
        "flags": [],
        "tf32": True,
    }
    install("11.0.0", half=True)  # strongly typed: an FP16 ONNX cannot be profiled as fp32
    with pytest.raises(ProfilerError, match="--precision fp16"):
        _run(model, precision="fp32")


def test_fake_trt_int8_needs_qdq(fake_env):
    install, model, _ = fake_env
    install("10.3.0")
    with pytest.raises(ProfilerError, match="explicitly quantized"):
        _run(model, precision="int8")
    trt = install("10.3.0", qdq=True)
    _run(model, precision="int8", per_node=False)
    assert "INT8" in trt.state["flags"]


def test_fake_trt_int8_calibration_needs_no_qdq_and_sets_the_calibrator(fake_env):
    install, model, _ = fake_env
    trt = install("10.3.0", dynamic=True)
    calibrator = object()
    plan, facts = trt_profiler.build_engine(
        model, precision="int8", workspace_bytes=1 << 20, timing_cache=None, input_shapes={"input": [4, 3, 32, 32]},
        shapes_min={}, shapes_opt={}, shapes_max={}, calibrator=calibrator)
    assert trt.state["calibrator"] is calibrator and "INT8" in trt.state["flags"]
    assert trt.state["calibration_profile"] == {"input": ([4, 3, 32, 32],) * 3}
    assert facts["precision"]["mode"] == "calibration"
    install("11.0.0")
    with pytest.raises(ProfilerError, match="no implicit INT8 calibration"):
        trt_profiler.build_engine(
            model, precision="int8", workspace_bytes=1 << 20, timing_cache=None, input_shapes={},
            shapes_min={}, shapes_opt={}, shapes_max={}, calibrator=calibrator)


def test_fake_trt_dynamic_input_needs_shape_and_builds_profile(fake_env):
    install, model, _ = fake_env
    install("10.3.0", dynamic=True)
    with pytest.raises(ProfilerError, match="dynamic dims"):
        _run(model)
    trt = install("10.3.0", dynamic=True)
    res = _run(
        model, input_shapes={"input": [4, 3, 32, 32]}, shapes_max={"input": [8, 3, 32, 32]}, per_node=False
    )
    assert trt.state["profiles"] == [{"input": ([4, 3, 32, 32], [4, 3, 32, 32], [8, 3, 32, 32])}]
    assert res["model"]["inputs"][0]["shape"] == [4, 3, 32, 32]
    assert res["model"]["outputs"][0]["shape"] == [4, 10]
    # --shapes-opt alone sets the shape it runs at
    trt = install("10.3.0", dynamic=True)
    res = _run(model, shapes_opt={"input": [2, 3, 32, 32]}, per_node=False)
    assert res["model"]["inputs"][0]["shape"] == [2, 3, 32, 32]
    assert res["engine"]["build"]["optimization_profile"]["input"]["max"] == [2, 3, 32, 32]


def test_fake_trt_cli_writes_profile(fake_env, capsys):
    install, model, tmp = fake_env
    install("10.3.0")
    out = tmp / "p.json"
    rc = trt_profiler.main(
        [
            str(model),
            "--out",
            str(out),
            "--warmup",
            "2",
            "--iterations",
            "5",
            "--min-time",
            "0",
            "--backend",
            "fake",
            "--threads",
            "4",
            "--workspace",
            "512M",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    data = json.loads(out.read_text())
    assert data["settings"]["workspace_bytes"] == 512 << 20
    assert data["settings"]["threads_requested"] == 4 and data["conditions"]["threads"] == 4
    assert json.loads(capsys.readouterr().out)["nodes"] == 6


def test_cli_without_tensorrt_is_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` raise ImportError
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    rc = trt_profiler.main([str(model), "--out", str(tmp_path / "p.json")])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.count("\n") == 1 and err.startswith("error: tensorrt is not importable")
    assert not (tmp_path / "p.json").exists()


def test_parse_size():
    assert trt_profiler.parse_size("1G") == 1 << 30
    assert trt_profiler.parse_size("512m") == 512 << 20
    assert trt_profiler.parse_size("2GiB") == 2 << 30
    assert trt_profiler.parse_size("4096") == 4096
    for bad in ("lots", "-1G", "0"):
        with pytest.raises(ProfilerError):
            trt_profiler.parse_size(bad)


def test_open_backend_errors():
    with pytest.raises(ProfilerError, match="unknown device backend"):
        cuda_buffers.open_backend("nope")
    if "pycuda" not in sys.modules:
        try:
            import pycuda  # noqa: F401
        except ImportError:
            with pytest.raises(ProfilerError, match="pycuda"):
                cuda_buffers.open_backend("pycuda")


# ------------------------------------------------------------------------------------------------
# real TensorRT (skipped where it is not importable)


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_real_tensorrt_profile(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], name="/conv/Conv", pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c"], ["y"], name="/relu/Relu"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])],
        [w],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), path)
    res = trt_profiler.profile_trt(path, precision="fp32", warmup=2, iterations=10, min_time_s=0.0)
    assert res["latency_ms"]["n"] >= 10 and res["engine"]["bytes"] > 0
    assert res["nodes"] and {"/conv/Conv", "/relu/Relu"} <= {
        n for node in res["nodes"] for n in node["onnx_nodes"]
    }
