"""What a rung's answers may be: the label set (given, from the JSON schema's ``enum``, or
inferred from the training answers), the grammar that keeps generation inside it, and the
pre-flight that refuses an eval whose headline metric could never be computed.

The resolved spec is frozen into the eval pack, so a pack scores the same way forever even if
the training data (and so the inferred label set) changes later.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

from tunesmith.config import OutputSpec
from tunesmith.data.example import Example
from tunesmith.errors import TunesmithError
from tunesmith.evaluate.metrics import extract_json, labels_from_schema, score_example

MAX_INFERRED_LABELS = 500  # more distinct answers than this is free text, not a label set


def resolve_output(spec: OutputSpec, train: Sequence[Example]) -> OutputSpec:
    """``spec`` with its label set filled in: ``labels`` for ``kind: label``, ``field_values``
    for each label field whose values the schema does not enumerate.

    Raises:
        TunesmithError: a label set is needed and the training answers do not give one.
    """
    answers = [ex.answer_text().strip() for ex in train if ex.answer_text().strip()]
    update: dict[str, Any] = {}
    if spec.kind == "label" and not spec.labels:
        labels = sorted(Counter(answers))
        if not labels:
            raise TunesmithError("eval.output.kind is label but eval.output.labels is not set and the train "
                                 "split has no answers to take the label set from")
        if len(labels) > MAX_INFERRED_LABELS:
            raise TunesmithError(
                f"eval.output.kind is label but the train split has {len(labels)} distinct answers "
                f"(more than {MAX_INFERRED_LABELS}): is this free text? Set eval.output.labels, or use kind: text")
        update["labels"] = labels
    missing = [f for f in spec.label_fields
               if not labels_from_schema(spec.json_schema, f) and not (spec.field_values or {}).get(f)]
    if missing:
        values: dict[str, set[str]] = {f: set() for f in missing}
        for answer in answers:
            obj = extract_json(answer).value
            if isinstance(obj, dict):
                for f in missing:
                    if isinstance(obj.get(f), str):
                        values[f].add(obj[f])
        empty = [f for f in missing if not values[f]]
        if empty:
            raise TunesmithError(f"eval.output.label_fields {empty}: no training answer has a string value for "
                                 "them, so their allowed values are unknown; list them in the schema's enum")
        update["field_values"] = {**(spec.field_values or {}), **{f: sorted(v) for f, v in values.items()}}
    return spec.model_copy(update=update) if update else spec


def allowed_values(spec: OutputSpec, field: str) -> list[str]:
    return list(labels_from_schema(spec.json_schema, field) or (spec.field_values or {}).get(field) or [])


def answer_schema(spec: OutputSpec) -> dict[str, Any] | None:
    """The JSON schema constrained decoding enforces: the configured schema with every label
    field's allowed values as its ``enum``, or one built from the label fields alone."""
    if spec.kind != "json":
        return None
    schema = json.loads(json.dumps(spec.json_schema)) if spec.json_schema else {
        "type": "object", "required": list(spec.label_fields), "properties": {}}
    props = schema.setdefault("properties", {})
    for field in spec.label_fields:
        values = allowed_values(spec, field)
        prop = props.setdefault(field, {})
        if values and "enum" not in prop:
            prop["enum"] = values
    return schema


def grammar_for(spec: OutputSpec) -> Any:
    """The grammar constrained decoding uses, or None (free text, or decoding not constrained)."""
    if spec.decoding != "constrained":
        return None
    from tunesmith.generate.constrain import Grammar

    if spec.kind == "label" and spec.labels:
        return Grammar.choice(list(spec.labels))
    schema = answer_schema(spec)
    return Grammar.json_schema(schema) if schema is not None else None


def check_headline(spec: OutputSpec, cases: Sequence[Example]) -> None:
    """Fail before any model runs when the headline metric cannot be computed on these cases
    (a reference that is not one of the labels, a label field missing from the answers, ...)."""
    headline = spec.headline_metric()
    if spec.decoding == "rank" and spec.kind != "label":
        raise TunesmithError("eval.output.decoding: rank scores every allowed answer and needs kind: label; "
                             "use constrained for JSON answers")
    for case in cases[:50]:
        ref = case.answer_text()
        try:
            scores = score_example(ref, ref, schema=spec.json_schema, label_fields=spec.label_fields or None,
                                   labels=spec.labels)
        except ValueError as exc:
            raise TunesmithError(f"eval.output: test case {case.id}: {exc}") from None
        if scores.get(headline) is None:
            raise TunesmithError(
                f"eval.output.headline is {headline!r}, but it cannot be computed for test case {case.id} "
                f"(kind {spec.kind}, label_fields {spec.label_fields}, reference {ref[:80]!r}); "
                f"metrics available: {sorted(k for k, v in scores.items() if v is not None)}")
