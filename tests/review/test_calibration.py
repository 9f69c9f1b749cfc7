"""Calibration statistics on generated answers whose true probabilities are known."""

from __future__ import annotations

import numpy as np
import pytest

from tunesmith.errors import TunesmithError
from tunesmith.review.calibration import (
    FieldScores,
    binomial_upper_bound,
    chosen_confidence,
    expected_calibration_error,
    field_confidences,
    fit_calibration,
    fit_temperature,
    fit_threshold,
    pad_logits,
    reliability,
    risk_coverage,
    softmax,
)


def overconfident(n: int, k: int, seed: int, sharpen: float = 3.0, spread: float = 1.2) -> FieldScores:
    """Answers whose right value is drawn from softmax(z), reported by a model that says
    softmax(sharpen * z): overconfident by a temperature of 1/sharpen."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, spread, size=(n, k))
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    reference = (p.cumsum(1) < rng.uniform(size=(n, 1))).sum(1)
    logits = sharpen * z
    return FieldScores(logits, logits.argmax(1), reference)


@pytest.mark.parametrize("seed", [10, 11, 12])
def test_temperature_scaling_brings_ece_under_five_points(seed):
    """Fitted on 1,000 validation answers, measured on 1,000 test answers (15 bins: at this
    size the sampling noise alone is 0.02-0.04 for a perfectly calibrated model)."""
    val, test = overconfident(1000, 4, seed=seed), overconfident(1000, 4, seed=seed + 10)
    t = fit_temperature(val.logits, val.reference)
    assert 2.7 < t < 3.3  # the generator sharpened by 3
    right = test.chosen == test.reference
    before = expected_calibration_error(chosen_confidence(test.logits, test.chosen), right)
    after = expected_calibration_error(chosen_confidence(test.logits, test.chosen, t), right)
    assert before > 0.15
    assert after <= 0.05
    # one scalar: the likeliest value stays the likeliest
    scaled = softmax(test.logits, t)
    assert (scaled.argmax(1) == test.chosen).all()


def test_ece_of_a_perfectly_calibrated_stream_is_small_and_bins_add_up():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0, 1, 20000)
    correct = rng.uniform(0, 1, 20000) < conf
    assert expected_calibration_error(conf, correct) < 0.02
    bins = reliability(conf, correct)
    assert len(bins) == 15 and sum(b.count for b in bins) == 20000
    assert bins[0].low == 0 and bins[-1].high == 1
    # always 90% sure, right half the time: ECE 0.4
    assert expected_calibration_error(np.full(100, 0.9), np.arange(100) % 2 == 0) == pytest.approx(0.4)


def test_padded_fields_with_fewer_values_get_zero_probability_on_padding():
    logits = pad_logits([[0.0, 0.0], [0.0, 0.0, 0.0]])
    assert np.isinf(logits[0, 2])
    assert chosen_confidence(logits, np.array([0, 0])) == pytest.approx([0.5, 1 / 3])


def test_temperature_refuses_a_reference_outside_the_allowed_values():
    logits = pad_logits([[0.0, 1.0], [0.0, 1.0, 2.0]])
    with pytest.raises(TunesmithError, match="not among"):
        fit_temperature(logits, np.array([2, 0]))


def test_risk_coverage_curve():
    conf = np.array([0.9, 0.8, 0.8, 0.3])
    correct = np.array([True, False, True, False])
    rc = risk_coverage(conf, correct)
    assert rc.threshold.tolist() == [0.9, 0.8, 0.3]  # ties enter together
    assert rc.coverage.tolist() == [0.25, 0.75, 1.0]
    assert rc.risk.tolist() == pytest.approx([0.0, 1 / 3, 0.5])
    assert 0 < rc.area() < 0.5


def test_clopper_pearson_bound_matches_the_exact_binomial_tail():
    from scipy.stats import binom

    ub = binomial_upper_bound(3, 100, 0.05)
    assert binom.cdf(3, 100, ub) == pytest.approx(0.05, abs=1e-6)
    assert binomial_upper_bound(0, 0, 0.05) == 1.0


def test_threshold_keeps_held_out_error_under_the_target():
    """Fit on 2,000 calibrated answers, check on 20,000 new ones from the same model: the
    realised error among auto-approved answers is within the target, coverage is useful."""
    target = 0.05
    cal, held = overconfident(2000, 3, seed=3, spread=2.5), overconfident(20000, 3, seed=4, spread=2.5)
    t = fit_temperature(cal.logits[:1000], cal.reference[:1000])
    conf = chosen_confidence(cal.logits[1000:], cal.chosen[1000:], t)
    fitted = fit_threshold(conf, cal.chosen[1000:] == cal.reference[1000:], target_error=target, delta=0.1)
    assert fitted.threshold is not None and fitted.upper_bound <= target
    assert fitted.error <= fitted.upper_bound
    held_conf = chosen_confidence(held.logits, held.chosen, t)
    approved = held_conf >= fitted.threshold
    realised = float((held.chosen != held.reference)[approved].mean())
    assert realised <= target
    assert approved.mean() > 0.15  # not a trivial "approve nothing"
    assert abs(approved.mean() - fitted.coverage) < 0.1  # the reported coverage carries over


def test_threshold_guarantee_holds_across_many_calibration_draws():
    """The 1 - delta promise, checked: over 40 calibration draws, the held-out selective error
    exceeds the target at most a delta share of times (here: never more than 4 of 40)."""
    target, delta = 0.1, 0.1
    held = overconfident(20000, 3, seed=99, sharpen=1.0, spread=2.5)
    held_conf = chosen_confidence(held.logits, held.chosen)
    wrong = held.chosen != held.reference
    misses = 0
    for seed in range(40):
        cal = overconfident(500, 3, seed=1000 + seed, sharpen=1.0, spread=2.5)
        fitted = fit_threshold(chosen_confidence(cal.logits, cal.chosen), cal.chosen == cal.reference,
                               target_error=target, delta=delta)
        if fitted.threshold is not None:
            misses += wrong[held_conf >= fitted.threshold].mean() > target
    assert misses <= 4


def test_no_threshold_when_the_model_is_always_wrong():
    fitted = fit_threshold(np.full(50, 0.99), np.zeros(50, bool), target_error=0.05)
    assert fitted.threshold is None and fitted.coverage == 0.0
    with pytest.raises(TunesmithError, match="target_error"):
        fit_threshold(np.full(5, 0.5), np.ones(5, bool), target_error=0.0)


def test_fit_calibration_over_fields():
    a, b = overconfident(1200, 3, seed=5, spread=3.0), overconfident(1200, 5, seed=6, sharpen=2.0, spread=3.0)
    cal = fit_calibration({"category": a, "urgency": b}, target_error=0.2)
    assert cal.temperatures["category"] == pytest.approx(3.0, rel=0.25)
    assert cal.temperatures["urgency"] == pytest.approx(2.0, rel=0.25)
    assert cal.ece_after < 0.05 < cal.ece_before
    assert cal.threshold.threshold is not None
    again = type(cal).from_dict(cal.to_dict())
    assert again == cal
    with pytest.raises(TunesmithError, match="same answers"):
        fit_calibration({"a": a, "b": overconfident(10, 3, seed=7)}, target_error=0.1)


def test_field_confidences_normalise_over_the_allowed_values_and_take_the_lowest():
    lls = {"category": {"billing": -0.1, "bug": -2.5, "security": -4.0},
           "urgency": {"low": -1.0, "high": -1.2}}
    per, overall = field_confidences(lls, {"category": "billing", "urgency": "low"})
    z = np.exp([-0.1, -2.5, -4.0])
    assert per["category"] == pytest.approx(z[0] / z.sum())
    assert per["urgency"] == pytest.approx(1 / (1 + np.exp(-0.2)))
    assert overall == per["urgency"]
    hot, _ = field_confidences(lls, {"category": "billing", "urgency": "low"}, {"category": 3.0})
    assert hot["category"] < per["category"] and hot["urgency"] == per["urgency"]
    missing, overall = field_confidences(lls, {"category": "refunds", "urgency": "low"})
    assert missing["category"] == 0.0 and overall == 0.0
