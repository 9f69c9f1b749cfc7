"""Alarms: monitor findings recorded in the workspace database as retrain triggers.

``monitor_alarms`` is append-only (triggers refuse UPDATE and DELETE): a retrain trigger is
evidence, and evidence is not edited. Running the monitor again over the same window (cron
every hour, traffic quiet) does not record the same alarm twice: an alarm of the same kind,
window and reference already recorded is returned instead.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.workspace import append_only, connect_db

SCHEMA = """
CREATE TABLE IF NOT EXISTS monitor_alarms (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    kind TEXT NOT NULL,              -- input_drift | output_drift | quality
    checks TEXT NOT NULL,            -- JSON list of the checks that alarmed
    window TEXT NOT NULL,            -- the traffic window (or the reviewed answers) it is about
    window_start REAL,
    window_end REAL,
    n_current INTEGER,
    reference TEXT NOT NULL,
    versions TEXT,                   -- JSON {model version: requests in the window}
    detail TEXT,                     -- JSON: the alarming findings
    action TEXT NOT NULL DEFAULT 'retrain'
);
""" + append_only("monitor_alarms")
COLUMNS = ("seq", "time", "kind", "checks", "window", "window_start", "window_end", "n_current", "reference",
           "versions", "detail", "action")


@dataclass(frozen=True, slots=True)
class Alarm:
    kind: str
    checks: list[str]
    window: str
    window_start: float | None
    window_end: float | None
    n_current: int
    reference: str
    versions: dict[str, int]
    detail: dict[str, Any]
    seq: int | None = None
    time: float | None = None
    new: bool = True  # False: the same alarm was already recorded by an earlier run


def record(db_path: Path, alarm: Alarm) -> Alarm:
    """Append ``alarm`` (or return the identical one already there, ``new=False``)."""
    with connect_db(db_path) as db:
        db.executescript(SCHEMA)
        same = db.execute(
            "SELECT seq, time FROM monitor_alarms WHERE kind = ? AND window = ? AND reference = ? "
            "AND window_start IS ? AND window_end IS ? ORDER BY seq LIMIT 1",
            (alarm.kind, alarm.window, alarm.reference, alarm.window_start, alarm.window_end)).fetchone()
        if same:
            return _replace(alarm, seq=same[0], time=same[1], new=False)
        now = time.time()
        cur = db.execute(
            f"INSERT INTO monitor_alarms ({', '.join(COLUMNS[1:-1])}) VALUES ({', '.join('?' * (len(COLUMNS) - 2))})",
            (now, alarm.kind, json.dumps(alarm.checks), alarm.window, alarm.window_start, alarm.window_end,
             alarm.n_current, alarm.reference, json.dumps(alarm.versions), json.dumps(alarm.detail, default=str)))
        return _replace(alarm, seq=cur.lastrowid, time=now, new=True)


def history(db_path: Path, *, kind: str | None = None, limit: int = 100) -> list[Alarm]:
    """Recorded alarms, newest first."""
    if not Path(db_path).exists():
        return []
    with connect_db(db_path) as db:
        db.executescript(SCHEMA)
        where, args = ("WHERE kind = ?", (kind,)) if kind else ("", ())
        rows = db.execute(f"SELECT {', '.join(COLUMNS)} FROM monitor_alarms {where} ORDER BY seq DESC LIMIT ?",
                          (*args, limit)).fetchall()
    return [Alarm(r[2], json.loads(r[3]), r[4], r[5], r[6], r[7], r[8], json.loads(r[9] or "{}"),
                  json.loads(r[10] or "{}"), seq=r[0], time=r[1], new=False) for r in rows]


def _replace(alarm: Alarm, **changes: Any) -> Alarm:
    from dataclasses import replace

    return replace(alarm, **changes)
