"""Selection strategies and the AIAP first step, on real channel groups where it matters."""

from __future__ import annotations

import numpy as np
import torch

from edgeprune.models import load_model
from edgeprune.pruning import ChannelGroup, PruningGraph, get_importance
from edgeprune.selection import SelectionContext, auto_step, removed_share, select


def _group(gid: str, size: int) -> ChannelGroup:
    return ChannelGroup(id=gid, root=gid, members=[], size=size, layers=[], index_map={}, params_per_unit=1)


def test_fixed_fraction_rounds_so_small_layers_shrink_too():
    groups = [_group("small", 6), _group("big", 40), _group("tiny", 4)]
    scores = {g.id: np.arange(g.size, dtype=float)[::-1].copy() for g in groups}
    plan = select("fixed", groups, scores, SelectionContext(fraction=0.1))
    # 0.6 of a filter rounds to one (flooring would leave the 6-filter layer untouched forever); 0.4 to none
    assert {g: len(ix) for g, ix in plan.items()} == {"small": 1, "big": 4}
    assert plan["small"] == [5]  # the lowest-scored unit


def _resnet_groups():
    loaded = load_model("zoo:cifar_resnet20")
    example = torch.randn(1, 3, 32, 32)
    graph = PruningGraph(loaded.module, example)
    groups = graph.groups()
    scores = get_importance("l1").scores(graph.model, graph, groups, None)
    total = sum(p.numel() for p in loaded.module.parameters())
    return groups, scores, total


def test_auto_step_is_the_smallest_threshold_removing_the_share():
    groups, scores, total = _resnet_groups()
    for share in (0.05, 0.08, 0.15):
        step = auto_step(groups, scores, total, "params", share=share)

        def removed(t: float) -> float:
            plan = select("aiap", groups, scores, SelectionContext(threshold=t))
            return removed_share(groups, plan, "params", total)

        assert removed(step) >= share
        assert removed(step * (1 - 1e-6)) < share
        # one step lands near the share, not at a multiple of it (the layer-count rule overshot on ResNets)
        assert removed(step) < 2.5 * share


def test_removed_share_is_the_real_parameter_reduction():
    loaded = load_model("zoo:cifar_resnet20")
    graph = PruningGraph(loaded.module, torch.randn(1, 3, 32, 32))
    groups = graph.groups()
    total = sum(p.numel() for p in loaded.module.parameters())
    plan = {g.id: [0, 1] for g in groups if g.size > 4}
    predicted = removed_share(groups, plan, "params", total)
    graph.prune_many(plan)
    actual = 1 - sum(p.numel() for p in graph.model.parameters()) / total
    assert abs(predicted - actual) < 0.1 * actual  # only weights shared by two pruned groups count twice


def test_auto_step_when_nothing_can_reach_the_share():
    groups = [_group("a", 1), _group("b", 1)]
    scores = {"a": np.ones(1), "b": np.ones(1)}
    assert auto_step(groups, scores, total=100) == 1.0
