"""Which channels a round removes, given per-unit importance scores (higher = more important).

Strategies (a registry): `aiap` prunes every unit whose per-layer-normalised score is at or under
T * w_l (w_l: the layer's share of the remaining parameters or FLOPs); `fixed` prunes a fixed fraction
of every group's lowest-scored units (ILP/IAP); `sap` lets the PQ index decide each group's count.
Every group keeps at least one unit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from .aiap import layer_weights
from .errors import EdgepruneError
from .pruning import ChannelGroup, normalise_per_layer, sap_prune_count


@dataclass(frozen=True)
class SelectionContext:
    threshold: float = 0.0  # AIAP's T
    weighting: str = "params"  # params | flops
    fraction: float = 0.1
    sap_options: Mapping[str, float] | None = None


Plan = dict[str, list[int]]
Strategy = Callable[[list[ChannelGroup], Mapping[str, np.ndarray], SelectionContext], Plan]
STRATEGIES: dict[str, Strategy] = {}


def register_strategy(name: str) -> Callable[[Strategy], Strategy]:
    def deco(fn: Strategy) -> Strategy:
        STRATEGIES[name] = fn
        return fn

    return deco


def _lowest(scores: np.ndarray, count: int, size: int) -> list[int]:
    count = min(count, size - 1)
    if count <= 0:
        return []
    return sorted(int(i) for i in np.argsort(scores, kind="stable")[:count])


def group_cost(g: ChannelGroup, weighting: str) -> float:
    per_unit = g.params_per_unit if weighting == "params" else g.flops_per_unit
    return float(per_unit * g.size)


@register_strategy("aiap")
def select_aiap(groups: list[ChannelGroup], scores: Mapping[str, np.ndarray], ctx: SelectionContext) -> Plan:
    norm = normalise_per_layer(scores)
    weights = layer_weights({g.id: group_cost(g, ctx.weighting) for g in groups})
    plan: Plan = {}
    for g in groups:
        s = norm[g.id]
        count = int(np.sum(s <= ctx.threshold * weights[g.id]))
        picked = _lowest(s, count, g.size)
        if picked:
            plan[g.id] = picked
    return plan


@register_strategy("fixed")
def select_fixed(groups: list[ChannelGroup], scores: Mapping[str, np.ndarray], ctx: SelectionContext) -> Plan:
    plan: Plan = {}
    for g in groups:
        # Rounded, not floored: flooring 10% of a 6-filter layer is 0, so small layers would never shrink.
        picked = _lowest(np.asarray(scores[g.id]), math.floor(ctx.fraction * g.size + 0.5), g.size)
        if picked:
            plan[g.id] = picked
    return plan


@register_strategy("sap")
def select_sap(groups: list[ChannelGroup], scores: Mapping[str, np.ndarray], ctx: SelectionContext) -> Plan:
    plan: Plan = {}
    options = dict(ctx.sap_options or {})
    for g in groups:
        s = np.asarray(scores[g.id], dtype=np.float64)
        picked = _lowest(s, sap_prune_count(np.abs(s), **options), g.size)
        if picked:
            plan[g.id] = picked
    return plan


def select(strategy: str, groups: list[ChannelGroup], scores: Mapping[str, np.ndarray],
           ctx: SelectionContext) -> Plan:
    if strategy not in STRATEGIES:
        raise EdgepruneError(f"unknown method {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    return STRATEGIES[strategy](groups, scores, ctx)


def removed_share(groups: list[ChannelGroup], plan: Plan, weighting: str, total: float) -> float:
    """The share of `total` (the model's params or FLOPs, by `weighting`) that `plan` removes.

    `total` is the model's own count: summing the groups' costs would count every weight twice (once
    as an output channel of one group and once as an input channel of the next).
    """
    per_unit = {g.id: (g.params_per_unit if weighting == "params" else g.flops_per_unit) for g in groups}
    return sum(per_unit[gid] * len(ix) for gid, ix in plan.items()) / total if total else 0.0


def auto_step(groups: list[ChannelGroup], scores: Mapping[str, np.ndarray], total: float,
              weighting: str = "params", share: float = 0.08) -> float:
    """The first AIAP step: the smallest threshold T whose selection removes about `share` of `total`
    (the model's params or FLOPs, by `weighting`).

    Why not a fixed T: the per-layer thresholds are T * w_l and w_l shrinks as layers multiply, so the
    paper's step of 1 suits LeNet but removes almost nothing from a ResNet-56, while a step scaled by
    the layer count assumes equal layers and overshoots on real ones. Searching T on the dense model's
    own scores gives every network a first round of the same size.
    """
    def share_at(t: float) -> float:
        plan = select_aiap(groups, scores, SelectionContext(threshold=t, weighting=weighting))
        return removed_share(groups, plan, weighting, total)

    lo, hi = 0.0, 1.0
    while share_at(hi) < share:
        lo, hi = hi, hi * 2
        if hi > 1e6:  # nothing reaches the share (e.g. every group at one unit): any step prunes what it can
            return 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if share_at(mid) < share else (lo, mid)
    return hi
