"""The allocator's candidates: the group's saving-curve steps, and the proportional proxy only below every
measured width."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from edgeprune.allocator import (
    Joint,
    allocate,
    candidates,
    feature_maps,
    importance_lost,
    max_units,
    merge_widths,
)
from edgeprune.pruning import ChannelGroup


class _Table:
    """A one-layer cost model whose prediction for thinner widths is `effect` ms (+ is slower); its table
    measured the output widths `measured`."""

    def __init__(self, effect: float, measured: tuple[int, ...] = (4, 8), layer_ms: float = 1.0):
        self.current = {"conv": (8, 3)}
        self.layer_ms = layer_ms
        self.layers = {"conv": SimpleNamespace(table_key="t")}
        self.tables = {"t": SimpleNamespace(outs=measured, ins=(3,))}
        self.effect = effect

    def predict(self, widths) -> float:
        out = dict(self.current, **widths)["conv"][0]
        return 1.0 + (self.effect if out < 8 else 0.0)

    def layer_latency(self, path, o, i) -> float:
        return self.layer_ms


def _group() -> ChannelGroup:
    return ChannelGroup(id="conv", root="conv", members=[("conv", "out")], size=8, layers=["conv"],
                        index_map={("conv", "out"): [(u,) for u in range(8)]})


def _options(effect: float, measured: tuple[int, ...] = (4, 8), layer_ms: float = 1.0):
    return candidates([_group()], {"conv": np.arange(8, dtype=float)}, _Table(effect, measured, layer_ms))["conv"]


def test_a_real_saving_comes_from_the_table():
    opts = _options(-0.3)
    # one step: removing one unit reaches it, removing more saves nothing more
    assert [(len(c.units), c.proxy, round(c.saving_ms, 9)) for c in opts] == [(1, False, 0.3)]


def test_a_flat_table_measured_below_the_current_width_means_no_saving():
    assert _options(0.0) == []


def test_a_flat_or_slower_row_of_a_layer_too_short_to_resolve_falls_back_to_the_proxy():
    # 20 us: a 2% step is under one tick of the per-node clock, so the row is not evidence either way
    for effect in (0.0, +0.002):  # flat, or a couple of ticks slower
        opts = _options(effect, layer_ms=0.02)
        assert opts and all(c.proxy for c in opts)
    assert _options(+0.002, layer_ms=1.0) == []  # a longer layer's measured slowdown rules the proxy out


def test_widths_below_every_measured_one_fall_back_to_the_proportional_proxy():
    opts = _options(0.0, measured=(8,))
    assert opts and all(c.proxy for c in opts)
    assert opts[0].saving_ms < opts[-1].saving_ms  # more channels removed, more estimated saving


def test_a_table_predicting_a_slowdown_gets_no_invented_saving():
    assert _options(+0.5) == []
    assert _options(+0.5, measured=(8,)) == []


class _BlockedCpu:
    """Producer `a` costs the same at every output width (its output is padded to the kernel's block, as
    measured for ResNet-56's 16-wide convs at batch 32 on this machine's NCHWc path); consumer `b` is
    cheaper at a narrower input width, in steps of 16."""

    def __init__(self):
        self.current = {"a": (32, 3), "b": (8, 32)}
        self.layers = {"a": SimpleNamespace(table_key="a"), "b": SimpleNamespace(table_key="b")}
        self.tables = {"a": SimpleNamespace(outs=(16, 32), ins=(3,)), "b": SimpleNamespace(outs=(8,), ins=(16, 32))}

    def layer_latency(self, path, o, i) -> float:
        return {"a": 1.0, "b": 0.04 * (16 if i <= 16 else 32)}[path]

    def predict(self, widths) -> float:
        now = dict(self.current, **widths)
        return sum(self.layer_latency(p, *now[p]) for p in now)


def test_a_group_saves_through_its_consumers_inputs_when_its_own_output_is_flat():
    g = ChannelGroup(id="a", root="a", members=[("a", "out"), ("b", "in")], size=32, layers=["a", "b"],
                     index_map={("a", "out"): [(u,) for u in range(32)], ("b", "in"): [(u,) for u in range(32)]})
    opts = candidates([g], {"a": np.arange(32, dtype=float)}, _BlockedCpu())["a"]
    # the one step: 16 units, where the consumer's measured input width drops (no proxy: `a` was measured)
    assert [(len(c.units), round(c.saving_ms, 6), c.proxy) for c in opts] == [(16, 0.64, False)]


class _Bilinear:
    """One conv whose time goes with out x in (0.01 ms per out-in pair), its outputs thinned by one group and
    its inputs by another, as a residual block's second conv is by the stream's and the block's groups."""

    def __init__(self):
        self.current = {"c": (8, 8)}
        self.layers = {"c": SimpleNamespace(table_key="c")}
        self.tables = {"c": SimpleNamespace(outs=(1, 8), ins=(1, 8))}

    def layer_latency(self, path, o, i) -> float:
        return 0.01 * o * i

    def predict(self, widths) -> float:
        return self.layer_latency("c", *dict(self.current, **widths)["c"])


def _two_sided() -> list[ChannelGroup]:
    return [ChannelGroup(id=f"g_{role}", root="c", members=[("c", role)], size=8, layers=["c"] if role == "out" else [],
                         index_map={("c", role): [(u,) for u in range(8)]}) for role in ("out", "in")]


@pytest.mark.parametrize("name", ["ratio", "knapsack"])
def test_two_groups_thinning_one_layer_are_priced_together(name):
    cm = _Bilinear()
    groups = _two_sided()
    scores = {g.id: np.array([0.0] * 4 + [100.0] * 4) for g in groups}
    # of 0.64 ms; more than one side can save in a round (half its units, 0.32), so both must go. Thinning
    # the sides by 4 and 2 saves 0.32 + 0.16 = 0.48 by the sum of the groups' own savings, yet only 0.40
    # together: halving both (0.48 together) is what covers it.
    need = 0.45
    chosen = allocate(name, groups, scores, cm, need)
    merged = merge_widths(cm.current, chosen.values())
    o, i = merged["c"]
    assert (8 - o) and (8 - i)  # both sides thinned, each from the current width
    assert cm.predict(merged) <= 0.64 - need + 1e-9  # the joint prediction covers the need
    assert Joint(cm).saving(chosen.values()) == pytest.approx(0.64 - cm.predict(merged))
    assert sum(c.saving_ms for c in chosen.values()) > Joint(cm).saving(chosen.values())  # standalone ones overcount


def test_merged_widths_take_both_groups_channels_off_the_current_width():
    cm = _Bilinear()
    opts = candidates(_two_sided(), {"g_out": np.arange(8.0), "g_in": np.arange(8.0)}, cm)
    a = next(c for c in opts["g_out"] if len(c.units) == 2)
    b = next(c for c in opts["g_in"] if len(c.units) == 3)
    assert merge_widths(cm.current, [a, b]) == {"c": (6, 5)}


def test_importance_lost_grows_without_bound_as_a_group_nears_one_unit():
    s = np.ones(16)
    order = list(range(16))
    assert importance_lost(s, order, 1) == pytest.approx(16 / 15)  # about the unit's own score
    assert importance_lost(s, order, 8) == pytest.approx(16.0)  # half the group: twice the plain sum
    assert importance_lost(s, order, 15) == pytest.approx(240.0)  # the last-but-one unit: 16x the sum
    assert importance_lost(np.array([0.0, 0.0, 2.0, 2.0]), [0, 1, 2, 3], 2) == 0.0  # dead channels are free


def test_a_group_is_not_cut_to_one_unit_when_others_can_pay_for_the_step():
    # two groups thinning one layer each; `a` saves a little more per unit, but cutting it to one unit
    # would lose far more than sharing the step with `b`
    class TwoLayers:
        current = {"a": (16, 3), "b": (16, 3)}
        layers = {"a": SimpleNamespace(table_key="t"), "b": SimpleNamespace(table_key="t")}
        tables = {"t": SimpleNamespace(outs=(1, 16), ins=(3,))}

        def layer_latency(self, path, o, i) -> float:
            return (0.011 if path == "a" else 0.01) * o

        def predict(self, widths) -> float:
            now = dict(self.current, **widths)
            return sum(self.layer_latency(p, *now[p]) for p in now)

    groups = [ChannelGroup(id=p, root=p, members=[(p, "out")], size=16, layers=[p],
                           index_map={(p, "out"): [(u,) for u in range(16)]}) for p in ("a", "b")]
    chosen = allocate("ratio", groups, {p: np.ones(16) for p in ("a", "b")}, TwoLayers(), 0.15)
    assert all(16 - len(c.units) >= 4 for c in chosen.values()), {g: len(c.units) for g, c in chosen.items()}


def test_one_round_takes_at_most_half_of_a_group():
    cm = _Bilinear()  # thinner is always faster here, down to one channel
    opts = candidates(_two_sided(), {"g_out": np.arange(8.0), "g_in": np.arange(8.0)}, cm)
    assert max(len(c.units) for c in opts["g_out"]) == 4
    assert max_units(1) == 1 and max_units(3) == 1 and max_units(16) == 8


class _Independent:
    """Layers that each cost a fixed ms per output channel, thinned by one group each."""

    per_unit = {"b": 0.5, "s1": 0.025, "s2": 0.025, "s3": 0.025}
    size = {"b": 2, "s1": 8, "s2": 8, "s3": 8}

    def __init__(self):
        self.current = {p: (n, 3) for p, n in self.size.items()}
        self.layers = {p: SimpleNamespace(table_key=p) for p in self.size}
        self.tables = {p: SimpleNamespace(outs=(1, n), ins=(3,)) for p, n in self.size.items()}

    def layer_latency(self, path, o, i) -> float:
        return self.per_unit[path] * o

    def predict(self, widths) -> float:
        now = dict(self.current, **widths)
        return sum(self.layer_latency(p, *now[p]) for p in now)

    def groups(self) -> list[ChannelGroup]:
        return [ChannelGroup(id=p, root=p, members=[(p, "out")], size=n, layers=[p],
                             index_map={(p, "out"): [(u,) for u in range(n)]}) for p, n in self.size.items()]


def _allocate_independent(need: float, most: float | None) -> tuple[dict, float]:
    cm = _Independent()
    chosen = allocate("ratio", cm.groups(), {p: np.ones(n) for p, n in cm.size.items()}, cm, need, most)
    return chosen, Joint(cm).saving(chosen.values())


def test_a_step_that_would_overshoot_the_window_is_set_aside_while_smaller_ones_can_cover():
    chosen, saved = _allocate_independent(0.25, None)
    assert set(chosen) == {"b"} and saved == pytest.approx(0.5)  # the cheapest covering step, far past the need
    chosen, saved = _allocate_independent(0.25, 0.35)
    assert "b" not in chosen and 0.25 <= saved + 1e-9 and saved <= 0.35 + 1e-9


def test_when_nothing_lands_in_the_window_the_least_overshooting_covering_step_is_taken():
    chosen, saved = _allocate_independent(0.45, 0.46)  # the small groups can save at most 0.3 in a round
    assert set(chosen) == {"b"} and saved == pytest.approx(0.5)  # not the small steps and then b as well


def test_a_removal_as_large_as_one_that_overshot_is_never_taken_again():
    cm = _Independent()
    chosen = allocate("ratio", cm.groups(), {p: np.ones(n) for p, n in cm.size.items()}, cm, 0.45, 0.46, 0.5)
    assert "b" not in chosen  # it saves 0.5: what overshot before
    assert Joint(cm).saving(chosen.values()) < 0.45  # the need goes uncovered; the round lands short


def test_a_proxy_removal_is_priced_by_its_estimate_not_by_the_flat_table():
    # 20 us layer, flat table row: the tables cannot resolve it, the proxy estimates a saving
    cm = _Table(0.0, layer_ms=0.02)
    opts = candidates([_group()], {"conv": np.arange(8, dtype=float)}, cm)["conv"]
    assert opts and all(c.proxy for c in opts)
    chosen = allocate("ratio", [_group()], {"conv": np.arange(8, dtype=float)}, cm, 0.005)
    assert chosen, "a proxy step must be selectable: the table's flat reading is not its saving"
    assert Joint(cm).saving(chosen.values()) == pytest.approx(chosen["conv"].saving_ms)


def test_a_group_whose_first_saving_step_lies_past_half_gets_that_step_alone():
    class OnlyAtOne(_Table):
        def predict(self, widths) -> float:  # slower at every width but 1, as a 16-blocked output at batch 32
            out = dict(self.current, **widths)["conv"][0]
            return 0.5 if out == 1 else (1.0 if out == 8 else 1.1)

    opts = candidates([_group()], {"conv": np.arange(8, dtype=float)}, OnlyAtOne(0.0, measured=(1, 2, 4, 8)))["conv"]
    assert [(len(c.units), c.proxy) for c in opts] == [(7, False)]


class _SplitOutputs:
    """One 16-wide layer whose outputs two groups split (8 units each, like a CIFAR ResNet's stream and its
    zero-padded channels); the kernel is blocked by 8 outputs: only at 8 or fewer does it get faster."""

    current = {"c": (16, 4)}
    layers = {"c": SimpleNamespace(table_key="t")}
    tables = {"t": SimpleNamespace(outs=(1, 8, 16), ins=(4,))}

    def layer_latency(self, path, o, i) -> float:
        return 1.0 if o > 8 else 0.4

    def predict(self, widths) -> float:
        return self.layer_latency("c", *dict(self.current, **widths)["c"])


def _split_groups() -> list[ChannelGroup]:
    return [ChannelGroup(id=gid, root="c", members=[("c", "out")], size=8, layers=["c"],
                         index_map={("c", "out"): [(first + u,) for u in range(8)]})
            for gid, first in (("stream", 0), ("pads", 8))]


def test_groups_splitting_one_layers_outputs_get_joint_options():
    groups = _split_groups()
    scores = {"stream": np.arange(8.0), "pads": np.arange(8.0)[::-1].copy()}
    opts = candidates(groups, scores, _SplitOutputs())
    # half of either group alone leaves 12 outputs (no saving); half of each together reaches the block
    assert list(opts) == ["stream+pads"]
    [joint] = opts["stream+pads"]
    assert joint.removals == {"stream": (0, 1, 2, 3), "pads": (4, 5, 6, 7)}  # each group's lowest scores
    assert joint.removed == 8 and joint.saving_ms == pytest.approx(0.6)
    assert merge_widths(_SplitOutputs.current, [joint]) == {"c": (8, 4)}


@pytest.mark.parametrize("name", ["ratio", "knapsack"])
def test_a_bundle_is_chosen_as_one_option_and_planned_for_every_member(name):
    chosen = allocate(name, _split_groups(), {"stream": np.arange(8.0), "pads": np.arange(8.0)}, _SplitOutputs(), 0.5)
    assert list(chosen) == ["stream+pads"]
    assert {g: len(u) for g, u in chosen["stream+pads"].removals.items()} == {"stream": 4, "pads": 4}


def test_the_planner_removes_a_bundles_units_from_every_member_and_reports_them():
    from edgeprune.latency import LatencyPlanner

    class CM(_SplitOutputs):
        scale = 1.0

        def set_channels(self, widths) -> None:
            pass

        def predict(self, widths=None) -> float:
            return super().predict(widths or {})

    p = LatencyPlanner(cost_model=CM(), dense_ms=1.0, deadline_ms=0.42)
    scores = {"stream": np.arange(1.0, 9.0), "pads": np.arange(1.0, 9.0)}
    plan, info = p.plan(1.0, _split_groups(), scores, {"c": (16, 4)}, measured_now=1.0)
    assert plan == {"stream": [0, 1, 2, 3], "pads": [0, 1, 2, 3]}
    [g] = info["groups"]
    assert g["group"] == "stream+pads" and g["removed"] == 8 and g["members"] == {"stream": 4, "pads": 4}
    assert info["predicted_latency_ms"] == pytest.approx(0.4)


class _StreamAndInner(_Independent):
    """A residual stream whose channels are the outputs of three convs (0.1 ms per channel each) and one
    block's inner conv (0.15 ms per channel): per channel, the stream saves twice what the inner conv does."""

    per_unit = {"s_a": 0.1, "s_b": 0.1, "s_c": 0.1, "inner": 0.15}
    size = dict.fromkeys(per_unit, 8)

    def groups(self) -> list[ChannelGroup]:
        units = [(u,) for u in range(8)]
        stream = ChannelGroup(id="stream", root="s_a", members=[(p, "out") for p in ("s_a", "s_b", "s_c")],
                              size=8, layers=["s_a", "s_b", "s_c"],
                              index_map={(p, "out"): units for p in ("s_a", "s_b", "s_c")})
        inner = ChannelGroup(id="inner", root="inner", members=[("inner", "out")], size=8, layers=["inner"],
                             index_map={("inner", "out"): units})
        return [stream, inner]


def test_a_channel_is_priced_once_for_every_feature_map_it_is_part_of():
    cm = _StreamAndInner()
    stream, inner = cm.groups()
    assert (feature_maps(stream, cm.current), feature_maps(inner, cm.current)) == (3, 1)
    scores = {"stream": np.ones(8), "inner": np.ones(8)}
    opts = candidates([stream, inner], scores, cm)
    one = importance_lost(np.ones(8), list(range(8)), 1)
    assert opts["stream"][0].importance == pytest.approx(3 * one)
    assert opts["inner"][0].importance == pytest.approx(one)


@pytest.mark.parametrize("name", ["ratio", "knapsack"])
def test_equally_scored_inner_channels_go_before_a_residual_streams(name):
    # The stream saves 0.3 ms a channel, the inner conv 0.15; but a stream channel leaves three feature maps
    # at once. Priced per map, the inner conv is the cheaper way to 0.3 ms (priced per group, the stream was).
    cm = _StreamAndInner()
    chosen = allocate(name, cm.groups(), {"stream": np.ones(8), "inner": np.ones(8)}, cm, 0.3)
    assert set(chosen) == {"inner"} and chosen["inner"].removed == 2
