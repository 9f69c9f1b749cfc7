"""The alias ledger: every alias move, append-only, in the workspace database.

MLflow's registry keeps only where an alias points now; this ledger keeps every move (when, who,
from which version to which, why, and the gate it was judged by). The current alias table is
derived from it (the view ``current_aliases``), and so is what ``rollback`` goes back to.
Triggers make the table refuse UPDATE and DELETE: a move is undone by another move.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from dataclasses import dataclass

from tunesmith.errors import TunesmithError
from tunesmith.registry.records import AliasMove
from tunesmith.workspace import Workspace, append_only, transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS alias_moves (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    by TEXT NOT NULL,
    alias TEXT NOT NULL,
    from_model TEXT,                 -- NULL when the alias is set for the first time
    to_model TEXT NOT NULL,
    action TEXT NOT NULL CHECK (action IN ('promote', 'rollback')),
    reason TEXT,
    forced INTEGER NOT NULL DEFAULT 0,
    gate_eval TEXT,                  -- the eval whose gate the move was judged by
    gate_pack TEXT,
    gate_passed INTEGER
);
CREATE INDEX IF NOT EXISTS alias_moves_by_alias ON alias_moves (alias, seq);
CREATE VIEW IF NOT EXISTS current_aliases AS
    SELECT m.alias, m.to_model AS model_id, m.at, m.seq FROM alias_moves m
    WHERE m.seq = (SELECT MAX(seq) FROM alias_moves WHERE alias = m.alias);
""" + append_only("alias_moves", "alias_moves is an append-only ledger")
COLUMNS = ("seq", "at", "by", "alias", "from_model", "to_model", "action", "reason", "forced",
           "gate_eval", "gate_pack", "gate_passed")


@dataclass(frozen=True, slots=True)
class Gate:
    """The gate columns of a ledger row."""

    eval_id: str | None = None
    pack: str | None = None
    passed: bool | None = None


class AliasLedger:
    """Append-only alias moves of one workspace."""

    def __init__(self, ws: Workspace):
        self.ws = ws
        db = sqlite3.connect(ws.db_path, timeout=30)
        try:
            db.executescript(SCHEMA)
        finally:
            db.close()

    def _connect(self, *, write: bool = False) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        # a write reads the current state and appends in one transaction that holds the
        # write lock from the start: two concurrent promotions cannot both see the same "from"
        return transaction(self.ws.db_path, write=write)

    def moves(self, alias: str | None = None, model_id: str | None = None) -> list[AliasMove]:
        """Every move (of one alias, or touching one version), oldest first."""
        query, args = f"SELECT {', '.join(COLUMNS)} FROM alias_moves", []
        where = []
        if alias is not None:
            where.append("alias = ?")
            args.append(alias)
        if model_id is not None:
            where.append("(to_model = ? OR from_model = ?)")
            args += [model_id, model_id]
        if where:
            query += " WHERE " + " AND ".join(where)
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY seq", args).fetchall()
        return [_move(r) for r in rows]

    def current(self) -> dict[str, str]:
        """alias -> model id, derived from the ledger (the latest move of each alias)."""
        with self._connect() as db:
            rows = db.execute("SELECT alias, model_id FROM current_aliases ORDER BY alias").fetchall()
        return dict(rows)

    def append(self, alias: str, to_model: str, *, expected_from: str | None, action: str, by: str,
               reason: str | None = None, forced: bool = False, gate: Gate | None = None) -> AliasMove:
        """Record one move; refuses when the alias moved since the caller looked (``expected_from``)."""
        gate = gate or Gate()
        with self._connect(write=True) as db:
            row = db.execute("SELECT model_id FROM current_aliases WHERE alias = ?", (alias,)).fetchone()
            now_at = row[0] if row else None
            if now_at != expected_from:
                raise TunesmithError(
                    f"alias '{alias}' moved to {now_at} while this command ran (it expected {expected_from}); "
                    "look at `tunesmith models` and run the command again")
            cur = db.execute(
                "INSERT INTO alias_moves (at, by, alias, from_model, to_model, action, reason, forced,"
                " gate_eval, gate_pack, gate_passed) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (time.time(), by, alias, expected_from, to_model, action, reason, int(forced),
                 gate.eval_id, gate.pack, None if gate.passed is None else int(gate.passed)))
            seq = cur.lastrowid
            stored = db.execute(f"SELECT {', '.join(COLUMNS)} FROM alias_moves WHERE seq = ?", (seq,)).fetchone()
        return _move(stored)


def held_before(moves: list[AliasMove]) -> list[str]:
    """The versions an alias held, as a stack whose top is the current one: a promotion pushes,
    a rollback pops. ``rollback`` goes to the entry below the top, so rolling back twice after
    three promotions lands on the first version, not back on the second."""
    stack: list[str] = []
    for m in moves:
        if m.action == "rollback" and stack:
            stack.pop()
        if not stack or stack[-1] != m.to_model:
            stack.append(m.to_model)
    return stack


def _move(row: tuple) -> AliasMove:
    d = dict(zip(COLUMNS, row, strict=True))
    d["forced"] = bool(d["forced"])
    d["gate_passed"] = None if d["gate_passed"] is None else bool(d["gate_passed"])
    return AliasMove(**d)
