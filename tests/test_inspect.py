"""edgeprune inspect: models, engines (through their sidecar), JSON documents, run directories; bad files."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import onnxruntime as ort
import pytest
import torch

from edgeprune.cli import main
from edgeprune.errors import EdgepruneError
from edgeprune.inspect import inspect_path
from edgeprune.loading import write_source
from edgeprune.models import load_model
from edgeprune.onnx_export import export_onnx
from edgeprune.pruning import PruningGraph, build_manifest, save_pruned
from edgeprune.sidecar import build_sidecar, sidecar_path, write_sidecar

TINY = """
import torch
from torch import nn

class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1, stride=2, groups=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        return self.fc(torch.flatten(self.pool(x), 1))

def make():
    torch.manual_seed(0)
    return Tiny()
"""


@pytest.fixture
def tiny(tmp_path: Path):
    f = tmp_path / "tiny.py"
    f.write_text(TINY)
    return load_model(f"{f}:make", shape=(1, 3, 16, 16))


@pytest.fixture
def tiny_onnx(tmp_path: Path, tiny) -> Path:
    return export_onnx(tiny.module, tiny.input_shape, tmp_path / "tiny.onnx").path


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    captured = capsys.readouterr()
    return exc.value.code, captured.out, captured.err


def test_onnx_summary_counts_params_flops_and_channels(tiny, tiny_onnx):
    info = inspect_path(tiny_onnx)
    assert info["kind"] == "onnx"
    assert info["inputs"] == [{"name": "input", "shape": [1, 3, 16, 16], "dtype": "float32"}]
    assert info["outputs"] == [{"name": "output", "shape": [1, 10], "dtype": "float32"}]
    assert info["params"] == sum(p.numel() for p in tiny.module.parameters())
    by_module = {row["module"]: row for row in info["layers"]}
    assert [(m, r["in_channels"], r["out_channels"]) for m, r in by_module.items()] == [
        ("conv1", 3, 8), ("conv2", 8, 16), ("fc", 16, 10)]
    assert by_module["conv2"]["groups"] == 2
    # MACs: conv1 16x16x8 outputs x 3x3x3; conv2 8x8x16 outputs x (8/2)x3x3; fc 16x10
    assert by_module["conv1"]["flops"] == 2 * 16 * 16 * 8 * 27
    assert by_module["conv2"]["flops"] == 2 * 8 * 8 * 16 * 36
    assert by_module["fc"]["flops"] == 2 * 160
    assert info["flops"] == sum(r["flops"] for r in info["layers"])
    assert info["sidecar"] is None


def test_truncated_and_foreign_files_are_refused(tmp_path, tiny_onnx):
    data = tiny_onnx.read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(EdgepruneError, match=r"cut.onnx is not .*(truncated|ONNX)"):
        inspect_path(cut)
    png = tmp_path / "photo.onnx"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    with pytest.raises(EdgepruneError, match="photo.onnx is not"):
        inspect_path(png)
    blob = tmp_path / "blob.bin"
    blob.write_bytes(bytes(range(200)))
    with pytest.raises(EdgepruneError, match="unknown kind of file"):
        inspect_path(blob)
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(EdgepruneError, match="empty"):
        inspect_path(tmp_path / "empty.onnx")
    (tmp_path / "other.json").write_text('{"name": "not ours"}')
    with pytest.raises(EdgepruneError, match="not an edgeprune document"):
        inspect_path(tmp_path / "other.json")
    (tmp_path / "half.json").write_text('{"kind": "edgeprune.profile", "latency')
    with pytest.raises(EdgepruneError, match="not valid JSON"):
        inspect_path(tmp_path / "half.json")
    with pytest.raises(EdgepruneError, match="does not exist"):
        inspect_path(tmp_path / "missing.onnx")
    with pytest.raises(EdgepruneError, match="not a prune run directory"):
        inspect_path(tmp_path)


def _fake_engine(tmp_path: Path) -> Path:
    """An engine file and its sidecar as export writes them (the bytes are opaque to inspect)."""
    engine = tmp_path / "tiny.engine"
    engine.write_bytes(b"\x00engine-plan\x00" * 500)
    io = {"inputs": [{"name": "input", "shape": [1, 3, 16, 16], "dtype": "float32"}],
          "outputs": [{"name": "output", "shape": [1, 10], "dtype": "float32"}]}
    side = build_sidecar(artifact=engine, fmt="engine", precision="fp16", source={"spec": "tiny"}, manifest=None,
                         target={"name": "jetson"}, io=io, build={}, parity={"passed": True, "samples": 8},
                         accuracy=None, latency={"measured": False, "reason": "test"})
    write_sidecar(engine, side)
    return engine


def test_engine_is_read_through_its_sidecar(tmp_path, capsys):
    engine = _fake_engine(tmp_path)
    info = inspect_path(engine)
    assert info["kind"] == "engine" and info["precision"] == "fp16"
    assert info["inputs"][0]["name"] == "input" and info["sidecar"]["target"] == {"name": "jetson"}

    data = engine.read_bytes()
    engine.write_bytes(data[:-100])
    with pytest.raises(EdgepruneError, match="sidecar records 6500: the file is truncated"):
        inspect_path(engine)
    code, out, err = run_cli(["inspect", str(engine)], capsys)
    assert code == 1 and "truncated" in err and out == ""
    engine.write_bytes(data[:-1] + b"X")
    with pytest.raises(EdgepruneError, match="does not match the sha256"):
        inspect_path(engine)
    sidecar_path(engine).unlink()
    with pytest.raises(EdgepruneError, match="no sidecar tiny.engine.json"):
        inspect_path(engine)


def test_ort_model_and_sidecar_json(tmp_path, tiny_onnx, capsys):
    ort_path = tmp_path / "tiny.ort"
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(ort_path)
    so.add_session_config_entry("session.save_model_format", "ORT")
    ort.InferenceSession(str(tiny_onnx), sess_options=so, providers=["CPUExecutionProvider"])
    info = inspect_path(ort_path)
    assert info["kind"] == "ort" and info["inputs"][0]["name"] == "input"
    ort_path.write_bytes(ort_path.read_bytes()[:200])
    with pytest.raises(EdgepruneError, match="cannot load tiny.ort"):
        inspect_path(ort_path)

    engine = _fake_engine(tmp_path)
    code, out, _ = run_cli(["inspect", str(sidecar_path(engine)), "--format", "json"], capsys)
    assert code == 0 and json.loads(out)["kind"] == "sidecar"


def test_profile_json_summary(tmp_path, capsys):
    doc = {"schema_version": 1, "kind": "edgeprune.profile", "model": {"spec": "zoo:x"},
           "target": {"spec": {"name": "cpu"}, "conditions": {"threads": 2}},
           "latency_ms": {"p50": 1.0, "p90": 1.5, "p99": 2.0, "mean": 1.1, "std": 0.1, "n": 50},
           "layers": [{"name": "a", "module": "m.a", "op": "Conv", "latency_ms": 0.2, "share": 0.2},
                      {"name": "b", "module": "m.b", "op": "Conv", "latency_ms": 0.7, "share": 0.7}],
           "memory": {"peak_rss_mb": 10}}
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(doc))
    info = inspect_path(path)
    assert info["kind"] == "profile" and info["target"] == "cpu"
    assert [r["name"] for r in info["slowest_layers"]] == ["b", "a"]
    code, out, _ = run_cli(["inspect", str(path)], capsys)
    assert code == 0 and "p50 1.000 ms" in out


def test_run_directory(tmp_path, tiny, capsys):
    original = copy.deepcopy(tiny.module)
    example = torch.zeros(tiny.input_shape)
    graph = PruningGraph(tiny.module, example)
    root = {g.root: g for g in graph.groups()}["conv1"]
    graph.prune_many({root.id: [1, 2]})
    run = tmp_path / "run"
    save_pruned(tiny.module, build_manifest(original, tiny.module, graph.history, example), run)
    write_source(run, tiny)
    export_onnx(tiny.module, tiny.input_shape, run / "model.onnx")
    info = inspect_path(run)
    assert info["kind"] == "run" and info["source"]["model"].endswith(":make")
    conv1 = next(c for c in info["channels"] if c["module"] == "conv1")
    pruned = tiny.module.conv1.out_channels
    assert pruned < 8 and (conv1["before"], conv1["after"]) == (8, pruned)
    assert info["params"] == sum(p.numel() for p in tiny.module.parameters())
    assert {r["module"]: r["out_channels"] for r in info["layers"]}["conv1"] == pruned
    code, out, _ = run_cli(["inspect", str(run), "--format", "json"], capsys)
    assert code == 0 and json.loads(out)["manifest"]["steps"] == 1
    code, out, _ = run_cli(["inspect", str(run)], capsys)
    assert code == 0 and "before -> after" in out
