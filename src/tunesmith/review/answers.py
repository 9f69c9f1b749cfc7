"""An answer as reviewers see it: its label fields, a correction applied to it, and the hash of
its input that the export compares with the frozen eval pack.

The fields of an answer depend on the project's resolved output spec (``eval.output``, frozen in
the eval pack): a JSON answer has one field per ``label_fields`` entry (dotted names reach into
nested objects), a label answer has the one field ``label``, a free-text answer the one field
``answer`` (no allowed values: any correction goes).
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

from tunesmith.config import OutputSpec
from tunesmith.evaluate.metrics import _field_value, extract_json, parse_label
from tunesmith.evaluate.outputs import allowed_values

LABEL_FIELD = "label"
TEXT_FIELD = "answer"


def field_names(spec: OutputSpec) -> list[str]:
    if spec.kind == "json" and spec.label_fields:
        return list(spec.label_fields)
    return [LABEL_FIELD] if spec.kind == "label" else [TEXT_FIELD]


def answer_kind(spec: OutputSpec) -> str:
    """``json`` (label fields in a JSON object), ``label`` or ``text``."""
    if spec.kind == "json" and spec.label_fields:
        return "json"
    return "label" if spec.kind == "label" else "text"


def allowed(spec: OutputSpec, field: str) -> list[str]:
    if spec.kind == "label":
        return list(spec.labels or [])
    return allowed_values(spec, field) if field != TEXT_FIELD else []


def answer_fields(spec: OutputSpec, answer: str) -> dict[str, str | None] | None:
    """The answer's field values; None when a JSON answer holds no JSON object at all. A field
    that is missing (or a label not among the labels) is None."""
    kind = answer_kind(spec)
    if kind == "json":
        obj = extract_json(answer).value
        if not isinstance(obj, dict):
            return None
        return {f: _field_value(obj, f) for f in spec.label_fields}
    if kind == "label":
        return {LABEL_FIELD: parse_label(answer, list(spec.labels or []))[0]}
    return {TEXT_FIELD: answer}


def corrected_answer(kind: str, answer: str, fields: Sequence[str], values: Mapping[str, str | None]) -> str:
    """The answer text with ``values`` in place of the model's: a JSON answer keeps its other
    keys and their order (an answer that did not parse is rebuilt from the fields), a label
    answer is the label, a text answer the text."""
    if kind == "label":
        return str(values[LABEL_FIELD])
    if kind == "text":
        return str(values[TEXT_FIELD])
    obj = extract_json(answer).value
    obj = json.loads(json.dumps(obj)) if isinstance(obj, dict) else {}
    for name in fields:
        _set(obj, name, values[name])
    return json.dumps(obj, ensure_ascii=False)


def _set(obj: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = obj
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[leaf] = value


_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """What two inputs must share to count as the same: NFKC, case-folded, whitespace collapsed."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def input_hash(messages: Sequence[Mapping[str, str]]) -> str:
    """sha256 of the normalised user turns. System prompts are left out: a served request may
    carry the project's system prompt or not, and the eval pack's cases carry it; the user's
    words decide whether a reviewed answer is an eval case."""
    users = [normalise(m.get("content") or "") for m in messages if m.get("role") == "user"]
    return hashlib.sha256("\n\x1e".join(users).encode()).hexdigest()
