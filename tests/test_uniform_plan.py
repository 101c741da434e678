"""The uniform-share plan (edgeprune.uniform_plan) on a fake staircase cost model, and how a round chooses
between it and the allocator's plan."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from torch import nn

from edgeprune.prune import _more_capacity
from edgeprune.pruning import ChannelGroup
from edgeprune.uniform_plan import first_to_measure, kept_width, uniform_options

STEP = 8  # the fake target's kernel blocking


class _Staircase:
    """Layers a (16 out), b (32 out, 16 in), c (10 out, 32 in): each costs ceil(out/8) * ceil(in/8) * 0.1 ms
    (well over the tables' resolution, so plateaus are read as measured)."""

    def __init__(self, current: dict[str, tuple[int, int]] | None = None):
        self.current = current or {"a": (16, 3), "b": (32, 16), "c": (10, 32)}
        self.layers = {p: SimpleNamespace(table_key=p) for p in self.current}

    def layer_latency(self, path, o, i) -> float:
        return 0.1 * math.ceil(o / STEP) * math.ceil(i / STEP)

    def predict(self, widths=None) -> float:
        now = dict(self.current, **(widths or {}))
        return sum(self.layer_latency(p, *now[p]) for p in now)


def _chain() -> list[ChannelGroup]:
    return [ChannelGroup(id="ga", root="a", members=[("a", "out"), ("b", "in")], size=16, layers=["a"],
                         index_map={("a", "out"): [(u,) for u in range(16)], ("b", "in"): [(u,) for u in range(16)]}),
            ChannelGroup(id="gb", root="b", members=[("b", "out"), ("c", "in")], size=32, layers=["b"],
                         index_map={("b", "out"): [(u,) for u in range(32)], ("c", "in"): [(u,) for u in range(32)]})]


def _widths(c) -> dict:
    return {p: w for p, w in c.widths.items()}


def test_every_share_lands_on_the_blocking_and_each_is_a_lower_step():
    cm = _Staircase()
    groups = _chain()
    scores = {g.id: np.arange(float(g.size)) for g in groups}
    options = uniform_options(groups, scores, cm, {"ga": 16, "gb": 32})
    assert options, "a share of every width must save something on this staircase"
    latencies = [cm.predict(c.widths) for _, c in options]
    assert latencies == sorted(latencies, reverse=True) and len(set(latencies)) == len(latencies)
    for _share, c in options:
        o, i = dict(cm.current, **c.widths)["b"]
        assert o % STEP == 0 and i % STEP == 0, c.widths
    share, first = options[0]
    # At 0.75 the 16-wide group would go to 12, which saves nothing on a blocking of 8: it keeps all 16, and
    # only the 32-wide group thins, to 24.
    assert share == 0.75
    assert first.removals == {"gb": tuple(range(8))}  # its lowest-scored units
    assert dict(cm.current, **first.widths)["b"] == (24, 16)


def test_a_share_of_a_group_already_thinner_than_it_leaves_that_group_alone():
    cm = _Staircase({"a": (8, 3), "b": (32, 8), "c": (10, 32)})
    groups = _chain()
    groups[0] = ChannelGroup(id="ga", root="a", members=[("a", "out"), ("b", "in")], size=8, layers=["a"],
                             index_map={("a", "out"): [(u,) for u in range(8)], ("b", "in"): [(u,) for u in range(8)]})
    scores = {g.id: np.ones(g.size) for g in groups}
    for share, c in uniform_options(groups, scores, cm, {"ga": 16, "gb": 32}):
        if share >= 0.5:
            assert "ga" not in c.removals


def _split() -> list[ChannelGroup]:
    """Two groups splitting the 16 outputs of layer x (as a residual stream and its zero-padded extension
    split a stage-3 conv of a CIFAR ResNet)."""
    return [ChannelGroup(id=f"g{h}", root=f"r{h}", members=[("x", "out")], size=8, layers=["x"],
                         index_map={("x", "out"): [(h * 8 + u,) for u in range(8)]}) for h in (0, 1)]


class _SplitLayer(_Staircase):
    def __init__(self):
        super().__init__({"x": (16, 16)})


def test_groups_that_split_one_layer_are_cut_by_the_share_together():
    cm = _SplitLayer()
    groups = _split()
    options = uniform_options(groups, {g.id: np.arange(8.0) for g in groups}, cm, {"g0": 8, "g1": 8})
    # Alone, 4 of either group's 8 units take x from 16 to 12 outputs and save nothing; the two together
    # reach 8 outputs. Snapping each member to its own plateau would have undone that.
    _share, first = options[0]
    assert {g: len(u) for g, u in first.removals.items()} == {"g0": 4, "g1": 4}
    assert first.widths["x"] == (8, 16)


def test_the_first_share_measured_is_the_widest_predicted_to_cover_the_need():
    cm = _Staircase()
    groups = _chain()
    options = uniform_options(groups, {g.id: np.arange(float(g.size)) for g in groups}, cm, {"ga": 16, "gb": 32})
    savings = [c.saving_ms for _, c in options]
    assert len(options) >= 2
    assert first_to_measure(options, 0.01) == 0
    assert first_to_measure(options, savings[0] + 1e-6) == 1  # the widest share saves too little
    assert first_to_measure(options, max(savings) + 1.0) == len(options) - 1  # none covers: the narrowest


def test_kept_width_rounds_half_up_and_keeps_a_unit():
    assert kept_width(16, 0.5) == 8 and kept_width(10, 0.25) == 3 and kept_width(3, 0.1) == 1


def _probe(status: str, width: int, ms: float):
    model = nn.Linear(width, 10)
    params = sum(p.numel() for p in model.parameters())
    return SimpleNamespace(status=status, model=model, latency={"value": ms}, info={"share": 0.5, "params": params})


@pytest.mark.parametrize("allocated, uniform, chosen", [
    (("met", 4, 9.8), ("met", 8, 9.6), "uniform"),   # both in the window: more parameters wins
    (("met", 8, 9.8), ("met", 4, 9.6), "allocator"),
    (("below", 8, 10.3), ("met", 4, 9.6), "uniform"),  # only the uniform plan meets the deadline
    (("met", 4, 9.8), ("over", 8, 9.0), "allocator"),  # past the window is not a candidate
])
def test_the_plan_fine_tuned_is_the_one_in_the_window_with_more_parameters(allocated, uniform, chosen):
    a, u = _probe(*allocated), _probe(*uniform)
    assert _more_capacity(a, u, 1) is (u if chosen == "uniform" else a)
