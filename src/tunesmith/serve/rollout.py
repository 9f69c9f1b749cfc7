"""Canary rollout with automatic rollback (``serve.rollout`` in the config).

The deployment name serves its champion; with ``mode: canary`` a share of its traffic goes to
the version the ``challenger`` alias points at (variant ``canary`` in the route and the request
log), and the live outcomes of both are compared:

- :class:`Router`: which variant a routing key gets; deterministic and sticky (the same key, the
  same salt and share, the same variant). The key is the request's ``user`` field, else the
  ``X-Tunesmith-Route-Key`` header, else the request id (then not sticky).
- :class:`CanaryMonitor`: the latest ``window`` outcomes per variant; every ``check_every``
  canary requests (once both windows hold ``min_requests``) it checks the canary's error rate,
  JSON validity and p95 latency against the champion's; ``failures_to_rollback`` failed checks in
  a row roll the canary back: its share becomes 0 and the champion is untouched.
- :class:`RolloutEvents`: every start, failed check, rollback, abort and share change, with the
  numbers, in the append-only table ``rollout_events`` of the workspace database.
- :class:`Rollout`: the three over the live aliases, as the server uses them.

A rollback holds until the server restarts or the challenger alias moves to another version (a
new canary starts then, at the configured share).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from tunesmith.serve.catalog import CHAMPION, Route

log = logging.getLogger(__name__)

CANARY = "canary"
ROUTE_KEY_HEADER = "X-Tunesmith-Route-Key"
Variant = Literal["champion", "canary"]
EVENTS = ("start", "check_failed", "rollback", "abort", "set")


# ------------------------------------------------------------------ routing
class Router:
    """Sends a routing key to ``canary`` when sha256(salt + key), read as a number in [0, 1),
    is below ``share``: the same key always lands on the same variant, and raising the share
    only moves keys from the champion to the canary."""

    def __init__(self, share: float, salt: str):
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"share must be within [0, 1], got {share}")
        self.share, self.salt = float(share), salt

    def point(self, key: str) -> float:
        digest = hashlib.sha256((self.salt + key).encode("utf-8")).digest()
        return int.from_bytes(digest[:8], "big") / 2.0**64

    def variant(self, key: str) -> Variant:
        return CANARY if self.point(key) < self.share else CHAMPION  # type: ignore[return-value]


def route_key(user: Any, header: str | None, request_id: str) -> tuple[str, bool]:
    """(the routing key, whether it is sticky): ``user``, else the header, else the request id."""
    if isinstance(user, str) and user:
        return f"user:{user}", True
    if header:
        return f"key:{header}", True
    return f"request:{request_id}", False


# ------------------------------------------------------------------ outcomes and checks
@dataclass(frozen=True, slots=True)
class Outcome:
    """One answered request: ``ok`` (status 200), ``json_valid`` (None when no JSON was asked
    for), ``latency_ms`` (arrival to the last byte)."""

    ok: bool
    json_valid: bool | None = None
    latency_ms: float | None = None


@dataclass(frozen=True, slots=True)
class Checks:
    """The thresholds (see ``RolloutConfig`` for each one's meaning)."""

    check_every: int = 50
    min_requests: int = 50
    failures_to_rollback: int = 3
    max_error_increase: float = 0.05
    min_json_validity: float = 0.95
    max_latency_ratio: float = 2.0

    @classmethod
    def from_config(cls, rollout: Any) -> Checks:
        return cls(**{name: getattr(rollout, name) for name in cls.__dataclass_fields__})


@dataclass
class WindowStats:
    requests: int
    error_rate: float | None
    json_requests: int
    json_validity: float | None
    p95_latency_ms: float | None


def window_stats(outcomes: list[Outcome]) -> WindowStats:
    n = len(outcomes)
    errors = sum(not o.ok for o in outcomes)
    asked = [o.json_valid for o in outcomes if o.ok and o.json_valid is not None]
    latencies = sorted(o.latency_ms for o in outcomes if o.ok and o.latency_ms is not None)
    return WindowStats(n, errors / n if n else None, len(asked), sum(asked) / len(asked) if asked else None,
                       p95(latencies))


def p95(sorted_values: list[float]) -> float | None:
    """The nearest-rank 95th percentile of sorted values (None for none)."""
    if not sorted_values:
        return None
    return sorted_values[max(0, math.ceil(0.95 * len(sorted_values)) - 1)]


@dataclass
class CheckResult:
    passed: bool
    failed: list[str]  # the names of the failed checks
    champion: WindowStats
    canary: WindowStats
    thresholds: dict[str, float] = field(default_factory=dict)

    def reason(self) -> dict[str, Any]:
        return {"failed": self.failed, "champion": asdict(self.champion), "canary": asdict(self.canary),
                "thresholds": self.thresholds}


def compare(champion: WindowStats, canary: WindowStats, checks: Checks) -> CheckResult:
    """The three checks; one without data on either side (no JSON asked for, no latency) passes."""
    failed = []
    if (champion.error_rate is not None and canary.error_rate is not None
            and canary.error_rate > champion.error_rate + checks.max_error_increase + 1e-12):
        failed.append("error_rate")
    if canary.json_validity is not None and canary.json_validity < checks.min_json_validity - 1e-12:
        failed.append("json_validity")
    if (champion.p95_latency_ms and canary.p95_latency_ms is not None
            and canary.p95_latency_ms > champion.p95_latency_ms * checks.max_latency_ratio):
        failed.append("p95_latency")
    thresholds = {"max_error_rate": None if champion.error_rate is None
                  else champion.error_rate + checks.max_error_increase,
                  "min_json_validity": checks.min_json_validity,
                  "max_p95_latency_ms": None if not champion.p95_latency_ms
                  else champion.p95_latency_ms * checks.max_latency_ratio}
    return CheckResult(not failed, failed, champion, canary, thresholds)


# ------------------------------------------------------------------ the event ledger
SCHEMA = """
CREATE TABLE IF NOT EXISTS rollout_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    event TEXT NOT NULL CHECK (event IN ('start', 'check_failed', 'rollback', 'abort', 'set')),
    champion TEXT,                   -- model version id (or 'base') the champion variant serves
    canary TEXT,                     -- model version id the canary variant serves
    share REAL NOT NULL,             -- the canary's share after the event
    reason TEXT                      -- JSON: the failing numbers, thresholds, or why
);
CREATE TRIGGER IF NOT EXISTS rollout_events_no_update BEFORE UPDATE ON rollout_events
BEGIN SELECT RAISE(ABORT, 'rollout_events is append-only'); END;
CREATE TRIGGER IF NOT EXISTS rollout_events_no_delete BEFORE DELETE ON rollout_events
BEGIN SELECT RAISE(ABORT, 'rollout_events is append-only'); END;
"""
EVENT_COLUMNS = ("seq", "time", "event", "champion", "canary", "share", "reason")


class RolloutEvents:
    """The append-only ``rollout_events`` table in ``db_path`` (the workspace database)."""

    def __init__(self, db_path: Path):
        self.db_path = Path(db_path)
        with self._connect() as db:
            db.executescript(SCHEMA)

    def _connect(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        from tunesmith.workspace import connect_db

        return connect_db(self.db_path)

    def append(self, event: str, *, champion: str | None, canary: str | None, share: float,
               reason: dict[str, Any] | None = None) -> dict[str, Any]:
        if event not in EVENTS:
            raise ValueError(f"unknown rollout event {event!r}; one of {EVENTS}")
        row = (time.time(), event, champion, canary, share, json.dumps(reason, sort_keys=True, default=str))
        with self._connect() as db:
            cur = db.execute("INSERT INTO rollout_events (time, event, champion, canary, share, reason) "
                             "VALUES (?, ?, ?, ?, ?, ?)", row)
            seq = cur.lastrowid
        return _event(dict(zip(EVENT_COLUMNS, (seq, *row), strict=True)))

    def read(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The latest ``limit`` events (all by default), oldest first."""
        with self._connect() as db:
            rows = db.execute(f"SELECT {', '.join(EVENT_COLUMNS)} FROM rollout_events ORDER BY seq DESC "
                              "LIMIT ?", (-1 if limit is None else limit,)).fetchall()
        return [_event(dict(zip(EVENT_COLUMNS, r, strict=True))) for r in reversed(rows)]


def _event(row: dict[str, Any]) -> dict[str, Any]:
    row["reason"] = json.loads(row["reason"]) if row["reason"] else None
    return row


# ------------------------------------------------------------------ the monitor
class CanaryMonitor:
    """The latest ``window`` outcomes per variant and the checks over them (thread-safe).

    Args:
        window: outcomes kept per variant.
        checks: the thresholds and cadence.
        router: its share is set to 0 on rollback (default: a router of share 0.1, salt "").
        events: where start/check_failed/rollback are written (None: nowhere).
        champion, canary: the version ids the events name.
    """

    def __init__(self, window: int, checks: Checks | None = None, *, router: Router | None = None,
                 events: RolloutEvents | None = None, champion: str | None = None, canary: str | None = None):
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self.window, self.checks = window, checks or Checks()
        self.router = router or Router(0.1, "")
        self.events, self.champion, self.canary = events, champion, canary
        self._lock = threading.RLock()
        self._outcomes: dict[str, deque[Outcome]] = {}
        self.reset()

    def reset(self, champion: str | None = None, canary: str | None = None) -> None:
        """Empty windows for a new pair (the ids kept when not given)."""
        with self._lock:
            self.champion, self.canary = champion or self.champion, canary or self.canary
            self._outcomes = {CHAMPION: deque(maxlen=self.window), CANARY: deque(maxlen=self.window)}
            self.since_check = 0
            self.failures = 0  # failed checks in a row
            self.rolled_back = False
            self.last_check: CheckResult | None = None

    def record(self, variant: str, outcome: Outcome) -> CheckResult | None:
        """Add one outcome; returns the check it triggered, if any."""
        if variant not in (CHAMPION, CANARY):
            return None
        with self._lock:
            self._outcomes[variant].append(outcome)
            if variant != CANARY or self.rolled_back:
                return None
            self.since_check += 1
            ready = all(len(w) >= self.checks.min_requests for w in self._outcomes.values())
            if not ready or self.since_check < self.checks.check_every:
                return None
            self.since_check = 0
            return self._check()

    def check(self) -> CheckResult:
        """Compare the two windows now (counts toward a rollback like a scheduled check)."""
        with self._lock:
            return self._check()

    def _check(self) -> CheckResult:
        result = compare(*self.stats(), self.checks)
        self.last_check = result
        if result.passed:
            self.failures = 0
            return result
        self.failures += 1
        reason = {**result.reason(), "failures_in_a_row": self.failures}
        self._event("check_failed", reason)
        log.warning("canary check failed (%d of %d in a row): %s", self.failures,
                    self.checks.failures_to_rollback, ", ".join(result.failed))
        if self.failures >= self.checks.failures_to_rollback:
            self.rollback({**reason, "why": f"{self.failures} failed checks in a row"})
        return result

    def rollback(self, reason: dict[str, Any]) -> None:
        """Send no more traffic to the canary; the champion is untouched."""
        with self._lock:
            self.router.share = 0.0
            self.rolled_back = True
            self._event("rollback", reason)
            log.error("canary %s rolled back: all traffic goes to the champion %s", self.canary, self.champion)

    def stats(self) -> tuple[WindowStats, WindowStats]:
        with self._lock:
            return window_stats(list(self._outcomes[CHAMPION])), window_stats(list(self._outcomes[CANARY]))

    def _event(self, event: str, reason: dict[str, Any]) -> None:
        if self.events is None:
            return
        try:
            self.events.append(event, champion=self.champion, canary=self.canary, share=self.router.share,
                               reason=reason)
        except sqlite3.Error:  # the record is lost, the rollback itself still holds
            log.exception("writing the rollout event %r failed", event)


# ------------------------------------------------------------------ the server's rollout
class Rollout:
    """Canary routing over the live aliases (``cfg.serve.rollout``), for :class:`ChatService`.

    Args:
        cfg: the ``serve.rollout`` section.
        aliases: the current ``{alias: version id}``.
        loaded: the version ids the engine serves.
        events: the event ledger (None: nowhere).
        salt: the router's salt (default: none); the deployment name keeps keys sticky across restarts.
    """

    def __init__(self, cfg: Any, aliases: Callable[[], dict[str, str]], loaded: set[str] | dict[str, Any], *,
                 events: RolloutEvents | None = None, salt: str = ""):
        self.cfg, self.aliases, self.loaded, self.events = cfg, aliases, set(loaded), events
        self.router = Router(cfg.share, salt)
        self.monitor = CanaryMonitor(cfg.window, Checks.from_config(cfg), router=self.router, events=events)
        self._lock = threading.Lock()
        self._pair: tuple[str, str] | None = None  # (champion, canary) of the running canary
        self._missing: str | None = None  # why no canary runs (said once)

    @property
    def enabled(self) -> bool:
        return self.cfg.mode == "canary"

    def route(self, champion: Route, key: str) -> Route:
        """The route for a request the deployment name sent to ``champion``: the canary's, or
        ``champion`` unchanged."""
        if not self.enabled:
            return champion
        canary = self._canary(champion.version)
        if canary is None or self.router.variant(key) != CANARY:
            return champion
        return Route(champion.model, canary, canary, CANARY)

    def _canary(self, champion: str) -> str | None:
        """The challenger's version when a canary runs against ``champion`` (a new pair starts one)."""
        try:
            challenger = self.aliases().get(self.cfg.challenger_alias)
        except Exception:
            log.exception("reading the aliases failed; no canary traffic")
            challenger = None
        if challenger is None or challenger not in self.loaded or challenger == champion:
            why = ("no alias" if challenger is None else "not loaded" if challenger not in self.loaded
                   else "the champion's version")
            self._abort(f"{self.cfg.challenger_alias!r}: {why}", champion, challenger)
            return None
        with self._lock:
            if self._pair != (champion, challenger):
                self._pair, self._missing = (champion, challenger), None
                self.router.share = float(self.cfg.share)
                self.monitor.reset(champion, challenger)
                self._write("start", champion, challenger, {"alias": self.cfg.challenger_alias})
        return challenger

    def _abort(self, why: str, champion: str, challenger: str | None) -> None:
        with self._lock:
            if self._missing == why:
                return
            self._missing = why
            if self._pair is not None:  # a running canary ends
                self._write("abort", champion, challenger, {"why": why, "was": list(self._pair)})
                self._pair = None
            else:
                log.warning("canary rollout is on, but the challenger alias %s; serving the champion only", why)

    def _write(self, event: str, champion: str | None, canary: str | None, reason: dict[str, Any]) -> None:
        if self.events is not None:
            try:
                self.events.append(event, champion=champion, canary=canary, share=self.router.share, reason=reason)
            except sqlite3.Error:
                log.exception("writing the rollout event %r failed", event)

    def set_share(self, share: float, reason: str | None = None) -> None:
        """Change the canary's share by hand (recorded)."""
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"share must be within [0, 1], got {share}")
        with self._lock:
            self.router.share = float(share)
            pair = self._pair or (None, None)
            self._write("set", pair[0], pair[1], {"why": reason})

    def observe(self, route: Route, status: int, answers: list[str], json_asked: bool,
                latency_ms: float | None) -> None:
        """Feed one request of the deployment name to the monitor: 200 is ok, 5xx an error;
        other statuses are skipped (4xx: the client's mistake or a full queue, 499: the client
        went away before an answer could be judged)."""
        if not self.enabled or (status != 200 and status < 500) or route.variant not in (CHAMPION, CANARY):
            return
        pair = self._pair
        if pair is None or route.version != pair[0 if route.variant == CHAMPION else 1]:
            return
        ok = status == 200
        json_valid = None
        if ok and json_asked:
            json_valid = all(_parses(a) for a in answers) if answers else False
        self.monitor.record(route.variant, Outcome(ok, json_valid, latency_ms))

    def status(self, events: int = 20) -> dict[str, Any]:
        champion, canary = self.monitor.stats()
        pair = self._pair
        return {
            "mode": self.cfg.mode, "challenger_alias": self.cfg.challenger_alias, "share": self.router.share,
            "configured_share": self.cfg.share, "champion": pair[0] if pair else None,
            "canary": pair[1] if pair else None, "rolled_back": self.monitor.rolled_back,
            "failures_in_a_row": self.monitor.failures,
            "windows": {CHAMPION: asdict(champion), CANARY: asdict(canary)},
            "last_check": self.monitor.last_check.reason() | {"passed": self.monitor.last_check.passed}
            if self.monitor.last_check else None,
            "events": self.events.read(events) if self.events is not None else [],
        }


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except (ValueError, TypeError):
        return False
    return True
