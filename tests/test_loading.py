"""edgeprune.load: a pruned model rebuilt from its run directory gives the outputs of the model that was saved."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
import torch

import edgeprune
from edgeprune.errors import EdgepruneError
from edgeprune.export import ExportConfig, export
from edgeprune.loading import SOURCE_NAME, load, load_run, write_source
from edgeprune.models import load_model
from edgeprune.pruning import PruningGraph, build_manifest, save_pruned

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
    return Tiny()
"""


def make_run_dir(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    """A prune run directory as prune writes it: a pruned tiny model, its manifest, weights and source."""
    spec_file = tmp_path / "src" / "tiny.py"
    spec_file.parent.mkdir()
    spec_file.write_text(TINY)
    loaded = load_model(f"{spec_file}:make", shape=(1, 3, 16, 16))
    original = copy.deepcopy(loaded.module)
    example = torch.zeros(loaded.input_shape)
    graph = PruningGraph(loaded.module, example)
    by_root = {g.root: g for g in graph.groups()}
    graph.prune_many({by_root["conv1"].id: [0, 3, 5], by_root["conv2"].id: list(range(0, 16, 2))})
    with torch.no_grad():  # fine-tuned weights differ from the original's: make that so here
        for p in loaded.module.parameters():
            p.add_(0.01 * torch.randn_like(p))
    run = tmp_path / "run"
    save_pruned(loaded.module, build_manifest(original, loaded.module, graph.history, example), run)
    write_source(run, loaded)
    return run, loaded.module


def test_reloaded_model_gives_the_saved_outputs(tmp_path):
    run, saved = make_run_dir(tmp_path)
    reloaded = load(run)
    assert reloaded.conv1.out_channels == 5 and reloaded.conv2.out_channels == 8 and reloaded.fc.in_features == 8
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(reloaded(x), saved.eval()(x))
    assert not reloaded.training


def test_public_edgeprune_load(tmp_path):
    if "load" not in getattr(edgeprune, "_API", {}):
        pytest.skip("edgeprune.load is not registered in edgeprune._API yet (the lead adds it)")
    run, saved = make_run_dir(tmp_path)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(edgeprune.load(run)(x), saved.eval()(x))


def test_reload_from_another_directory_and_provenance(tmp_path, monkeypatch):
    run, saved = make_run_dir(tmp_path)
    source = json.loads((run / SOURCE_NAME).read_text())
    assert Path(source["model"].rpartition(":")[0]).is_absolute() and source["input_shape"] == [1, 3, 16, 16]
    monkeypatch.chdir(tmp_path / "src")
    loaded = load_run(os.path.relpath(run))
    assert loaded.input_shape == (1, 3, 16, 16) and loaded.info["manifest"]["format"] == "edgeprune.pruned-model"
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded.module(x), saved.eval()(x))


def test_bad_run_directories(tmp_path):
    run, _ = make_run_dir(tmp_path)
    with pytest.raises(EdgepruneError, match="not a directory"):
        load(tmp_path / "nowhere")
    with pytest.raises(EdgepruneError, match="no manifest.json"):
        load(tmp_path / "src")
    weights = run / "weights.pt"
    data = bytearray(weights.read_bytes())
    data[-20] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(EdgepruneError, match="does not match the hash"):
        load(run)
    (run / SOURCE_NAME).unlink()
    with pytest.raises(EdgepruneError, match="has no source.json"):
        load(run)


def test_export_from_a_run_directory_records_the_manifest(tmp_path):
    run, saved = make_run_dir(tmp_path)
    out = tmp_path / "pruned.onnx"
    result = export(ExportConfig(source=str(run), output=str(out), samples=4, measure=False))
    side = result.metadata
    assert side["parity"]["passed"]
    assert side["pruning_manifest"]["layers"]["conv1"]["after"]["out_channels"] == 5
    assert side["source"]["run_dir"] == str(run.resolve()) and side["source"]["original"]["model"].endswith(":make")
    with pytest.raises(EdgepruneError, match="--weights does not apply"):
        export(ExportConfig(source=str(run), output=str(tmp_path / "x.onnx"), weights="w.pt", measure=False))
