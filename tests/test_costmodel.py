"""Cost model: staircase tables from a deterministic fake runtime, the disk cache, real onnxruntime packs,
and layer signatures of real torchvision models."""

from __future__ import annotations

import dataclasses
import json
import logging
import math

import onnx
import pytest
import torch
from torch import nn

from edgeprune.costmodel import CostModel, LatencyCache, LatencyTable, conditions_key, signatures_from_model
from edgeprune.costmodel.cache import SCHEMA_VERSION
from edgeprune.costmodel.table import TABLE_KIND, table_key
from edgeprune.costmodel.variants import (
    METADATA_KEY,
    Branch,
    LayerSignature,
    Pack,
    grid_for,
    inspect_layers,
    read_branch_times,
    write_pack,
)
from edgeprune.targets import load_target

STEP = 16
UNIT_MS = 0.01
CONST_MS = 0.05
EPS_MS = 0.002  # the fake profiler's own cost per node, as the probes will show it


def staircase(out: int, inp: int) -> float:
    return UNIT_MS * math.ceil(out / STEP) * math.ceil(inp / STEP)


class StaircaseRunner:
    """A deterministic runtime: a layer costs ceil(out/16) * ceil(in/16) units; a model costs its layers
    plus a constant. Packs are read through the branch list the pack carries in its metadata."""

    def __init__(self, slowdown: float = 1.0) -> None:
        self.calls = 0
        self.slowdown = slowdown  # a busy machine stretches whole runs, not the per-node medians

    def __enter__(self) -> StaircaseRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def measure(self, onnx_path, *, per_node=True, extra_args=None) -> dict:
        self.calls += 1
        model = onnx.load(str(onnx_path), load_external_data=False)
        meta = {p.key: p.value for p in model.metadata_props}
        if METADATA_KEY in meta:
            nodes = []
            for b in json.loads(meta[METADATA_KEY]):
                i = b["index"]
                nodes += [
                    {"name": f"P{i}__xi_nchwc", "op": "MaxPool", "latency_ms": 1.0},  # preparation: not counted
                    {"name": f"L{i}__c_nchwc", "op": "Conv", "latency_ms": staircase(b["out"], b["in"]) + EPS_MS},
                    {"name": f"ReorderOutput_token_{i}", "op": "ReorderOutput", "latency_ms": 1.0},
                ]
            nodes += [{"name": f"Q{j}__relu", "op": "Relu", "latency_ms": EPS_MS} for j in range(6)]
            return {"latency_ms": {"p50": sum(n["latency_ms"] for n in nodes)}, "nodes": nodes}
        inits = {i.name: list(i.dims) for i in model.graph.initializer}
        nodes = [{"name": "pool", "op": "GlobalAveragePool", "latency_ms": CONST_MS + EPS_MS}]
        for node in model.graph.node:
            if node.op_type in ("Conv", "Gemm") and len(node.input) > 1 and node.input[1] in inits:
                dims = inits[node.input[1]]
                groups = next((a.i for a in node.attribute if a.name == "group"), 1)
                nodes.append({"name": node.name, "op": node.op_type,
                              "latency_ms": staircase(dims[0], dims[1] * groups) + EPS_MS})
        total = sum(n["latency_ms"] - EPS_MS for n in nodes)
        return {"latency_ms": {"p50": total * self.slowdown}, "nodes": nodes}


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.Conv2d(64, 32, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    ).eval()


def narrowed(out1: int, out2: int, out3: int = 32) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, out1, 3, padding=1), nn.BatchNorm2d(out1), nn.ReLU(),
        nn.Conv2d(out1, out2, 3, padding=1), nn.BatchNorm2d(out2), nn.ReLU(),
        nn.Conv2d(out2, out3, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(out3, 10),
    ).eval()


X = torch.zeros(1, 3, 8, 8)
COND = {"cpu_model": "FakeCPU 1", "physical_cores": 2, "threads": 2, "runtime": "onnxruntime",
        "runtime_version": "1.0", "precision": "fp32", "execution_provider": "CPUExecutionProvider",
        "graph_optimization_level": "all"}


def build(tmp_path, runner, **kw) -> CostModel:
    kw.setdefault("conditions", COND)
    return CostModel.build(small_cnn(), X, "cpu", runner=runner, cache=tmp_path / "cache", exporter="legacy",
                           repeats=1, **kw)


@pytest.fixture
def built(tmp_path):
    runner = StaircaseRunner()
    return build(tmp_path, runner), runner


def test_staircase_step_edges_are_the_multiples_of_16(built):
    cm, _ = built
    assert cm.tables[cm.layers["3"].table_key].outs == (1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64)
    assert cm.step_edges("3") == [16, 32, 48, 64]
    assert cm.step_edges("3", side="in") == [16, 32, 48, 64]
    assert cm.step_edges("0") == [16, 32, 48, 64]  # its input (the image) is not gridded
    assert cm.step_edges("10", side="in") == [16, 32]  # the classifier: 10 outputs fixed
    assert cm.step_edges("10") == [10]
    for wanted in range(1, 65):
        assert cm.round_width("3", wanted) % STEP == 0
    # removing channels inside a plateau saves nothing; crossing an edge saves one step
    assert cm.savings("3", 8) == pytest.approx(0.0, abs=1e-12)
    assert cm.savings("3", 16) == pytest.approx(UNIT_MS * 4)


def test_greedy_allocation_lands_on_step_edges(built):
    cm, _ = built
    widths = {"0": 64, "3": 64, "6": 32}

    def channels() -> dict:
        return {"0": (widths["0"], 3), "3": (widths["3"], widths["0"]), "6": (widths["6"], widths["3"]),
                "10": (10, widths["6"])}

    budget = 0.6 * cm.predict()
    while cm.predict(channels()) > budget:
        best = None
        for path in widths:
            below = [e for e in cm.step_edges(path) if e < widths[path]]
            if not below:
                continue
            trial = dict(widths, **{path: below[-1]})
            saved = cm.predict(channels()) - cm.predict(
                {"0": (trial["0"], 3), "3": (trial["3"], trial["0"]), "6": (trial["6"], trial["3"]),
                 "10": (10, trial["6"])})
            per_channel = saved / (widths[path] - below[-1])
            if best is None or per_channel > best[0]:
                best = (per_channel, path, below[-1])
        assert best is not None, "budget unreachable"
        widths[best[1]] = best[2]
    assert all(w % STEP == 0 for w in widths.values()), widths
    assert widths != {"0": 64, "3": 64, "6": 32}


def test_prediction_matches_the_fake_measurement_of_pruned_models(built, tmp_path):
    from edgeprune.onnx_export import export_onnx

    cm, runner = built
    assert cm.predict() == pytest.approx(runner.measure(_export(small_cnn(), tmp_path / "d"))["latency_ms"]["p50"])
    assert cm.residual_ms == pytest.approx(CONST_MS)
    for out1, out2 in [(16, 48), (20, 33), (8, 8), (64, 17)]:
        path = export_onnx(narrowed(out1, out2), tuple(X.shape), tmp_path / f"m{out1}_{out2}" / "m.onnx",
                           exporter="legacy").path
        truth = runner.measure(path)["latency_ms"]["p50"]
        pred = cm.predict({"0": (out1, 3), "3": (out2, out1), "6": (32, out2)})
        assert pred == pytest.approx(truth), (out1, out2)


def test_residual_modes_under_a_proportional_slowdown(tmp_path):
    """A busy machine stretches end-to-end time by 1.5x while per-node medians stay put: the profiled
    residual follows it exactly, a scaled one roughly, a constant one cannot."""
    runner = StaircaseRunner(slowdown=1.5)
    cm = build(tmp_path, runner)
    assert cm.residual_mode == "profiled" and cm.nonlayer_ms == pytest.approx(CONST_MS)
    truth = runner.measure(_export(narrowed(16, 24), tmp_path / "p"))["latency_ms"]["p50"]
    errors = {}
    for mode in ("profiled", "scaled", "constant"):
        cm.residual_mode = mode
        assert cm.predict() == pytest.approx(1.5 * (cm.dense_layer_ms + CONST_MS))  # the dense model, by construction
        errors[mode] = abs(cm.predict({"0": (16, 3), "3": (24, 16), "6": (32, 24)}) - truth) / truth
    assert errors["profiled"] == pytest.approx(0.0, abs=1e-9)
    assert 0 < errors["scaled"] < errors["constant"] and errors["constant"] > 0.05


def _export(model, directory):
    from edgeprune.onnx_export import export_onnx

    return export_onnx(model, tuple(X.shape), directory / "m.onnx", exporter="legacy").path


def test_second_build_is_served_from_the_cache(tmp_path):
    first_runner, second_runner = StaircaseRunner(), StaircaseRunner()
    first = build(tmp_path, first_runner, conditions=None)  # local conditions, computed without the runner
    second = build(tmp_path, second_runner, conditions=None)
    assert first_runner.calls > 0
    assert second_runner.calls == 0
    assert second.info["tables_cached"] == second.info["tables"] and second.info["residual_cached"]
    assert second.predict({"3": (24, 40)}) == first.predict({"3": (24, 40)})


@pytest.mark.parametrize("damage", ["garbage", "edited_value", "missing_field", "stale_schema", "renamed"])
def test_corrupt_or_stale_entry_is_rebuilt_never_trusted(tmp_path, caplog, damage):
    cm = build(tmp_path, StaircaseRunner())
    store = LatencyCache(tmp_path / "cache")
    ckey, key = cm.info["conditions_key"], cm.layers["3"].table_key
    path = store.path_for(ckey, key)
    entry = json.loads(path.read_text())
    if damage == "garbage":
        path.write_text('{"schema_version": 1, "latency_')
    elif damage == "edited_value":
        entry["latency_ms"][0][0] = 0.0  # checksum no longer matches
        path.write_text(json.dumps(entry))
    elif damage == "missing_field":
        del entry["grid"]
        path.write_text(json.dumps(entry))
    elif damage == "stale_schema":
        entry["schema_version"] = SCHEMA_VERSION - 1
        path.write_text(json.dumps(entry))
    else:  # a valid entry filed under another key
        other = store.path_for(ckey, cm.layers["6"].table_key)
        other.write_text(path.read_text())
        path = other
    runner = StaircaseRunner()
    with caplog.at_level(logging.WARNING, logger="edgeprune.costmodel"):
        again = build(tmp_path, runner)
    assert runner.calls > 0
    assert any("rejected" in r.getMessage() for r in caplog.records)
    assert again.info["cache_rejected"] and again.info["tables_measured"] == 1
    assert store.get(ckey, path.stem, TABLE_KIND) is not None  # rewritten, valid
    assert again.predict({"3": (24, 40), "6": (16, 24)}) == pytest.approx(cm.predict({"3": (24, 40), "6": (16, 24)}))


def test_conditions_key_follows_what_decides_speed(tmp_path):
    base = conditions_key(COND)
    for field, value in [("threads", 1), ("runtime_version", "1.1"), ("graph_optimization_level", "extended"),
                         ("cpu_model", "OtherCPU"), ("precision", "fp16"), ("execution_provider", "CUDAExecutionProvider")]:
        assert conditions_key({**COND, field: value}) != base, field
    assert conditions_key({**COND, "hostname": "elsewhere", "cpu_governor": "powersave"}) == base
    first = StaircaseRunner()
    build(tmp_path, first)
    other = StaircaseRunner()
    cm = build(tmp_path, other, conditions={**COND, "threads": 1})
    assert other.calls > 0 and cm.info["tables_cached"] == 0


def test_calibration_corrects_and_records_errors(built):
    cm, _ = built
    ch = {"3": (32, 64), "6": (32, 32)}
    pred = cm.predict(ch)
    measured = 1.2 * pred  # the target runs 20% slower than the tables say
    rec = cm.calibrate(measured, ch)
    assert rec["error"] == pytest.approx((pred - measured) / measured)
    assert cm.factor == pytest.approx(1.2)
    assert cm.predict(ch) == pytest.approx(measured)
    assert cm.current["3"] == (32, 64)
    cm.calibrate(measured * 5, ch)  # one wild measurement: the window's median holds the factor back
    cm.calibrate(measured, ch)
    assert cm.factor == pytest.approx(1.2)
    assert len(cm.prediction_errors) == 3 and cm.prediction_errors[0] == pytest.approx(rec["error"])


def test_latency_table_lookup_and_envelope():
    table = LatencyTable(outs=(8, 16, 24, 32), ins=None, values=((3.0,), (2.0,), (4.0,), (4.02,)))
    assert table.lookup(1) == 3.0 and table.lookup(9) == 2.0 and table.lookup(17) == 4.0
    # 8 is slower than 16 (an odd width on a slow path): never an edge; 24 is within 2% of 32: a plateau
    assert table.edges() == [16, 32]
    with pytest.raises(ValueError):
        table.lookup(33)
    with pytest.raises(ValueError):
        table.lookup(0)


def test_real_onnxruntime_pack_reads_back_every_branch(tmp_path):
    from edgeprune.profilers.ort_profiler import profile_onnx

    conv = LayerSignature(op="conv", in_channels=32, out_channels=32, kernel=(3, 3), padding=(1, 1, 1, 1),
                          height=8, width=8, bias=True, activation="relu", residual=True)
    dw = LayerSignature(op="conv", in_channels=32, out_channels=32, kernel=(3, 3), padding=(1, 1, 1, 1),
                        groups=32, height=8, width=8, bias=True, activation="relu6")
    lin = LayerSignature(op="linear", in_channels=64, out_channels=10, bias=True)
    pack = Pack([Branch(0, conv, 8, 24), Branch(1, conv, 32, 32), Branch(2, dw, 16, 16), Branch(3, lin, 10, 40),
                 Branch(4, dw, 32, 32)])
    path = write_pack(pack, tmp_path / "pack.onnx")
    for level in ("all", "basic"):
        raw = profile_onnx(path, threads=1, graph_optimization_level=level, warmup=2, iterations=10, min_time_s=0)
        times, eps = read_branch_times(raw, len(pack.branches))
        assert all(t >= 0 for t in times) and eps > 0
        assert times[1] > 0  # the full 32x32 conv takes measurable time after the probe cost is removed


def test_real_onnxruntime_build_is_monotone_ish(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU()).eval()
    target = dataclasses.replace(load_target("cpu"), threads=1).with_measure(warmup=3, iterations=20, min_time_s=0.05)
    cm = CostModel.build(model, torch.zeros(1, 3, 32, 32), target, cache=tmp_path / "cache", repeats=1,
                         iterations=20, exporter="legacy")
    table = cm.tables[cm.layers["2"].table_key]
    assert table.outs == (1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64) and table.ins == (1, 2, 4, 8, 16, 24, 32)
    flat = sorted((o * i, table.lookup(o, i)) for o in table.outs for i in table.ins)
    small = [v for _, v in flat[: len(flat) // 4]]
    large = [v for _, v in flat[-len(flat) // 4:]]
    assert table.lookup(64, 32) > table.lookup(8, 8)
    assert sum(large) / len(large) > sum(small) / len(small)
    assert cm.dense_ms > 0 and cm.predict({"2": (8, 8), "0": (8, 3)}) < cm.predict()
    assert cm.info["runner_calls"] == 2  # one pack, one dense measurement


def test_signatures_of_torchvision_resnet18_and_mobilenet_v2():
    import torchvision

    x = torch.zeros(1, 3, 64, 64)
    r18 = {r.path: r for r in inspect_layers(torchvision.models.resnet18(), x)}
    assert len(r18) == 21
    first = r18["conv1"]
    assert first.fixed_in and not first.fixed_out
    assert first.signature == LayerSignature(op="conv", in_channels=3, out_channels=64, kernel=(7, 7),
                                             stride=(2, 2), padding=(3, 3, 3, 3), height=64, width=64, bias=True,
                                             activation="relu")
    assert r18["layer1.0.conv1"].signature.height == 16 and r18["layer1.0.conv1"].signature.activation == "relu"
    assert r18["layer1.0.conv2"].signature.residual and r18["layer1.0.conv2"].signature.activation == "relu"
    assert r18["layer2.0.downsample.0"].signature.kernel == (1, 1)
    assert r18["fc"].fixed_out and r18["fc"].signature.op == "linear" and r18["fc"].signature.in_channels == 512

    mb = signatures_from_model(torchvision.models.mobilenet_v2(), x)
    dw = mb["features.1.conv.0.0"]
    assert dw.depthwise and dw.groups == 32 and dw.activation == "relu6" and dw.height == 32
    assert not mb["features.1.conv.1"].depthwise and mb["features.1.conv.1"].activation == "none"
    assert mb["features.3.conv.2"].residual  # x + conv(x): the projection conv carries the add
    recs = inspect_layers(torchvision.models.mobilenet_v2(), x)
    g = grid_for(next(r for r in recs if r.path == "features.1.conv.0.0"))
    assert g.ins is None and g.outs[-1] == 32


def test_resnet56_layers_dedupe_to_ten_tables():
    from edgeprune.models.cifar_resnet import cifar_resnet

    recs = inspect_layers(cifar_resnet(56), torch.zeros(1, 3, 32, 32))
    keys = {table_key(r.signature, grid_for(r)) for r in recs}
    assert len(recs) == 56 and len(keys) == 10


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    from edgeprune.costmodel import default_cache_root

    monkeypatch.setenv("EDGEPRUNE_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert default_cache_root() == tmp_path / "elsewhere"
    assert LatencyCache().dir == tmp_path / "elsewhere" / "costmodel"
    monkeypatch.delenv("EDGEPRUNE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_root() == tmp_path / "xdg" / "edgeprune"
