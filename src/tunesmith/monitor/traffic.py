"""What the monitor compares: a window of logged traffic and its reference, as plain records.

The request log stores the *rendered* prompt (chat-template markers, system prompt and all),
the training snapshot stores messages. Comparing the two as they are would report the
template as drift, so both sides are reduced to the same thing: the user turns' text. From a
rendered prompt it is cut out by the markers of the common templates (ChatML, Llama 3, Gemma,
Mistral ``[INST]``, and tunesmith's alpaca/plain fallbacks); a prompt in none of them is kept
whole (and counted, so the report can say so). The reference's user turns go through the
request log's own PII scrubber, so ``<PERSON>`` on one side meets ``<PERSON>`` on the other.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.errors import TunesmithError

# (start of a user turn, end of it) for the templates we know; the last group wins per prompt.
_TURNS = [
    re.compile(r"<\|im_start\|>user\n(.*?)(?:<\|im_end\|>|$)", re.S),  # ChatML (SmolLM2, Qwen)
    re.compile(r"<\|start_header_id\|>user<\|end_header_id\|>\n\n(.*?)(?:<\|eot_id\|>|$)", re.S),  # Llama 3
    re.compile(r"<start_of_turn>user\n(.*?)(?:<end_of_turn>|$)", re.S),  # Gemma
    re.compile(r"\[INST\](.*?)\[/INST\]", re.S),  # Mistral / Llama 2
    re.compile(r"### Instruction:\n(.*?)(?:\n\n### Response:|$)", re.S),  # tunesmith alpaca fallback
    re.compile(r"(?:^|\n)User:\n(.*?)(?:\n\nAssistant:|$)", re.S),  # tunesmith plain fallback
]


class NotEnoughTraffic(TunesmithError):
    """A window too small to test: not an alarm, nothing recorded (the CLI exits 2)."""


def user_text(prompt: str) -> tuple[str, bool]:
    """(the user turns of a rendered prompt, whether a known template matched)."""
    for pattern in _TURNS:
        turns = [t.strip() for t in pattern.findall(prompt)]
        if turns:
            return "\n".join(turns), True
    return prompt.strip(), False


@dataclass(frozen=True, slots=True)
class Record:
    """One request as the monitor sees it (one answer per request: choice 0)."""

    request_id: str
    created: float
    text: str  # user turns
    answer: str | None
    version: str | None = None
    confidence: float | None = None
    tier: str | None = None  # its review routing (auto | sampled | low_confidence | mandatory)


@dataclass
class Window:
    """A sample of requests and where it came from."""

    label: str  # "requests 1201-1700 (2026-12-03 09:00 .. 10:00)" or "snapshot abc123 (train)"
    records: list[Record]
    start: float | None = None
    end: float | None = None
    unmatched_prompts: int = 0  # prompts in no known chat template (kept whole)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def texts(self) -> list[str]:
        return [r.text for r in self.records]

    @property
    def versions(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.records:
            out[r.version or "?"] = out.get(r.version or "?", 0) + 1
        return out


def _columns(db: sqlite3.Connection) -> set[str]:
    return {row[1] for row in db.execute("PRAGMA table_info(request_log)")}


def traffic_windows(db_path: Path, size: int, *, count: int = 1) -> list[Window]:
    """The latest ``count`` windows of ``size`` answered requests, newest first.

    Answered = HTTP 200 with an answer; one row per request (choice 0); shadow answers are
    left out (the client never saw them, and their prompt is already counted).
    """
    if not Path(db_path).exists():
        return [Window("no traffic", []) for _ in range(count)]
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        cols = _columns(db)
        if not cols:
            return [Window("no traffic", []) for _ in range(count)]
        confidence = "confidence" if "confidence" in cols else "NULL"
        messages = "messages" if "messages" in cols else "NULL"
        decision = "decision" if "decision" in cols else "NULL"
        answered = ("status = 200 AND choice = 0 AND answer IS NOT NULL AND COALESCE(variant, '') != 'shadow'"
                    + f" AND COALESCE(prompt, {messages}) IS NOT NULL"
                    + (" AND shadow_of IS NULL" if "shadow_of" in cols else ""))
        rows = db.execute(
            f"SELECT request_id, created, prompt, {messages}, answer, version, {confidence}, {decision} FROM request_log "
            f"WHERE {answered} ORDER BY created DESC, request_id DESC LIMIT ?", (size * count,)).fetchall()
        total = db.execute(f"SELECT COUNT(*) FROM request_log WHERE {answered}").fetchone()[0]
    finally:
        db.close()
    windows = []
    for k in range(count):
        chunk = list(reversed(rows[k * size:(k + 1) * size]))  # oldest first inside a window
        first = total - k * size - len(chunk) + 1
        windows.append(_window(chunk, first))
    return windows


def _window(rows: Sequence[tuple], first: int) -> Window:
    records, unmatched = [], 0
    for rid, created, prompt, messages, answer, version, conf, decision in rows:
        text, matched = _logged_user_text(prompt, messages)
        unmatched += not matched
        records.append(Record(rid, created, text, answer, version, answer_confidence(conf), routed_tier(decision)))
    if not records:
        return Window("no traffic", [])
    start, end = records[0].created, records[-1].created
    label = f"requests {first}-{first + len(records) - 1} ({_when(start)} .. {_when(end)})"
    return Window(label, records, start, end, unmatched)


def _logged_user_text(prompt: str | None, messages: str | None) -> tuple[str, bool]:
    """The user turns from the logged input turns (servers since the review queue log them),
    else cut out of the rendered prompt."""
    if messages:
        try:
            turns = json.loads(messages)
            users = [m["content"] for m in turns if m.get("role") == "user" and isinstance(m.get("content"), str)]
            if users:
                return "\n".join(u.strip() for u in users), True
        except (ValueError, TypeError, AttributeError, KeyError):
            pass
    return user_text(prompt or "")


def routed_tier(decision: str | None) -> str | None:
    """The review tier of a logged routing decision (JSON ``{"tier": ...}``), None if none."""
    try:
        data = json.loads(decision) if decision else None
    except ValueError:
        return None
    tier = data.get("tier") if isinstance(data, dict) else None
    return tier if isinstance(tier, str) else None


def answer_confidence(value: str | float | None) -> float | None:
    """An answer's confidence: the lowest of its fields' (logged as JSON ``{field: p}``), or a number."""
    if value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        data = json.loads(value)
    except ValueError:
        return None
    if isinstance(data, int | float):
        return float(data)
    if isinstance(data, dict):
        numbers = [float(v) for v in data.values() if isinstance(v, int | float)]
        return min(numbers) if numbers else None
    return None


def _when(ts: float) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ts)) + " UTC"


def snapshot_window(snapshot_dir: Path, snapshot_id: str, *, scrub: Callable[[str], str] | None,
                    limit: int, seed: int) -> Window:
    """The training split's user turns and answers (a seeded sample of ``limit``)."""
    import random

    from tunesmith.data.pipeline import load_split

    examples = [e for e in load_split(snapshot_dir, "train") if any(m["role"] == "user" for m in e.messages)]
    if len(examples) > limit:
        examples = random.Random(seed).sample(examples, limit)
    records = []
    for e in examples:
        text = "\n".join(m["content"] for m in e.messages if m["role"] == "user")
        records.append(Record(e.id, 0.0, scrub(text) if scrub else text, e.answer_text() or None))
    if not records:
        raise TunesmithError(f"snapshot {snapshot_id[:12]} has no chat examples with a user turn to compare "
                             "traffic with; use --reference previous")
    return Window(f"snapshot {snapshot_id[:12]} (train split, {len(records)} examples)", records,
                  meta={"snapshot": snapshot_id})


# --------------------------------------------------------------------------- answers
INVALID = "(unparsed)"


def answer_labels(answer: str | None, fields: Sequence[str], *, whole_label: bool) -> dict[str, str]:
    """The label values of one answer: ``{field: value}`` from a JSON answer's fields, or
    ``{"label": answer}`` when the whole answer is a label. Unreadable -> ``(unparsed)``."""
    if whole_label:
        return {"label": (answer or "").strip() or INVALID}
    try:
        obj = json.loads(answer or "")
    except ValueError:
        obj = None
    if not isinstance(obj, dict):
        return dict.fromkeys(fields, INVALID)
    return {f: str(obj[f]) if isinstance(obj.get(f), str | int | bool) else INVALID for f in fields}
