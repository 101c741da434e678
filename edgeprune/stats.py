"""The statistical decision behind `edgeprune check`: is a model slower than its baseline, or its budget?

Latency samples on a busy machine are heavy-tailed (most runs near the floor, a few many times slower)
and drift over time (other jobs, thermal state), so a bare comparison of two medians flips between
PASSED and FAILED from run to run. The rules below decide only on statistical evidence.

Decision rule (copy for the README)
-----------------------------------
Let q be the chosen metric (p50 by default; p90, p99 or mean) of the per-iteration latencies, B the
baseline's samples, C the candidate's, r the allowed regression (`--max-regression 5%` -> r = 0.05) and
alpha the significance level (default 0.05, one-sided).

* Against a baseline: the candidate FAILS when the one-sided (1 - alpha) lower confidence bound of the
  ratio q(C) / q(B) is above 1 + r. The bound is the alpha-quantile of 2000 bootstrap replicates of the
  ratio (seeded, so a given set of samples always gets the same answer). Otherwise it PASSES, even when
  the point estimate is above 1 + r: that is reported as a non-significant change (and `edgeprune check`
  first measures more blocks, see below). The allowance r is what keeps an unchanged model from failing:
  it fails only if noise moves the lower bound past 1 + r; alpha governs the errors near the allowance.
  A one-sided Mann-Whitney U test of "C is stochastically larger than B x (1 + r)" is reported beside it
  for the location metrics (p50, mean) but does not decide: when the machine preempts many iterations,
  both models share a long tail of preempted runs and the rank test loses the power the interval keeps.
* Against an absolute budget (`--latency-ms N`): the candidate FAILS when the one-sided (1 - alpha) lower
  confidence bound of q(C) (bootstrap, as above) is above N.

The bootstrap respects how the samples were taken. Samples come in measurement blocks (6 per model by
default). When baseline and candidate are both measured now, block i of each is paired. On onnxruntime
targets both models run in one profiler process, one right after the other, pair after pair (balanced
seeded order), and block i of each is the same stretch of consecutive pairs; on other runtimes (TensorRT)
each block is one profiler run and the models' blocks alternate in time (A B, B A, A B, ...). Each
replicate draws block indices with replacement, the same for both models, so drift they shared cancels
in the ratio while the block-to-block noise of the ratio is counted. With 4 or more blocks whole
blocks are resampled (a cluster bootstrap; for the few blocks there are, its spread is widened, on the
log scale, by sqrt(k / (k - 1)) * t(k-1) / z, the Student-t correction at the chosen alpha); with fewer,
samples are resampled within the drawn blocks as well. A stored baseline cannot be paired with
measurements taken now: its blocks are drawn independently of the candidate's, and no statistics can
cancel a change of machine state between the day the baseline was stored and today; measure both with
`--baseline-model` when that matters.

Re-measuring (in `edgeprune check`): when the point estimate is past the limit (ratio above 1 + r, or
metric above the budget) but its bound is not, the verdict is inconclusive and another round of blocks
is measured and pooled with the first (on onnxruntime targets: another A/B run, cut into as many
blocks), up to 3 rounds (`--max-blocks`); the rule above then decides on all the samples. An unchanged
model rarely gets there (its estimate would have to pass the allowance), so this buys detection power on
a noisy machine at little cost in false failures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

METRICS = ("p50", "p90", "p99", "mean")
LOCATION_METRICS = ("p50", "mean")
_PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0}
DEFAULT_ALPHA = 0.05
DEFAULT_BOOTSTRAP = 2000
MIN_CLUSTERS = 4  # from this many blocks on, whole blocks are resampled
MIN_SAMPLES = 20  # below this per side a decision is reported but flagged unreliable
_TINY = 1e-12  # floor for metrics before logs and ratios (samples of 0 ms are not real measurements)
_CHUNK_ELEMENTS = 4_000_000  # bootstrap replicates are built in chunks of at most this many samples

Blocks = Sequence[Sequence[float]]


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")


def metric_value(samples: Sequence[float] | np.ndarray, metric: str) -> float:
    """The metric of a set of per-iteration latencies (percentiles interpolate linearly, as the profiler's)."""
    _check_metric(metric)
    arr = np.asarray(samples, dtype=np.float64)
    if arr.size == 0:
        raise ValueError("no samples")
    if metric == "mean":
        return float(arr.mean())
    return float(np.percentile(arr, _PERCENTILES[metric]))


def _metric_rows(values: np.ndarray, metric: str) -> np.ndarray:
    if metric == "mean":
        return values.mean(axis=1)
    return np.percentile(values, _PERCENTILES[metric], axis=1)


def _as_blocks(blocks: Blocks) -> list[np.ndarray]:
    out = [np.asarray(b, dtype=np.float64) for b in blocks]
    out = [b for b in out if b.size]
    if not out:
        raise ValueError("no samples")
    return out


def split_blocks(samples: Sequence[float], sizes: Sequence[int] | None) -> list[list[float]]:
    """Cut a flat list of samples into its measurement blocks (one block when sizes are unknown or wrong)."""
    samples = list(samples)
    if not sizes or sum(sizes) != len(samples) or any(s <= 0 for s in sizes):
        return [samples]
    out, start = [], 0
    for size in sizes:
        out.append(samples[start:start + size])
        start += size
    return out


class _BlockSampler:
    """Bootstrap replicates of one model's metric from its measurement blocks.

    With at least MIN_CLUSTERS blocks, whole blocks are resampled (a cluster bootstrap: each block keeps
    its own samples, so within-block noise is counted once, through the block it belongs to) and the
    replicates' spread is widened by sqrt(k / (k - 1)), the usual correction for few clusters. With fewer
    blocks, blocks are resampled and then samples within each drawn block (one block: a plain bootstrap).
    """

    def __init__(self, blocks: list[np.ndarray], metric: str):
        self.blocks = blocks
        self.metric = metric
        self.k = len(blocks)
        self.flat = np.concatenate(blocks)
        self.point = metric_value(self.flat, metric)
        self.sizes = np.array([b.size for b in blocks])
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)[:-1]])

    @property
    def clustered(self) -> bool:
        return self.k >= MIN_CLUSTERS

    def choose(self, rng: np.random.Generator, n_boot: int) -> np.ndarray:
        return rng.integers(0, self.k, size=(n_boot, self.k))

    def widening(self, alpha: float) -> float:
        """Few-cluster correction of the replicates' spread: the bootstrap's variance is short by
        (k - 1) / k, and a mean of k blocks is t- rather than normally distributed."""
        from scipy.stats import norm, t

        k = self.k
        return math.sqrt(k / (k - 1)) * float(t.ppf(1 - alpha, k - 1) / norm.ppf(1 - alpha))

    def replicates(self, rng: np.random.Generator, chosen: np.ndarray, alpha: float) -> np.ndarray:
        """`chosen`: (replicates, k) block indices -> the metric of each replicate."""
        if self.clustered:
            # widened on the log scale: latencies and their ratios stay positive however wide the spread
            reps = np.maximum(self._clusters(chosen), _TINY)
            point = max(self.point, _TINY)
            return point * np.exp(self.widening(alpha) * np.log(reps / point))
        chunk = max(1, _CHUNK_ELEMENTS // self.flat.size)
        return np.concatenate([_metric_rows(self._within(rng, chosen[i:i + chunk]), self.metric)
                               for i in range(0, len(chosen), chunk)])

    def _clusters(self, chosen: np.ndarray) -> np.ndarray:
        """The metric of each replicate's concatenated blocks, from block multiplicities (no copying):
        a replicate's order statistics are read off the pooled sorted samples weighted by how often their
        block was drawn, with np.percentile's linear interpolation."""
        n_rep = chosen.shape[0]
        mult = np.zeros((n_rep, self.k), dtype=np.int64)
        rows = np.arange(n_rep)
        for slot in range(self.k):
            np.add.at(mult, (rows, chosen[:, slot]), 1)
        if self.metric == "mean":
            sums = np.array([b.sum() for b in self.blocks])
            return (mult @ sums) / (mult @ self.sizes)
        block_of = np.repeat(np.arange(self.k), self.sizes)
        order = np.argsort(self.flat, kind="stable")
        xs, ids = self.flat[order], block_of[order]
        q = _PERCENTILES[self.metric] / 100.0
        out = np.empty(n_rep)
        chunk = max(1, _CHUNK_ELEMENTS // self.flat.size)
        for start in range(0, n_rep, chunk):
            cum = np.cumsum(mult[start:start + chunk][:, ids], axis=1)  # replicated elements up to each x
            h = (cum[:, -1] - 1) * q
            lo = np.floor(h)
            i_lo = (cum <= lo[:, None]).sum(axis=1)
            i_hi = np.minimum((cum <= lo[:, None] + 1).sum(axis=1), xs.size - 1)
            out[start:start + chunk] = xs[i_lo] + (h - lo) * (xs[i_hi] - xs[i_lo])
        return out

    def _within(self, rng: np.random.Generator, chosen: np.ndarray) -> np.ndarray:
        # Slot s keeps the size of original block s, so every replicate has the same length.
        parts = []
        for slot in range(self.k):
            pick = chosen[:, slot]
            u = rng.random((chosen.shape[0], int(self.sizes[slot])))
            pos = self.starts[pick][:, None] + (u * self.sizes[pick][:, None]).astype(np.int64)
            parts.append(self.flat[pos])
        return np.concatenate(parts, axis=1)


def bootstrap_metric(blocks: Blocks, metric: str, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0,
                     alpha: float = DEFAULT_ALPHA) -> np.ndarray:
    """Bootstrap replicates of one model's metric (see _BlockSampler for how blocks are resampled), for
    confidence bounds at level `alpha`."""
    _check_metric(metric)
    sampler = _BlockSampler(_as_blocks(blocks), metric)
    rng = np.random.default_rng(seed)
    return sampler.replicates(rng, sampler.choose(rng, n_boot), alpha)


def bootstrap_ratio(base: Blocks, cand: Blocks, metric: str, *, paired: bool, n_boot: int = DEFAULT_BOOTSTRAP,
                    seed: int = 0, alpha: float = DEFAULT_ALPHA) -> np.ndarray:
    """Bootstrap replicates of metric(candidate) / metric(baseline), for confidence bounds at level `alpha`.

    paired=True (both measured now, block i of each taken side by side): each replicate draws the same
    block indices for both, so drift they shared cancels; it needs the same number of blocks on each side.
    """
    _check_metric(metric)
    b, c = _BlockSampler(_as_blocks(base), metric), _BlockSampler(_as_blocks(cand), metric)
    if paired and b.k != c.k:
        raise ValueError(f"paired bootstrap needs as many baseline blocks as candidate blocks ({b.k} != {c.k})")
    rng = np.random.default_rng(seed)
    chosen_b = b.choose(rng, n_boot)
    chosen_c = chosen_b if paired else c.choose(rng, n_boot)
    qb = b.replicates(rng, chosen_b, alpha)
    qc = c.replicates(rng, chosen_c, alpha)
    return qc / np.maximum(qb, _TINY)


def slow_share(samples: Sequence[float], factor: float = 2.0) -> float:
    """Share of iterations slower than `factor` x the 10th percentile: how often the machine got in the way."""
    arr = np.asarray(samples, dtype=np.float64)
    return float(np.mean(arr > factor * np.percentile(arr, 10))) if arr.size else 0.0


def mann_whitney_greater(cand: Sequence[float], base: Sequence[float], scale: float = 1.0) -> float:
    """One-sided Mann-Whitney U p-value for "candidate is stochastically larger than baseline x scale"."""
    from scipy.stats import mannwhitneyu

    c = np.asarray(cand, dtype=np.float64)
    b = np.asarray(base, dtype=np.float64) * scale
    return float(mannwhitneyu(c, b, alternative="greater", method="asymptotic").pvalue)


@dataclass
class RegressionDecision:
    """The candidate against a baseline; `failed` applies the rule in this module's docstring."""

    metric: str
    baseline_ms: float
    candidate_ms: float
    ratio: float
    ratio_ci: tuple[float, float]  # one-sided (1 - alpha) lower bound, and the matching upper bound
    limit_ratio: float
    p_value: float | None  # Mann-Whitney, location metrics only; reported, not deciding
    alpha: float
    paired: bool
    n_baseline: int
    n_candidate: int
    blocks: tuple[int, int]
    failed: bool
    verdict: str  # regression | not-significant | no-change | faster
    notes: list[str] = field(default_factory=list)

    @property
    def change(self) -> float:
        return self.ratio - 1.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ratio_ci"] = list(self.ratio_ci)
        d["blocks"] = list(self.blocks)
        d["change"] = self.change
        return d


@dataclass
class BudgetDecision:
    """The candidate against an absolute latency budget."""

    metric: str
    budget_ms: float
    value_ms: float
    ci_ms: tuple[float, float]
    alpha: float
    n: int
    failed: bool
    verdict: str  # over-budget | marginal | within
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ci_ms"] = list(self.ci_ms)
        return d


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 0.5:
        raise ValueError(f"alpha must be between 0 and 0.5, got {alpha}")


def compare_to_baseline(
    base: Blocks,
    cand: Blocks,
    *,
    metric: str = "p50",
    max_regression: float = 0.05,
    alpha: float = DEFAULT_ALPHA,
    paired: bool = False,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
) -> RegressionDecision:
    """Decide whether `cand` regressed against `base` by more than `max_regression` (a fraction)."""
    _check_metric(metric)
    _check_alpha(alpha)
    if max_regression < 0:
        raise ValueError(f"max_regression must be >= 0, got {max_regression}")
    base_b, cand_b = _as_blocks(base), _as_blocks(cand)
    flat_b, flat_c = np.concatenate(base_b), np.concatenate(cand_b)
    qb, qc = metric_value(flat_b, metric), metric_value(flat_c, metric)
    ratio = qc / qb
    boot = bootstrap_ratio(base_b, cand_b, metric, paired=paired, n_boot=n_boot, seed=seed, alpha=alpha)
    lo, hi = (float(v) for v in np.quantile(boot, [alpha, 1.0 - alpha]))
    limit = 1.0 + max_regression
    p = mann_whitney_greater(flat_c, flat_b, limit) if metric in LOCATION_METRICS else None
    significant = lo > limit
    if significant:
        verdict = "regression"
    elif ratio > limit:
        verdict = "not-significant"
    elif hi < 1.0:
        verdict = "faster"
    else:
        verdict = "no-change"
    notes = []
    if min(flat_b.size, flat_c.size) < MIN_SAMPLES:
        notes.append(f"fewer than {MIN_SAMPLES} samples on one side: the decision is unreliable; "
                     "raise --iterations or --min-time")
    return RegressionDecision(
        metric=metric, baseline_ms=qb, candidate_ms=qc, ratio=ratio, ratio_ci=(lo, hi), limit_ratio=limit,
        p_value=p, alpha=alpha, paired=paired, n_baseline=int(flat_b.size), n_candidate=int(flat_c.size),
        blocks=(len(base_b), len(cand_b)), failed=significant, verdict=verdict, notes=notes,
    )


def compare_to_budget(
    cand: Blocks,
    *,
    budget_ms: float,
    metric: str = "p50",
    alpha: float = DEFAULT_ALPHA,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
) -> BudgetDecision:
    """Decide whether `cand`'s metric is, with confidence, above `budget_ms`."""
    _check_metric(metric)
    _check_alpha(alpha)
    if budget_ms <= 0:
        raise ValueError(f"the latency budget must be > 0 ms, got {budget_ms}")
    blocks = _as_blocks(cand)
    flat = np.concatenate(blocks)
    value = metric_value(flat, metric)
    boot = bootstrap_metric(blocks, metric, n_boot=n_boot, seed=seed, alpha=alpha)
    lo, hi = (float(v) for v in np.quantile(boot, [alpha, 1.0 - alpha]))
    failed = lo > budget_ms
    verdict = "over-budget" if failed else ("marginal" if hi > budget_ms else "within")
    notes = []
    if verdict == "marginal":
        notes.append(f"{metric} {value:.4g} ms is within noise of the {budget_ms:g} ms budget")
    if flat.size < MIN_SAMPLES:
        notes.append(f"fewer than {MIN_SAMPLES} samples: the decision is unreliable")
    return BudgetDecision(metric=metric, budget_ms=budget_ms, value_ms=value, ci_ms=(lo, hi), alpha=alpha,
                          n=int(flat.size), failed=failed, verdict=verdict, notes=notes)


def parse_fraction(value: str | float | int) -> float:
    """`5%` -> 0.05, `0.05` -> 0.05; a bare number above 1 is read as a percentage (`5` -> 0.05)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
        return number / 100.0 if number > 1.0 else number
    text = str(value).strip()
    try:
        if text.endswith("%"):
            return float(text[:-1]) / 100.0
        number = float(text)
    except ValueError:
        raise ValueError(f"{value!r} is not a fraction or percentage (e.g. 5% or 0.05)") from None
    return number / 100.0 if number > 1.0 else number
