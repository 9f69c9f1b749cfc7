"""The data of a retrain, without training: corrections through prepare, the held-out new slice,
the rehearsal mix at its ratio, the guards against the frozen pack, and the mix's lineage."""

from __future__ import annotations

import json

import pytest

from retrain.conftest import EVAL, correction, publish_export
from tunesmith.data.pipeline import load_split
from tunesmith.errors import TunesmithError
from tunesmith.review.answers import input_hash


@pytest.fixture
def data_project(tmp_path):
    """The tiny project prepared, its eval pack built and pinned; no model trained."""
    import yaml

    from train.test_trainer import make_project
    from tunesmith.config import load_config
    from tunesmith.evaluate.pack import build_pack
    from tunesmith.workspace import Workspace

    path = make_project(tmp_path / "p")
    data = yaml.safe_load(path.read_text())
    data["eval"] = EVAL
    path.write_text(yaml.safe_dump(data))
    cfg = load_config(path)
    ws = Workspace(cfg.workspace_dir)
    snap = ws.latest("snapshot")
    pack = build_pack(cfg, ws, snap.id, snap.path)
    return cfg, ws, snap.id, pack


def _mix(cfg, ws, snap, pack, add=()):
    from tunesmith.retrain.run import prepare_data

    return prepare_data(cfg, ws, frozen=pack, previous=snap, add=list(add))


def test_the_mix_holds_new_data_corrections_and_rehearsal_at_the_ratio(data_project, tmp_path):
    from tunesmith.retrain.corrections import held_out
    from tunesmith.retrain.mix import MIX_KEY, content_key

    cfg, ws, snap, pack = data_project
    cfg.retrain.rehearsal_ratio = 0.5  # as many old examples as new ones (the default is 0.75)
    frozen_case = pack.cases[0]
    overlapping = {"messages": [m for m in frozen_case.messages], "meta": {"review_item": 999}}
    export = publish_export(ws, [correction(i) for i in range(40)] + [overlapping])
    added = tmp_path / "more.jsonl"
    added.write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": f"parcel {i} of the new gizmo line never arrived, tracking T{i}"},
        {"role": "assistant", "content": "shipping"}]}) + "\n" for i in range(10)))

    fixes, data, new_cfg = _mix(cfg, ws, snap, pack, add=[added])

    # the export re-checked against the frozen pack: the overlapping record is left out and reported
    assert fixes.export_id == export and len(fixes.overlap_frozen) == 1 and fixes.records == 41
    expected_held = sum(held_out(correction(i)["messages"], 0.3) for i in range(40))
    assert fixes.held_out == expected_held and 5 <= expected_held <= 20
    c = data.counts
    assert c["new_slice"] == expected_held and c["correction"] == 40 - expected_held
    # new: the --add examples prepare put in the train split (the split of new records depends on their ids)
    added_train = [ex for ex in load_split(ws.get("snapshot", data.snapshot).path, "train")
                   if "never arrived" in ex.messages[0]["content"]]
    assert c["new"] == len(added_train) >= 5
    # rehearsal: half of the mix, drawn from the previous training split only
    assert c["rehearsal"] == c["new"] + c["correction"] and data.ratio_achieved == pytest.approx(0.5)
    mix_dir = ws.get("snapshot", data.mix_snapshot).path
    train = load_split(mix_dir, "train")
    parts = [ex.meta[MIX_KEY] for ex in train]
    assert parts.count("rehearsal") == c["rehearsal"] and parts.count("correction") == c["correction"]
    previous = {content_key(ex) for ex in load_split(ws.get("snapshot", snap).path, "train")}
    assert all(content_key(ex) in previous for ex in train if ex.meta[MIX_KEY] == "rehearsal")
    assert not any(content_key(ex) in previous for ex in train if ex.meta[MIX_KEY] != "rehearsal")
    # nothing trained or validated on is a frozen-pack case or a held-out correction
    frozen = {input_hash(x.messages) for x in pack.cases}
    held = {input_hash(x.messages) for x in data.new_slice}
    for split in ("train", "validation"):
        inputs = {input_hash(ex.messages) for ex in load_split(mix_dir, split)}
        assert not inputs & frozen and not inputs & held
    assert all(held_out(ex.messages, 0.3) for ex in data.new_slice)
    # lineage: the mix names both snapshots and the export; the manifest records the mix
    parents = set(ws.parents("snapshot", data.mix_snapshot))
    assert {("snapshot", data.snapshot, "mixed_from"), ("snapshot", snap, "rehearsal_from"),
            ("reviewset", export, "corrections_from")} <= parents
    manifest = json.loads((mix_dir / "manifest.json").read_text())
    assert manifest["retrain_mix"]["counts"]["rehearsal"] == c["rehearsal"]
    assert manifest["retrain_mix"]["rehearsal_ratio"] == 0.5 and manifest["retrain_mix"]["previous_snapshot"] == snap
    assert new_cfg.eval.pack == pack.id and new_cfg.data.sources[0].format == "chat"
    # the same inputs again: the same snapshot and mix (nothing re-prepared)
    assert _mix(cfg, ws, snap, pack, add=[added])[1].mix_snapshot == data.mix_snapshot


def test_rehearsal_ratio_zero_trains_on_new_data_only(data_project):
    cfg, ws, snap, pack = data_project
    publish_export(ws, [correction(i) for i in range(30)])
    cfg.retrain.rehearsal_ratio = 0.0
    data = _mix(cfg, ws, snap, pack)[1]
    assert data.counts["rehearsal"] == 0 and data.counts["train"] == data.counts["correction"] > 0


def test_a_new_answer_supersedes_the_old_example_and_a_configured_export_is_replaced(data_project):
    """A correction to an input of the previous training data: the old answer is not rehearsed.
    A review export already among the sources is replaced by the latest one (no item twice)."""
    import yaml

    from tunesmith.config import load_config
    from tunesmith.retrain.corrections import held_out

    cfg, ws, snap, pack = data_project
    previous = load_split(ws.get("snapshot", snap).path, "train")
    old = next(ex for ex in previous if not held_out(ex.messages, 0.3))
    relabel = {"messages": [*[m for m in old.messages if m["role"] != "assistant"],
                            {"role": "assistant", "content": "account" if old.answer_text() != "account" else "billing"}],
               "meta": {"review_item": 500, "review_decision": 1}}
    stale = correction(1, "billing")  # an older decision on item 1, in the project's sources
    (cfg.base_dir / "data" / "reviewed.jsonl").write_text(json.dumps(stale) + "\n")
    path = cfg.base_dir / "tunesmith.yaml"
    data = yaml.safe_load(path.read_text())
    data["data"]["sources"].append({"path": "data/reviewed.jsonl"})
    path.write_text(yaml.safe_dump(data))
    cfg = load_config(path)
    publish_export(ws, [correction(i) for i in range(20)] + [relabel])

    _, mix, _ = _mix(cfg, ws, snap, pack)
    assert mix.replaced_sources == ["data/reviewed.jsonl"]
    assert mix.excluded.get("rehearsal_superseded") == 1
    train = load_split(ws.get("snapshot", mix.mix_snapshot).path, "train")
    answers = [ex.answer_text() for ex in train if input_hash(ex.messages) == input_hash(old.messages)]
    assert answers == [relabel["messages"][-1]["content"]]
    item1 = [ex for ex in train + mix.new_slice if ex.meta.get("review_item") == 1]
    assert [ex.answer_text() for ex in item1] == ["account"]  # the latest decision only


def test_the_held_out_side_of_an_item_is_stable_across_exports_and_near_its_share():
    from tunesmith.retrain.corrections import held_out

    first = [held_out(correction(i)["messages"], 0.3) for i in range(2000)]
    assert abs(sum(first) / 2000 - 0.3) < 0.03
    assert first[:50] == [held_out(correction(i)["messages"], 0.3) for i in range(50)]


def test_no_export_says_how_to_make_one(data_project):
    cfg, ws, snap, pack = data_project
    with pytest.raises(TunesmithError, match="tunesmith review export"):
        _mix(cfg, ws, snap, pack)
    cfg.retrain.corrections = "missing.jsonl"
    with pytest.raises(TunesmithError, match=r"retrain.corrections: .*missing.jsonl does not exist.*review export"):
        _mix(cfg, ws, snap, pack)


def test_a_second_round_counts_each_correction_once_and_keeps_the_held_out_side(data_project):
    """Round 2 rehearses from round 1's mix and reads a cumulative export (round 1's corrections
    again, plus new ones): no example twice, nothing superseded, last round's held-out items
    still held out."""
    from tunesmith.retrain.mix import content_key

    cfg, ws, snap, pack = data_project
    publish_export(ws, [correction(i) for i in range(30)])
    _, first, _ = _mix(cfg, ws, snap, pack)
    publish_export(ws, [correction(i) for i in range(50)])
    _, second, _ = _mix(cfg, ws, first.mix_snapshot, pack)

    train = load_split(ws.get("snapshot", second.mix_snapshot).path, "train")
    keys = [content_key(ex) for ex in train]
    assert len(keys) == len(set(keys))
    items = [ex.meta["review_item"] for ex in train if "review_item" in ex.meta]
    assert len(items) == len(set(items)) and "rehearsal_superseded" not in second.excluded
    held_first = {input_hash(ex.messages) for ex in first.new_slice}
    held_second = {input_hash(ex.messages) for ex in second.new_slice}
    assert held_first < held_second
    assert not held_second & {input_hash(ex.messages) for ex in train}
    assert second.counts["correction"] == 50 - len(held_second)
