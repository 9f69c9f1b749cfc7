import math

import numpy as np
import pytest

from tunesmith.evaluate import stats
from tunesmith.evaluate.stats import (
    CI,
    bootstrap_ci,
    mcnemar_exact,
    paired_difference_ci,
    unpaired_difference_ci,
    wilson_ci,
)


def _bernoulli(n: int, successes: int) -> np.ndarray:
    return np.array([1.0] * successes + [0.0] * (n - successes))


# --------------------------------------------------------------------------- known intervals
def test_bernoulli_ci_matches_normal_and_wilson_intervals():
    """For 120/400 successes the bootstrap, Wald and Wilson intervals nearly coincide."""
    x = _bernoulli(400, 120)
    ci = bootstrap_ci(x, n_resamples=8000, seed=1)
    half = 1.959964 * math.sqrt(0.3 * 0.7 / 400)  # Wald half-width: 0.0449
    assert ci.point == pytest.approx(0.3)
    assert ci.low == pytest.approx(0.3 - half, abs=0.006)
    assert ci.high == pytest.approx(0.3 + half, abs=0.006)
    wilson = wilson_ci(120, 400)
    assert ci.low == pytest.approx(wilson.low, abs=0.006)
    assert ci.high == pytest.approx(wilson.high, abs=0.006)


def test_wilson_known_values():
    # 0/10: upper bound z²/(n+z²) = 3.8415/13.8415 (closed form when p = 0).
    ci = wilson_ci(0, 10)
    assert (ci.point, ci.low) == (0.0, 0.0)
    assert ci.high == pytest.approx(3.841459 / 13.841459, abs=1e-6)
    ci = wilson_ci(10, 10)
    assert ci.high == 1.0 and ci.low == pytest.approx(1 - 3.841459 / 13.841459, abs=1e-6)
    assert math.isnan(wilson_ci(0, 0).point)
    with pytest.raises(ValueError, match="successes"):
        wilson_ci(11, 10)


@pytest.mark.parametrize("draw, true_mean", [
    (lambda rng: (rng.random(100) < 0.3).astype(float), 0.3),
    (lambda rng: rng.exponential(1.0, 100), 1.0),  # skewed, continuous
])
def test_coverage_close_to_nominal(draw, true_mean):
    """Over 400 seeded samples, ~95% of the intervals contain the true mean.

    Binomial SE of the observed coverage at 400 trials is 1.1 points; the band allows the
    percentile bootstrap's known slight under-coverage at n=100 plus ~3 SE.
    """
    hits = 0
    for s in range(400):
        x = draw(np.random.default_rng(10_000 + s))
        ci = bootstrap_ci(x, n_resamples=1000, seed=s)
        hits += ci.low <= true_mean <= ci.high
    assert 0.915 <= hits / 400 <= 0.985


def test_zero_width_for_constant_one_or_no_values():
    for method in ("percentile", "bca"):
        constant = bootstrap_ci([0.7] * 25, method=method)
        assert constant.width == 0.0 and constant.point == pytest.approx(0.7)
        assert bootstrap_ci([3.0], method=method) == CI(3.0, 3.0, 3.0)
        empty = bootstrap_ci([], method=method)
        assert all(math.isnan(v) for v in empty)
    assert paired_difference_ci([1, 0, 1], [1, 0, 1]) == CI(0.0, 0.0, 0.0)
    # All-correct vs all-wrong: the difference is exactly 1 and "excludes 0".
    assert paired_difference_ci([1] * 50, [0] * 50).excludes(0)


def test_excludes():
    assert CI(0.2, 0.1, 0.3).excludes(0)
    assert not CI(0.1, -0.01, 0.3).excludes(0)
    assert not CI(0.0, 0.0, 0.2).excludes(0)  # touching 0 is not excluding it
    assert not CI(math.nan, math.nan, math.nan).excludes(0)


# --------------------------------------------------------------------------- paired differences
def test_paired_resamples_examples_jointly():
    """The paired CI of the mean difference is exactly the bootstrap CI of a - b, same seed."""
    rng = np.random.default_rng(5)
    a, b = rng.random(150), rng.random(150)
    paired = paired_difference_ci(a, b, seed=3)
    direct = bootstrap_ci(a - b, seed=3)
    assert paired.point == pytest.approx(direct.point)
    assert paired.low == pytest.approx(direct.low)
    assert paired.high == pytest.approx(direct.high)


def test_paired_ci_narrower_than_unpaired_when_correlated():
    """Two rungs that agree on most examples: pairing removes the shared difficulty."""
    rng = np.random.default_rng(7)
    a = (rng.random(300) < 0.6).astype(float)
    b = np.where(rng.random(300) < 0.1, 1.0 - a, a)  # b copies a, flipping 10%
    paired = paired_difference_ci(a, b, seed=0)
    unpaired = unpaired_difference_ci(a, b, seed=0)
    assert paired.point == pytest.approx(unpaired.point)
    assert paired.width < 0.5 * unpaired.width
    # Uncorrelated outcomes: pairing neither helps nor hurts much.
    c = (rng.random(300) < 0.6).astype(float)
    ratio = paired_difference_ci(a, c).width / unpaired_difference_ci(a, c).width
    assert 0.8 < ratio < 1.25


def test_paired_detects_a_real_lift_and_not_a_null_one():
    rng = np.random.default_rng(11)
    base = (rng.random(200) < 0.4).astype(float)
    better = np.maximum(base, (rng.random(200) < 0.3).astype(float))  # fixes ~18% of misses
    assert paired_difference_ci(better, base).excludes(0)
    # Same skill, different errors: 15 wins and 15 losses against base.
    ones, zeros = np.flatnonzero(base == 1)[:15], np.flatnonzero(base == 0)[:15]
    swapped = base.copy()
    swapped[ones], swapped[zeros] = 0.0, 1.0
    null = paired_difference_ci(swapped, base)
    assert null.point == 0.0 and not null.excludes(0)


def test_paired_rejects_misaligned_inputs():
    with pytest.raises(ValueError, match="aligned by example"):
        paired_difference_ci([1, 0], [1, 0, 1])


# --------------------------------------------------------------------------- determinism, inputs
def test_deterministic_by_seed_and_independent_of_block_size(monkeypatch):
    x = np.random.default_rng(3).random(500)
    first = bootstrap_ci(x, seed=4)
    assert bootstrap_ci(x, seed=4) == first
    assert bootstrap_ci(x, seed=5) != first
    monkeypatch.setattr(stats, "_MAX_CELLS", 1000)  # forces 2-row blocks
    assert bootstrap_ci(x, seed=4) == first


def test_bad_inputs_have_clear_errors():
    with pytest.raises(ValueError, match=r"values\[1\] is nan"):
        bootstrap_ci([1.0, float("nan")])
    with pytest.raises(ValueError, match="1-D"):
        bootstrap_ci([[1.0, 2.0]])
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([1.0, 2.0], confidence=95)
    with pytest.raises(ValueError, match="method"):
        bootstrap_ci([1.0, 2.0], method="basic")  # type: ignore[arg-type]


def test_other_statistics_and_confidence_levels():
    x = np.arange(101, dtype=float)
    median = bootstrap_ci(x, stat=np.median)
    assert median.point == 50.0 and median.low < 50.0 < median.high
    assert bootstrap_ci(x, confidence=0.8).width < bootstrap_ci(x, confidence=0.99).width


# --------------------------------------------------------------------------- cross-checks
def test_bca_and_percentile_agree_with_scipy():
    from scipy import stats as scipy_stats  # a dev dependency: never skips
    x = np.random.default_rng(2).exponential(1.0, 60)  # skewed: BCa shifts the interval
    for ours_method, theirs_method in (("percentile", "percentile"), ("bca", "BCa")):
        ours = bootstrap_ci(x, n_resamples=4000, method=ours_method, seed=0)
        theirs = scipy_stats.bootstrap(
            (x,), np.mean, n_resamples=4000, method=theirs_method, random_state=1, vectorized=True
        ).confidence_interval
        tol = 0.08 * ours.width  # Monte-Carlo error of the endpoints at 4000 resamples
        assert ours.low == pytest.approx(theirs.low, abs=tol)
        assert ours.high == pytest.approx(theirs.high, abs=tol)
    percentile = bootstrap_ci(x, n_resamples=4000, seed=0)
    bca = bootstrap_ci(x, n_resamples=4000, seed=0, method="bca")
    assert bca.high > percentile.high  # right skew moves BCa's interval up


def test_mcnemar_known_values():
    # 5 discordant pairs all favouring a: p = 2 * (1/2)^5.
    a = [1] * 5 + [1, 0] * 10
    b = [0] * 5 + [1, 0] * 10
    result = mcnemar_exact(a, b)
    assert (result.a_only, result.b_only) == (5, 0)
    assert result.p_value == pytest.approx(2 / 32)
    assert mcnemar_exact([1, 0, 1, 0], [0, 1, 1, 0]).p_value == 1.0
    assert mcnemar_exact([1, 1], [1, 1]).p_value == 1.0  # no discordant pairs
    with pytest.raises(ValueError, match="0/1"):
        mcnemar_exact([0.5], [1])


def test_mcnemar_matches_scipy_binomial_test():
    from scipy import stats as scipy_stats  # a dev dependency: never skips
    rng = np.random.default_rng(0)
    for n_pairs in (10, 60, 3000):
        a = rng.random(n_pairs) < 0.55
        b = rng.random(n_pairs) < 0.45
        ours = mcnemar_exact(a, b)
        theirs = scipy_stats.binomtest(ours.a_only, ours.a_only + ours.b_only, 0.5).pvalue
        assert ours.p_value == pytest.approx(theirs, rel=1e-9)
