"""`tunesmith review ...` through typer, on a project whose request log has routed answers."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from review.conftest import SPEC, answer, log_rows, publish_pack, ticket
from tunesmith.cli import app
from tunesmith.review.routing import Decision
from tunesmith.workspace import Workspace

runner = CliRunner()


@pytest.fixture
def proj(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "t.jsonl").write_text('{"prompt": "a b c", "completion": "d e f"}\n')
    cfg = {"data": {"sources": [{"path": "data/t.jsonl"}]},
           "eval": {"output": SPEC.model_dump(mode="json", exclude_defaults=True)},
           "review": {"rules": [{"category": "security"}], "threshold": 0.8, "sample_rate": 0.0}}
    (tmp_path / "tunesmith.yaml").write_text(yaml.safe_dump(cfg))
    ws = Workspace(tmp_path / ".tunesmith")
    conf = {"category": 0.95, "urgency": 0.9, "next_action": 0.95}
    log_rows(ws, [
        {"request_id": "r1", "messages": ticket(1), "answer": answer("security", "high", "escalate_security"),
         "confidence": conf},
        {"request_id": "r2", "messages": ticket(2), "answer": answer("billing", "low", "refund"),
         "confidence": {**conf, "urgency": 0.3}},
        {"request_id": "r3", "messages": ticket(3), "answer": answer("billing", "low", "refund"), "confidence": conf},
        {"request_id": "r4", "messages": ticket(4), "answer": answer("bug", "low", "fix"),
         "decision": Decision("sampled", "quality-control sample").to_dict()},
    ])
    return tmp_path, ws


def invoke(root, *args):
    return runner.invoke(app, ["review", *args, "-c", str(root)])


def test_the_review_loop_from_the_command_line(proj):
    root, _ = proj
    res = invoke(root, "enqueue", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) | {"tiers": None} == {
        "answers": 4, "queued": 3, "already_queued": 0, "auto": 1, "no_decision": 0, "no_input": 0, "tiers": None}
    listed = invoke(root, "list")
    assert listed.exit_code == 0 and "mandatory" in listed.output and "low_confidence" in listed.output
    items = json.loads(invoke(root, "list", "--json").stdout)["items"]
    assert [(i["request_id"], i["tier"]) for i in items] == [
        ("r1", "mandatory"), ("r2", "low_confidence"), ("r4", "sampled")]
    shown = invoke(root, "show", "2")
    assert "confidence 0.300" in shown.output and "allowed: low, high, critical" in shown.output
    assert invoke(root, "approve", "1", "--by", "ann").exit_code == 0
    res = invoke(root, "correct", "r2", "urgency=high", "--by", "ann", "--reason", "wrong_label", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["changes"] == {"urgency": {"from": "low", "to": "high"}}
    assert invoke(root, "reject", "3", "--reason", "off_topic", "--by", "ann").exit_code == 0
    assert invoke(root, "approve", "1", "--by", "ben").exit_code == 0
    ag = json.loads(invoke(root, "agreement", "--json").stdout)
    assert (ag["items"], ag["item_agreement"]) == (1, 1.0)
    res = invoke(root, "export", "--out", str(root / "data" / "reviewed.jsonl"), "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert (data["records"], data["approved"], data["corrected"], data["rejected"]) == (2, 1, 1, 1)
    lines = (root / "data" / "reviewed.jsonl").read_text().splitlines()
    assert [json.loads(x)["meta"]["request_id"] for x in lines] == ["r1", "r2"]
    show = json.loads(invoke(root, "show", "1", "--json").stdout)
    assert [d["by"] for d in show["decisions"]] == ["ann", "ben"]


def test_bad_decisions_exit_2_with_a_clear_message_and_leave_the_audit_intact(proj):
    root, ws = proj
    invoke(root, "enqueue")
    assert invoke(root, "approve", "1", "--by", "ann").exit_code == 0
    from tunesmith.review.queue import ReviewQueue

    before = ReviewQueue(ws.db_path).audit()
    for args, message in [
        (("approve", "99", "--by", "ann"), "no review item '99'"),
        (("approve", "1", "--by", "ann"), "already decided by ann"),
        (("correct", "2", "urgency=urgent", "--by", "ann"), "allowed: low, high, critical"),
        (("correct", "2", "urgency", "--by", "ann"), "FIELD=VALUE"),
        (("reject", "2", "--reason", "because", "--by", "ann"), "unknown reason code 'because'"),
    ]:
        res = invoke(root, *args)
        assert res.exit_code == 2, res.output
        assert message in " ".join(res.output.split()), res.output
    assert ReviewQueue(ws.db_path).audit() == before


def test_export_refuses_eval_pack_overlap_unless_told(proj):
    root, ws = proj
    invoke(root, "enqueue")
    invoke(root, "approve", "1", "--by", "ann")
    publish_pack(ws, [ticket(1)[1]["content"]])
    res = invoke(root, "export")
    assert res.exit_code == 2 and "--drop-overlap" in res.output and "Nothing was written" in res.output
    invoke(root, "approve", "3", "--by", "ann")
    res = invoke(root, "export", "--drop-overlap")
    assert res.exit_code == 0, res.output
    assert "1 records" in res.output and "1 overlapping the eval pack" in res.output


def test_reject_without_a_reason_lists_the_codes(proj):
    root, _ = proj
    invoke(root, "enqueue")
    res = invoke(root, "reject", "1", "--by", "ann")
    assert res.exit_code == 2 and "one of: wrong_label, policy_change" in " ".join(res.output.split())
