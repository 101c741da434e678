"""Pruned-model manifests: save, rebuild from the original definition, identical outputs; bad input refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from edgeprune.errors import EdgepruneError
from edgeprune.models.cifar_resnet import cifar_resnet
from edgeprune.pruning import PruningGraph, build_manifest, load_pruned, rebuild, save_pruned

X = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))

FACTORIES = {
    "resnet18": lambda: torchvision.models.resnet18(weights=None, num_classes=10),
    "cifar_resnet20": lambda: cifar_resnet(20),
}


def prune_two_rounds(model: nn.Module) -> PruningGraph:
    graph = PruningGraph(model, X)
    rng = np.random.default_rng(0)
    for r in range(2):
        graph.current_round = r
        plan = {
            g.id: rng.choice(g.size, size=max(1, g.size // 3), replace=False).tolist()
            for g in graph.groups()
            if g.size > 1
        }
        graph.prune_many(plan)
    return graph


@pytest.mark.parametrize("name", list(FACTORIES))
def test_rebuilt_model_gives_identical_outputs(name, tmp_path):
    torch.manual_seed(0)
    original = FACTORIES[name]().eval()
    model = FACTORIES[name]().eval()
    model.load_state_dict(original.state_dict())
    graph = prune_two_rounds(model)
    with torch.no_grad():  # let BN statistics differ from a fresh model's, as after fine-tuning
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.add_(0.1)
    manifest = build_manifest(original, model, graph.history, example_input=X)
    out = save_pruned(model, manifest, tmp_path / "pruned")
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "weights.pt"]  # no temp files left

    torch.manual_seed(123)  # a fresh instance of the definition, with other random weights
    fresh = FACTORIES[name]().eval()
    rebuilt = load_pruned(fresh, out).eval()
    with torch.no_grad():
        assert torch.equal(rebuilt(X), model(X))
    assert sum(p.numel() for p in rebuilt.parameters()) == sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for p in fresh.parameters()) == sum(
        p.numel() for p in original.parameters()
    )  # untouched

    # the same from the in-memory manifest, with an explicit example input and state_dict
    again = rebuild(FACTORIES[name](), manifest, X, state_dict=model.state_dict()).eval()
    with torch.no_grad():
        assert torch.equal(again(X), model(X))


def test_manifest_records_channels_and_steps(tmp_path):
    original = cifar_resnet(20)
    model = cifar_resnet(20)
    graph = PruningGraph(model, X)
    graph.current_round = 3
    graph.prune_many({"layer1.0.conv1": [0, 2], "conv1": [1]})
    manifest = build_manifest(original, model, graph.history, example_input=X)
    assert manifest["input_shape"] == [1, 3, 32, 32]
    assert manifest["layers"]["layer1.0.conv1"] == {
        "before": {"in_channels": 16, "out_channels": 16, "groups": 1},
        "after": {"in_channels": 15, "out_channels": 14, "groups": 1},
    }
    assert manifest["layers"]["layer2.0.shortcut"] == {
        "before": {"in_channels": 16, "out_channels": 32, "pad": 8},
        "after": {"in_channels": 15, "out_channels": 31, "pad": 8},
    }
    assert manifest["layers"]["linear"]["after"] == {"in_features": 63, "out_features": 10}
    assert manifest["steps"] == [
        {
            "round": 3,
            "groups": {"conv1": [1], "layer1.0.conv1": [0, 2]},
            "roots": {"conv1": [1], "layer1.0.conv1": [0, 2]},
        }
    ]
    save_pruned(model, manifest, tmp_path)
    on_disk = json.loads((tmp_path / "manifest.json").read_text())
    assert on_disk["steps"] == manifest["steps"] and len(on_disk["weights"]["sha256"]) == 64


def test_bad_manifests_and_mismatched_definitions_are_refused(tmp_path):
    original = cifar_resnet(20)
    model = cifar_resnet(20)
    graph = PruningGraph(model, X)
    graph.prune("layer1.0.conv1", [0])
    manifest = build_manifest(original, model, graph.history, example_input=X)
    save_pruned(model, manifest, tmp_path)

    with pytest.raises(EdgepruneError, match="does not fit this model definition"):
        load_pruned(torchvision.models.resnet18(weights=None, num_classes=10), tmp_path)
    with pytest.raises(EdgepruneError, match="not an edgeprune"):
        rebuild(original, {"format": "something else"})
    with pytest.raises(EdgepruneError, match="no manifest.json"):
        load_pruned(original, tmp_path / "missing")
    weights = tmp_path / "weights.pt"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(EdgepruneError, match="does not match the hash"):
        load_pruned(original, tmp_path)
    (tmp_path / "manifest.json").write_text("{")
    with pytest.raises(EdgepruneError, match="not valid JSON"):
        load_pruned(original, tmp_path)
