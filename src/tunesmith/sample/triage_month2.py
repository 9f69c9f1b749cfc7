"""The support-triage sample's second month: traffic after the business changed.

In January 2025 Halcyon Home shortened the hardware refund window (30 → 14 days, store credit
until day 60 instead of 90), launched a robot vacuum (the Nimbus, with words the first month
never used: suction, brush roll, mop pad, dock, lidar) and published two known issues: the
Nimbus circling its dock after a map update (KI-107) and the Lumen Hub refusing to pair on
firmware 4.2.4–4.2.5 (KI-108, a symptom that was a plain technical issue in month 1).

``month_traffic(month, n, seed)`` writes tickets the way a deployed model receives them: the
user turn only. Each ticket's label comes from the same rules (``triage_policy.label_ticket``)
under the policy of its month, and is kept apart from the text in :class:`TrafficTicket`
(``truth``), next to the label the month-1 policy would give (``month_one``): a simulated
reviewer reads the truth, the model never sees it. Month 1 here is *new* traffic of the first
month's distribution (other customers, other tickets than the training data), for replaying a
month without drift.

Example:
    >>> tickets = month_traffic(2, 500, seed=11)
    >>> sum(t.new_product for t in tickets) > 100, sum(t.policy_changed for t in tickets) > 30
    (True, True)
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from tunesmith.errors import TunesmithError
from tunesmith.sample.triage_docs import SYSTEM_PROMPT
from tunesmith.sample.triage_facts import REPEAT_CONTACT_SHARE, _days_near, sample_facts
from tunesmith.sample.triage_people import Customer, make_customer
from tunesmith.sample.triage_phrases import MONTH_ONE_VOCAB, Ctx, Vocabulary
from tunesmith.sample.triage_policy import (
    HARDWARE,
    KNOWN_ISSUES,
    MONTH_ONE,
    PRODUCTS,
    SYMPTOMS,
    Issue,
    KnownIssue,
    Policy,
    Product,
    Symptom,
    TicketFacts,
    Triage,
    label_ticket,
)
from tunesmith.sample.triage_render import render_ticket, ticket_text

NEW_PRODUCT = "nimbus_vac"
MONTH_TWO = Policy(
    "month 2 (2025-01 policy)",
    hardware_refund_days=14,
    store_credit_days=60,
    subscription_refund_days=MONTH_ONE.subscription_refund_days,
    products={**PRODUCTS, NEW_PRODUCT: Product("Nimbus Robot Vacuum", "hardware", "5.1.4")},
    known_issues={**KNOWN_ISSUES, **{k.id: k for k in (
        KnownIssue("KI-107", NEW_PRODUCT, "The robot circles in front of its dock and never docks after a map update",
                   "5.1.0", "5.1.3", "5.1.4",
                   "Move the dock 50 cm from walls, then run Dock calibration in the app."),
        KnownIssue("KI-108", "lumen_hub", "New devices fail to pair (LED blinks red, pairing times out)",
                   "4.2.4", "4.2.5", "4.2.6 (rolling out)",
                   "Settings > Radio: switch Pairing mode to Legacy, pair, then switch it back."),
    )}},
    symptoms={
        **SYMPTOMS,
        "hub_no_pairing": Symptom("lumen_hub", "degraded", "KI-108"),  # a known issue since January
        "vac_dock_circling": Symptom(NEW_PRODUCT, "degraded", "KI-107"),
        "vac_dock_blocked": Symptom(NEW_PRODUCT, "degraded"),  # near miss: no map update, a blocked dock
        "vac_suction_weak": Symptom(NEW_PRODUCT, "degraded"),
        "vac_brushroll_tangle": Symptom(NEW_PRODUCT, "degraded"),
        "vac_mop_leak": Symptom(NEW_PRODUCT, "degraded"),
        "vac_lidar_error": Symptom(NEW_PRODUCT, "dead"),
        "vac_battery_smoke": Symptom(NEW_PRODUCT, "hazard"),
    },
)
NIMBUS_SYMPTOMS: dict[str, tuple[str, ...]] = {
    "vac_dock_circling": (
        "since the map update it just spins around in front of the dock and never docks",
        "it keeps circling the charging dock after the new map was saved, then dies with a flat battery",
    ),
    "vac_dock_blocked": (
        "it can't find the dock since we put a shoe rack next to it",
        "it bumps into the dock and gives up, there's a bin right beside the dock now",
    ),
    "vac_suction_weak": ("the suction is really weak even on max power, it leaves crumbs everywhere",
                         "it barely picks anything up anymore, suction feels gone"),
    "vac_brushroll_tangle": ("the brush roll jams with hair after every run and it stops with error 5",
                             "the main brush keeps getting tangled and the side brush stopped spinning"),
    "vac_mop_leak": ("the mop pad leaves puddles, the water tank leaks on the wooden floor",
                     "the mopping module drips water everywhere when it's docked"),
    "vac_lidar_error": ("it says LDS error and won't start at all, the lidar turret doesn't spin",
                        "it's stuck on a lidar error and refuses to clean"),
    "vac_battery_smoke": ("there was smoke coming from the battery compartment while it was charging",
                          "it smelled of burning and the battery bay got very hot on the dock"),
}
MONTH_TWO_VOCAB = Vocabulary(
    names={**MONTH_ONE_VOCAB.names, NEW_PRODUCT: "Nimbus Robot Vacuum"},
    nicknames={**MONTH_ONE_VOCAB.nicknames,
               NEW_PRODUCT: ("robot vacuum", "Nimbus", "robovac", "vacuum robot", "Nimbus vacuum")},
    symptoms={**MONTH_ONE_VOCAB.symptoms, **NIMBUS_SYMPTOMS},
)
# Versions Nimbus owners quote: inside KI-107's range, outside it, or none.
NIMBUS_VERSIONS = (None, None, "latest", "5.1.0", "5.1.2", "5.1.3", "5.0.8", "5.1.4")
NEW_PRODUCT_SHARE = 0.30  # tickets whose first issue is about the Nimbus
RETURN_SHARE = 0.15  # tickets that lead with a hardware return (the post-holiday wave)
# Tickets that lead with a Lumen Hub that stopped pairing: firmware 4.2.4 went out to every hub
# in January, so KI-108 comes as a wave, as a known issue does. The model learnt this symptom as
# a plain technical issue in month 1 and has no reason to doubt it: the change it answers wrong
# with confidence, which review sampling and the quality checks are for.
PAIRING_SHARE = 0.15
PAIRING_VERSIONS = ((None, 35), ("latest", 20), ("4.2.4", 15), ("4.2.5", 15),  # affected (unstated counts)
                    ("4.2.2", 5), ("4.2.3", 5), ("4.2.6", 5))  # near misses: before the update, or the fix
# Month 1's numbers and known issues over month 2's catalogue: what the old rules say about any
# ticket (a Nimbus fault is then a plain technical issue, as any fault without a known issue).
OLD_RULES = replace(
    MONTH_TWO, name="month-1 rules", hardware_refund_days=MONTH_ONE.hardware_refund_days,
    store_credit_days=MONTH_ONE.store_credit_days, known_issues=KNOWN_ISSUES,
    symptoms={k: replace(v, known_issue=None) if v.known_issue not in KNOWN_ISSUES else v
              for k, v in MONTH_TWO.symptoms.items()})
MONTH_START = {1: datetime(2024, 12, 2, 7, 0), 2: datetime(2025, 1, 6, 7, 0)}
MONTH_DAYS = 28
POLICIES = {1: MONTH_ONE, 2: MONTH_TWO}
VOCABS = {1: MONTH_ONE_VOCAB, 2: MONTH_TWO_VOCAB}


@dataclass(frozen=True, slots=True)
class TrafficTicket:
    """One request of a simulated month, with its ground truth kept beside (never inside) it."""

    ticket_id: str
    month: int
    text: str  # the user turn the model is sent
    truth: Triage  # the label under this month's policy (what a reviewer would say)
    month_one: Triage  # the label the month-1 policy would give the same facts
    facts: TicketFacts
    new_product: bool  # raises an issue about the new product line

    @property
    def policy_changed(self) -> bool:
        """Whether the policy change (not the new product) moved this ticket's label."""
        return not self.new_product and self.truth != self.month_one

    def messages(self) -> list[dict[str, str]]:
        """The chat request: the project's system prompt and the ticket."""
        return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": self.text}]

    def labelled_messages(self) -> list[dict[str, str]]:
        """The request with its ground truth as the answer (an eval case; simulation only)."""
        truth = json.dumps(self.truth.as_dict(), separators=(",", ":"))
        return [*self.messages(), {"role": "assistant", "content": truth}]


# --------------------------------------------------------------------------- facts
def _nimbus_issue(rng: random.Random) -> Issue:
    roll = rng.random()
    if roll < 0.7:
        names = list(NIMBUS_SYMPTOMS)
        weights = [4 if n == "vac_dock_circling" else 1 for n in names]  # the launch's big problem
        symptom = rng.choices(names, weights=weights)[0]
        version = rng.choice(NIMBUS_VERSIONS) if symptom in ("vac_dock_circling", "vac_dock_blocked") else None
        return Issue("device_fault", product=NEW_PRODUCT, symptom=symptom, version=version)
    if roll < 0.85:
        return _return(rng, NEW_PRODUCT)
    return Issue("product_question", product=NEW_PRODUCT)


def _return(rng: random.Random, product: str) -> Issue:
    days = _days_near(rng, (14, 30, 60, 90), 120)  # both months' edges: where the policies disagree
    return Issue("hardware_return", product=product, days=days, defective=rng.random() < 0.45)


def _pairing(rng: random.Random) -> Issue:
    versions, weights = zip(*PAIRING_VERSIONS, strict=True)
    return Issue("device_fault", product="lumen_hub", symptom="hub_no_pairing",
                 version=rng.choices(versions, weights=weights)[0])


def month_facts(rng: random.Random, plan: str, month: int) -> TicketFacts:
    """A ticket's facts in ``month``: month 1's distribution; month 2 adds the Nimbus, a wave of
    returns and a wave of hub pairing failures (KI-108), each sometimes joined by a second
    (month-1) issue of another category."""
    roll = rng.random() if month == 2 else 1.0
    if roll >= NEW_PRODUCT_SHARE + RETURN_SHARE + PAIRING_SHARE:
        return sample_facts(rng, plan)
    if roll < NEW_PRODUCT_SHARE:
        first = _nimbus_issue(rng)
    elif roll < NEW_PRODUCT_SHARE + RETURN_SHARE:
        first = _return(rng, rng.choice(HARDWARE))
    else:
        first = _pairing(rng)
    issues = [first]
    if rng.random() < 0.3:
        other = sample_facts(rng, plan).issues[0]
        if other.kind not in ("hardware_return", "device_fault", "product_question"):
            issues.append(other)
    return TicketFacts(plan=plan, repeat_contact=rng.random() < REPEAT_CONTACT_SHARE, issues=tuple(issues))


# --------------------------------------------------------------------------- tickets
def _customers(rng: random.Random, count: int, month: int) -> list[Customer]:
    # Customer ids of another range than the training data's (10001...): new people write in.
    plans = rng.choices(("Starter", "Business", "Enterprise"), weights=(50, 30, 20), k=count)
    return [make_customer(rng, 50001 + 10000 * month + i, plan) for i, plan in enumerate(plans)]


def month_traffic(month: int, n: int, *, seed: int = 11) -> list[TrafficTicket]:
    """``n`` clean tickets of ``month`` (1 or 2) in arrival order, each with its ground truth.

    Args:
        month: 1 (the training data's policy and catalogue, new tickets) or 2 (after the change).
        n: how many tickets (at least 1).
        seed: the same seed gives the same tickets; month 1 and 2 of one seed share nothing.

    Raises:
        TunesmithError: a month other than 1 or 2, or n < 1.
    """
    if month not in POLICIES:
        raise TunesmithError(f"month must be 1 or 2 (got {month})")
    if n < 1:
        raise TunesmithError(f"n must be at least 1 (got {n})")
    rng = random.Random(f"support-triage-month{month}:{seed}")
    customers = _customers(rng, max(2, round(n / 1.5)), month)
    start = MONTH_START[month]
    moments = sorted(start + timedelta(days=rng.randrange(MONTH_DAYS), seconds=rng.randrange(15 * 3600))
                     for _ in range(n))
    tickets = []
    for i, created in enumerate(moments):
        customer = customers[int(len(customers) * rng.random() ** 1.6)]
        facts = month_facts(rng, customer.plan, month)
        out = render_ticket(Ctx(rng, customer, created.date(), vocab=VOCABS[month]), facts)
        tickets.append(TrafficTicket(
            ticket_id=f"M{month}-{seed}-{i + 1:05d}", month=month,
            text=ticket_text(out.subject, customer.plan, created.date(), out.body),
            truth=label_ticket(facts, POLICIES[month]), month_one=label_ticket(facts, OLD_RULES),
            facts=facts, new_product=_mentions(facts, NEW_PRODUCT)))
    return tickets


def _mentions(facts: TicketFacts, product: str) -> bool:
    return any(i.product == product for i in facts.issues)


# --------------------------------------------------------------------------- files
def policy_update_page() -> str:
    """The knowledge-base page announcing month 2's changes (written beside the traffic)."""
    lines = [
        "# Policy update, January 2025",
        "",
        f"- Hardware refunds: a full refund up to and including day {MONTH_TWO.hardware_refund_days} after "
        f"delivery (was {MONTH_ONE.hardware_refund_days}); store credit up to day {MONTH_TWO.store_credit_days} "
        f"(was {MONTH_ONE.store_credit_days}). After that: a faulty item is replaced (reship_order), anything "
        "else is declined (answer_question).",
        "- New product: the Nimbus Robot Vacuum (hardware, current firmware 5.1.4). Its faults follow the "
        "device-fault rules: a safety hazard is critical and goes to engineering; a dead robot is high.",
        "",
        "## New known issues",
        "",
    ]
    for key in ("KI-107", "KI-108"):
        ki = MONTH_TWO.known_issues[key]
        lines += [f"### {ki.id}: {MONTH_TWO.products[ki.product].name}", "",
                  f"- Symptom: {ki.summary}.", f"- Affected versions: {ki.first} to {ki.last}.",
                  f"- Fixed in: {ki.fixed_in}.", f"- Workaround: {ki.workaround}", ""]
    return "\n".join(lines)


def write_month(out_dir: Path, month: int, n: int, *, seed: int = 11) -> dict[str, Any]:
    """Write a month's requests and, in another file, their ground truth.

    ``requests.jsonl``: one chat request per line (``id``, ``messages``) — what a client sends.
    ``truth.jsonl``: ``id``, the label under the month's policy, the month-1 label, the facts
    summary — what only the simulated reviewer reads. Month 2 also writes the policy page.
    """
    tickets = month_traffic(month, n, seed=seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    requests = [json.dumps({"id": t.ticket_id, "messages": t.messages()}, ensure_ascii=False) for t in tickets]
    truth = [json.dumps({"id": t.ticket_id, "truth": t.truth.as_dict(), "month_one": t.month_one.as_dict(),
                         "new_product": t.new_product, "policy_changed": t.policy_changed,
                         "issues": [i.kind for i in t.facts.issues]}) for t in tickets]
    (out_dir / "requests.jsonl").write_text("\n".join(requests) + "\n", encoding="utf-8", newline="\n")
    (out_dir / "truth.jsonl").write_text("\n".join(truth) + "\n", encoding="utf-8", newline="\n")
    if month == 2:
        (out_dir / "policy-update-2025-01.md").write_text(policy_update_page() + "\n", encoding="utf-8",
                                                          newline="\n")
    return month_summary(tickets)


def month_summary(tickets: list[TrafficTicket]) -> dict[str, Any]:
    return {"tickets": len(tickets), "new_product": sum(t.new_product for t in tickets),
            "policy_changed": sum(t.policy_changed for t in tickets),
            "label_differs_from_month_one": sum(t.truth != t.month_one for t in tickets)}
