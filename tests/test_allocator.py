"""The allocator's candidates: table savings, and the proportional proxy only where the table is flat."""

from __future__ import annotations

import numpy as np

from edgeprune.allocator import candidates
from edgeprune.pruning import ChannelGroup


class _Table:
    """A one-layer cost model whose prediction for thinner widths is `effect` ms (+ is slower)."""

    def __init__(self, effect: float):
        self.current = {"conv": (8, 3)}
        self.layers = {"conv": None}
        self.effect = effect

    def predict(self, widths) -> float:
        out = dict(self.current, **widths)["conv"][0]
        return 1.0 + (self.effect if out < 8 else 0.0)

    def step_edges(self, path, side):
        return []

    def layer_latency(self, path, o, i) -> float:
        return 1.0


def _group() -> ChannelGroup:
    return ChannelGroup(id="conv", root="conv", members=[("conv", "out")], size=8, layers=["conv"],
                        index_map={("conv", "out"): [(u,) for u in range(8)]})


def _options(effect: float):
    return candidates([_group()], {"conv": np.arange(8, dtype=float)}, _Table(effect))["conv"]


def test_a_real_saving_comes_from_the_table():
    opts = _options(-0.3)
    assert opts and all(not c.proxy and abs(c.saving_ms - 0.3) < 1e-9 for c in opts)


def test_a_flat_table_falls_back_to_the_proportional_proxy():
    opts = _options(0.0)
    assert opts and all(c.proxy for c in opts)
    assert opts[0].saving_ms < opts[-1].saving_ms  # more channels removed, more estimated saving


def test_a_table_predicting_a_slowdown_gets_no_invented_saving():
    assert _options(+0.5) == []
