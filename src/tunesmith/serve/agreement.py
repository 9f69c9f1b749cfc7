"""Agreement between two versions' answers, per label field.

A deployment that classifies or extracts answers with labels: a JSON object (``{"category":
"billing", "urgency": "high"}``) or a bare label (``billing``). :func:`labels` reads an answer
into ``{field: value}``: each top-level scalar field of a JSON object, else the whole answer
(stripped) as the field ``answer``. Lists and nested objects are not labels and are skipped.

Two ways to compare a challenger with the champion:

- **paired** (shadow): both answered the same request; per field, the share of pairs whose
  values are equal (:func:`paired_agreement`). A field one side lacks counts as a disagreement.
- **distributional** (canary): the two answered different requests, so only the value
  distributions can be compared: the total variation distance between them, per field
  (:func:`label_distance`: 0 = the same distribution, 1 = disjoint). An answer without the
  field counts as the value "missing", so a challenger that drops a field is far away.

Free-text answers make every value distinct (agreement near 0, distance near 1): the checks on
these numbers are off unless configured (``min_agreement``, ``max_label_distance``).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

Labels = dict[str, Any]
PLAIN = "answer"  # the field a non-JSON answer is read into
_MISSING = "\x00missing"


def labels(text: str, fields: Sequence[str] | None = None) -> Labels:
    """``{field: value}`` of one answer (only ``fields`` when given)."""
    try:
        value = json.loads(text)
    except (ValueError, TypeError):
        value = text.strip() if isinstance(text, str) else None
    if isinstance(value, dict):
        found = {k: _norm(v) for k, v in value.items() if _scalar(v)}
    elif _scalar(value):
        found = {PLAIN: _norm(value)}
    else:
        found = {PLAIN: text.strip()}  # a JSON list: the text is the label
    return found if fields is None else {k: v for k, v in found.items() if k in fields}


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, str | int | float | bool)


def _norm(v: Any) -> Any:
    return v.strip() if isinstance(v, str) else v


def _key(v: Any) -> str:
    """Hashable and type-exact: 1 and "1" and True stay different values."""
    return json.dumps(v, sort_keys=True)


@dataclass(frozen=True, slots=True)
class FieldAgreement:
    """One label field: ``answers`` compared (the challenger's answers, or pairs, that carry or
    should carry it), ``agreement`` (paired only: share equal to the champion's), ``distance``
    (total variation distance between the two sides' value distributions)."""

    answers: int
    agreement: float | None
    distance: float | None


def paired_agreement(pairs: Iterable[tuple[Labels, Labels]]) -> dict[str, FieldAgreement]:
    """Per field, over (champion, challenger) answers to the same requests: the share of pairs
    with equal values (among pairs where either side has the field), and the distance between
    the two sides' distributions."""
    pairs = list(pairs)
    fields = sorted({f for a, b in pairs for f in (*a, *b)})
    result = {}
    for f in fields:
        both = [(a, b) for a, b in pairs if f in a or f in b]
        equal = sum(f in a and f in b and _key(a[f]) == _key(b[f]) for a, b in both)
        result[f] = FieldAgreement(len(both), equal / len(both),
                                   _tvd([a for a, _ in pairs], [b for _, b in pairs], f))
    return result


def label_distance(champion: Sequence[Labels], challenger: Sequence[Labels]) -> dict[str, FieldAgreement]:
    """Per field, the total variation distance between the champion's and the challenger's
    value distributions (each over all of its answers; no field = the value "missing")."""
    if not champion or not challenger:
        return {}
    fields = sorted({f for side in (champion, challenger) for answer in side for f in answer})
    return {f: FieldAgreement(sum(f in b for b in challenger), None, _tvd(champion, challenger, f)) for f in fields}


def _tvd(a: Sequence[Labels], b: Sequence[Labels], field: str) -> float | None:
    if not a or not b:
        return None
    pa = Counter(_key(x[field]) if field in x else _MISSING for x in a)
    pb = Counter(_key(x[field]) if field in x else _MISSING for x in b)
    return 0.5 * sum(abs(pa[v] / len(a) - pb[v] / len(b)) for v in pa.keys() | pb.keys())
