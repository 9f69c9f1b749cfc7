"""The simulated second month: the policy change shows in the labels, the new product line in
the words, the ground truth stays out of the requests, and month 1 is unchanged."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from tunesmith.errors import TunesmithError
from tunesmith.sample import generate_support_triage
from tunesmith.sample.triage_month2 import (
    MONTH_TWO,
    NEW_PRODUCT,
    NIMBUS_SYMPTOMS,
    OLD_RULES,
    month_traffic,
    write_month,
)
from tunesmith.sample.triage_policy import MONTH_ONE, Issue, TicketFacts, label_ticket

# sha256 over (relative path, bytes) of every data file `generate_support_triage(seed=7)` writes
# (all but its tunesmith.yaml, whose settings may change), taken before the second month
# existed: the demo's numbers depend on these exact bytes.
MONTH_ONE_SAMPLE_SHA256 = "9df17cfa11030524cf706d1aa791faa76fc2910e533ea1996e6876221c17ccfc"
NEW_WORDS = ("nimbus", "robovac", "robot vacuum", "suction", "brush roll", "mop pad", "lidar")


@pytest.fixture(scope="module")
def month2() -> list:
    return month_traffic(2, 600, seed=11)


@pytest.fixture(scope="module")
def month1() -> list:
    return month_traffic(1, 600, seed=11)


def test_month_one_sample_is_byte_identical(tmp_path: Path):
    generate_support_triage(tmp_path, seed=7)
    digest = hashlib.sha256()
    for path in sorted(p for p in tmp_path.rglob("*") if p.is_file() and p.name != "tunesmith.yaml"):
        digest.update(str(path.relative_to(tmp_path)).encode())
        digest.update(path.read_bytes())
    assert digest.hexdigest() == MONTH_ONE_SAMPLE_SHA256


def test_policy_change_moves_refund_labels():
    ret = TicketFacts("Starter", False, (Issue("hardware_return", product="aria_cam", days=20),))
    assert label_ticket(ret, MONTH_ONE).next_action == "issue_refund"
    assert label_ticket(ret, MONTH_TWO).next_action == "offer_store_credit"
    late = TicketFacts("Starter", False, (Issue("hardware_return", product="aria_cam", days=75),))
    assert label_ticket(late, MONTH_ONE).next_action == "offer_store_credit"
    assert label_ticket(late, MONTH_TWO).next_action == "answer_question"
    pairing = TicketFacts("Business", False, (Issue("device_fault", product="lumen_hub", symptom="hub_no_pairing",
                                                    version="4.2.5"),))
    assert label_ticket(pairing, MONTH_ONE).category == "technical_issue"
    assert label_ticket(pairing, MONTH_TWO).as_dict() == {"category": "known_issue", "urgency": "normal",
                                                           "next_action": "send_workaround"}


def test_month_two_labels_follow_its_policy(month2):
    changed = [t for t in month2 if t.policy_changed]
    assert len(changed) >= 0.05 * len(month2)
    returns = [t for t in month2 if t.facts.issues[0].kind == "hardware_return" and len(t.facts.issues) == 1
               and 14 < (t.facts.issues[0].days or 0) <= 30]
    assert returns and all(t.truth.next_action == "offer_store_credit" for t in returns)
    assert all(t.month_one.next_action == "issue_refund" for t in returns)
    assert all(t.truth == label_ticket(t.facts, MONTH_TWO) for t in month2)
    assert all(t.month_one == label_ticket(t.facts, OLD_RULES) for t in month2)
    docked = [t for t in month2 if any(i.symptom == "vac_dock_circling" for i in t.facts.issues)
              and len(t.facts.issues) == 1 and t.facts.issues[0].version in (None, "5.1.0", "5.1.2", "5.1.3")]
    assert docked and all(t.truth.next_action == "send_workaround" for t in docked)


def test_month_two_brings_new_vocabulary(month1, month2, tmp_path):
    def share(tickets, word):
        return sum(word in t.text.lower() for t in tickets) / len(tickets)

    nimbus = [t for t in month2 if t.new_product]
    assert 0.2 <= len(nimbus) / len(month2) <= 0.4
    assert share(nimbus, "nimbus") + share(nimbus, "robovac") + share(nimbus, "vacuum") > 0.5
    assert all(share(month1, w) == 0 for w in NEW_WORDS)
    assert any(share(month2, w) > 0 for w in ("suction", "brush", "lidar", "mop"))
    generate_support_triage(tmp_path, seed=7, n_tickets=300)
    training = " ".join(p.read_text(encoding="utf-8-sig").lower() for p in (tmp_path / "data").iterdir())
    assert not any(re.search(rf"\b{w}\b", training) for w in NEW_WORDS)
    assert set(NIMBUS_SYMPTOMS) <= set(MONTH_TWO.symptoms)
    assert MONTH_TWO.products[NEW_PRODUCT].kind == "hardware"


def test_month_one_traffic_is_new_tickets_of_the_old_policy(month1):
    assert all(t.truth == t.month_one == label_ticket(t.facts, MONTH_ONE) for t in month1)
    assert not any(t.new_product or t.policy_changed for t in month1)
    assert len({t.text for t in month1}) == len(month1)


def test_seeded_and_months_apart():
    a, b = month_traffic(2, 50, seed=3), month_traffic(2, 50, seed=3)
    assert [t.text for t in a] == [t.text for t in b] and [t.truth for t in a] == [t.truth for t in b]
    assert {t.text for t in month_traffic(1, 50, seed=3)}.isdisjoint(t.text for t in a)
    assert [t.text for t in month_traffic(2, 50, seed=4)] != [t.text for t in a]


def test_truth_is_written_apart_from_the_requests(tmp_path):
    summary = write_month(tmp_path, 2, 80, seed=5)
    requests = [json.loads(line) for line in (tmp_path / "requests.jsonl").read_text().splitlines()]
    truth = [json.loads(line) for line in (tmp_path / "truth.jsonl").read_text().splitlines()]
    assert [r["id"] for r in requests] == [t["id"] for t in truth] and len(requests) == 80
    assert all([m["role"] for m in r["messages"]] == ["system", "user"] for r in requests)
    assert not any("next_action" in r["messages"][1]["content"] for r in requests)
    assert summary["new_product"] == sum(t["new_product"] for t in truth)
    page = (tmp_path / "policy-update-2025-01.md").read_text()
    assert "KI-107" in page and "day 14" in page


def test_bad_month_or_count():
    with pytest.raises(TunesmithError, match="month must be 1 or 2"):
        month_traffic(3, 10)
    with pytest.raises(TunesmithError, match="n must be at least 1"):
        month_traffic(2, 0)


def test_the_pairing_known_issue_comes_as_a_wave(month1, month2):
    """KI-108 after the 4.2.4 update: a share of month 2 large enough for a window of 500 to
    show it, each ticket moving from a technical issue to the known issue unless its version is
    a near miss."""
    def pairing(tickets):
        return [t for t in tickets if t.facts.issues[0].symptom == "hub_no_pairing"]

    wave = pairing(month2)
    assert 0.11 <= len(wave) / len(month2) <= 0.19
    moved = [t for t in wave if t.truth.category == "known_issue" and t.month_one.category == "technical_issue"]
    assert len(moved) >= 0.6 * len(wave) and all(t.policy_changed for t in moved)
    misses = [t for t in wave if t.facts.issues[0].version in ("4.2.2", "4.2.3", "4.2.6")]
    assert misses and all(t.truth.category != "known_issue" for t in misses)
    assert len(pairing(month1)) <= 0.02 * len(month1)  # in month 1 a rare symptom, not a wave
