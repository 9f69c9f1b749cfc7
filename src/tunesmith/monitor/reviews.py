"""Reviewed answers as the quality monitor sees them: when the decision was made, the tier
the answer was routed to, and whether the reviewer found it wrong.

An answer counts as an error when its latest decision corrected a field or rejected it; an
approval counts as right. Only the ``sampled`` tier is an unbiased sample of auto-approved
traffic (its share is drawn by a hash of the request id), so the CUSUM runs on it alone;
``low_confidence`` and ``mandatory`` answers were chosen *because* they are risky, and their
rates are reported apart.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

ERROR_ACTIONS = frozenset({"correct", "reject"})


@dataclass(frozen=True, slots=True)
class Reviewed:
    decided: float  # unix time of the (latest) decision
    tier: str  # sampled | low_confidence | mandatory
    error: bool


def load_reviewed(db_path: Path) -> list[Reviewed]:
    """Every decided review item of the workspace, oldest decision first ([] before any review)."""
    if not Path(db_path).exists():
        return []
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"review_items", "review_decisions"} <= tables:
            return []
        rows = db.execute(
            "SELECT d.time, i.tier, d.action FROM review_decisions d JOIN review_items i ON i.id = d.item_id "
            "WHERE d.seq = (SELECT MAX(seq) FROM review_decisions WHERE item_id = d.item_id) ORDER BY d.time"
        ).fetchall()
    except sqlite3.Error:
        return []
    finally:
        db.close()
    return [Reviewed(float(t), str(tier), action in ERROR_ACTIONS) for t, tier, action in rows]
