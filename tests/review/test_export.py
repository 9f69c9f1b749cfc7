"""review export: approved and corrected answers, each item once by its latest decision, with
provenance; refused (or reported) overlap with the frozen eval pack; read back by ingest and
prepare."""

from __future__ import annotations

import json

import pytest

from review.conftest import SPEC, new_item, publish_pack, ticket
from tunesmith.errors import TunesmithError
from tunesmith.review.export import KIND, export_reviewed, pack_hashes


def _decide(queue):
    queue.enqueue([new_item(i) for i in range(1, 6)])
    queue.decide(1, "approve", by="alice")
    queue.decide(2, "correct", by="alice", changes={"urgency": "critical", "next_action": "fix"})
    queue.decide(3, "reject", by="alice", reason="off_topic")
    # item 4: alice approves, then bob corrects it: the latest decision wins, the item counts once
    queue.decide(4, "approve", by="alice")
    queue.decide(4, "correct", by="bob", changes={"category": "bug"})
    # item 5 stays pending


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_export_counts_each_item_once_with_provenance(ws, queue, tmp_path):
    _decide(queue)
    res = export_reviewed(ws, packs=pack_hashes(ws), out=tmp_path / "data" / "reviewed.jsonl")
    assert (res.records, res.approved, res.corrected, res.rejected, res.pending) == (3, 1, 2, 1, 1)
    assert res.reviewers == {"alice": 2, "bob": 1} and res.new
    records = _read(res.path)
    assert [r["meta"]["review_item"] for r in records] == [1, 2, 4]
    by_item = {r["meta"]["review_item"]: r for r in records}
    assert json.loads(by_item[1]["messages"][-1]["content"]) == {
        "category": "billing", "urgency": "low", "next_action": "refund"}
    assert json.loads(by_item[2]["messages"][-1]["content"]) == {
        "category": "billing", "urgency": "critical", "next_action": "fix"}
    assert json.loads(by_item[4]["messages"][-1]["content"])["category"] == "bug"
    meta = by_item[4]["meta"]
    assert (meta["request_id"], meta["model_version"], meta["reviewer"], meta["review_action"]) == (
        "req-4", "v1", "bob", "correct")
    assert meta["corrected_fields"] == ["category"] and meta["review_decision"]
    assert by_item[2]["messages"][:-1] == ticket(2)
    # the fixed path holds the same dataset; lineage names the model versions it came from
    assert (tmp_path / "data" / "reviewed.jsonl").read_text() == res.path.read_text()
    assert ("model", "v1", "answers_of") in ws.parents(KIND, res.id)
    # the same decisions: the same dataset; a new decision: a new version
    again = export_reviewed(ws, packs=pack_hashes(ws))
    assert again.id == res.id and not again.new
    queue.decide(5, "approve", by="alice")
    third = export_reviewed(ws, packs=pack_hashes(ws))
    assert third.id != res.id and third.records == 4 and len(ws.list(KIND)) == 2


def test_overlap_with_the_eval_pack_is_refused_or_dropped_and_reported(ws, queue):
    _decide(queue)
    # the pack holds item 2's ticket, spelled with other case and spacing
    user = ticket(2)[1]["content"]
    pack = publish_pack(ws, ["something else entirely", "  " + user.upper().replace(" ", "   ")])
    before = ws.list(KIND)
    with pytest.raises(TunesmithError, match=f"1 reviewed item.*items 2; pack {pack}.*--drop-overlap"):
        export_reviewed(ws, packs=pack_hashes(ws))
    assert ws.list(KIND) == before  # nothing written
    res = export_reviewed(ws, packs=pack_hashes(ws), drop_overlap=True)
    assert res.overlap == [2] and res.packs == [pack]
    assert [r["meta"]["review_item"] for r in _read(res.path)] == [1, 4]
    assert json.loads((res.path.parent / "manifest.json").read_text())["overlap_dropped"] == [2]
    assert ("evalpack", pack, "checked_against") in ws.parents(KIND, res.id)
    # a pinned pack is the only one checked
    publish_pack(ws, [user], pack_id="other0123456789a")
    assert [p.pack_id for p in pack_hashes(ws, pinned=pack)] == [pack]


def test_nothing_to_export_says_why(ws, queue):
    queue.enqueue([new_item(1), new_item(2)])
    queue.decide(1, "reject", by="alice", reason="bad_input")
    with pytest.raises(TunesmithError, match="1 item\\(s\\) pending, 1 rejected"):
        export_reviewed(ws, packs=[])


def test_prepare_ingests_the_export(ws, queue, tmp_path):
    from tunesmith.config import load_config
    from tunesmith.data.pipeline import load_split, prepare

    _decide(queue)
    for i in range(6, 30):
        queue.enqueue([new_item(i)])
        queue.decide(i, "approve", by="carol")
    export_reviewed(ws, packs=[], out=tmp_path / "proj" / "data" / "reviewed.jsonl")
    (tmp_path / "proj" / "tunesmith.yaml").write_text(
        "data:\n  sources: [{path: data/reviewed.jsonl}]\n  pii: {enabled: false}\n  workers: 1\n"
        "  dedup: {near: {enabled: false}}\n")
    cfg = load_config(tmp_path / "proj")
    result = prepare(cfg)
    kept = [ex for split in ("train", "validation", "test") for ex in load_split(result.path, split)]
    assert len(kept) == 27  # items 1, 2, 4 and 6-29
    ex = next(e for e in kept if e.meta.get("review_item") == 4)
    assert ex.meta["reviewer"] == "bob" and ex.meta["request_id"] == "req-4"
    assert json.loads(ex.answer_text())["category"] == "bug"
    assert [m["role"] for m in ex.messages] == ["system", "user", "assistant"]
    assert SPEC.label_fields == ["category", "urgency", "next_action"]
