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
        picked = _lowest(np.asarray(scores[g.id]), math.floor(ctx.fraction * g.size + 1e-9), g.size)
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


def auto_step(groups: list[ChannelGroup]) -> float:
    """A first step that prunes, in an average layer, units under a quarter of the layer's mean score.

    thr_l = T * w_l with w_l ~ 1/G, so T = G/4 puts an average layer's threshold at 0.25; the paper's
    step of 1 suits networks of a few layers (LeNet) but would need dozens of rounds on a ResNet-56.
    """
    return max(1.0, 0.25 * len(groups))
