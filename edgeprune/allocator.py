"""Which channels remove a round's latency step: the latency policy's allocators (a registry).

Candidates are, per channel group, removals of its k lowest-importance units that land on a step edge
of the group's saving curve (a count that really saves latency on this target: between edges a GPU
kernel or an overhead-bound CPU layer saves nothing). Each candidate's saving is the cost model's
prediction for every layer the group touches (its own outputs and its consumers' inputs).
- `ratio` (default): greedily take the step with the most latency saved per unit of importance lost —
  the highest-cost, lowest-importance channels first — until the predicted saving covers the need.
- `knapsack` (HALP-like): keep the most total importance subject to saving at least the need, solved by
  dynamic programming over discretised savings, one choice per group.

Savings do not add up across groups: a residual block's second conv loses inputs to the block's own group
and outputs to the stream's group, and the two removals together save less than each alone would suggest
(a conv's time goes with out x in). So the ratio allocator prices every step by the whole model's predicted
saving with everything already chosen (`Joint`), and the knapsack, whose dynamic program needs additive
savings, is corrected afterwards by the same joint prediction.

Groups can also share one dimension of a layer: in CIFAR ResNets with zero-padded shortcuts a stage's
residual stream is the previous stage's stream plus padded channels, so three groups split the output
width of every stage-3 conv. Alone, each of them moves that width off the kernels' blocking and saves
little or nothing; together, by the same share, they land it on the blocking. Such groups form a bundle:
their options are each member's alone and joint removals of the same share of every member, and a round
takes at most one option per bundle.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from .costmodel.table import EDGE_TOL  # a step must save this share of the touched layers' time
from .errors import EdgepruneError
from .pruning import ChannelGroup

PLATEAU_MS = 1e-4  # predicted savings within this of zero are a plateau, not a step
# A layer this long is timed in at least 50 ticks of the per-node profile's microsecond clock, so a flat
# table row is a measurement; shorter layers' rows are too coarse to rule a saving out.
RESOLVED_MS = 0.05
MAX_ROUND_SHARE = 0.5  # of a group's units, per round
BUNDLE_SHARES = (0.125, 0.25, 0.375, 0.5)  # joint options of a bundle: this share of every member's units


@dataclass(frozen=True)
class Candidate:
    group: str
    units: tuple[int, ...]  # unit indices removed (the lowest-scored k)
    saving_ms: float
    importance: float  # normalised scores of the removed units, priced by `importance_lost`
    widths: dict[str, tuple[int, int]]  # layer path -> (out, in) after this removal
    proxy: bool = False  # saving estimated in proportion to the channels removed, not read from the table
    parts: tuple[tuple[str, tuple[int, ...]], ...] = ()  # a bundle's removal: (group id, units) per member

    @property
    def removals(self) -> dict[str, tuple[int, ...]]:
        """Units removed, per group id."""
        return dict(self.parts) if self.parts else {self.group: self.units}

    @property
    def removed(self) -> int:
        return sum(len(u) for u in self.removals.values())


def _widths_after(g: ChannelGroup, removed: set[int], current: Mapping[str, tuple[int, int]]) -> dict:
    """Every cost-modelled layer's (out, in) after removing `removed` units of group `g`."""
    out: dict[str, tuple[int, int]] = {}
    for (path, role), per_unit in g.index_map.items():
        if path not in current:
            continue
        lost = sum(len(per_unit[u]) for u in removed)
        o, i = out.get(path, current[path])
        out[path] = (o - lost, i) if role == "out" else (o, i - lost)
    return out


def lowest_first(s: np.ndarray) -> list[int]:
    """A group's unit indices, lowest score first (ties in index order)."""
    return [int(u) for u in np.argsort(s, kind="stable")]


def max_units(size: int) -> int:
    """The most units one round may take from a group of `size` (unless its first saving step lies further):
    half of them (at least one). Pruning is gradual, as in AIAP: fine-tuning recovers and importance is
    measured again before a group is halved again, and one round cannot cut a residual stream that every
    block of its stage reads to a single channel (at batch 32 the tables showed that as the largest saving
    on offer)."""
    return max(1, int(size * MAX_ROUND_SHARE))


def importance_lost(s: np.ndarray, order: list[int], k: int, maps: int = 1) -> float:
    """What removing a group's k lowest-scored units costs: their scores, scaled by the whole group's over
    what stays (removed * total / kept), times the number of feature maps the group's channels live in
    (`maps`, see `feature_maps`). For a few units that is about their scores; as a group nears one
    unit it grows without bound. Scores are normalised per group, so a plain sum priced the last 15 of 16
    channels of ResNet-56's first residual stream like 15 channels of one 64-wide block, and a round cut
    the stream that every block of the stage reads to a single channel."""
    total = float(s.sum())
    removed = float(s[order[:k]].sum())
    kept = total - removed
    if removed <= 0:  # dead channels (or a group with no signal at all) cost nothing
        return 0.0
    return maps * removed * total / kept if kept > 0 else float("inf")


def feature_maps(g: ChannelGroup, current: Mapping[str, tuple[int, int]]) -> int:
    """How many cost-modelled layers' outputs the group's channels are part of: 1 for a block's inner
    channels, every block's output for a residual stream.

    Scores are normalised per group (mean 1), which keeps their order within a group but erases how much
    of the network a channel carries. A residual stream's channel is in the output of every block of its
    stage (ResNet-56's first stream: 28 convs, through the zero-padded shortcuts into stages 2 and 3), and
    removing it takes it from all of them at once. Priced like one block's inner channel, a joint cut of the
    streams saved 8 ms at batch 32 for 29 units of importance, and round 1 of benchmark 2 took it in two of six
    seed runs (accuracy after the round 52.9% and 69.5%). Priced per map, round 1 cut only inner channels in all
    six runs measured (74.5-87.2%); the final accuracy did not move (benchmark 2's mean 64.9% against 64.2%)."""
    return max(1, sum(1 for path, role in g.index_map if role == "out" and path in current))


def candidates(groups: list[ChannelGroup], scores: Mapping[str, np.ndarray], cost_model,
               no_proxy: Collection[str] = ()) -> dict[str, list[Candidate]]:
    """Per group, the removals on the step edges of the group's own saving curve, with predicted savings.

    The curve is the whole model's predicted saving for removing the group's k lowest-scored units, every
    k: it counts the producer's output width and every consumer's input width together. Reading edges
    from the root layer's output dimension alone misses where time really goes: on an NCHWc CPU the
    output width of a 16-wide conv is padded to the block (flat), while its consumers' input width cuts
    time in proportion, so the group saves even though its root's table is flat along `out`.

    `no_proxy`: groups offered no proportional estimate (one already measured as saving nothing).
    """
    current = dict(cost_model.current)
    base = cost_model.predict(current)
    found: dict[str, list[Candidate]] = {}
    for g in groups:
        s = np.asarray(scores[g.id], dtype=np.float64)
        order = lowest_first(s)
        touched = [p for (p, _role) in g.index_map if p in current]
        if not touched or g.size <= 1:
            continue
        maps = feature_maps(g, current)
        longest = max(cost_model.layer_latency(p, *current[p]) for p in touched)
        # what counts as a step: EDGE_TOL of the largest touched layer's time, the scale of one table's noise
        step_tol = max(PLATEAU_MS, EDGE_TOL * longest)
        options, best, slower = [], 0.0, False
        for k in range(1, g.size):
            removed = set(order[:k])
            widths = _widths_after(g, removed, current)
            if any(min(w) < 1 for w in widths.values()):
                continue
            saving = base - cost_model.predict(widths)
            slower = slower or saving < -PLATEAU_MS
            if saving > best + step_tol:  # the fewest units reaching a new, lower step
                options.append(Candidate(g.id, tuple(sorted(removed)), saving, importance_lost(s, order, k, maps),
                                         widths))
                best = saving
        # Half a group per round, where the tables allow it; where the first step that saves anything lies
        # further (at batch 32 a 16-wide conv is slower at 8 outputs than at 16, and faster only at 1-2),
        # that step alone, or the group could never thin (ResNet-56 b32 stalled at 12.3 ms, floor 2.5 ms).
        options = [c for c in options if len(c.units) <= max_units(g.size)] or options[:1]
        # The proxy is for what the tables cannot tell: widths no table has measured (every touched layer
        # already at or under the narrowest width its table holds), or layers so short that a flat or
        # slower row is a few timer ticks, not evidence (ResNet-56 at batch 1: 5-50 us per conv; its
        # table reads the 16-wide stream at 8 as 2 us per layer slower, yet the whole model gets faster
        # as the streams thin). Where a narrower width of a longer layer was measured and saves nothing
        # (or costs time, e.g. widths off the kernels' blocking), that measurement is the answer, and a
        # proportional estimate would invent a saving (it did: 1.1 ms per channel of ResNet-56's 16-wide
        # stream at batch 32, which the table measured as no saving at all).
        resolved = longest >= RESOLVED_MS
        if not options and g.id not in no_proxy and (
                not resolved or not (slower or _measured_below(g, current, cost_model))):
            options = _proxy_options(g, s, order, current, cost_model, maps)
        found[g.id] = options
    for members in shared_dimension_bundles(groups, current):
        key = "+".join(g.id for g in members)
        opts = [c for g in members for c in found.pop(g.id, [])]
        opts += _bundle_options(key, members, scores, current, cost_model, base)
        if opts:
            found[key] = sorted(opts, key=lambda c: c.removed)
    return found


def shared_dimension_bundles(groups: list[ChannelGroup], current: Mapping[str, tuple[int, int]]
                             ) -> list[list[ChannelGroup]]:
    """Sets of two or more groups that split one dimension (a layer's outputs, or its inputs) of a
    cost-modelled layer between them, joined transitively."""
    eligible = [g for g in groups if g.size > 1 and any(p in current for p, _ in g.index_map)]
    parent = {g.id: g.id for g in eligible}

    def root(gid: str) -> str:
        while parent[gid] != gid:
            parent[gid] = parent[parent[gid]]
            gid = parent[gid]
        return gid

    owner: dict[tuple[str, str], str] = {}
    for g in eligible:
        for path, role in g.index_map:
            if path in current:
                parent[root(g.id)] = root(owner.setdefault((path, role), g.id))
    by_root: dict[str, list[ChannelGroup]] = {}
    for g in eligible:
        by_root.setdefault(root(g.id), []).append(g)
    return [m for m in by_root.values() if len(m) > 1]


def _bundle_options(key: str, members: list[ChannelGroup], scores: Mapping[str, np.ndarray],
                    current: Mapping[str, tuple[int, int]], cost_model, base: float) -> list[Candidate]:
    """Joint removals of the same share of every member's lowest-scored units (at most half of each),
    where that share reaches a new, lower step of the whole model's predicted time."""
    s = {g.id: np.asarray(scores[g.id], dtype=np.float64) for g in members}
    orders = {gid: lowest_first(v) for gid, v in s.items()}
    maps = {g.id: feature_maps(g, current) for g in members}
    touched = {p for g in members for (p, _role) in g.index_map if p in current}
    step_tol = max(PLATEAU_MS, EDGE_TOL * max(cost_model.layer_latency(p, *current[p]) for p in touched))
    options: list[Candidate] = []
    best, seen = 0.0, set()
    for share in BUNDLE_SHARES:
        counts = tuple(min(max_units(g.size), max(1, round(share * g.size))) for g in members)
        if counts in seen:
            continue
        seen.add(counts)
        now = dict(current)
        widths: dict[str, tuple[int, int]] = {}
        for g, k in zip(members, counts, strict=True):
            after = _widths_after(g, set(orders[g.id][:k]), now)
            now.update(after)
            widths.update(after)
        if any(min(w) < 1 for w in widths.values()):
            continue
        saving = base - cost_model.predict(widths)
        if saving > best + step_tol:
            parts = tuple((g.id, tuple(sorted(orders[g.id][:k]))) for g, k in zip(members, counts, strict=True))
            lost = sum(importance_lost(s[g.id], orders[g.id], k, maps[g.id]) for g, k in zip(members, counts, strict=True))
            options.append(Candidate(key, (), saving, lost, widths, parts=parts))
            best = saving
    return options


def _measured_below(g: ChannelGroup, current: Mapping[str, tuple[int, int]], cost_model) -> bool:
    """Whether some layer the group thins has a table entry measured below its current width on that side."""
    for path, role in g.index_map:
        if path not in current or path not in cost_model.layers:
            continue
        table = cost_model.tables[cost_model.layers[path].table_key]
        o, i = current[path]
        along_out = role == "out" or table.ins is None  # a depthwise table has one dimension
        if min(table.outs if along_out else table.ins) < (o if along_out else i):
            return True
    return False


def _proxy_options(g: ChannelGroup, s: np.ndarray, order: list[int], current: Mapping[str, tuple[int, int]],
                   cost_model, maps: int = 1) -> list[Candidate]:
    """Below the narrowest widths the tables measured, estimate each layer's saving in proportion to the
    channels removed. Marked `proxy` in the report; the round's real measurement then decides, as for
    every round."""
    options = []
    for k in range(1, max_units(g.size) + 1):
        removed = set(order[:k])
        widths = _widths_after(g, removed, current)
        if any(min(w) < 1 for w in widths.values()):
            continue
        saving = 0.0
        for path, (o, i) in widths.items():
            o0, i0 = current[path]
            saving += cost_model.layer_latency(path, o0, i0) * (1 - (o * i) / (o0 * i0))
        if saving > 0:
            options.append(Candidate(g.id, tuple(sorted(removed)), saving, importance_lost(s, order, k, maps),
                                     widths, proxy=True))
    return options


def merge_widths(current: Mapping[str, tuple[int, int]], chosen: Iterable[Candidate]) -> dict[str, tuple[int, int]]:
    """Every touched layer's (out, in) after all these removals together: each candidate's channels come off
    the current width (two groups can thin the same layer, one its outputs and the other its inputs)."""
    out: dict[str, tuple[int, int]] = {}
    for c in chosen:
        for path, (o, i) in c.widths.items():
            o0, i0 = current[path]
            po, pi = out.get(path, (o0, i0))
            out[path] = (po - (o0 - o), pi - (i0 - i))
    return out


class Joint:
    """The whole model's predicted saving of a set of removals taken together.

    A `proxy` candidate's saving is an estimate the tables cannot give (they read its layers as flat or
    slower), so the table's own reading of it alone is replaced by the estimate; what the tables say about
    the layers it shares with other removals still counts."""

    def __init__(self, cost_model):
        self.cost_model = cost_model
        self.current = dict(cost_model.current)
        self.base = cost_model.predict(self.current)
        self._alone: dict[tuple, float] = {}

    def _table_alone(self, c: Candidate) -> float:
        key = (c.group, c.units, c.parts)
        if key not in self._alone:
            self._alone[key] = self.base - self.cost_model.predict(c.widths)
        return self._alone[key]

    def saving(self, chosen: Iterable[Candidate]) -> float:
        chosen = list(chosen)
        if not chosen:
            return 0.0
        table = self.base - self.cost_model.predict(merge_widths(self.current, chosen))
        return table + sum(c.saving_ms - self._table_alone(c) for c in chosen if c.proxy)


Allocator = Callable[[dict[str, list[Candidate]], float, Joint, float | None, float | None], dict[str, Candidate]]
ALLOCATORS: dict[str, Allocator] = {}


def register_allocator(name: str) -> Callable[[Allocator], Allocator]:
    def deco(fn: Allocator) -> Allocator:
        ALLOCATORS[name] = fn
        return fn

    return deco


@register_allocator("ratio")
def allocate_ratio(options: dict[str, list[Candidate]], need_ms: float, joint: Joint,
                   max_ms: float | None = None, below_ms: float | None = None) -> dict[str, Candidate]:
    """Greedy: deepen the group whose next step saves the most ms per importance lost; once that step (or a
    step no costlier) would cover what is still needed, take the covering step that loses the least
    importance (the least pruning that meets the step, so the round does not overshoot by a whole layer).
    Each step is priced by what it adds to the joint saving of everything chosen so far.

    With `max_ms` (the most the round may save before it lands under the slack window), steps that would
    pass it are set aside while smaller ones can still do the job; only when none can is the step that
    passes it least taken (ResNet-56 at batch 32: one 16-channel block of a residual stream saves 3.5 ms,
    three times the window, where a few inner blocks would land in it).

    `below_ms` is a hard limit (a removal that large overshot already): no step passes it, even when the
    need then goes uncovered; the round lands short and the next one goes on from it."""
    chosen: dict[str, Candidate] = {}
    saved = 0.0
    while saved < need_ms:
        remaining = need_ms - saved
        steps = []  # (candidate, saving added, importance added, is the group's next step, option key)
        for gid, opts in options.items():
            now = chosen.get(gid)
            others = [c for g, c in chosen.items() if g != gid]
            deeper = [c for c in opts if now is None or c.removed > now.removed]
            for n, c in enumerate(deeper):
                d_save = joint.saving([*others, c]) - saved
                if d_save > 0 and (below_ms is None or saved + d_save < below_ms):
                    steps.append((c, d_save, c.importance - (now.importance if now else 0.0), n == 0, gid))
        within = [st for st in steps if max_ms is None or saved + st[1] <= max_ms]
        covering_over = [st for st in steps if st[1] >= remaining]
        if not within and covering_over:  # nothing small enough is left: overshoot as little as possible
            top = min(covering_over, key=lambda st: st[1])
            chosen[top[4]] = top[0]
            saved += top[1]
            break
        steps = within or steps
        if not steps:
            break
        greedy = max([st for st in steps if st[3]] or steps, key=lambda st: st[1] / max(st[2], 1e-9))
        covering = [st for st in steps if st[1] >= remaining]
        cheapest = min(covering, key=lambda st: (st[2], st[1])) if covering else None
        # End on a covering step when the greedy one would cover too, or when covering costs no more than
        # the greedy step: an expensive covering step (a group cut to its last units) must not end the
        # round while cheaper steps elsewhere can still share the need.
        pick = cheapest if cheapest is not None and (greedy[1] >= remaining or cheapest[2] <= greedy[2]) else greedy
        saved += pick[1]
        chosen[pick[4]] = pick[0]
    if max_ms is not None and saved > max_ms:
        # Overshooting anyway: one covering step alone may overshoot less than the small steps plus one.
        single = [(joint.saving([c]), c.importance, gid, c) for gid, opts in options.items() for c in opts]
        single = [t for t in single if t[0] >= need_ms and (below_ms is None or t[0] < below_ms)]
        alone = min(single, key=lambda t: t[:2], default=None)
        if alone is not None and alone[0] < saved:
            return {alone[2]: alone[3]}
    return chosen


@register_allocator("knapsack")
def allocate_knapsack(options: dict[str, list[Candidate]], need_ms: float, joint: Joint,
                      max_ms: float | None = None, below_ms: float | None = None,
                      bins: int = 400) -> dict[str, Candidate]:
    """Least importance lost with total predicted saving >= need (savings discretised to need/bins). The
    program adds the groups' savings; where their joint saving falls short of the need, the cheapest further
    steps are added greedily, each priced jointly. (`max_ms` and `below_ms` are not used: the program has
    no upper bound.)"""
    if need_ms <= 0:
        return {}
    unit = need_ms / bins
    inf = float("inf")
    cost = np.full(bins + 1, inf)  # cost[b]: least importance lost reaching saving bin b (capped at `bins`)
    cost[0] = 0.0
    picks: list[dict[int, tuple | None]] = []
    for gid in sorted(options):
        new = cost.copy()
        choice: dict[int, tuple | None] = {b: None for b in range(bins + 1)}
        for c in options[gid]:
            step = int(c.saving_ms / unit)
            for b in range(bins + 1):
                if cost[b] == inf:
                    continue
                nb = min(bins, b + step)
                if cost[b] + c.importance < new[nb]:
                    new[nb] = cost[b] + c.importance
                    choice[nb] = (b, c, gid)  # type: ignore[assignment]
        picks.append(choice)
        cost = new
    if cost[bins] == inf:  # the need cannot be covered: take the most saving reachable
        target = max((b for b in range(bins + 1) if cost[b] < inf), default=0)
    else:
        target = bins
    chosen: dict[str, Candidate] = {}
    b = target
    for choice in reversed(picks):
        entry = choice.get(b)
        if entry is not None:
            prev, c, gid = entry  # type: ignore[misc]
            chosen[gid] = c
            b = prev
    return _top_up(chosen, options, need_ms, joint)


def _top_up(chosen: dict[str, Candidate], options: dict[str, list[Candidate]], need_ms: float,
            joint: Joint) -> dict[str, Candidate]:
    """Deepen groups, least importance per joint ms first, until the joint saving covers the need."""
    chosen = dict(chosen)
    saved = joint.saving(chosen.values())
    while saved < need_ms:
        best = None
        for gid, opts in options.items():
            now = chosen.get(gid)
            others = [c for g, c in chosen.items() if g != gid]
            for c in opts:
                if now is not None and c.removed <= now.removed:
                    continue
                gain = joint.saving([*others, c]) - saved
                if gain > 0:
                    price = (c.importance - (now.importance if now else 0.0)) / gain
                    if best is None or price < best[0]:
                        best = (price, c, gain, gid)
                break  # only each group's next step
        if best is None:
            break
        chosen[best[3]] = best[1]
        saved += best[2]
    return chosen


def allocate(name: str, groups: list[ChannelGroup], scores: Mapping[str, np.ndarray], cost_model,
             need_ms: float, max_ms: float | None = None, below_ms: float | None = None,
             no_proxy: Collection[str] = ()) -> dict[str, Candidate]:
    """The removals for a round that must save `need_ms` (and, where the allocator can, at most `max_ms`;
    with the ratio allocator never `below_ms` or more). `no_proxy`: see `candidates`."""
    if name not in ALLOCATORS:
        raise EdgepruneError(f"unknown allocator {name!r}; choose one of {', '.join(ALLOCATORS)}")
    return ALLOCATORS[name](candidates(groups, scores, cost_model, no_proxy), need_ms, Joint(cost_model), max_ms,
                            below_ms)
