"""A workspace with a review queue, request-log rows and an eval pack, built by hand (nothing
is trained or served)."""

from __future__ import annotations

import json

import pytest

from tunesmith.config import OutputSpec
from tunesmith.review.queue import FieldValue, NewItem, ReviewQueue
from tunesmith.review.routing import Decision
from tunesmith.workspace import Workspace

CATEGORIES = ["billing", "bug", "security", "account"]
URGENCIES = ["low", "high", "critical"]
ACTIONS = ["refund", "fix", "escalate_security", "reset"]
SPEC = OutputSpec(kind="json", label_fields=["category", "urgency", "next_action"], json_schema={
    "type": "object", "properties": {"category": {"enum": CATEGORIES}, "urgency": {"enum": URGENCIES},
                                     "next_action": {"enum": ACTIONS}}})
SYSTEM = {"role": "system", "content": "You triage support tickets. Answer in JSON."}


def answer(category: str, urgency: str, action: str) -> str:
    return json.dumps({"category": category, "urgency": urgency, "next_action": action})


def ticket(i: int) -> list[dict[str, str]]:
    return [SYSTEM, {"role": "user", "content": f"Ticket {i}: my invoice number {i * 7} is wrong, please help"}]


def new_item(i: int, *, tier: str = "sampled", values: tuple[str, str, str] = ("billing", "low", "refund"),
             version: str = "v1", raw: str | None = None) -> NewItem:
    fields = {name: FieldValue(v, 0.9, tuple(allowed)) for name, v, allowed in
              zip(("category", "urgency", "next_action"), values, (CATEGORIES, URGENCIES, ACTIONS), strict=True)}
    if raw is not None:  # an answer that did not parse
        fields = {k: FieldValue(None, None, f.allowed) for k, f in fields.items()}
    return NewItem(f"req-{i}", version, "json", ticket(i), raw if raw is not None else answer(*values), fields,
                   Decision(tier, "why", 0.9, 0.8))  # type: ignore[arg-type]


@pytest.fixture
def ws(tmp_path) -> Workspace:
    return Workspace(tmp_path / "ws")


@pytest.fixture
def queue(ws) -> ReviewQueue:
    return ReviewQueue(ws.db_path)


def publish_pack(ws: Workspace, user_texts: list[str], pack_id: str = "pack0123456789ab") -> str:
    """An eval pack artifact with the files and meta evaluate/pack.py writes (cases only)."""
    cases = [{"id": f"case{i}", "messages": [SYSTEM, {"role": "user", "content": t},
                                             {"role": "assistant", "content": answer("billing", "low", "refund")}],
              "text": None, "meta": {}} for i, t in enumerate(user_texts)]
    with ws.staging() as staging:
        (staging / "pack.json").write_text(json.dumps({"cases": cases, "probes": [], "general_qa": [],
                                                       "general_text": [], "settings": {}}))
        ws.publish(staging, "evalpack", pack_id, meta={"cases": len(cases)})
    return pack_id


def log_rows(ws: Workspace, rows: list[dict]) -> None:
    """Request-log rows with the columns the server writes for review (messages, confidence, decision)."""
    from tunesmith.serve import requestlog

    db = requestlog.connect(ws.db_path)
    try:
        with db:
            for i, r in enumerate(rows):
                db.execute("INSERT INTO request_log (request_id, choice, created, version, prompt, answer, status, "
                           "messages, confidence, decision) VALUES (?, 0, ?, ?, 'rendered', ?, ?, ?, ?, ?)",
                           (r["request_id"], 1000.0 + i, r.get("version", "v1"), r["answer"], r.get("status", 200),
                            json.dumps(r["messages"]) if r.get("messages") else None,
                            json.dumps(r["confidence"]) if r.get("confidence") else None,
                            json.dumps(r["decision"]) if r.get("decision") else None))
    finally:
        db.close()
