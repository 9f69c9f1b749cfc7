"""The whole traffic's error rate per label field, from reviewed answers tier by tier, and the
test that it rose between two windows: statistics on generated routing and review outcomes."""

from __future__ import annotations

import numpy as np
import pytest

from tunesmith.monitor.quality import rise_test, traffic_rate

# A window like the simulation's: 40% auto-approved (half of them sampled for review), 50%
# low-confidence and 10% mandatory, both reviewed in full; the risky tiers err more often.
MIX = {"auto": 0.4, "low_confidence": 0.5, "mandatory": 0.1}
ERRORS = {"auto": 0.15, "low_confidence": 0.35, "mandatory": 0.25}
SAMPLE_RATE = 0.5


def window(rng: np.random.Generator, n: int = 500, errors: dict[str, float] | None = None) -> list:
    """One window's ``(tier, wrong or None)`` rows (None: not reviewed)."""
    errors = errors or ERRORS
    tiers = rng.choice(list(MIX), size=n, p=list(MIX.values()))
    rows = []
    for tier in tiers:
        wrong = bool(rng.random() < errors[tier])
        if tier == "auto":
            sampled = rng.random() < SAMPLE_RATE
            rows.append(("sampled" if sampled else "auto", wrong if sampled else None))
        else:
            rows.append((str(tier), wrong))
    return rows


def test_the_estimate_is_unbiased_where_the_sampled_tier_alone_is_not():
    rng = np.random.default_rng(0)
    truth = sum(MIX[t] * ERRORS[t] for t in MIX)  # 0.26
    estimates, covered, sampled_only = [], 0, []
    for _ in range(400):
        rows = window(rng)
        est = traffic_rate(rows)
        estimates.append(est.rate)
        covered += abs(est.rate - truth) <= 1.96 * est.se
        sampled = [w for t, w in rows if t == "sampled"]
        sampled_only.append(np.mean(sampled))
        assert est.answers == 500 and est.strata["auto"].answers == sum(t in ("auto", "sampled") for t, _ in rows)
    assert abs(np.mean(estimates) - truth) < 0.004
    assert 0.92 <= covered / 400 <= 0.98  # the standard error is honest: ~95% of intervals cover
    assert truth - np.mean(sampled_only) > 0.1  # the sampled tier sees only the auto-approved answers


def test_two_windows_of_one_process_rarely_alarm_and_a_rise_is_found():
    rng = np.random.default_rng(1)
    null_p = [rise_test(traffic_rate(window(rng)), traffic_rate(window(rng)))[2] for _ in range(1500)]
    # one-sided p-values under no change: uniform, so the stated alpha is the false-alarm rate
    assert 0.035 <= np.mean(np.array(null_p) < 0.05) <= 0.065
    assert np.mean(np.array(null_p) < 0.01 / 3) <= 0.008  # the monitor's per-field level, 3 fields
    worse = {tier: rate + 0.15 for tier, rate in ERRORS.items()}  # whole traffic 0.26 -> 0.41
    hits = 0
    for _ in range(200):
        rise, _, p = rise_test(traffic_rate(window(rng, errors=worse)), traffic_rate(window(rng)))
        hits += p < 0.01 / 3 and rise >= 0.05
    assert hits / 200 >= 0.88  # measured 0.94 over 300 pairs (docs/monitoring.md: the power table)


def test_a_tier_with_no_review_gives_no_rate_and_says_which():
    rows = [("auto", None)] * 50 + [("low_confidence", True)] * 30 + [(None, None)] * 5
    est = traffic_rate(rows)
    assert est.rate is None and "auto, unrouted" in est.note and est.reviewed == 30
    assert rise_test(est, traffic_rate([("low_confidence", False)] * 10)) == (None, None, None)
    small = traffic_rate([("sampled", False)] * 3 + [("auto", None)] * 3)
    assert small.rate == 0.0 and small.se > 0.1  # three right answers are not certainty


@pytest.mark.parametrize("rows, expected", [
    ([("mandatory", True), ("mandatory", False), ("sampled", False), ("auto", None)], 0.5 * 0.5 + 0.5 * 0.0),
    ([("low_confidence", True)] * 3 + [("sampled", True), ("auto", None), ("auto", None)], 0.5 * 1 + 0.5 * 1),
])
def test_each_tier_stands_for_its_share_of_the_window(rows, expected):
    assert traffic_rate(rows).rate == pytest.approx(expected)
