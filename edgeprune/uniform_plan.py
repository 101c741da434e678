"""The uniform-share plan: every group kept at the same share of its dense width, measured beside the allocator's.

Benchmark 2 (README) found the allocator's plans losing to plain uniform pruning whenever one share of every
width lands on the target's kernel blocking: ResNet-56 with every width halved (16/32/64 to 8/16/32) runs at
0.47-0.50 of its dense latency on the CPU and keeps 215k parameters, while the allocator reached the same
latency with 70-225k. The allocator never measured that model: its importance pricing sends cuts to the blocks'
inner convs, and the tables under-predict what thinning the residual streams saves. So every latency round also
measures the uniform plans nearest the deadline (probing.py `walk_family`), and the loop keeps the plan that lands
in the slack window with more parameters (prune.py `_probe`): from round 1 on, so that the architecture is not
reached a round late, after a fine-tuning pass spent on a model pruned again.

A group already thinner than its share (an earlier round cut it) stays as it is. A group outside a bundle whose
share-cut saves no more, by the tables, than a smaller cut keeps the extra units: the smallest removal with the
same predicted saving (a 12-wide cut of a 16-wide conv that runs at the 16-wide speed keeps 16). Bundle members
(groups that split one layer's width) are cut by the share as they are, since alone each of them saves nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .allocator import (
    EDGE_TOL,
    PLATEAU_MS,
    RESOLVED_MS,
    Candidate,
    _widths_after,
    feature_maps,
    importance_lost,
    lowest_first,
    shared_dimension_bundles,
)
from .pruning import ChannelGroup

SHARES = tuple(j / 32 for j in range(31, 0, -1))  # kept share of each dense width, widest first
FAMILY = "uniform"


def kept_width(dense: int, share: float) -> int:
    """A group's width at `share` of its dense width (rounded half up, at least one unit)."""
    return max(1, int(dense * share + 0.5))


def _smallest_same_saving(g: ChannelGroup, order: list[int], k: int, current, cost_model, base: float) -> int:
    """The fewest of the group's lowest-scored units whose removal alone the tables predict to save what
    removing k of them saves (within a step's tolerance): the rest of the k sit on a plateau."""
    def saving(n: int) -> float:
        return base - cost_model.predict(_widths_after(g, set(order[:n]), current)) if n else 0.0

    touched = [p for (p, _r) in g.index_map if p in current]
    longest = max(cost_model.layer_latency(p, *current[p]) for p in touched)
    if longest < RESOLVED_MS:  # too short to read a plateau from: a flat row is timer ticks (allocator.py)
        return k
    tol = max(PLATEAU_MS, EDGE_TOL * longest)
    full = saving(k)
    if full <= tol:
        return 0
    lo, hi = 0, k  # savings rise with n along a staircase; find the first n within tol of the full cut
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if saving(mid) >= full - tol else (mid, hi)
    return hi


def uniform_options(groups: list[ChannelGroup], scores: Mapping[str, np.ndarray], cost_model,
                    dense_sizes: Mapping[str, int]) -> list[tuple[float, Candidate]]:
    """(share, removal) for each share of SHARES, widest first, that reaches a new, lower step of the whole
    model's predicted time; each group loses its lowest-scored units (scores normalised per group)."""
    current = dict(cost_model.current)
    base = cost_model.predict(current)
    live = [g for g in groups if g.size > 1 and g.id in dense_sizes and any(p in current for p, _ in g.index_map)]
    if not live:
        return []
    bundled = {g.id for members in shared_dimension_bundles(live, current) for g in members}
    s = {g.id: np.asarray(scores[g.id], dtype=np.float64) for g in live}
    orders = {g.id: lowest_first(s[g.id]) for g in live}
    maps = {g.id: feature_maps(g, current) for g in live}
    longest = max(cost_model.layer_latency(p, *current[p]) for g in live for (p, _r) in g.index_map if p in current)
    step_tol = max(PLATEAU_MS, EDGE_TOL * longest)
    snapped: dict[tuple[str, int], int] = {}
    options: list[tuple[float, Candidate]] = []
    best = 0.0
    for share in SHARES:
        counts = {}
        for g in live:
            k = max(0, g.size - kept_width(dense_sizes[g.id], share))
            if k and g.id not in bundled:
                if (g.id, k) not in snapped:
                    snapped[(g.id, k)] = _smallest_same_saving(g, orders[g.id], k, current, cost_model, base)
                k = snapped[(g.id, k)]
            if k:
                counts[g.id] = k
        now, widths = dict(current), {}
        for g in live:
            if g.id in counts:
                after = _widths_after(g, set(orders[g.id][:counts[g.id]]), now)
                now.update(after)
                widths.update(after)
        if not widths or any(min(w) < 1 for w in widths.values()):
            continue
        saving = base - cost_model.predict(widths)
        if saving > best + step_tol:
            parts = tuple((gid, tuple(sorted(orders[gid][:k]))) for gid, k in counts.items())
            lost = sum(importance_lost(s[gid], orders[gid], k, maps[gid]) for gid, k in counts.items())
            options.append((share, Candidate(FAMILY, (), saving, lost, widths, parts=parts)))
            best = saving
    return options


def first_to_measure(options: list[tuple[float, Candidate]], need_ms: float) -> int:
    """Where to start measuring the family: the widest share whose predicted saving covers the need, else
    the narrowest."""
    return next((n for n, (_share, c) in enumerate(options) if c.saving_ms >= need_ms), len(options) - 1)
