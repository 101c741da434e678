"""Importance criteria: registry, hand-computed scores on a tiny net, and shapes on real architectures."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from edgeprune.errors import EdgepruneError
from edgeprune.models.cifar_resnet import cifar_resnet
from edgeprune.pruning import (
    Importance,
    PruningGraph,
    available_importances,
    get_importance,
    normalise_per_layer,
    register_importance,
)
from edgeprune.pruning import importance as importance_module


class Tiny(nn.Module):
    """conv1 (1->3, 1x1) -> bn1 -> relu -> conv2 (3->2, 1x1) -> bn2 -> relu -> mean -> fc (2->2)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 3, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(3)
        self.conv2 = nn.Conv2d(3, 2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(2)
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            self.conv1.weight.copy_(torch.tensor([1.0, -2.0, 3.0]).view(3, 1, 1, 1))
            self.conv2.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 2.0]]).view(2, 3, 1, 1))
            for bn in (self.bn1, self.bn2):  # identity BN: gamma 1, beta 0, mean 0, var + eps = 1
                bn.running_var.fill_(1.0 - bn.eps)
        self.eval()

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


def tiny():
    model = Tiny()
    return model, PruningGraph(model, torch.zeros(1, 1, 2, 2))


def test_registry_lists_names_and_rejects_bad_requests():
    assert {"activation", "l1", "lookahead", "random", "taylor"} <= set(available_importances())
    with pytest.raises(EdgepruneError, match="unknown importance 'nope'"):
        get_importance("nope")
    with pytest.raises(EdgepruneError, match="no option pp"):
        get_importance("activation", pp=2)
    with pytest.raises(EdgepruneError, match="aggregate"):
        get_importance("l1", aggregate="max")
    assert get_importance("activation", p=2, num_images=64).options() == {
        "p": 2,
        "num_images": 64,
        "aggregate": "mean",
    }
    assert get_importance("taylor", num_images=64).options() == {
        "num_images": 64,
        "loss": "cross_entropy",
        "aggregate": "mean",
    }
    with pytest.raises(EdgepruneError, match="taylor loss"):
        get_importance("taylor", loss="hinge")


def test_a_new_criterion_registers_without_touching_anything_else():
    @register_importance("test_constant")
    class Constant(Importance):
        def __init__(self, value: float = 1.0, aggregate: str = "mean"):
            super().__init__(aggregate)
            self.value = value

        def scores(self, model, graph, groups=None, calib_batches=None):
            return {g.id: np.full(g.size, self.value) for g in graph.groups()}

    try:
        model, graph = tiny()
        s = get_importance("test_constant", value=7.0).scores(model, graph)
        assert s == {"conv1": pytest.approx(np.full(3, 7.0)), "conv2": pytest.approx(np.full(2, 7.0))}
    finally:
        importance_module._REGISTRY.pop("test_constant")


def test_l1_scores_are_filter_l1_norms():
    model, graph = tiny()
    s = get_importance("l1").scores(model, graph)
    np.testing.assert_allclose(s["conv1"], [1.0, 2.0, 3.0])
    np.testing.assert_allclose(s["conv2"], [1.0, 4.0])


def test_lookahead_multiplies_filter_norm_consumer_column_norm_and_bn_scale():
    model, graph = tiny()
    # ||W1[c]|| = 1, 2, 3 and ||W2[:, c]|| = 1, 2, 2
    np.testing.assert_allclose(
        get_importance("lookahead", bn_scale=False).scores(model, graph)["conv1"], [1, 4, 6]
    )
    with torch.no_grad():
        model.bn1.weight.copy_(torch.tensor([1.0, -2.0, 0.5]))  # |gamma| / sqrt(var + eps) = 1, 2, 0.5
    np.testing.assert_allclose(get_importance("lookahead").scores(model, graph)["conv1"], [1, 8, 3])
    # conv2 feeds the classifier: ||W2[c]|| = 1, sqrt(8); ||fc.weight[:, c]||
    fc_cols = model.fc.weight.detach().norm(dim=0).numpy()
    np.testing.assert_allclose(
        get_importance("lookahead").scores(model, graph)["conv2"], [1, np.sqrt(8)] * fc_cols, rtol=1e-6
    )


def test_activation_is_mean_power_of_post_relu_activation():
    model, graph = tiny()
    ones = torch.ones(2, 1, 2, 2)
    batches = [ones, (-ones, torch.zeros(2))]  # (x, y) tuples are accepted too
    # relu(w * x) for x = +1 and -1: channel 0 -> 1, 0; channel 1 -> 0, 2; channel 2 -> 3, 0
    np.testing.assert_allclose(
        get_importance("activation").scores(model, graph, calib_batches=batches)["conv1"], [0.5, 1.0, 1.5]
    )
    np.testing.assert_allclose(
        get_importance("activation", p=2).scores(model, graph, calib_batches=batches)["conv1"],
        [0.5, 2.0, 4.5],
    )
    first_only = get_importance("activation", num_images=2).scores(model, graph, calib_batches=batches)
    np.testing.assert_allclose(first_only["conv1"], [1.0, 0.0, 3.0])
    assert not model.conv2._forward_pre_hooks and not model.training
    with pytest.raises(EdgepruneError, match="calibration"):
        get_importance("activation").scores(model, graph)
    with pytest.raises(EdgepruneError, match="empty"):
        get_importance("activation").scores(model, graph, calib_batches=[])


def test_activation_finds_a_dead_channel_in_a_resnet_block():
    torch.manual_seed(0)
    model = cifar_resnet(20).eval()
    with torch.no_grad():
        model.layer1[0].bn1.weight[3] = 0.0
        model.layer1[0].bn1.bias[3] = -1.0  # relu(-1) = 0 everywhere
    graph = PruningGraph(model, torch.zeros(1, 3, 32, 32))
    batches = [torch.randn(4, 3, 32, 32) for _ in range(3)]
    s = get_importance("activation", num_images=10).scores(model, graph, calib_batches=batches)
    assert s["layer1.0.conv1"][3] == 0.0 and (np.delete(s["layer1.0.conv1"], 3) > 0).all()
    assert len(s["conv1"]) == 16 and len(s["layer3.0.conv2"]) == 16  # stream groups are scored too


def test_random_is_reproducible_per_seed():
    model, graph = tiny()
    a = get_importance("random", seed=3).scores(model, graph)
    b = get_importance("random", seed=3).scores(model, graph)
    c = get_importance("random", seed=4).scores(model, graph)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["conv1"], c["conv1"])


def test_normalise_per_layer_divides_by_the_group_mean():
    out = normalise_per_layer({"a": np.array([1.0, 2.0, 3.0]), "b": np.zeros(2)})
    np.testing.assert_allclose(out["a"], [0.5, 1.0, 1.5])
    np.testing.assert_allclose(out["b"], [0.0, 0.0])


@pytest.fixture(scope="module")
def mobilenet():
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(weights=None, num_classes=10).eval()
    return model, PruningGraph(model, torch.zeros(1, 3, 32, 32))


@pytest.mark.parametrize("name", ["l1", "lookahead", "activation", "random", "taylor"])
@pytest.mark.parametrize("aggregate", ["mean", "sum"])
def test_every_criterion_scores_every_unit_of_a_real_network(mobilenet, name, aggregate):
    model, graph = mobilenet  # criteria only read the model
    batches = [(torch.randn(2, 3, 32, 32), torch.tensor([3, 7]))]
    s = get_importance(name, aggregate=aggregate).scores(model, graph, calib_batches=batches)
    groups = graph.groups()
    assert set(s) == {g.id for g in groups}
    for g in groups:
        assert s[g.id].shape == (g.size,) and np.isfinite(s[g.id]).all() and (s[g.id] >= 0).all()


def test_l1_combines_the_coupled_layers_of_a_residual_stream():
    torch.manual_seed(0)
    model = cifar_resnet(20).eval()
    graph = PruningGraph(model, torch.zeros(1, 3, 32, 32))

    def l1(path, c):
        return model.get_submodule(path).weight[c].abs().sum().item()

    # stage-1 stream channel 5 is produced by the stem, every stage-1 block's conv2 (at 5), stage 2's (at 13)
    # and stage 3's (at 29)
    per_layer = [l1("conv1", 5)] + [
        l1(f"layer{s}.{b}.conv2", 5 + off) for s, off in ((1, 0), (2, 8), (3, 24)) for b in range(3)
    ]
    for how, want in (("mean", np.mean(per_layer)), ("sum", np.sum(per_layer))):
        got = get_importance("l1", aggregate=how).scores(model, graph)["conv1"][5]
        assert got == pytest.approx(want, rel=1e-6)


# ---- first-order Taylor


def _labelled(n_batches=3, n=4, shape=(1, 2, 2), classes=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn((n, *shape), generator=g), torch.randint(0, classes, (n,), generator=g))
        for _ in range(n_batches)
    ]


def _taylor_by_hand(model, paths, batches, linear=()):
    """Per module path: sum over batches of (sum over images and positions of A * dL/dA)^2 at its output,
    computed independently of the criterion (cross-entropy, eval mode)."""
    totals = {p: 0.0 for p in paths}
    outs: dict[str, torch.Tensor] = {}

    def keep(mod, inp, out, p):
        outs[p] = out
        return out.clone()  # an in-place op after the hook must not change what was kept

    for x, y in batches:
        outs.clear()
        hooks = [
            model.get_submodule(p).register_forward_hook(lambda m, i, o, p=p: keep(m, i, o, p)) for p in paths
        ]
        loss = nn.functional.cross_entropy(model(x), y)
        for h in hooks:
            h.remove()
        grads = torch.autograd.grad(loss, [outs[p] for p in paths])
        for p, gr in zip(paths, grads, strict=True):
            prod = (outs[p] * gr).detach().double()
            dims = [d for d in range(prod.dim()) if d != (prod.dim() - 1 if p in linear else 1)]
            totals[p] = totals[p] + prod.sum(dim=dims).pow(2).numpy()
    return totals


def test_taylor_equals_gamma_and_beta_gradients_at_each_bn():
    torch.manual_seed(0)
    model, graph = tiny()
    with torch.no_grad():
        for bn in (model.bn1, model.bn2):
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
    batches = _labelled()
    s = get_importance("taylor").scores(model, graph, calib_batches=batches)
    # gamma * dL/dgamma + beta * dL/dbeta, squared per batch and summed over batches
    want = {"bn1": 0.0, "bn2": 0.0}
    for x, y in batches:
        loss = nn.functional.cross_entropy(model(x), y)
        params = [model.bn1.weight, model.bn1.bias, model.bn2.weight, model.bn2.bias]
        gw1, gb1, gw2, gb2 = torch.autograd.grad(loss, params)
        want["bn1"] += ((model.bn1.weight * gw1 + model.bn1.bias * gb1).detach().double() ** 2).numpy()
        want["bn2"] += ((model.bn2.weight * gw2 + model.bn2.bias * gb2).detach().double() ** 2).numpy()
    np.testing.assert_allclose(s["conv1"], want["bn1"], rtol=1e-6)
    np.testing.assert_allclose(s["conv2"], want["bn2"], rtol=1e-6)
    # the same quantity as the activation-gradient product at the BN output
    by_hand = _taylor_by_hand(model, ["bn1", "bn2"], batches)
    np.testing.assert_allclose(s["conv1"], by_hand["bn1"], rtol=1e-5)
    # squared per batch, then summed: not the square of the sum over all batches
    one_batch = get_importance("taylor").scores(model, graph, calib_batches=[batches[0]])
    assert s["conv1"] == pytest.approx(one_batch["conv1"] + _taylor_by_hand(model, ["bn1"], batches[1:])["bn1"])


def test_taylor_scores_a_channel_removed_in_effect_zero_and_lowest():
    model, graph = tiny()
    with torch.no_grad():
        model.bn1.weight[1] = 0.0  # channel 1 of conv1 contributes nothing downstream
        model.bn1.bias[1] = 0.0
    s = get_importance("taylor").scores(model, graph, calib_batches=_labelled())
    assert s["conv1"][1] == 0.0 and (np.delete(s["conv1"], 1) > 0).all()


def test_taylor_ranks_the_channel_the_loss_depends_on_above_one_it_barely_does():
    model, graph = tiny()
    with torch.no_grad():
        model.fc.weight.copy_(torch.tensor([[2.0, 1e-3], [-2.0, -1e-3]]))  # conv2's channel 1 barely counts
        model.conv2.weight.copy_(torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]).view(2, 3, 1, 1))
    s = get_importance("taylor").scores(model, graph, calib_batches=_labelled(seed=1))
    assert s["conv2"][0] > 100 * s["conv2"][1] > 0


def test_taylor_needs_labels():
    model, graph = tiny()
    taylor = get_importance("taylor")
    for batches in (None, [torch.randn(2, 1, 2, 2)], [(torch.randn(2, 1, 2, 2),)]):
        with pytest.raises(EdgepruneError, match="needs labelled calibration data.*--importance activation"):
            taylor.scores(model, graph, calib_batches=batches)
    with pytest.raises(EdgepruneError, match="empty"):
        taylor.scores(model, graph, calib_batches=[])
    assert taylor.requires_calibration and taylor.requires_labels
    assert not get_importance("activation").requires_labels


def test_taylor_leaves_grads_flags_and_mode_as_it_found_them():
    model, graph = tiny()
    model.train()
    model.conv2.weight.requires_grad_(False)  # a frozen layer stays frozen
    model.fc.weight.grad = torch.full_like(model.fc.weight, 7.0)  # a caller's gradient stays untouched
    running = model.bn1.running_mean.clone()
    get_importance("taylor").scores(model, graph, calib_batches=_labelled())
    assert model.training and model.bn1.training
    assert not model.conv2.weight.requires_grad and model.conv1.weight.requires_grad
    assert torch.equal(model.fc.weight.grad, torch.full_like(model.fc.weight, 7.0))
    assert all(p.grad is None for n, p in model.named_parameters() if n != "fc.weight")
    assert torch.equal(model.bn1.running_mean, running)  # ran in eval mode: BN statistics unchanged
    assert not model.conv1._forward_hooks and not model.bn1._forward_hooks


def test_taylor_num_images_takes_the_first_images():
    model, graph = tiny()
    batches = _labelled(n=4)
    first_six = get_importance("taylor", num_images=6).scores(model, graph, calib_batches=batches)
    cut = [batches[0], (batches[1][0][:2], batches[1][1][:2])]
    whole = get_importance("taylor").scores(model, graph, calib_batches=cut)
    np.testing.assert_allclose(first_six["conv1"], whole["conv1"])


class NoBN(nn.Module):
    """conv (1->3, 1x1) -> relu -> mean -> fc1 (3->4) -> relu -> fc2 (4->2): no BatchNorm anywhere."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 1)
        self.fc1 = nn.Linear(3, 4)
        self.fc2 = nn.Linear(4, 2)

    def forward(self, x):
        x = torch.relu(self.conv(x)).mean((2, 3))
        return self.fc2(torch.relu(self.fc1(x)))


def test_taylor_without_bn_uses_the_producer_output():
    torch.manual_seed(0)
    model = NoBN().eval()
    graph = PruningGraph(model, torch.zeros(1, 1, 2, 2))
    batches = _labelled(seed=2)
    s = get_importance("taylor").scores(model, graph, calib_batches=batches)
    by_hand = _taylor_by_hand(model, ["conv", "fc1"], batches, linear=("fc1",))
    np.testing.assert_allclose(s["conv"], by_hand["conv"], rtol=1e-5)
    np.testing.assert_allclose(s["fc1"], by_hand["fc1"], rtol=1e-5)


@pytest.mark.parametrize("aggregate", ["mean", "sum"])
def test_taylor_scores_every_unit_and_combines_the_bns_of_a_residual_stream(aggregate):
    torch.manual_seed(0)
    model = cifar_resnet(20).eval()
    graph = PruningGraph(model, torch.zeros(1, 3, 32, 32))
    batches = _labelled(n_batches=2, n=4, shape=(3, 32, 32), classes=10)
    s = get_importance("taylor", aggregate=aggregate).scores(model, graph, calib_batches=batches)
    groups = graph.groups()
    assert set(s) == {g.id for g in groups}
    for g in groups:  # the zero-padded shortcut groups' units span several channels
        assert s[g.id].shape == (g.size,) and np.isfinite(s[g.id]).all() and (s[g.id] >= 0).all()
    # stage-1 stream channel 5: the stem's BN and every block's bn2 that adds into it (at 5, 13 and 29)
    bns = ["bn1"] + [f"layer{st}.{b}.bn2" for st in (1, 2, 3) for b in range(3)]
    at = [5] + [5 + off for off in (0, 8, 24) for _ in range(3)]
    by_hand = _taylor_by_hand(model, bns, batches)
    per_bn = [by_hand[p][c] for p, c in zip(bns, at, strict=True)]
    want = np.sum(per_bn) if aggregate == "sum" else np.mean(per_bn)
    assert s["conv1"][5] == pytest.approx(want, rel=1e-5)
    # a block's inner channels have one BN
    inner = _taylor_by_hand(model, ["layer1.0.bn1"], batches)["layer1.0.bn1"]
    np.testing.assert_allclose(s["layer1.0.conv1"], inner, rtol=1e-5)


# ---- PQ index / SAP (values worked out by hand in the comments)


def test_pq_index_hand_values():
    from edgeprune.pruning import pq_index

    assert pq_index([1, 1, 1, 1]) == pytest.approx(0.0)  # uniform: nothing to compress
    # ||w||_0.5 = 1, ||w||_1 = 1, d^(1/q - 1/p) = 4^-1  ->  I = 1 - 1/4
    assert pq_index([1, 0, 0, 0]) == pytest.approx(0.75)
    # ||w||_0.5 = (2 + 1)^2 = 9, ||w||_1 = 5, 2^-1  ->  I = 1 - 9/10
    assert pq_index([4, -1]) == pytest.approx(0.1)
    # p=1, q=2: ||w||_1 = 7, ||w||_2 = 5, 2^(1/2 - 1)  ->  I = 1 - 7 / (5 sqrt 2)
    assert pq_index([3, 4], p=1, q=2) == pytest.approx(1 - 7 / (5 * np.sqrt(2)))
    assert pq_index([]) == 0.0 and pq_index([0, 0]) == 0.0
    with pytest.raises(ValueError):
        pq_index([1, 2], p=1, q=1)


def test_sap_prune_count_hand_values():
    from edgeprune.pruning import sap_keep_bound, sap_prune_count

    assert sap_prune_count([1, 1, 1, 1]) == 0  # I = 0 -> r = d -> keep all
    # I = 0.75, r = 4 * 1 * 0.25^1 = 1  ->  floor(4 * min(0.75, 0.9)) = 3
    assert sap_keep_bound(4, 0.75) == pytest.approx(1.0)
    assert sap_prune_count([1, 0, 0, 0]) == 3
    # I = 0.1, r = 2 * 0.9 = 1.8  ->  floor(2 * 0.1) = 0
    assert sap_prune_count([4, 1]) == 0
    # d = 10, one non-zero: I = 0.9, r = 10 * 0.1 = 1  ->  floor(10 * min(0.9, 0.9)) = 9
    ten = [1] + [0] * 9
    assert sap_prune_count(ten) == 9
    assert sap_prune_count(ten, gamma=0.5) == 4  # floor(10 * 0.45)
    assert sap_prune_count(ten, beta=0.5) == 5  # floor(10 * 0.5)
    # eta = 1: r = 10 * 2^-2 * 0.1 = 0.25  ->  1 - r/d = 0.975, capped by beta at 0.9
    assert sap_keep_bound(10, 0.9, eta=1.0) == pytest.approx(0.25)
    assert sap_prune_count(ten, eta=1.0, beta=0.95) == 9  # floor(10 * 0.95) = 9
    # p=1, q=2, w=[3, 4]: I = 1 - 7/(5 sqrt 2); r = 2 * (1 - I)^2 = 2 * 49/50 = 1.96 -> floor(2 * 0.02) = 0
    assert sap_keep_bound(2, 1 - 7 / (5 * np.sqrt(2)), p=1, q=2) == pytest.approx(1.96)
    assert sap_prune_count([3, 4], p=1, q=2) == 0
    assert sap_prune_count([]) == 0 and sap_prune_count([5]) == 0  # never the last unit
    assert sap_prune_count(ten, gamma=5.0, beta=1.0) == 9  # clipped to d - 1
