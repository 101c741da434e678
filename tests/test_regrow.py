"""Giving a uniform-share plan back the units that cost least latency (edgeprune.regrow), on a fake cost model
whose layers differ in what a channel costs."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from edgeprune.pruning import ChannelGroup
from edgeprune.regrow import regrow


class _PerChannel:
    """Three independent layers: "big" (a 16-wide conv on a large map, 0.1 ms a channel), "small" (a 64-wide
    conv on a small map, 0.01 ms a channel) and "shared" (one width split by two groups, 0.02 ms a channel)."""

    COST = {"big": 0.1, "small": 0.01, "shared": 0.02}

    def __init__(self):
        self.current = {"big": (16, 3), "small": (64, 3), "shared": (32, 3)}
        self.layers = {p: SimpleNamespace(table_key=p) for p in self.current}
        self.scale = 1.0

    def layer_latency(self, path, o, i) -> float:
        return self.COST[path] * o

    def predict(self, widths=None) -> float:
        now = dict(self.current, **(widths or {}))
        return sum(self.layer_latency(p, *now[p]) for p in now)


def _group(gid: str, layer: str, size: int, offset: int = 0) -> ChannelGroup:
    return ChannelGroup(id=gid, root=layer, members=[(layer, "out")], size=size, layers=[layer],
                        index_map={(layer, "out"): [(offset + u,) for u in range(size)]})


def _halved(groups, scores) -> dict[str, list[int]]:
    return {g.id: sorted(int(u) for u in np.argsort(scores[g.id], kind="stable")[: g.size // 2]) for g in groups}


def test_units_come_back_where_they_cost_least_until_the_allowance_is_spent():
    cm = _PerChannel()
    groups = [_group("gbig", "big", 16), _group("gsmall", "small", 64)]
    rng = np.random.default_rng(0)
    scores = {g.id: rng.random(g.size) + 0.5 for g in groups}
    removal = _halved(groups, scores)  # big 16 -> 8, small 64 -> 32
    # 0.25 ms buys 25 channels of "small" (0.01 ms each) or 2 of "big" (0.1 ms each)
    units, taken = regrow(groups, scores, cm, removal, allow_ms=0.25)
    assert taken and {t["group"] for t in taken} == {"gsmall"}
    assert units["gbig"] == removal["gbig"]  # the expensive layer stays at its share
    added = cm.predict({"small": (64 - len(units["gsmall"]), 3)}) - cm.predict({"small": (32, 3)})
    assert 0.0 < added <= 0.25 + 1e-9
    assert sum(t["latency_added_ms"] for t in taken) <= 0.25 + 1e-9
    # the units given back are the most important of those the share had removed
    back = sorted(set(removal["gsmall"]) - set(units["gsmall"]))
    still_out = units["gsmall"]
    assert min(scores["gsmall"][back]) >= max(scores["gsmall"][still_out])


def test_with_room_for_everything_the_plan_comes_back_whole_and_with_none_nothing_moves():
    cm = _PerChannel()
    groups = [_group("gbig", "big", 16), _group("gsmall", "small", 64)]
    scores = {g.id: np.linspace(0.5, 1.5, g.size) for g in groups}
    removal = _halved(groups, scores)
    units, _taken = regrow(groups, scores, cm, removal, allow_ms=10.0)
    assert all(not u for u in units.values())
    units, taken = regrow(groups, scores, cm, removal, allow_ms=0.005)  # less than one channel anywhere
    assert not taken and units == removal


def test_bundled_groups_keep_their_share():
    cm = _PerChannel()
    groups = [_group("gsmall", "small", 64), _group("ga", "shared", 16), _group("gb", "shared", 16, offset=16)]
    scores = {g.id: np.linspace(0.5, 1.5, g.size) for g in groups}
    removal = _halved(groups, scores)
    units, taken = regrow(groups, scores, cm, removal, allow_ms=10.0, bundled={"ga", "gb"})
    assert units["ga"] == removal["ga"] and units["gb"] == removal["gb"]
    assert not units.get("gsmall") and {t["group"] for t in taken} == {"gsmall"}
