"""Who looks at an answer: the routing decision for one answer, in four tiers.

In order of precedence:

1. ``mandatory``: the answer matches a ``review.rules`` rule (``{category: security}``): a
   person always reviews it, however confident the model is.
2. ``low_confidence``: its confidence is below the threshold (the fitted one, or
   ``review.threshold``), or it has no confidence because it did not parse.
3. ``sampled``: a ``review.sample_rate`` share of the rest, for quality control. The draw is
   a hash of the request id, so the same request always gets the same decision (a replay, a
   retry, a second process) and the sampled tier is an unbiased sample of auto-approved
   traffic: its reviewed error rate estimates the error rate of what nobody looks at.
4. ``auto``: approved without review.

The sampling hash is salted with ``review-sample:`` so it is independent of the canary's
routing hash over the same request ids (serve/rollout), which would otherwise send the same
requests to the canary and to review.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from tunesmith.config import ReviewConfig

Tier = Literal["mandatory", "low_confidence", "sampled", "auto"]
TIERS: tuple[Tier, ...] = ("mandatory", "low_confidence", "sampled", "auto")
SAMPLE_SALT = "review-sample:"


@dataclass(frozen=True, slots=True)
class Decision:
    """The routing decision for one answer: its tier and why (shown to reviewers, logged)."""

    tier: Tier
    reason: str
    confidence: float | None = None
    threshold: float | None = None

    @property
    def needs_review(self) -> bool:
        return self.tier != "auto"

    def to_dict(self) -> dict[str, Any]:
        return {"tier": self.tier, "reason": self.reason, "confidence": self.confidence,
                "threshold": self.threshold}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Decision:
        tier = data.get("tier")
        if tier not in TIERS:
            raise ValueError(f"unknown review tier {tier!r}; one of {', '.join(TIERS)}")
        return cls(tier, str(data.get("reason") or ""), data.get("confidence"), data.get("threshold"))


@dataclass(frozen=True)
class RoutingPolicy:
    """The routing settings in force: the config's rules and sample rate, and the threshold
    (``review.threshold`` if set, else the one fitted for the serving version; None = none
    fitted, so no answer is routed for low confidence). ``uncertified``: a calibration was fitted
    but no threshold could be certified for ``review.target_error``, so no answer may be
    auto-approved: every one goes to review as ``low_confidence`` (the safe side)."""

    rules: tuple[Mapping[str, tuple[str, ...]], ...] = ()
    threshold: float | None = None
    sample_rate: float = 0.0
    uncertified: bool = False

    @classmethod
    def from_config(cls, cfg: ReviewConfig, fitted_threshold: float | None = None, *,
                    uncertified: bool = False) -> RoutingPolicy:
        rules = tuple({k: (v,) if isinstance(v, str) else tuple(v) for k, v in rule.items()} for rule in cfg.rules)
        if cfg.threshold is not None:
            return cls(rules, cfg.threshold, cfg.sample_rate)
        return cls(rules, fitted_threshold, cfg.sample_rate, uncertified=uncertified and fitted_threshold is None)


def sample_draw(request_id: str) -> float:
    """A uniform number in [0, 1) determined by the request id alone."""
    digest = hashlib.sha256((SAMPLE_SALT + request_id).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def matching_rule(fields: Mapping[str, str | None], rules: tuple[Mapping[str, tuple[str, ...]], ...]) -> str | None:
    """The first rule every key of which the answer's fields match, as text (``category=security``)."""
    for rule in rules:
        if all(fields.get(k) in values for k, values in rule.items()):
            return ", ".join(f"{k}={fields[k]}" for k in rule)
    return None


def decide(request_id: str, fields: Mapping[str, str | None] | None, confidence: float | None,
           policy: RoutingPolicy) -> Decision:
    """The tier of one answer.

    Args:
        request_id: the request's id (the sampling draw hashes it).
        fields: the answer's label values (``{"category": "billing", ...}``; a label answer is
            ``{"label": ...}``); None when the answer did not parse.
        confidence: the answer's calibrated confidence (its lowest field's), None if unknown.
        policy: rules, threshold and sample rate.
    """
    threshold = policy.threshold
    if fields is not None and (rule := matching_rule(fields, policy.rules)):
        return Decision("mandatory", f"rule {rule}", confidence, threshold)
    if fields is None:
        return Decision("low_confidence", "the answer did not parse into its fields", confidence, threshold)
    if policy.uncertified:
        return Decision("low_confidence", "no confidence threshold is certified for review.target_error "
                        "(see the version's calibration): nothing is auto-approved", confidence, threshold)
    if threshold is not None and (confidence is None or confidence < threshold):
        why = "no confidence" if confidence is None else f"confidence {confidence:.3f} < threshold {threshold:.3f}"
        return Decision("low_confidence", why, confidence, threshold)
    if sample_draw(request_id) < policy.sample_rate:
        return Decision("sampled", f"quality-control sample ({policy.sample_rate:.1%} of auto-approved)",
                        confidence, threshold)
    return Decision("auto", "auto-approved", confidence, threshold)
