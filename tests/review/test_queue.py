"""The review queue: enqueue, decisions with their append-only audit trail, bad decisions
refused with nothing written, agreement between two reviewers."""

from __future__ import annotations

import sqlite3

import pytest

from review.conftest import ACTIONS, SPEC, answer, log_rows, new_item, ticket
from tunesmith.config import DEFAULT_REASON_CODES, ReviewConfig
from tunesmith.errors import TunesmithError
from tunesmith.review.queue import (
    agreement,
    enqueue_from_request_log,
    final_decision,
    logged_answers,
)
from tunesmith.review.routing import Decision, RoutingPolicy

CODES = DEFAULT_REASON_CODES


def test_enqueue_is_idempotent_and_refuses_auto(queue):
    assert queue.enqueue([new_item(1), new_item(2, tier="mandatory")]) == (2, 0)
    assert queue.enqueue([new_item(1), new_item(3)]) == (1, 1)
    items = queue.items()
    assert [it.item for it in items] == [1, 2, 3] and all(it.status == "pending" for it in items)
    assert items[1].tier == "mandatory" and items[0].fields["urgency"].allowed == ("low", "high", "critical")
    assert queue.get("req-2").item == 2 and queue.get(3).request_id == "req-3"
    auto = new_item(9)
    with pytest.raises(ValueError, match="auto-approved"):
        queue.enqueue([type(auto)(**{**auto.__dict__, "decision": Decision("auto", "ok")})])


def test_decisions_write_an_audit_trail(queue):
    queue.enqueue([new_item(1), new_item(2), new_item(3)])
    a = queue.decide(1, "approve", by="alice")
    c = queue.decide(2, "correct", by="alice", changes={"urgency": "high", "next_action": "fix"},
                     reason="wrong_label", reason_codes=CODES)
    r = queue.decide("req-3", "reject", by="bob", reason="off_topic", reason_codes=CODES)
    assert (a.action, a.by, a.changes) == ("approve", "alice", {})
    assert c.changes == {"urgency": ("low", "high"), "next_action": ("refund", "fix")}
    assert r.reason == "off_topic"
    trail = queue.audit()
    assert [(t.item, t.action, t.field, t.from_value, t.to_value) for t in trail] == [
        (1, "approve", None, None, None), (2, "correct", "urgency", "low", "high"),
        (2, "correct", "next_action", "refund", "fix"), (3, "reject", None, None, None)]
    assert trail[1].decision == trail[2].decision != trail[0].decision
    assert all(t.at > 0 and t.by for t in trail)
    assert queue.items(status="pending") == [] and len(queue.items(status="decided")) == 3
    assert queue.get(2).values_after(final_decision(queue.get(2))) == {
        "category": "billing", "urgency": "high", "next_action": "fix"}


def test_the_audit_trail_and_items_refuse_update_and_delete(queue, ws):
    queue.enqueue([new_item(1)])
    queue.decide(1, "approve", by="alice")
    db = sqlite3.connect(ws.db_path)
    try:
        for sql in ("UPDATE review_audit SET by = 'mallory'", "DELETE FROM review_audit",
                    "UPDATE review_items SET answer = 'x'", "DELETE FROM review_items"):
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                db.execute(sql)
    finally:
        db.close()
    assert queue.audit()[0].by == "alice"


def _unchanged(queue, before):
    assert queue.audit() == before


def test_bad_decisions_are_refused_and_nothing_is_written(queue):
    queue.enqueue([new_item(1), new_item(2, raw="I think it is billing")])
    queue.decide(1, "approve", by="alice")
    before = queue.audit()
    cases = [
        (dict(ref=7, action="approve", by="bob"), "no review item '7' in the queue \\(2 item"),
        (dict(ref="req-404", action="approve", by="bob"), "no review item 'req-404'"),
        (dict(ref=1, action="approve", by="alice"), "already decided by alice \\(approve"),
        (dict(ref=1, action="correct", by="bob", changes={"category": "refunds"}),
         "'refunds' is not an allowed value of category; allowed: billing, bug, security, account"),
        (dict(ref=1, action="correct", by="bob", changes={"priority": "low"}),
         "no field 'priority'; its fields: category, urgency, next_action"),
        (dict(ref=1, action="correct", by="bob", changes={"category": "billing"}), "already 'billing'"),
        (dict(ref=1, action="correct", by="bob"), "at least one field=value"),
        (dict(ref=1, action="reject", by="bob"), "needs a reason code .*wrong_label"),
        (dict(ref=1, action="reject", by="bob", reason="meh"), "unknown reason code 'meh'"),
        (dict(ref=1, action="approve", by="bob", changes={"category": "bug"}), "approve takes no field values"),
        (dict(ref=1, action="shrug", by="bob"), "unknown review action 'shrug'"),
        (dict(ref=1, action="approve", by="  "), "reviewer's name is empty"),
        (dict(ref=1, action="approve", by="bob", revise=True), "has not decided item 1"),
        (dict(ref=2, action="approve", by="bob"), "did not parse"),
        (dict(ref=2, action="correct", by="bob", changes={"category": "billing"}), "must give them too"),
    ]
    for kwargs, message in cases:
        with pytest.raises(TunesmithError, match=message):
            queue.decide(kwargs.pop("ref"), kwargs.pop("action"), reason_codes=CODES, **kwargs)
        _unchanged(queue, before)
    # an unparsed answer corrected in full is fine
    d = queue.decide(2, "correct", by="bob", changes={"category": "billing", "urgency": "low", "next_action": "refund"})
    assert d.changes["category"] == (None, "billing")


def test_revise_appends_a_replacement_and_the_latest_decision_wins(queue):
    queue.enqueue([new_item(1)])
    queue.decide(1, "approve", by="alice")
    queue.decide(1, "correct", by="alice", changes={"urgency": "critical"}, revise=True)
    item = queue.get(1)
    assert [d.action for d in item.decisions] == ["approve", "correct"]
    assert final_decision(item).action == "correct" and len(queue.audit()) == 2


def test_reviewer_defaults_to_the_os_user(queue, monkeypatch):
    monkeypatch.setattr("getpass.getuser", lambda: "carol")
    queue.enqueue([new_item(1)])
    assert queue.decide(1, "approve").by == "carol"


def test_second_reviewer_work_list_and_agreement(queue):
    queue.enqueue([new_item(i) for i in range(1, 21)])
    # alice approves 1-20; bob reviews 1-10: agrees on 1-6, corrects urgency on 7-8, rejects 9, corrects
    # category on 10
    for i in range(1, 21):
        queue.decide(i, "approve", by="alice")
    assert [it.item for it in queue.items(not_by="bob")][:3] == [1, 2, 3]
    for i in range(1, 7):
        queue.decide(i, "approve", by="bob")
    for i in (7, 8):
        queue.decide(i, "correct", by="bob", changes={"urgency": "high"})
    queue.decide(9, "reject", by="bob", reason="bad_input", reason_codes=CODES)
    queue.decide(10, "correct", by="bob", changes={"category": "bug"})
    ag = agreement(queue.items())
    assert (ag.items, ag.pairs) == (10, 10)
    assert ag.item_agreement == pytest.approx(0.6)
    # fields: category disagrees on 9 and 10, urgency on 7, 8, 9, next_action on 9
    assert ag.per_field == pytest.approx({"category": 0.8, "urgency": 0.7, "next_action": 0.9})
    assert ag.field_agreement == pytest.approx((8 + 7 + 9) / 30)
    from sklearn.metrics import cohen_kappa_score

    a = ["billing"] * 10
    b = ["billing"] * 8 + ["<rejected>", "bug"]
    assert ag.kappa["category"] == pytest.approx(cohen_kappa_score(a, b))
    assert [it.item for it in queue.items(not_by="bob")] == list(range(11, 21))


def test_enqueue_from_request_log_uses_recorded_decisions_and_routes_the_rest(queue, ws):
    msgs = ticket(1)
    log_rows(ws, [
        {"request_id": "r-auto", "messages": msgs, "answer": answer("billing", "low", "refund"),
         "decision": Decision("auto", "auto-approved").to_dict()},
        {"request_id": "r-man", "messages": msgs, "answer": answer("security", "high", "escalate_security"),
         "confidence": {"category": 0.99, "urgency": 0.97, "next_action": 0.99},
         "decision": Decision("mandatory", "rule category=security", 0.97, 0.8).to_dict()},
        {"request_id": "r-low", "messages": msgs, "answer": answer("bug", "low", "fix"),
         "confidence": {"category": 0.4, "urgency": 0.9, "next_action": 0.8}},  # no decision recorded
        {"request_id": "r-bad", "messages": msgs, "answer": "not json at all"},
        {"request_id": "r-old", "answer": answer("bug", "low", "fix"),  # an older log: no input turns
         "decision": Decision("sampled", "qc").to_dict()},
        {"request_id": "r-500", "messages": msgs, "answer": "x", "status": 500},
    ])
    logged = logged_answers(ws.db_path)
    assert [a.request_id for a in logged] == ["r-auto", "r-man", "r-low", "r-bad", "r-old"]
    policy = RoutingPolicy.from_config(ReviewConfig(rules=[{"category": "security"}], sample_rate=0), 0.8)
    report = enqueue_from_request_log(queue, SPEC, logged, policy=policy)
    assert (report.answers, report.queued, report.auto, report.no_input, report.no_decision) == (5, 3, 1, 1, 0)
    assert report.tiers == {"mandatory": 1, "low_confidence": 2}
    low = queue.get("r-low")
    assert low.tier == "low_confidence" and "0.400 < threshold 0.800" in low.reason
    assert low.fields["category"].confidence == 0.4 and low.fields["next_action"].allowed == tuple(ACTIONS)
    assert low.input == msgs and low.model_version == "v1"
    assert queue.get("r-bad").reason == "the answer did not parse into its fields"
    # a replay queues nothing twice
    again = enqueue_from_request_log(queue, SPEC, logged_answers(ws.db_path), policy=policy)
    assert (again.queued, again.already_queued) == (0, 3)
    # without a policy, answers logged without a decision are counted, not guessed
    assert enqueue_from_request_log(queue, SPEC, logged).no_decision == 2


def test_kappa_matches_scikit_learn():
    import random

    from sklearn.metrics import cohen_kappa_score

    from tunesmith.review.queue import _kappa

    rng = random.Random(3)
    for _ in range(20):
        a = [rng.choice("abcd") for _ in range(50)]
        b = [x if rng.random() < 0.6 else rng.choice("abcd") for x in a]
        assert _kappa(list(zip(a, b, strict=True))) == pytest.approx(cohen_kappa_score(a, b))
    assert _kappa([("a", "a"), ("a", "a")]) is None


def test_the_request_log_writer_records_what_the_queue_reads(queue, ws):
    """Input turns (PII scrubbed), per-field confidence and the decision, written by the
    request log's own writer thread, come back as logged answers and queue as items."""
    from tunesmith.serve.requestlog import Answer, LogEntry, RequestLog

    log = RequestLog(ws.db_path, scrub=lambda t: t.replace("ann@example.com", "<EMAIL>"))
    log.start()
    msgs = [{"role": "user", "content": "refund please, ann@example.com"}]
    conf = {"category": 0.97, "urgency": 0.55, "next_action": 0.9}
    log.record(LogEntry("r1", 5.0, 200, version="v2", prompt="rendered", messages=msgs, answers=[
        Answer(answer("billing", "low", "refund"), "stop", 9, conf,
               Decision("low_confidence", "confidence 0.550 < threshold 0.800", 0.55, 0.8).to_dict()),
        Answer(answer("billing", "high", "refund"), "stop", 9, conf, Decision("auto", "auto-approved").to_dict())]))
    log.stop()
    logged = logged_answers(ws.db_path)
    assert [(a.request_id, a.choice) for a in logged] == [("r1", 0), ("r1", 1)]
    assert logged[0].messages == [{"role": "user", "content": "refund please, <EMAIL>"}]
    assert logged[0].confidence == conf and logged[0].decision.tier == "low_confidence"
    report = enqueue_from_request_log(queue, SPEC, logged)
    assert (report.queued, report.auto) == (1, 1)
    item = queue.get("r1")
    assert item.model_version == "v2" and item.fields["urgency"].confidence == 0.55 and item.confidence == 0.55
