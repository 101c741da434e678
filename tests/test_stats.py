"""The statistical decision of `edgeprune check`, on synthetic latency samples (seeded)."""

from __future__ import annotations

import numpy as np
import pytest

from edgeprune import stats


def noisy_blocks(rng: np.random.Generator, n: int, *, scale: float = 1.0, blocks: int = 6, drift: float = 0.0,
                 outliers: float = 0.1, spikes: float = 0.02, base_ms: float = 0.5) -> list[np.ndarray]:
    """Latencies as a busy machine gives them: a tight body, a heavy Pareto tail, rare 3-10x spikes, and
    an optional per-block drift of the machine's speed."""
    out = []
    for _ in range(blocks):
        m = n // blocks
        body = base_ms * rng.lognormal(0.0, 0.04, m)
        tail = rng.random(m) < outliers
        body[tail] *= 1.0 + rng.pareto(1.5, tail.sum())
        spike = rng.random(m) < spikes
        body[spike] *= rng.uniform(3.0, 10.0, spike.sum())
        out.append(scale * (1.0 + drift * rng.standard_normal()) * body)
    return out


@pytest.mark.parametrize("paired", [True, False])
def test_same_distribution_passes(paired):
    rng = np.random.default_rng(1)
    base, cand = noisy_blocks(rng, 1200), noisy_blocks(rng, 1200)
    d = stats.compare_to_baseline(base, cand, max_regression=0.05, paired=paired)
    assert not d.failed
    assert d.verdict in ("no-change", "faster", "not-significant")
    assert d.ratio_ci[0] < 1.05 < d.ratio_ci[1] or d.ratio_ci[1] < 1.05
    assert 0.95 < d.ratio < 1.05


@pytest.mark.parametrize("paired", [True, False])
def test_ten_percent_slower_fails(paired):
    rng = np.random.default_rng(2)
    base, cand = noisy_blocks(rng, 1200), noisy_blocks(rng, 1200, scale=1.10)
    d = stats.compare_to_baseline(base, cand, max_regression=0.05, paired=paired)
    assert d.failed and d.verdict == "regression"
    assert d.ratio_ci[0] > 1.05 and d.p_value < d.alpha
    assert d.ratio == pytest.approx(1.10, abs=0.02)


def test_heavy_tailed_noise_gives_no_false_failures():
    fails = []
    for seed in range(30):
        rng = np.random.default_rng(100 + seed)
        base = noisy_blocks(rng, 600, drift=0.02, outliers=0.2, spikes=0.05)
        cand = noisy_blocks(rng, 600, drift=0.02, outliers=0.2, spikes=0.05)
        fails.append(stats.compare_to_baseline(base, cand, paired=True, seed=seed, n_boot=1000).failed)
    assert sum(fails) == 0


def test_false_failure_rate_is_near_alpha_with_zero_tolerance():
    # With no allowed regression the rule is a plain test at level alpha: identical distributions must
    # fail about alpha of the time, not more (a CI that ignored the noise would fail far more often).
    alpha, runs = 0.05, 80
    fails = 0
    for seed in range(runs):
        rng = np.random.default_rng(1000 + seed)
        base, cand = noisy_blocks(rng, 300), noisy_blocks(rng, 300)
        fails += stats.compare_to_baseline(base, cand, max_regression=0.0, alpha=alpha, paired=True, seed=seed,
                                           n_boot=500).failed
    assert fails <= 3 * alpha * runs  # expected <= 4; binomial upper tail makes 12 practically impossible


def test_pairing_cancels_shared_drift():
    # Both models see the same block-to-block swings of machine speed (what interleaving buys): pairing
    # keeps the interval narrow; treating the blocks as unrelated would widen it.
    rng = np.random.default_rng(3)
    drift = np.array([1.0, 1.6, 0.9, 1.4, 1.0, 1.5])
    base = [f * b for f, b in zip(drift, noisy_blocks(rng, 1200), strict=True)]
    cand = [f * b for f, b in zip(drift, noisy_blocks(rng, 1200, scale=1.10), strict=True)]
    paired = stats.compare_to_baseline(base, cand, paired=True)
    unpaired = stats.compare_to_baseline(base, cand, paired=False)
    width = lambda d: d.ratio_ci[1] - d.ratio_ci[0]  # noqa: E731
    assert width(paired) < 0.5 * width(unpaired)
    assert paired.failed


def test_tail_metric_uses_the_interval_alone():
    rng = np.random.default_rng(4)
    base = noisy_blocks(rng, 3000, outliers=0.0, spikes=0.0)
    cand = [b.copy() for b in noisy_blocks(rng, 3000, outliers=0.0, spikes=0.0)]
    for b in cand:  # same body, the slowest 5% twice as slow: p99 regresses, p50 does not
        cut = np.quantile(b, 0.95)
        b[b > cut] *= 2.0
    p99 = stats.compare_to_baseline(base, cand, metric="p99")
    p50 = stats.compare_to_baseline(base, cand, metric="p50")
    assert p99.failed and p99.p_value is None
    assert not p50.failed


def test_decision_is_reproducible():
    rng = np.random.default_rng(5)
    base, cand = noisy_blocks(rng, 600), noisy_blocks(rng, 600, scale=1.06)
    a = stats.compare_to_baseline(base, cand, seed=7)
    b = stats.compare_to_baseline(base, cand, seed=7)
    assert a.to_dict() == b.to_dict()


def test_budget_decision():
    rng = np.random.default_rng(6)
    blocks = noisy_blocks(rng, 1200, base_ms=1.0)
    assert stats.compare_to_budget(blocks, budget_ms=2.0).verdict == "within"
    over = stats.compare_to_budget(blocks, budget_ms=0.8)
    assert over.failed and over.verdict == "over-budget" and over.ci_ms[0] > 0.8
    p50 = stats.metric_value(np.concatenate(blocks), "p50")
    edge = stats.compare_to_budget(blocks, budget_ms=p50 * 0.999)  # within noise: not a failure
    assert not edge.failed and edge.verdict == "marginal"


def test_few_samples_are_flagged():
    d = stats.compare_to_baseline([[1.0, 1.1, 0.9]], [[1.0, 1.2, 1.1]])
    assert any("unreliable" in n for n in d.notes)


def test_metric_value_matches_profiler_percentiles():
    x = np.random.default_rng(8).lognormal(size=501)
    assert stats.metric_value(x, "p90") == pytest.approx(np.percentile(x, 90))
    assert stats.metric_value(x, "mean") == pytest.approx(x.mean())
    with pytest.raises(ValueError, match="unknown metric"):
        stats.metric_value(x, "p75")


def test_paired_needs_matching_blocks():
    with pytest.raises(ValueError, match="as many baseline blocks"):
        stats.bootstrap_ratio([[1.0, 2.0]], [[1.0], [2.0]], "p50", paired=True)


def test_split_blocks_and_fractions():
    assert stats.split_blocks([1, 2, 3, 4, 5], [2, 3]) == [[1, 2], [3, 4, 5]]
    assert stats.split_blocks([1, 2, 3], [2, 2]) == [[1, 2, 3]]  # sizes that do not add up: one block
    assert stats.split_blocks([1, 2, 3], None) == [[1, 2, 3]]
    assert stats.parse_fraction("5%") == pytest.approx(0.05)
    assert stats.parse_fraction("0.05") == pytest.approx(0.05)
    assert stats.parse_fraction(5) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="percentage"):
        stats.parse_fraction("five")


@pytest.mark.parametrize("metric", ["p50", "p90", "p99", "mean"])
def test_cluster_replicates_equal_concatenated_blocks(metric):
    # The fast path reads each replicate's metric off block multiplicities; it must equal the metric of
    # the drawn blocks actually concatenated.
    rng = np.random.default_rng(9)
    blocks = [rng.lognormal(size=int(rng.integers(5, 60))) for _ in range(6)]
    sampler = stats._BlockSampler(blocks, metric)
    chosen = sampler.choose(rng, 300)
    brute = [stats.metric_value(np.concatenate([blocks[j] for j in row]), metric) for row in chosen]
    np.testing.assert_allclose(sampler._clusters(chosen), brute, rtol=1e-12)
