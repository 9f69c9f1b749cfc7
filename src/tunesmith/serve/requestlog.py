"""The request log: every answered (or refused) chat request, in the workspace database.

One row per answer (a request with ``n: 3`` gives three rows, ``choice`` 0-2; a refused request
one row with its status and error). The rendered prompt and the answer are PII-scrubbed by the
prepare stage's scrubber (:class:`~tunesmith.data.pii.PiiScrubber`, the project's
``data.pii`` settings, always on here) before they are written. Review and monitoring read
this table.

Writing is off the request path: handlers hand an entry to :meth:`RequestLog.record`, which
never blocks (a full queue drops the entry and counts it); one writer thread scrubs, batches
and inserts.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS request_log (
    request_id TEXT NOT NULL,
    choice INTEGER NOT NULL,          -- answer index (n > 1: one row per answer)
    created REAL NOT NULL,            -- unix time the request arrived
    model TEXT,                       -- the name the client sent
    version TEXT,                     -- model version id, or 'base'; NULL when it did not resolve
    adapter TEXT,                     -- engine adapter (NULL = the base model)
    variant TEXT,                     -- champion | <alias> | direct
    prompt TEXT,                      -- the rendered prompt, PII scrubbed
    answer TEXT,                      -- PII scrubbed
    finish_reason TEXT,               -- stop | length
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    latency_ms REAL,                  -- arrival to the last byte of the answer
    first_token_ms REAL,              -- streams: arrival to the first text
    status INTEGER NOT NULL,          -- HTTP status (499: the client went away)
    error TEXT,
    stream INTEGER NOT NULL DEFAULT 0,
    cached INTEGER NOT NULL DEFAULT 0, -- 1: answered from the response cache
    shadow_of TEXT,                   -- variant shadow: the request_id of the champion's answer it copies
    json_asked INTEGER,               -- 1: response_format asked for JSON (the rollout's JSON validity)
    messages TEXT,                    -- JSON: the request's input turns [{role, content}], PII scrubbed
    confidence TEXT,                  -- JSON: {field: calibrated confidence} of this answer
    decision TEXT,                    -- JSON: its review routing (tunesmith.review.routing.Decision)
    PRIMARY KEY (request_id, choice)
);
CREATE INDEX IF NOT EXISTS request_log_created ON request_log (created);
-- the rollout's windows (latest requests of one variant of a deployment) and the UI's figures
CREATE INDEX IF NOT EXISTS request_log_variant ON request_log (model, variant, created);
"""

COLUMNS = ("request_id", "choice", "created", "model", "version", "adapter", "variant", "prompt", "answer",
           "finish_reason", "prompt_tokens", "completion_tokens", "latency_ms", "first_token_ms", "status",
           "error", "stream", "cached", "shadow_of", "json_asked", "messages", "confidence", "decision")
# columns added after the table's first release: connect() adds them to an older table
ADDED_COLUMNS = {"cached": "INTEGER NOT NULL DEFAULT 0", "shadow_of": "TEXT", "json_asked": "INTEGER",
                 "messages": "TEXT", "confidence": "TEXT", "decision": "TEXT"}


@dataclass
class Answer:
    text: str
    finish_reason: str | None
    tokens: int
    confidence: dict[str, float] | None = None  # per label field, calibrated (review)
    decision: dict[str, Any] | None = None  # the review routing, Decision.to_dict()


@dataclass
class LogEntry:
    """One request's outcome, as the handler knows it (texts not yet scrubbed)."""

    request_id: str
    created: float
    status: int
    model: str | None = None
    version: str | None = None
    adapter: str | None = None
    variant: str | None = None
    prompt: str | None = None
    prompt_tokens: int | None = None
    answers: list[Answer] = field(default_factory=list)
    latency_ms: float | None = None
    first_token_ms: float | None = None
    error: str | None = None
    stream: bool = False
    cached: bool = False  # answered from the response cache
    shadow_of: str | None = None  # a shadow copy: the champion's request id
    json_asked: bool | None = None  # response_format asked for JSON (None: not known, refused requests)
    messages: list[dict[str, str]] | None = None  # the request's input turns (the review queue's input)

    def rows(self, scrub: Callable[[str], str]) -> list[tuple[Any, ...]]:
        prompt = scrub(self.prompt) if self.prompt else self.prompt
        head = (self.request_id,)
        common = (self.created, self.model, self.version, self.adapter, self.variant, prompt)
        tail = (self.latency_ms, self.first_token_ms, self.status, self.error, int(self.stream), int(self.cached),
                self.shadow_of, None if self.json_asked is None else int(self.json_asked),
                None if self.messages is None else json.dumps(
                    [{**m, "content": scrub(m["content"]) if m.get("content") else m.get("content")}
                     for m in self.messages], ensure_ascii=False))
        if not self.answers:
            return [(*head, 0, *common, None, None, self.prompt_tokens, None, *tail, None, None)]
        return [(*head, i, *common, scrub(a.text) if a.text else a.text, a.finish_reason, self.prompt_tokens,
                 a.tokens, *tail, _json(a.confidence), _json(a.decision)) for i, a in enumerate(self.answers)]


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)


def connect(db_path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(db_path, timeout=30, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(SCHEMA)
    have = {row[1] for row in db.execute("PRAGMA table_info(request_log)")}
    for name, decl in ADDED_COLUMNS.items():
        if name not in have:  # a workspace from an older tunesmith: the rows it holds keep the default
            with contextlib.suppress(sqlite3.OperationalError):  # another process added it first
                db.execute(f"ALTER TABLE request_log ADD COLUMN {name} {decl}")
    return db


class RequestLog:
    """The writer of the ``request_log`` table in ``db_path`` (the workspace's SQLite file).

    Args:
        db_path: the SQLite database (created tables are added beside the lineage ones).
        scrub: text -> PII-scrubbed text (see :func:`pii_scrubber`).
        max_queue: entries waiting to be written before new ones are dropped (and counted).
    """

    def __init__(self, db_path: Path, *, scrub: Callable[[str], str], max_queue: int = 10_000):
        self.db_path, self.scrub = Path(db_path), scrub
        connect(self.db_path).close()  # the table exists before the first request
        self._queue: queue.Queue[LogEntry | None] = queue.Queue(maxsize=max_queue)
        self._thread: threading.Thread | None = None
        self.dropped = 0
        self.written = 0

    def record(self, entry: LogEntry) -> None:
        """Queue an entry for writing; never blocks."""
        try:
            self._queue.put_nowait(entry)
        except queue.Full:
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                log.warning("request log queue full: %d entries dropped so far", self.dropped)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="tunesmith-request-log", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Write what is queued, then end the writer."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every entry queued so far is written (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)

    def _run(self) -> None:
        db = connect(self.db_path)
        try:
            while True:
                entries = [self._queue.get()]
                while len(entries) < 256:  # write what has piled up in one transaction
                    try:
                        entries.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                live = [e for e in entries if e is not None]
                try:
                    self._write(db, live)
                finally:
                    for _ in entries:
                        self._queue.task_done()
                if len(live) < len(entries):
                    return
        finally:
            db.close()

    def _write(self, db: sqlite3.Connection, entries: list[LogEntry]) -> None:
        try:
            rows = [row for e in entries for row in e.rows(self.scrub)]
            with db:
                db.executemany(f"INSERT OR REPLACE INTO request_log ({', '.join(COLUMNS)}) "
                               f"VALUES ({', '.join('?' * len(COLUMNS))})", rows)
            self.written += len(entries)
        except Exception:  # the log must never take the server down; say what was lost
            log.exception("writing %d request log entries failed", len(entries))


def read(db_path: Path, *, limit: int = 100) -> list[dict[str, Any]]:
    """The latest rows, newest first (for tests and quick looks)."""
    db = connect(db_path)
    try:
        rows = db.execute(f"SELECT {', '.join(COLUMNS)} FROM request_log ORDER BY created DESC, choice "
                          "LIMIT ?", (limit,)).fetchall()
    finally:
        db.close()
    return [dict(zip(COLUMNS, r, strict=True)) for r in rows]


def pii_scrubber(pii_cfg: Any, salt: str) -> Callable[[str], str]:
    """The prepare stage's scrubber with the project's ``data.pii`` settings, switched on even
    where the project's data needs no scrubbing: traffic is not the curated training data."""
    from tunesmith.data.pii import PiiScrubber

    scrubber = PiiScrubber(pii_cfg.model_copy(update={"enabled": True}), salt=salt)
    return lambda text: scrubber.scrub(text)[0]

