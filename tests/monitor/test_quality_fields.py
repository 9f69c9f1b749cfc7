"""Per-field error rates of reviewed answers: which label fields the reviewers corrected."""

from __future__ import annotations

from tunesmith.monitor.reviews import load_reviewed
from tunesmith.monitor.runner import field_rates
from tunesmith.review.queue import FieldValue, NewItem, ReviewQueue
from tunesmith.review.routing import Decision

CATS, URGENCY = ("billing", "account"), ("low", "high")


def test_corrections_count_against_their_fields_and_rejections_against_all(tmp_path):
    db = tmp_path / "t.db"
    queue = ReviewQueue(db)
    fields = {"category": FieldValue("billing", 0.9, CATS), "urgency": FieldValue("low", 0.8, URGENCY)}
    queue.enqueue([NewItem(f"r{i}", "v1", "json", [{"role": "user", "content": f"ticket {i}"}],
                           '{"category": "billing", "urgency": "low"}', fields,
                           Decision("low_confidence" if i == 9 else "sampled", "test")) for i in range(10)])
    items = queue.items()
    for it in items[:4]:
        queue.decide(it.item, "correct", by="ann", changes={"urgency": "high"})
    queue.decide(items[4].item, "correct", by="ann", changes={"category": "account", "urgency": "high"})
    queue.decide(items[5].item, "reject", by="ann", reason="wrong")  # a model error: every field
    queue.decide(items[6].item, "reject", by="ann", reason="bad_input")  # the input's fault: none
    queue.decide(items[7].item, "approve", by="ann")
    queue.decide(items[8].item, "correct", by="ann", changes={"category": "account"})
    queue.decide(items[8].item, "approve", by="bob")  # the latest decision counts
    queue.decide(items[9].item, "correct", by="ann", changes={"category": "account"})  # low_confidence tier

    reviewed = load_reviewed(db)
    sampled = [r for r in reviewed if r.tier == "sampled"]
    assert len(sampled) == 9 and sum(r.error for r in sampled) == 6
    rates = field_rates(sampled, min_reviewed=5)
    assert (rates["urgency"].errors, rates["urgency"].n) == (6, 9)  # 4 + 1 corrected, 1 rejected
    assert (rates["category"].errors, rates["category"].n) == (2, 9)  # 1 corrected, 1 rejected
    assert rates["urgency"].low < 6 / 9 < rates["urgency"].high
    assert field_rates(sampled, min_reviewed=10)["category"].rate is None  # too few for a rate
