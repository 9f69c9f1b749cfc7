"""Sampling the facts of support tickets: which issues a ticket raises and the details that
decide its label (days since delivery, shipping method, firmware version, ...).

The distributions are deliberately concentrated near the policy thresholds (day 30 of the
refund window, the edge of each delivery window, the first and last affected firmware) so
that a model which only learned "refund -> issue_refund" gets a good share of tickets wrong.
"""

from __future__ import annotations

import random

from tunesmith.sample.triage_policy import (
    DELIVERY_DAYS,
    HARDWARE,
    HARDWARE_REFUND_DAYS,
    STORE_CREDIT_DAYS,
    SUBSCRIPTION_REFUND_DAYS,
    SUBSCRIPTIONS,
    SYMPTOMS,
    Issue,
    TicketFacts,
    label_issue,
)

# Relative frequency of each issue kind (a ticket's issues are drawn from these).
KIND_WEIGHTS: dict[str, float] = {
    "device_fault": 26, "hardware_return": 11, "subscription_refund": 5, "late_delivery": 10,
    "damaged_delivery": 4, "address_change": 3, "duplicate_charge": 6, "wrong_amount": 3,
    "invoice_request": 4, "plan_change": 3, "unrecognised_charge": 3, "account_compromised": 2,
    "phishing_report": 2, "login_problem": 6, "lost_2fa": 3, "email_change": 2,
    "product_question": 4, "feature_request": 1.5, "feedback": 1.5,
}
ISSUE_COUNT_WEIGHTS = {1: 60, 2: 32, 3: 8}
REPEAT_CONTACT_SHARE = 0.12

# Versions customers quote for each known issue: inside and outside its affected range.
VERSIONS_INSIDE = {
    "KI-101": ("4.2.0", "4.2.1", "4.2.2", "4.2.3"), "KI-102": ("2.8.0", "2.8.2", "2.8.4"),
    "KI-103": ("1.12.0", "1.13.1", "1.14.2"), "KI-104": ("7.3.0", "7.3.1", "7.3.2"),
    "KI-105": ("3.0.1", "3.0.4"), "KI-106": ("1.8.2", "1.9.3"),
}
VERSIONS_OUTSIDE = {
    "KI-101": ("4.1.7", "4.2.4", "4.2.5"), "KI-102": ("2.7.3", "2.9.0"), "KI-103": ("1.15.0",),
    "KI-104": ("7.2.9", "7.3.3", "7.3.4"), "KI-105": ("2.9.8", "3.1.0", "3.1.2"),
    "KI-106": ("2.0.0", "2.0.1"),
}
_OTHER_VERSIONS = ("1.2.0", "2.0.3", "3.4.1", "4.0.2")  # quoted with symptoms no KB page covers


def _days_near(rng: random.Random, edges: tuple[int, ...], top: int) -> int:
    """Days in 1..top, half of them within four days of a policy edge."""
    if rng.random() < 0.5:
        edge = rng.choice(edges)
        return max(1, edge + rng.randint(-4, 5))
    return rng.randint(1, top)


def _version(rng: random.Random, symptom: str) -> str | None:
    ki = SYMPTOMS[symptom].known_issue
    roll = rng.random()
    if ki is None:
        if roll < 0.7:
            return None
        return "latest" if roll < 0.85 else rng.choice(_OTHER_VERSIONS)
    if roll < 0.35:
        return None
    if roll < 0.55:
        return "latest"
    return rng.choice(VERSIONS_INSIDE[ki] if roll < 0.8 else VERSIONS_OUTSIDE[ki])


def _device_fault(rng: random.Random) -> Issue:
    # Known-issue symptoms are drawn three times as often as the others, so that about half
    # of the faults touch a known-issue page (and the version decides whether it applies).
    names = list(SYMPTOMS)
    weights = [3 if SYMPTOMS[s].known_issue else 1 for s in names]
    symptom = rng.choices(names, weights=weights)[0]
    if SYMPTOMS[symptom].severity == "hazard" and rng.random() < 0.5:
        symptom = rng.choice([s for s in names if SYMPTOMS[s].severity != "hazard"])
    return Issue("device_fault", product=SYMPTOMS[symptom].product, symptom=symptom,
                 version=_version(rng, symptom))


def _late_delivery(rng: random.Random) -> Issue:
    method = rng.choices((None, "standard", "express", "international"), (35, 25, 20, 20))[0]
    window = DELIVERY_DAYS[method or "standard"]
    days = _days_near(rng, (window,), window * 2 + 4)
    return Issue("late_delivery", product=rng.choice(HARDWARE), days=days, method=method)


def sample_issue(rng: random.Random, kind: str) -> Issue:
    """The facts of one issue of the given kind."""
    if kind == "device_fault":
        return _device_fault(rng)
    if kind == "late_delivery":
        return _late_delivery(rng)
    if kind == "hardware_return":
        days = _days_near(rng, (HARDWARE_REFUND_DAYS, STORE_CREDIT_DAYS), 160)
        return Issue(kind, product=rng.choice(HARDWARE), days=days,
                     defective=rng.random() < 0.45)
    if kind == "subscription_refund":
        days = _days_near(rng, (SUBSCRIPTION_REFUND_DAYS,), 45)
        return Issue(kind, product=rng.choice(SUBSCRIPTIONS), days=days)
    if kind in ("damaged_delivery", "product_question", "feedback"):
        return Issue(kind, product=rng.choice(HARDWARE))
    if kind in ("duplicate_charge", "wrong_amount", "plan_change", "unrecognised_charge"):
        return Issue(kind, product=rng.choice(SUBSCRIPTIONS))
    return Issue(kind)


def _pick_kind(rng: random.Random) -> str:
    return rng.choices(list(KIND_WEIGHTS), weights=list(KIND_WEIGHTS.values()))[0]


def sample_facts(rng: random.Random, plan: str) -> TicketFacts:
    """A ticket's facts: 1-3 issues of different categories, and whether it is a follow-up."""
    count = rng.choices(list(ISSUE_COUNT_WEIGHTS), weights=list(ISSUE_COUNT_WEIGHTS.values()))[0]
    issues: list[Issue] = []
    categories: list[str] = []
    while len(issues) < count:
        issue = sample_issue(rng, _pick_kind(rng))
        category = label_issue(issue)[0]
        # One issue per category keeps the priority rule the only tie-breaker.
        if category not in categories:
            issues.append(issue)
            categories.append(category)
    return TicketFacts(plan=plan, repeat_contact=rng.random() < REPEAT_CONTACT_SHARE,
                       issues=tuple(issues))

