"""Channel groups and physical pruning: torchvision CNNs, CIFAR ResNets (option-A shortcut), concat, grouped conv.

The central check is an equivalence: removing channels must give exactly the outputs of the dense model
in which those channels are silenced (their BN gamma/beta, or filters where no BN follows, set to zero).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from edgeprune.models.cifar_resnet import PadShortcut, cifar_resnet
from edgeprune.pruning import PruningGraph, count_params_flops
from edgeprune.pruning.graph import PadShortcutPruner

X32 = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))


class ConcatNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU())
        self.c = nn.Sequential(nn.Conv2d(14, 10, 3, padding=1), nn.BatchNorm2d(10), nn.ReLU())
        self.fc = nn.Linear(10, 4)

    def forward(self, x):
        y = self.c(torch.cat([self.a(x), self.b(x)], dim=1))
        return self.fc(y.mean((2, 3)))


class GroupedNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.gconv = nn.Conv2d(8, 12, 3, padding=1, groups=4, bias=False)
        self.bn2 = nn.BatchNorm2d(12)
        self.conv3 = nn.Conv2d(12, 6, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.gconv(x)))
        x = torch.relu(self.bn3(self.conv3(x)))
        return self.fc(x.mean((2, 3)))


class LeNet5(nn.Module):
    """Classic LeNet-5 (no BN): the fc 120 and 84 units are prunable like filters."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(400, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.relu(self.fc1(x.flatten(1)))
        return self.fc3(torch.relu(self.fc2(x)))


MODELS = {
    "cifar_resnet20": (lambda: cifar_resnet(20), X32),
    "resnet18": (lambda: torchvision.models.resnet18(weights=None, num_classes=10), X32),
    "mobilenet_v2": (lambda: torchvision.models.mobilenet_v2(weights=None, num_classes=10), X32),
    "concat": (ConcatNet, X32),
    "grouped": (GroupedNet, X32),
    "lenet5": (LeNet5, torch.randn(1, 1, 28, 28, generator=torch.Generator().manual_seed(1))),
}


def make(name: str) -> tuple[nn.Module, torch.Tensor]:
    """The model in eval mode with random BN statistics, so silencing a channel is visible."""
    torch.manual_seed(0)
    factory, x = MODELS[name]
    model = factory().eval()
    g = torch.Generator().manual_seed(2)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    return model, x


def silence(dense: nn.Module, groups: dict, plan: dict[str, list[int]]) -> None:
    """Zero what the removed units produce in the dense model: BN gamma/beta, else the filters."""
    with torch.no_grad():
        for gid, units in plan.items():
            for (path, role), per_unit in groups[gid].index_map.items():
                if role != "out":
                    continue
                idx = [i for u in units for i in per_unit[u]]
                m = dense.get_submodule(path)
                if isinstance(m, (nn.BatchNorm2d, nn.Conv2d, nn.Linear)):
                    m.weight[idx] = 0
                    if m.bias is not None:
                        m.bias[idx] = 0


def random_plan(graph: PruningGraph, frac: float, seed: int) -> dict[str, list[int]]:
    rng = np.random.default_rng(seed)
    plan = {}
    for g in graph.groups():
        if g.size < 2:
            continue
        k = max(1, int(frac * g.size))
        plan[g.id] = sorted(rng.choice(g.size, size=min(k, g.size - 1), replace=False).tolist())
    return plan


def out_entries(graph: PruningGraph) -> list[tuple[str, int]]:
    return [
        (path, i)
        for g in graph.groups()
        for (path, role), per_unit in g.index_map.items()
        if role == "out"
        for u in per_unit
        for i in u
    ]


@pytest.mark.parametrize("name", list(MODELS))
def test_groups_are_a_partition_and_spare_the_classifier(name):
    model, x = make(name)
    graph = PruningGraph(model, x)
    groups = graph.groups()
    assert groups, "every test model has prunable channels"
    entries = out_entries(graph)
    assert len(entries) == len(set(entries)), "a channel belongs to one group only"
    classifier = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    for g in groups:
        assert (classifier, "out") not in g.members
        assert g.layers and g.layers[0] == g.root
        assert all(len(v) == g.size for v in g.index_map.values())
    ids = [g.id for g in groups]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("name", list(MODELS))
def test_pruned_model_equals_silenced_dense_model(name):
    model, x = make(name)
    graph = PruningGraph(model, x)
    for round_ in range(2):  # the second round runs on the already-pruned model and rebuilt graph
        with torch.no_grad():
            unpruned = model(x)
        dense = copy.deepcopy(model)
        groups = {g.id: g for g in graph.groups()}
        plan = random_plan(graph, 0.4, seed=round_)
        silence(dense, groups, plan)
        graph.current_round = round_
        step = graph.prune_many(plan)
        assert step.groups == plan and step.round == round_
        with torch.no_grad():
            want, got = dense(x), model(x)
        assert got.shape == want.shape
        assert not torch.allclose(unpruned, want, rtol=1e-3, atol=1e-4), "silencing must change the output"
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
        after = {g.id: g.size for g in graph.groups()}
        for gid, units in plan.items():  # each group lost exactly what was asked
            # (a grouped conv cut down to one channel per group turns depthwise and joins its producer's group)
            assert after.get(gid, groups[gid].size - len(units)) == groups[gid].size - len(units)
    assert len(graph.history) == 2


@pytest.mark.parametrize("name", ["cifar_resnet20", "grouped", "concat", "lenet5"])
def test_every_group_alone_prunes_to_a_runnable_model(name):
    model, x = make(name)
    graph = PruningGraph(model, x)
    out_shape = model(x).shape
    for gid in [g.id for g in graph.groups()]:
        params = sum(p.numel() for p in model.parameters())
        g = graph.group(gid)
        graph.prune(gid, [g.size - 1])
        assert model(x).shape == out_shape
        assert params - sum(p.numel() for p in model.parameters()) == g.params_per_unit


def test_cifar_resnet_stream_maps_through_the_padding_shortcut():
    model, x = make("cifar_resnet20")
    groups = {g.id: g for g in PruningGraph(model, x).groups()}
    # stage-1 stream (16 ch): channel i is channel i+8 of stage 2 and i+8+16 of stage 3
    s1 = groups["conv1"]
    assert s1.size == 16
    assert s1.index_map[("layer1.2.conv2", "out")] == [(i,) for i in range(16)]
    assert s1.index_map[("layer2.0.conv2", "out")] == [(i + 8,) for i in range(16)]
    assert s1.index_map[("layer3.2.conv2", "out")] == [(i + 24,) for i in range(16)]
    assert s1.index_map[("linear", "in")] == [(i + 24,) for i in range(16)]
    # channels born in stage 2's zero padding go in front/back pairs (the shortcut pads symmetrically)
    s2 = groups["layer2.0.conv2"]
    assert s2.size == 8 and s2.channels_per_unit == 2
    assert s2.index_map[("layer2.0.conv2", "out")] == [(j, j + 24) for j in range(8)]
    assert s2.index_map[("layer3.0.conv2", "out")] == [(j + 16, j + 40) for j in range(8)]
    s3 = groups["layer3.0.conv2"]
    assert s3.size == 16 and s3.index_map[("layer3.0.conv2", "out")] == [(j, j + 48) for j in range(16)]
    # each block's inner channels are a group of their own
    assert groups["layer2.1.conv1"].members == [
        ("layer2.1.conv1", "out"),
        ("layer2.1.bn1", "out"),
        ("layer2.1.conv2", "in"),
    ]
    assert len(groups) == 3 + 9


def test_cifar_resnet_stream_pruning_leaves_the_classifier_intact():
    model, x = make("cifar_resnet20")
    dense = copy.deepcopy(model)
    graph = PruningGraph(model, x)
    groups = {g.id: g for g in graph.groups()}
    plan = {"conv1": [0, 5, 15], "layer2.0.conv2": [1, 7], "layer3.0.conv2": [0, 3, 9]}
    silence(dense, groups, plan)
    removed = {
        i for gid, units in plan.items() for u in units for i in groups[gid].index_map[("linear", "in")][u]
    }
    graph.prune_many(plan)
    kept = [i for i in range(64) if i not in removed]
    assert model.linear.out_features == 10 and model.linear.in_features == len(kept) == 64 - 3 - 4 - 6
    torch.testing.assert_close(model.linear.weight, dense.linear.weight[:, kept])
    torch.testing.assert_close(model.linear.bias, dense.linear.bias)
    sc2, sc3 = model.layer2[0].shortcut, model.layer3[0].shortcut
    assert (sc2.in_channels, sc2.pad) == (13, 6) and (sc3.in_channels, sc3.pad) == (25, 13)
    with torch.no_grad():
        torch.testing.assert_close(model(x), dense(x), rtol=1e-4, atol=1e-5)


def test_pad_shortcut_refuses_asymmetric_padding_removal():
    sc = PadShortcut(4, 2)  # outputs 8 channels: 2 pad, 4 data, 2 pad
    PadShortcutPruner().prune_out_channels(sc, [0, 3, 6])  # one front, one data, one back
    assert (sc.in_channels, sc.pad) == (3, 1)
    assert PadShortcut.forward(sc, torch.randn(1, 3, 4, 4)).shape == (1, 5, 2, 2)
    with pytest.raises(RuntimeError, match="pairs"):
        PadShortcutPruner().prune_out_channels(sc, [0])


def test_ignored_modules_and_bad_requests():
    model, x = make("cifar_resnet20")
    graph = PruningGraph(model, x, ignored=["layer1.0.conv1", model.layer3[0].conv2])
    ids = {g.id for g in graph.groups()}
    assert "layer1.0.conv1" not in ids and "layer3.0.conv2" not in ids and "layer1.1.conv1" in ids
    with pytest.raises(ValueError, match="at least one"):
        graph.prune("layer1.1.conv1", range(16))
    with pytest.raises(IndexError):
        graph.prune("layer1.1.conv1", [16])
    with pytest.raises(KeyError):
        graph.prune("nope", [0])
    with pytest.raises(ValueError, match="not in the model"):
        PruningGraph(model, x, ignored=["nope"])
    assert graph.history == []


def test_grouped_conv_units_remove_the_same_position_in_every_group():
    model, x = make("grouped")
    groups = {g.id: g for g in PruningGraph(model, x).groups()}
    # conv1's 8 channels feed a 4-group conv (2 inputs per group): units tie channels r, r+2, r+4, r+6
    assert groups["conv1"].size == 2
    assert groups["conv1"].index_map[("gconv", "in")] == [(0, 2, 4, 6), (1, 3, 5, 7)]
    # gconv's 12 outputs (3 per group): units tie r, r+3, r+6, r+9
    assert groups["gconv"].index_map[("gconv", "out")] == [(0, 3, 6, 9), (1, 4, 7, 10), (2, 5, 8, 11)]


def test_count_params_flops_matches_the_model():
    model, x = make("cifar_resnet20")
    params, flops = count_params_flops(model, x[:1])
    assert params == sum(p.numel() for p in model.parameters()) == 269_722
    assert 40e6 < flops < 42e6  # ResNet-20 is ~41M multiply-accumulates at 32x32
    assert model.training is False


def test_graph_leaves_training_mode_alone():
    model, x = make("concat")
    model.train()
    with torch.no_grad():  # the tracer needs autograd; the graph must switch it on itself
        PruningGraph(model, x)
    assert model.training


class ShuffleNet(nn.Module):
    """A channel shuffle (view/transpose/reshape): torch-pruning does not map its channel permutation."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.bn = nn.BatchNorm2d(8)
        self.b = nn.Conv2d(8, 4, 1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        x = torch.relu(self.bn(self.a(x)))
        n, c, h, w = x.shape
        x = x.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
        return self.fc(self.b(x).mean((2, 3)))


def test_verify_catches_a_wrong_coupling_and_a_broken_model():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 8, 8)
    model = ShuffleNet().eval()
    graph = PruningGraph(model, x, verify=True)
    with pytest.raises(RuntimeError, match="mis-couples"):
        graph.prune("a", [0, 1])  # still runs, but the shuffle sent these channels elsewhere
    graph = PruningGraph(ShuffleNet().eval(), x)
    with pytest.raises(RuntimeError, match="unrunnable"):
        graph.prune("a", [0])  # 7 channels no longer split in two


def test_verify_passes_on_a_correct_coupling():
    model, x = make("cifar_resnet20")
    graph = PruningGraph(model, x, verify=True)
    graph.prune_many({"conv1": [2, 9], "layer2.0.conv2": [3], "layer3.1.conv1": [0, 1, 2]})
    assert len(graph.history) == 1


def test_untraceable_model_is_a_clear_user_error():
    from edgeprune.errors import EdgepruneError

    model = torchvision.models.shufflenet_v2_x0_5(weights=None, num_classes=10).eval()
    with pytest.raises(EdgepruneError, match="not supported for structured pruning"):
        PruningGraph(model, torch.zeros(1, 3, 64, 64))


def test_pretrained_resnet20_pruned_by_l1_equals_silenced_on_real_images(shared_data):
    from edgeprune.models import load_weights
    from edgeprune.pruning import get_importance

    weights = shared_data / "weights" / "cifar_resnet20.th"
    if not weights.is_file():
        pytest.skip(f"{weights} not found")
    model = cifar_resnet(20).eval()
    load_weights(model, weights)
    val = np.load(shared_data / "cifar10" / "val.npz")
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    x = ((torch.from_numpy(val["x"][:200]).float() / 255 - mean) / std).permute(0, 3, 1, 2).contiguous()
    y = torch.from_numpy(val["y"][:200])
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() > 0.85  # the weights and preprocessing are right

    graph = PruningGraph(model, x[:1])
    scores = get_importance("l1").scores(model, graph)
    plan = {gid: np.argsort(s)[: len(s) // 4].tolist() for gid, s in scores.items()}  # weakest quarter
    dense = copy.deepcopy(model)
    silence(dense, {g.id: g for g in graph.groups()}, plan)
    graph.prune_many(plan)
    with torch.no_grad():
        torch.testing.assert_close(model(x), dense(x), rtol=1e-4, atol=1e-4)
    assert sum(p.numel() for p in model.parameters()) < 0.7 * 269_722
