"""The queue read a page at a time (what the web UI's workbench uses), its counts, a reviewer's
history, and the stale-decision check."""

from __future__ import annotations

import pytest

from tunesmith.review.queue import StaleItem

from .conftest import new_item


@pytest.fixture
def filled(queue):
    items = [new_item(i, tier=("mandatory", "low_confidence", "sampled")[i % 3]) for i in range(12)]
    queue.enqueue(items)
    return queue


def test_pages_walk_the_pending_items_in_order(filled):
    assert [it.item for it in filled.page(limit=5)] == [1, 2, 3, 4, 5]
    assert [it.item for it in filled.page(after=5, limit=3)] == [6, 7, 8]
    assert [it.item for it in filled.page(before=5, limit=2)] == [3, 4]
    assert [it.item for it in filled.page(tier="sampled")] == [3, 6, 9, 12]
    filled.decide(6, "approve", by="rita")
    assert [it.item for it in filled.page(tier="sampled")] == [3, 9, 12]
    assert [it.item for it in filled.page(status="decided")] == [6]
    decided = filled.page(status="all", after=5, limit=1)[0]
    assert decided.item == 6 and decided.decisions[0].by == "rita"
    # the same items as the full read, for every filter
    for tier in (None, "mandatory", "sampled"):
        assert [it.item for it in filled.page(tier=tier, limit=100)] == [
            it.item for it in filled.items(status="pending", tier=tier)]


def test_confidence_filters(queue):
    from dataclasses import replace

    low = new_item(1)
    low = replace(low, fields={**low.fields, "urgency": replace(low.fields["urgency"], confidence=0.2)},
                  decision=replace(low.decision, confidence=0.2))
    queue.enqueue([low, new_item(2)])
    assert [it.item for it in queue.page(below=0.5)] == [1]
    assert [it.item for it in queue.page(below=0.5, field="urgency")] == [1]
    assert [it.item for it in queue.page(below=0.5, field="category")] == []
    assert [it.item for it in queue.page(below=0.95, field="category")] == [1, 2]


def test_counts_per_tier(filled):
    filled.decide(1, "approve", by="rita")
    filled.decide(1, "approve", by="sam")  # a second reviewer: still one decided item
    assert filled.counts() == {"mandatory": {"pending": 3, "decided": 1}, "low_confidence": {"pending": 4, "decided": 0},
                               "sampled": {"pending": 4, "decided": 0}}


def test_a_stale_decision_is_refused_and_writes_nothing(filled):
    filled.decide(2, "approve", by="sam")
    with pytest.raises(StaleItem, match=r"decided meanwhile \(approve by sam\)"):
        filled.decide(2, "reject", by="rita", reason="other", reason_codes=["other"], expect_decisions=0)
    assert len(filled.audit(2)) == 1
    filled.decide(2, "reject", by="rita", reason="other", reason_codes=["other"], expect_decisions=1)
    assert [a.by for a in filled.audit(2)] == ["sam", "rita"]


def test_history_and_shared_items(filled):
    filled.decide(1, "approve", by="rita")
    filled.decide(2, "correct", by="rita", changes={"urgency": "high"})
    filled.decide(2, "approve", by="sam")
    filled.decide(3, "approve", by="sam")
    mine = filled.history("rita")
    assert [(d.item, d.action) for d in mine] == [(2, "correct"), (1, "approve")]
    assert mine[0].changes == {"urgency": ("low", "high")}
    assert [it.item for it in filled.shared_with_others("rita")] == [2]
    assert filled.shared_with_others("nobody") == []
