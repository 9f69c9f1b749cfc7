"""The workspace: one directory holding everything a project produces.

Layout::

    <workspace>/
      tunesmith.db              SQLite (WAL): runs, artifacts, lineage edges
      artifacts/<kind>/<id>/    content-addressed, immutable once published
      tmp/                      staging area; a crash leaves debris here, never a half artifact

Artifacts are written into ``tmp/`` and published with one ``rename`` (atomic on POSIX), so an
artifact directory either exists complete or not at all.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith import __version__
from tunesmith.errors import TunesmithError

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    stage TEXT NOT NULL,
    status TEXT NOT NULL,            -- running | ok | failed
    config_hash TEXT,
    started REAL NOT NULL,
    finished REAL,
    tunesmith_version TEXT NOT NULL,
    summary TEXT                     -- JSON
);
CREATE TABLE IF NOT EXISTS artifacts (
    id TEXT NOT NULL,
    kind TEXT NOT NULL,              -- snapshot | model | eval ...
    path TEXT NOT NULL,              -- relative to the workspace
    created REAL NOT NULL,
    run_id TEXT REFERENCES runs(id),
    meta TEXT,                       -- JSON
    PRIMARY KEY (kind, id)
);
CREATE TABLE IF NOT EXISTS eval_results (
    eval_id TEXT NOT NULL,
    model_id TEXT,                   -- NULL for base-model rungs
    pack_id TEXT NOT NULL,
    rung TEXT NOT NULL,
    metric TEXT NOT NULL,
    mean REAL, low REAL, high REAL, n INTEGER,
    created REAL NOT NULL,
    PRIMARY KEY (eval_id, rung, metric)
);
CREATE TABLE IF NOT EXISTS lineage (
    child_kind TEXT NOT NULL, child_id TEXT NOT NULL,
    parent_kind TEXT NOT NULL, parent_id TEXT NOT NULL,
    relation TEXT NOT NULL,
    PRIMARY KEY (child_kind, child_id, parent_kind, parent_id, relation)
);
"""


@dataclass(frozen=True, slots=True)
class Artifact:
    kind: str
    id: str
    path: Path
    created: float
    meta: dict[str, Any]


class Workspace:
    """A project's workspace directory. Cheap to open; creates itself on first use."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        try:
            (self.root / "artifacts").mkdir(parents=True, exist_ok=True)
            (self.root / "tmp").mkdir(exist_ok=True)
        except OSError as exc:
            raise TunesmithError(f"cannot create the workspace at {self.root}: {exc}") from None
        self.db_path = self.root / "tunesmith.db"
        with self._connect() as db:
            db.executescript(SCHEMA)

    def _connect(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return connect_db(self.db_path)

    # ------------------------------------------------------------------ runs
    def start_run(self, stage: str, config_hash: str | None = None) -> str:
        run_id = f"{stage}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        with self._connect() as db:
            db.execute(
                "INSERT INTO runs (id, stage, status, config_hash, started, tunesmith_version)"
                " VALUES (?, ?, 'running', ?, ?, ?)",
                (run_id, stage, config_hash, time.time(), __version__),
            )
        return run_id

    def finish_run(self, run_id: str, status: str, summary: dict[str, Any] | None = None) -> None:
        with self._connect() as db:
            db.execute(
                "UPDATE runs SET status = ?, finished = ?, summary = ? WHERE id = ?",
                (status, time.time(), json.dumps(summary or {}, default=str), run_id),
            )

    def runs(self, stage: str | None = None) -> list[dict[str, Any]]:
        query = "SELECT id, stage, status, config_hash, started, finished, summary FROM runs"
        args: tuple = ()
        if stage:
            query, args = query + " WHERE stage = ?", (stage,)
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY started", args).fetchall()
        keys = ("id", "stage", "status", "config_hash", "started", "finished", "summary")
        return [dict(zip(keys, r, strict=True)) | {"summary": json.loads(r[6] or "{}")} for r in rows]

    # ------------------------------------------------------------------ artifacts
    def artifact_dir(self, kind: str, artifact_id: str) -> Path:
        return self.root / "artifacts" / kind / artifact_id

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A fresh temp directory inside the workspace (same filesystem, so rename is atomic)."""
        path = Path(tempfile.mkdtemp(prefix="stage-", dir=self.root / "tmp"))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def publish(
        self,
        staged: Path,
        kind: str,
        artifact_id: str,
        *,
        run_id: str | None = None,
        meta: dict[str, Any] | None = None,
        parents: list[tuple[str, str, str]] = (),  # type: ignore[assignment]
    ) -> Artifact:
        """Move a staged directory to ``artifacts/<kind>/<id>`` atomically and record it.

        Content-addressed: if the artifact already exists it is identical by construction,
        so the staged copy is discarded and the existing one returned.
        """
        final = self.artifact_dir(kind, artifact_id)
        final.parent.mkdir(parents=True, exist_ok=True)
        if not final.exists():
            _fsync_tree(staged)
            try:
                os.rename(staged, final)
            except OSError:
                if not final.exists():  # lost a race to an identical writer: fine
                    raise
        created = time.time()
        with self._connect() as db:
            db.execute(
                "INSERT OR IGNORE INTO artifacts (id, kind, path, created, run_id, meta)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (artifact_id, kind, str(final.relative_to(self.root)), created, run_id,
                 json.dumps(meta or {}, default=str)),
            )
            for parent_kind, parent_id, relation in parents:
                db.execute(
                    "INSERT OR IGNORE INTO lineage VALUES (?, ?, ?, ?, ?)",
                    (kind, artifact_id, parent_kind, parent_id, relation),
                )
        return self.get(kind, artifact_id)

    def get(self, kind: str, artifact_id: str) -> Artifact:
        with self._connect() as db:
            row = db.execute(
                "SELECT id, path, created, meta FROM artifacts WHERE kind = ? AND id LIKE ?"
                " ORDER BY created",
                (kind, artifact_id + "%"),
            ).fetchall()
        if not row:
            known = ", ".join(a.id[:12] for a in self.list(kind)[-5:]) or "none yet"
            raise TunesmithError(f"no {kind} '{artifact_id}' in workspace {self.root} (latest: {known})")
        if len({r[0] for r in row}) > 1:
            raise TunesmithError(f"{kind} id prefix '{artifact_id}' is ambiguous; give more characters")
        aid, path, created, meta = row[-1]
        return Artifact(kind, aid, self.root / path, created, json.loads(meta or "{}"))

    def list(self, kind: str) -> list[Artifact]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT id, path, created, meta FROM artifacts WHERE kind = ? ORDER BY created",
                (kind,),
            ).fetchall()
        return [Artifact(kind, r[0], self.root / r[1], r[2], json.loads(r[3] or "{}")) for r in rows]

    def latest(self, kind: str) -> Artifact | None:
        items = self.list(kind)
        return items[-1] if items else None

    def record_eval(self, eval_id: str, model_id: str | None, pack_id: str,
                    ladder: dict[str, dict[str, dict[str, Any]]]) -> None:
        """Store every rung's metric means and CIs: versions compare over time per pack."""
        now = time.time()
        rows = [(eval_id, model_id, pack_id, rung, metric, m.get("mean"), m.get("low"), m.get("high"), m.get("n"), now)
                for rung, metrics in ladder.items() for metric, m in metrics.items()]
        with self._connect() as db:
            db.executemany("INSERT OR REPLACE INTO eval_results VALUES (?,?,?,?,?,?,?,?,?,?)", rows)

    def eval_history(self, pack_id: str, metric: str) -> list[dict[str, Any]]:
        """One row per (eval, rung) for ``metric`` on ``pack_id``, oldest first."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT eval_id, model_id, rung, mean, low, high, n, created FROM eval_results"
                " WHERE pack_id = ? AND metric = ? ORDER BY created, rung", (pack_id, metric)).fetchall()
        keys = ("eval_id", "model_id", "rung", "mean", "low", "high", "n", "created")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def parents(self, kind: str, artifact_id: str) -> list[tuple[str, str, str]]:
        with self._connect() as db:
            return db.execute(
                "SELECT parent_kind, parent_id, relation FROM lineage WHERE child_kind = ? AND child_id = ?",
                (kind, artifact_id),
            ).fetchall()


@contextlib.contextmanager
def connect_db(db_path: Path) -> Iterator[sqlite3.Connection]:
    """A connection to the workspace database (WAL, foreign keys) that commits on success, rolls
    back on error and closes: for every table kept there (lineage, rollout events, ...)."""
    db = sqlite3.connect(db_path, timeout=30)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA foreign_keys=ON")
        with db:
            yield db
    finally:
        db.close()


@contextlib.contextmanager
def transaction(db_path: Path, *, write: bool = False) -> Iterator[sqlite3.Connection]:
    """One explicit transaction on the workspace database. ``write=True`` takes the write lock at
    the start (``BEGIN IMMEDIATE``), so a read-check-append sequence (the alias still points
    where the caller saw it; the reviewer has not decided this item yet) cannot interleave with
    another process doing the same. Commits on success, rolls back on any error."""
    db = sqlite3.connect(db_path, timeout=30, isolation_level=None)
    try:
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        yield db
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    finally:
        db.close()


def append_only(table: str, message: str | None = None) -> str:
    """SQL for two triggers that make ``table`` refuse UPDATE and DELETE (an append-only ledger:
    a row is corrected by appending another). ``message`` is the error SQLite raises."""
    message = (message or f"{table} is append-only").replace("'", "''")
    return "".join(
        f"CREATE TRIGGER IF NOT EXISTS {table}_no_{verb.lower()} BEFORE {verb} ON {table}\n"
        f"BEGIN SELECT RAISE(ABORT, '{message}'); END;\n" for verb in ("UPDATE", "DELETE"))


def _fsync_tree(root: Path) -> None:
    """Flush file contents before the rename publishes them (crash safety)."""
    for path in root.rglob("*"):
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write a single file atomically: temp file in the same folder, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
