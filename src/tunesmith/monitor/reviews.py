"""Reviewed answers as the quality monitor sees them: when the decision was made, the tier the
answer was routed to, and whether the reviewer found the model wrong.

The latest decision on an item counts (:func:`tunesmith.review.queue.final_decision`, the same
rule as the training export), each item once. A correction is an error; a rejection is an error
unless its reason says the *input* was the problem (``bad_input``, ``off_topic``: no answer
would have been right); an approval is right.

Only the ``sampled`` tier is an unbiased sample of auto-approved traffic (drawn by a hash of the
request id), so the CUSUM runs on it alone; ``low_confidence`` and ``mandatory`` answers were
chosen *because* they are risky, and their rates are reported apart.

Per label field, a reviewed answer is wrong where the reviewer corrected that field, or
everywhere when it rejected the answer as a model error: which fields the errors come from
(a policy change shows in ``next_action``, a new product in ``category``) without a chart each,
whose false alarms would add up.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

NOT_MODEL_ERRORS = frozenset({"bad_input", "off_topic"})


@dataclass(frozen=True, slots=True)
class Reviewed:
    decided: float  # unix time of the decision that counts
    tier: str  # sampled | low_confidence | mandatory
    error: bool
    fields: tuple[str, ...] = ()  # the answer's label fields
    wrong: tuple[str, ...] = ()  # those the reviewer found wrong
    request_id: str = ""  # the logged request it answered (choice 0 joins the traffic windows)
    choice: int = 0
    version: str = ""  # the model version that answered ("" when the log did not say)


def wrong_fields(fields: tuple[str, ...], action: str, reason: str | None, changed: tuple[str, ...]) -> tuple[str, ...]:
    """The label fields a decision counts as the model's errors."""
    if action == "correct":
        return tuple(f for f in fields if f in changed)
    return fields if is_error(action, reason) else ()


def is_error(action: str, reason: str | None) -> bool:
    return action == "correct" or (action == "reject" and reason not in NOT_MODEL_ERRORS)


def load_reviewed(db_path: Path) -> list[Reviewed]:
    """Every decided review item of the workspace, oldest decision first ([] before any review)."""
    from tunesmith.review.queue import ReviewQueue, final_decision

    if not Path(db_path).exists():
        return []
    out = []
    for item in ReviewQueue(db_path).items(status="decided"):
        d = final_decision(item)
        if d is not None:
            fields = tuple(item.fields)
            out.append(Reviewed(d.at, item.tier, is_error(d.action, d.reason), fields,
                                wrong_fields(fields, d.action, d.reason, tuple(d.changes)), item.request_id,
                                item.choice, item.model_version or ""))
    return sorted(out, key=lambda r: r.decided)
