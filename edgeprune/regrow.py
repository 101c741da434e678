"""Give a uniform-share plan back the units that cost the least latency for the importance they carry.

One share of every width lands where the target's steps put it, often well under the deadline: ResNet-56
with every width halved runs at 0.42-0.49 of its dense latency on this CPU at batch 32, against a 50%
deadline. The latency that share leaves unspent is not spread evenly over the layers. A channel of a stage-3
block (64 wide, 8x8 maps) costs a fraction of what a stage-1 channel (16 wide, 32x32 maps) costs, and in an
exploration at equal fine-tuning (2 epochs on 5,000 CIFAR-10 images, L1 ranking), every width halved except
the stage-3 blocks' inner convs, kept whole, ran at 0.50 of dense (against 0.48 for all halved, the median of
two interleaved readings each) and tested 4.8 and 5.0 points better in two seeds (McNemar p 3e-9, 5e-10).

So, from the uniform plan the round measured, units are restored group by group, the best ratio of
importance regained (`allocator.importance_lost`, the pricing the allocator removes by) to predicted latency
added first, while the added latency fits in what the uniform plan's reading left under the round's aim.
Bundles (groups that split one layer's width, such as a CIFAR ResNet's residual streams) stay at their
share: alone, a member's units move the width off the kernels' blocking. The result is measured like any
plan, and the round keeps it only where that reading puts it in the slack window (prune.py `_probe`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .allocator import PLATEAU_MS, _widths_after, feature_maps, importance_lost, lowest_first
from .pruning import ChannelGroup

FAMILY = "regrown"


def removal_widths(groups: Mapping[str, ChannelGroup], removal: Mapping[str, list[int]],
            current: Mapping[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    """Every touched layer's (out, in) with all these removals applied together."""
    now, widths = dict(current), {}
    for gid, units in removal.items():
        if units:
            after = _widths_after(groups[gid], set(units), now)
            now.update(after)
            widths.update(after)
    return widths


def removed_first(s: np.ndarray, units) -> list[int]:
    """A group's unit indices: the removed `units` lowest-scored first, then the rest lowest-scored first, so that
    the first k of this order are a removal of k units and `importance_lost` prices it."""
    removed = set(units)
    order = lowest_first(s)
    return [u for u in order if u in removed] + [u for u in order if u not in removed]


def regrow(groups: list[ChannelGroup], scores: Mapping[str, np.ndarray], cost_model,
           removal: Mapping[str, list[int]], allow_ms: float, bundled: set[str] = frozenset()
           ) -> tuple[dict[str, list[int]], list[dict]]:
    """`removal` (units per group id, a plan from the cost model's current widths) with units given back while
    the tables' predicted latency grows by at most `allow_ms`; returns the new removal and what was restored
    (group, units, latency_added_ms, importance_regained), in the order taken.

    Each step restores, in one group, the j most important of its removed units (scores normalised per group)
    for the j with the best importance regained per ms added; a restoration the tables price at no time at all
    goes first. Groups in `bundled` are left as they are."""
    by_id = {g.id: g for g in groups}
    current = dict(cost_model.current)
    s = {gid: np.asarray(scores[gid], dtype=np.float64) for gid in removal}
    # removed units, most important last, so that keeping the first k of this order is the plan less j units
    orders = {gid: removed_first(s[gid], units) for gid, units in removal.items()}
    counts = {gid: len(units) for gid, units in removal.items()}
    maps = {gid: feature_maps(by_id[gid], current) for gid in removal}

    def removal_now(c: Mapping[str, int]) -> dict[str, list[int]]:
        return {gid: orders[gid][:k] for gid, k in c.items() if k}

    def lost(gid: str, k: int) -> float:  # priced as the allocator prices a removal
        return importance_lost(s[gid], orders[gid], k, maps[gid])

    predicted = cost_model.predict(removal_widths(by_id, removal_now(counts), current))
    spent, taken = 0.0, []
    movable = [gid for gid in removal if gid not in bundled and counts[gid] > 0]
    while True:
        best = None  # (ratio, j, gid, added, regained)
        for gid in movable:
            k = counts[gid]
            for j in range(1, k + 1):
                trial = {**counts, gid: k - j}
                added = cost_model.predict(removal_widths(by_id, removal_now(trial), current)) - predicted
                if spent + max(added, 0.0) > allow_ms:
                    continue
                regained = lost(gid, k) - lost(gid, k - j)
                if regained <= 0:
                    continue
                ratio = float("inf") if added <= PLATEAU_MS else regained / added
                key = (ratio, j)
                if best is None or key > (best[0], best[1]):
                    best = (ratio, j, gid, added, regained)
        if best is None:
            break
        _ratio, j, gid, added, regained = best
        counts[gid] -= j
        predicted += added
        spent += max(added, 0.0)
        taken.append({"group": gid, "restored": j, "latency_added_ms": added, "importance_regained": regained})
        movable = [g for g in movable if counts[g] > 0]
    return {gid: sorted(u) for gid, u in removal_now(counts).items()}, taken


def removal_groups(groups: list[ChannelGroup], scores: Mapping[str, np.ndarray], cost_model,
                   removal: Mapping[str, list[int]]) -> list[dict]:
    """Per group of a removal, as the allocator's plans report theirs: units removed, the tables' saving of that
    group's removal alone and the importance it loses."""
    by_id = {g.id: g for g in groups}
    current = dict(cost_model.current)
    base = cost_model.predict(current)
    out = []
    for gid, units in removal.items():
        if not units:
            continue
        s = np.asarray(scores[gid], dtype=np.float64)
        order = removed_first(s, units)
        out.append({"group": gid, "removed": len(units),
                    "latency_saving_ms": base - cost_model.predict(_widths_after(by_id[gid], set(units), current)),
                    "importance_lost": importance_lost(s, order, len(units), feature_maps(by_id[gid], current)),
                    "proxy": False})
    return out

