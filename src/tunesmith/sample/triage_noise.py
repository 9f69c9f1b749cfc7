"""The dirt real helpdesk exports carry, planted on purpose and counted: inconsistent labels,
mojibake, exact and near duplicates, junk rows and malformed lines.

Each function changes one thing and says what it changed, so the generator's summary can
report exactly what a data-preparation run should find.
"""

from __future__ import annotations

import json
import random
import re

from tunesmith.sample.triage_policy import ACTIONS, CATEGORIES, URGENCIES, Triage
from tunesmith.sample.triage_render import DISCLAIMER, GREETINGS, add_typos

# Plausible slips a tired labeller makes: the neighbouring action or category.
_ACTION_SLIPS = {
    "issue_refund": "offer_store_credit", "offer_store_credit": "issue_refund",
    "reship_order": "answer_question", "answer_question": "reship_order",
    "escalate_security": "reset_access", "reset_access": "escalate_security",
    "escalate_engineering": "send_workaround", "send_workaround": "escalate_engineering",
}
_CATEGORY_SLIPS = {
    "known_issue": "technical_issue", "technical_issue": "known_issue", "billing": "refund",
    "refund": "billing", "security": "account_access", "account_access": "security",
    "shipping": "refund", "general_inquiry": "technical_issue",
}
assert set(_ACTION_SLIPS) == set(ACTIONS) and set(_CATEGORY_SLIPS) == set(CATEGORIES)


def slip_label(rng: random.Random, label: Triage) -> Triage:
    """The label with one field changed to a neighbouring value (a labelling mistake)."""
    field = rng.choice(("category", "urgency", "next_action"))
    if field == "category":
        return Triage(_CATEGORY_SLIPS[label.category], label.urgency, label.next_action)
    if field == "next_action":
        return Triage(label.category, label.urgency, _ACTION_SLIPS[label.next_action])
    level = URGENCIES.index(label.urgency)
    level = level + 1 if level == 0 or (level < len(URGENCIES) - 1 and rng.random() < 0.5) else level - 1
    return Triage(label.category, URGENCIES[level], label.next_action)


# cp1252 leaves five bytes undefined; a sloppy decoder passes them through as latin-1.
_CP1252_HOLES = {0x81, 0x8D, 0x8F, 0x90, 0x9D}


def mojibake(text: str) -> str:
    """UTF-8 text decoded as Windows-1252 (`José` -> `JosÃ©`, `’` -> `â€™`)."""
    return "".join(
        chr(b) if b in _CP1252_HOLES else bytes([b]).decode("cp1252")
        for b in text.encode("utf-8")
    )


# --------------------------------------------------------------------------- near duplicates
_FOLLOW_UPS = ("Any update?", "Thanks in advance!", "Please get back to me.", "Still waiting.")


def edit_body(rng: random.Random, body: str) -> str:
    """A small edit: a different greeting, one added line, or the last paragraph removed."""
    first, _, rest = body.partition("\n")
    paragraphs = body.split("\n\n")
    ops = ["append"]
    if first in GREETINGS and rest:
        ops.append("greeting")
    if len(paragraphs) > 2:
        ops.append("drop_last")
    op = rng.choice(ops)
    if op == "greeting":
        return rng.choice([g for g in GREETINGS if g != first]) + "\n" + rest
    if op == "drop_last":
        return "\n\n".join(paragraphs[:-1])
    return body + "\n\n" + rng.choice(_FOLLOW_UPS)


def retype_body(rng: random.Random, body: str, protected: set[str]) -> str:
    """The same message typed again, with one new typo."""
    edited = add_typos(rng, body, 1, protected)
    return edited if edited != body else body + rng.choice((" ", "\n")) + rng.choice(_FOLLOW_UPS)


def swap_values(text: str, swaps: list[tuple[str, str]]) -> str:
    """Replace planted personal data (any case, straight or curly apostrophes): the same
    template letter sent by another customer."""
    for old, new in swaps:
        for variant in {old, old.replace("'", "’")}:
            text = re.sub(re.escape(variant), lambda _m, new=new: new, text, flags=re.IGNORECASE)
    return text


def word_shingles(text: str, n: int = 5) -> set[tuple[str, ...]]:
    words = re.findall(r"\w+", text.lower())
    return {tuple(words[i:i + n]) for i in range(max(1, len(words) - n + 1))}


def jaccard(a: str, b: str, n: int = 5) -> float:
    """Word n-gram Jaccard similarity: what MinHash near-dedup estimates."""
    sa, sb = word_shingles(a, n), word_shingles(b, n)
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


# --------------------------------------------------------------------------- junk
JUNK_KINDS = ("empty", "test", "boilerplate", "auto_reply", "garbled", "placeholder_answer")
_JUNK_TEXT = {
    "empty": ("", " ", "\n\n"),
    "test": ("test", "testing 123", "asdf", "Test ticket, please ignore", "."),
    "boilerplate": (
        DISCLAIMER, "Sent from my iPhone",
        "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.",
        "Click here to unsubscribe from these notifications.",
    ),
    "auto_reply": (
        "I am out of the office until Monday with limited access to email. For urgent "
        "matters please contact reception.",
        "Automatic reply: Thank you for your message. I am currently on leave.",
    ),
}
PLACEHOLDER_ANSWERS = ("n/a", "TODO", "", "-", "see above")


def junk_text(rng: random.Random, kind: str, real_text: str) -> str:
    """The user text of a junk row; `garbled` damages a real ticket beyond repair."""
    if kind == "garbled":
        return "".join("\ufffd" if ch.isalpha() and rng.random() < 0.2 else ch
                       for ch in real_text)
    if kind == "placeholder_answer":
        return real_text
    return rng.choice(_JUNK_TEXT[kind])


def junk_answer(rng: random.Random, kind: str, generic: str) -> str:
    """What the helpdesk stored as the triage of a junk row."""
    if kind == "placeholder_answer" or rng.random() < 0.5:
        return rng.choice(PLACEHOLDER_ANSWERS)
    return generic  # an agent closed it with the catch-all label


# --------------------------------------------------------------------------- malformed lines
MALFORMED_KINDS = ("truncated", "truncated", "truncated", "array", "array", "no_messages",
                   "no_messages", "messages_string", "missing_content", "stray_text")


def malformed_line(rng: random.Random, kind: str, record: dict) -> str:
    """One bad JSONL line made from a good record: what broken exporters and hand edits leave."""
    good = json.dumps(record, ensure_ascii=False)
    if kind == "truncated":
        return good[: rng.randrange(len(good) // 4, len(good) - 2)]
    if kind == "array":
        return json.dumps(record["messages"], ensure_ascii=False)
    if kind == "no_messages":
        return json.dumps({k: v for k, v in record.items() if k != "messages"}, ensure_ascii=False)
    if kind == "messages_string":
        flat = "\n".join(m["content"] for m in record["messages"])
        return json.dumps({**record, "messages": flat}, ensure_ascii=False)
    if kind == "missing_content":
        broken = [dict(m) for m in record["messages"]]
        del broken[-1]["content"]
        return json.dumps({**record, "messages": broken}, ensure_ascii=False)
    return rng.choice(("--- export page 2 of 3 ---", "ticket_id,customer_id,messages"))
