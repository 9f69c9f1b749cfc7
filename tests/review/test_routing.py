"""Routing tiers: mandatory rules always, low confidence below the threshold, a deterministic
hash-sampled share of the rest."""

from __future__ import annotations

import uuid

import pytest

from tunesmith.config import ReviewConfig
from tunesmith.review.routing import Decision, RoutingPolicy, decide, sample_draw


def policy(**kw) -> RoutingPolicy:
    cfg = ReviewConfig(rules=[{"category": "security"}, {"urgency": ["critical"], "category": ["billing", "bug"]}],
                       sample_rate=kw.pop("sample_rate", 0.1))
    return RoutingPolicy.from_config(cfg, fitted_threshold=kw.pop("threshold", 0.8))


def ids(n: int, seed: int = 0) -> list[str]:
    return [f"chatcmpl-{uuid.UUID(int=seed * 10**9 + i).hex}" for i in range(n)]


def test_mandatory_rules_route_every_matching_answer():
    p = policy(sample_rate=0.0)
    decisions = [decide(rid, {"category": "security", "urgency": u}, 0.999, p)
                 for rid, u in zip(ids(1000), ["low", "high", "critical"] * 400, strict=False)]
    assert all(d.tier == "mandatory" for d in decisions)
    assert decisions[0].reason == "rule category=security"
    # every key of a rule must match; any rule is enough
    assert decide("r1", {"category": "billing", "urgency": "critical"}, 0.99, p).tier == "mandatory"
    assert decide("r1", {"category": "billing", "urgency": "low"}, 0.99, p).tier == "auto"
    assert decide("r1", {"category": "account", "urgency": "critical"}, 0.99, p).tier == "auto"


def test_mandatory_beats_low_confidence_beats_sampled():
    p = policy(sample_rate=1.0)
    assert decide("r", {"category": "security"}, 0.1, p).tier == "mandatory"
    low = decide("r", {"category": "billing"}, 0.5, p)
    assert low.tier == "low_confidence" and "0.500 < threshold 0.800" in low.reason
    assert decide("r", None, None, p).tier == "low_confidence"  # did not parse
    assert decide("r", {"category": "billing"}, None, p).tier == "low_confidence"
    assert decide("r", {"category": "billing"}, 0.9, p).tier == "sampled"
    # no fitted threshold and none configured: nothing is low-confidence
    assert decide("r", {"category": "billing"}, 0.01, policy(threshold=None, sample_rate=0)).tier == "auto"


def test_configured_threshold_overrides_the_fitted_one():
    cfg = ReviewConfig(threshold=0.5, sample_rate=0)
    assert RoutingPolicy.from_config(cfg, fitted_threshold=0.9).threshold == 0.5
    assert decide("r", {"a": "x"}, 0.6, RoutingPolicy.from_config(cfg, 0.9)).tier == "auto"


@pytest.mark.parametrize("rate", [0.02, 0.05, 0.1, 0.3])
def test_sampled_share_within_one_point_over_ten_thousand_requests(rate):
    p = policy(sample_rate=rate, threshold=None)
    tiers = [decide(rid, {"category": "billing"}, 0.99, p).tier for rid in ids(10_000, seed=int(rate * 100))]
    share = tiers.count("sampled") / len(tiers)
    assert abs(share - rate) <= 0.01
    assert set(tiers) == {"sampled", "auto"}


def test_replays_decide_identically():
    p = policy(sample_rate=0.2)
    answers = [(rid, {"category": c}, conf) for rid, c, conf in
               zip(ids(2000, seed=7), ["billing", "security", "bug", "account"] * 500,
                   [0.95, 0.99, 0.5, 0.85] * 500, strict=True)]
    first = [decide(*a, p) for a in answers]
    again = [decide(*a, p) for a in reversed(answers)][::-1]
    assert first == again
    assert {d.tier for d in first} == {"mandatory", "low_confidence", "sampled", "auto"}
    # the draw depends on the request id only, and not on the canary's hash of it
    assert sample_draw("abc") == sample_draw("abc") != sample_draw("abd")


def test_decision_round_trips_and_rejects_unknown_tiers():
    d = Decision("sampled", "qc", 0.93, 0.8)
    assert Decision.from_dict(d.to_dict()) == d
    assert d.needs_review and not Decision("auto", "").needs_review
    with pytest.raises(ValueError, match="unknown review tier 'maybe'"):
        Decision.from_dict({"tier": "maybe"})


def test_a_calibration_that_certified_no_threshold_auto_approves_nothing():
    from tunesmith.config import ReviewConfig
    from tunesmith.review.routing import RoutingPolicy, decide

    policy = RoutingPolicy.from_config(ReviewConfig(sample_rate=0.0), None, uncertified=True)
    tiers = {decide(f"req-{i}", {"category": "billing"}, 0.999, policy).tier for i in range(50)}
    assert tiers == {"low_confidence"}
    # a certified threshold, or review.threshold, routes as usual
    assert decide("r", {"category": "billing"}, 0.99, RoutingPolicy.from_config(
        ReviewConfig(sample_rate=0.0), 0.9, uncertified=True)).tier == "auto"
    assert decide("r", {"category": "billing"}, 0.99, RoutingPolicy.from_config(
        ReviewConfig(sample_rate=0.0, threshold=0.5), None, uncertified=True)).tier == "auto"
