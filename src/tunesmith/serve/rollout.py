"""Shadow and canary rollout with automatic rollback and optional promotion (``serve.rollout``).

The deployment name serves its champion. The version the ``challenger`` alias points at is
tried against it in one of two modes:

- ``shadow``: after the champion's answer has been sent, a copy of (a share of) the requests is
  answered by the challenger in the background (variant ``shadow`` in the request log, linked to
  the champion's row by ``shadow_of``); the client never sees it (:mod:`tunesmith.serve.shadow`).
- ``canary``: a share of requests is answered by the challenger (variant ``canary``).

The pieces:

- :class:`Router`: which variant a routing key gets; deterministic and sticky (the same key, the
  same salt and share, the same variant). The key is the request's ``user`` field, else the
  ``X-Tunesmith-Route-Key`` header, else the request id (then not sticky).
- :class:`CanaryMonitor`: the latest ``window`` outcomes per variant (and, in shadow mode, the
  answer pairs); every ``check_every`` canary requests (once both windows hold
  ``min_requests``) it checks the canary's error rate, JSON validity, p95 latency and label
  agreement against the champion's; ``failures_to_rollback`` failed checks in a row roll the
  canary back: its share becomes 0 and the champion is untouched. With ``promote_after``, that
  many canary requests without a failed check promote the challenger (registry ``promote``).
- :class:`RolloutEvents`: every start, failed check, rollback, abort, setting change and
  promotion, with the numbers, in the append-only table ``rollout_events`` of the workspace
  database. ``set`` and ``abort`` rows that carry ``settings`` are also the control channel:
  ``tunesmith rollout set`` writes one, and running servers apply it within a second.
- :class:`Rollout`: the above over the live aliases, as the server uses them.

A rollback holds until the challenger alias moves to another version (a new canary starts then,
at the current share), an operator sets the share again, or the server restarts.
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

from tunesmith.errors import TunesmithError
from tunesmith.serve.agreement import (
    FieldAgreement,
    Labels,
    label_distance,
    labels,
    paired_agreement,
)
from tunesmith.serve.catalog import CHAMPION, Route
from tunesmith.workspace import append_only

log = logging.getLogger(__name__)

CANARY = "canary"
SHADOW = "shadow"
MODES = ("off", "canary", "shadow")
ROUTE_KEY_HEADER = "X-Tunesmith-Route-Key"
Variant = Literal["champion", "canary"]
EVENTS = ("start", "check_failed", "rollback", "abort", "set", "promote", "promote_refused")
CONTROL = ("set", "abort")  # events whose ``settings`` running servers apply


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

    def picks(self, key: str) -> bool:
        return self.point(key) < self.share

    def variant(self, key: str) -> Variant:
        return CANARY if self.picks(key) else CHAMPION  # type: ignore[return-value]


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
    for), ``latency_ms`` (arrival to the last byte), ``labels`` (each answer's label fields, see
    :mod:`tunesmith.serve.agreement`)."""

    ok: bool
    json_valid: bool | None = None
    latency_ms: float | None = None
    labels: tuple[Labels, ...] = ()


@dataclass(frozen=True, slots=True)
class Checks:
    """The thresholds (see ``RolloutConfig`` for each one's meaning)."""

    check_every: int = 50
    min_requests: int = 50
    failures_to_rollback: int = 3
    max_error_increase: float = 0.05
    min_json_validity: float = 0.95
    max_latency_ratio: float = 2.0
    max_label_distance: float | None = None  # canary: per label field (None: not checked)
    min_agreement: float | None = None  # shadow: per label field (None: not checked)
    promote_after: int | None = None  # canary requests without a failed check (None: never)

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
    thresholds: dict[str, float | None] = field(default_factory=dict)
    agreement: dict[str, FieldAgreement] = field(default_factory=dict)  # per label field
    failed_fields: list[str] = field(default_factory=list)  # the label fields that failed "agreement"

    def reason(self) -> dict[str, Any]:
        out = {"failed": self.failed, "champion": asdict(self.champion), "canary": asdict(self.canary),
               "thresholds": self.thresholds}
        if self.agreement:
            out["agreement"] = {f: asdict(a) for f, a in self.agreement.items()}
        if self.failed_fields:
            out["failed_fields"] = self.failed_fields
        return out


def compare(champion: WindowStats, canary: WindowStats, checks: Checks,
            agreement: dict[str, FieldAgreement] | None = None) -> CheckResult:
    """The four checks; one without data on either side (no JSON asked for, no latency, no
    label fields) passes. ``agreement``: per label field, from :meth:`CanaryMonitor.agreement`."""
    failed = []
    if (champion.error_rate is not None and canary.error_rate is not None
            and canary.error_rate > champion.error_rate + checks.max_error_increase + 1e-12):
        failed.append("error_rate")
    if canary.json_validity is not None and canary.json_validity < checks.min_json_validity - 1e-12:
        failed.append("json_validity")
    if (champion.p95_latency_ms and canary.p95_latency_ms is not None
            and canary.p95_latency_ms > champion.p95_latency_ms * checks.max_latency_ratio):
        failed.append("p95_latency")
    agreement = agreement or {}
    bad_fields = [f for f, a in agreement.items() if _disagrees(a, checks)]
    if bad_fields:
        failed.append("agreement")
    thresholds = {"max_error_rate": None if champion.error_rate is None
                  else champion.error_rate + checks.max_error_increase,
                  "min_json_validity": checks.min_json_validity,
                  "max_p95_latency_ms": None if not champion.p95_latency_ms
                  else champion.p95_latency_ms * checks.max_latency_ratio,
                  "max_label_distance": checks.max_label_distance, "min_agreement": checks.min_agreement}
    return CheckResult(not failed, failed, champion, canary, thresholds, agreement, bad_fields)


def _disagrees(a: FieldAgreement, checks: Checks) -> bool:
    if checks.min_agreement is not None and a.agreement is not None and a.agreement < checks.min_agreement - 1e-12:
        return True
    return (checks.max_label_distance is not None and a.distance is not None
            and a.distance > checks.max_label_distance + 1e-12)


# ------------------------------------------------------------------ the event ledger
TABLE = """
CREATE TABLE IF NOT EXISTS rollout_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    event TEXT NOT NULL CHECK (event IN ('start', 'check_failed', 'rollback', 'abort', 'set', 'promote',
                                         'promote_refused')),
    champion TEXT,                   -- model version id (or 'base') the champion variant serves
    canary TEXT,                     -- model version id of the challenger (canary or shadow)
    share REAL NOT NULL,             -- the canary's share after the event
    reason TEXT                      -- JSON: the failing numbers, thresholds, settings, or why
);
"""
TRIGGERS = append_only("rollout_events")
SCHEMA = TABLE + TRIGGERS
EVENT_COLUMNS = ("seq", "time", "event", "champion", "canary", "share", "reason")


class RolloutEvents:
    """The append-only ``rollout_events`` table in ``db_path`` (the workspace database)."""

    def __init__(self, db_path: Path):
        self.db_path = Path(db_path)
        _migrate(self.db_path)
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

    def control(self, after: int = 0) -> list[dict[str, Any]]:
        """The ``set`` / ``abort`` rows after ``seq`` ``after`` that carry ``settings`` (what an
        operator changed), oldest first."""
        with self._connect() as db:
            rows = db.execute(f"SELECT {', '.join(EVENT_COLUMNS)} FROM rollout_events WHERE seq > ? AND event "
                              f"IN ({', '.join('?' * len(CONTROL))}) ORDER BY seq", (after, *CONTROL)).fetchall()
        events = [_event(dict(zip(EVENT_COLUMNS, r, strict=True))) for r in rows]
        return [e for e in events if isinstance(e["reason"], dict) and isinstance(e["reason"].get("settings"), dict)]


def _migrate(db_path: Path) -> None:
    """A table from an older tunesmith, whose CHECK does not know the newer events, is rebuilt
    with every row (seq and order kept). SQLite cannot alter a CHECK constraint in place."""
    if not Path(db_path).exists():
        return
    db = sqlite3.connect(db_path, timeout=30, isolation_level=None)
    try:
        def outdated() -> bool:
            row = db.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'rollout_events'"
                             ).fetchone()
            return row is not None and "'promote_refused'" not in row[0]

        if not outdated():
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            if outdated():  # another process may have rebuilt it while this one waited for the lock
                cols = ", ".join(EVENT_COLUMNS)
                db.execute("DROP TRIGGER IF EXISTS rollout_events_no_update")
                db.execute("DROP TRIGGER IF EXISTS rollout_events_no_delete")
                db.execute("ALTER TABLE rollout_events RENAME TO rollout_events_before")
                db.execute(TABLE)
                db.execute(f"INSERT INTO rollout_events ({cols}) SELECT {cols} FROM rollout_events_before")
                db.execute("DROP TABLE rollout_events_before")
                for statement in TRIGGERS.split("END;")[:-1]:
                    db.execute(statement + "END;")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    finally:
        db.close()


def _event(row: dict[str, Any]) -> dict[str, Any]:
    row["reason"] = json.loads(row["reason"]) if row["reason"] else None
    return row


# ------------------------------------------------------------------ the monitor
class CanaryMonitor:
    """The latest ``window`` outcomes per variant, the shadow's answer pairs, and the checks
    over them (thread-safe).

    Args:
        window: outcomes (and pairs) kept per variant.
        checks: the thresholds and cadence.
        router: its share is set to 0 on rollback (default: a router of share 0.1, salt "").
        events: where start/check_failed/rollback are written (None: nowhere).
        champion, canary: the version ids the events name.
        on_promote: called (once per pair) with the passing check when ``checks.promote_after``
            canary requests went by without a failed check.
    """

    def __init__(self, window: int, checks: Checks | None = None, *, router: Router | None = None,
                 events: RolloutEvents | None = None, champion: str | None = None, canary: str | None = None,
                 on_promote: Callable[[CheckResult], None] | None = None):
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self.window, self.checks = window, checks or Checks()
        self.router = router or Router(0.1, "")
        self.events, self.champion, self.canary = events, champion, canary
        self.on_promote = on_promote
        self._lock = threading.RLock()
        self._outcomes: dict[str, deque[Outcome]] = {}
        self.reset()

    def reset(self, champion: str | None = None, canary: str | None = None) -> None:
        """Empty windows for a new pair (the ids kept when not given)."""
        with self._lock:
            self.champion, self.canary = champion or self.champion, canary or self.canary
            self._outcomes = {v: deque(maxlen=self.window) for v in (CHAMPION, CANARY, SHADOW)}
            self._pairs: deque[tuple[Labels, Labels]] = deque(maxlen=self.window)
            self.since_check = 0
            self.failures = 0  # failed checks in a row
            self.clean = 0  # canary requests since the last failed check (or the start)
            self.rolled_back = False
            self.promoting = False  # promotion was tried for this pair
            self.last_check: CheckResult | None = None

    def record(self, variant: str, outcome: Outcome) -> CheckResult | None:
        """Add one outcome; returns the check it triggered, if any."""
        if variant not in self._outcomes:
            return None
        with self._lock:
            self._outcomes[variant].append(outcome)
            if variant != CANARY or self.rolled_back:
                return None
            self.since_check += 1
            self.clean += 1
            result = None
            if self._ready() and self.since_check >= self.checks.check_every:
                self.since_check = 0
                result = self._check()
            due = self.checks.promote_after is not None and self.clean >= self.checks.promote_after
            if due and not self.promoting and not self.rolled_back and self._ready():
                result = result or self._check()  # a check right before promoting
                if result.passed:
                    self.promoting = True
                    if self.on_promote is not None:
                        self.on_promote(result)
            return result

    def record_pair(self, champion: list[Labels], shadow: list[Labels]) -> None:
        """The champion's and the shadow's answers to one request (answer ``i`` with ``i``)."""
        with self._lock:
            self._pairs.extend(zip(champion, shadow, strict=False))

    def _ready(self) -> bool:
        return all(len(self._outcomes[v]) >= self.checks.min_requests for v in (CHAMPION, CANARY))

    def check(self) -> CheckResult:
        """Compare the two windows now (counts toward a rollback like a scheduled check)."""
        with self._lock:
            return self._check()

    def _check(self) -> CheckResult:
        result = compare(*self.stats(), self.checks, self.agreement(CANARY))
        self.last_check = result
        if result.passed:
            self.failures = 0
            return result
        self.failures += 1
        self.clean = 0
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

    def stats(self, variant: str = CANARY) -> tuple[WindowStats, WindowStats]:
        """(the champion's window, ``variant``'s window)."""
        with self._lock:
            return window_stats(list(self._outcomes[CHAMPION])), window_stats(list(self._outcomes[variant]))

    def agreement(self, variant: str = CANARY) -> dict[str, FieldAgreement]:
        """Per label field: the canary's distance from the champion's distribution, or the
        shadow's paired agreement with the champion (see :mod:`tunesmith.serve.agreement`)."""
        with self._lock:
            if variant == SHADOW:
                return paired_agreement(list(self._pairs))
            answers = {v: [x for o in self._outcomes[v] if o.ok for x in o.labels] for v in (CHAMPION, CANARY)}
        return label_distance(answers[CHAMPION], answers[CANARY])

    def shadow_check(self) -> CheckResult:
        """The checks of the shadow against the champion (reported, never acted on: a shadow
        sends nothing to clients). Its latency is engine time, without queueing."""
        with self._lock:
            return compare(*self.stats(SHADOW), self.checks, self.agreement(SHADOW))

    def _event(self, event: str, reason: dict[str, Any]) -> None:
        if self.events is None:
            return
        try:
            self.events.append(event, champion=self.champion, canary=self.canary, share=self.router.share,
                               reason=reason)
        except sqlite3.Error:  # the record is lost, the rollback itself still holds
            log.exception("writing the rollout event %r failed", event)


# ------------------------------------------------------------------ the server's rollout
@dataclass
class Settings:
    """What an operator may change while the server runs (``tunesmith rollout set``)."""

    mode: str
    share: float
    shadow_share: float

    @classmethod
    def from_config(cls, cfg: Any) -> Settings:
        return cls(cfg.mode, float(cfg.share), float(getattr(cfg, "shadow_share", 1.0)))

    def apply(self, changes: dict[str, Any]) -> Settings:
        """A copy with ``changes`` (unknown keys ignored, invalid values refused)."""
        new = Settings(**{**asdict(self), **{k: v for k, v in changes.items() if k in ("mode", "share",
                                                                                          "shadow_share")}})
        check_settings(new.mode, new.share, new.shadow_share)
        return new


def check_settings(mode: str | None, share: float | None, shadow_share: float | None) -> None:
    """Raises TunesmithError for a mode or share a rollout cannot take."""
    if mode is not None and mode not in MODES:
        raise TunesmithError(f"rollout mode must be one of {', '.join(MODES)}, got {mode!r}")
    for name, value in (("share", share), ("shadow share", shadow_share)):
        if value is not None and not (isinstance(value, int | float) and 0.0 <= value <= 1.0):
            raise TunesmithError(f"the {name} must be within 0..1 (a fraction of the traffic), got {value}")


def config_key(cfg: Any) -> str:
    """Names the config's settings; a change made over them (``reason.config``) applies only
    while the config still says the same: editing ``serve.rollout`` starts from the file again."""
    return hashlib.sha256(json.dumps(asdict(Settings.from_config(cfg)), sort_keys=True).encode()).hexdigest()[:12]


def applies(row: dict[str, Any], cfg: Any) -> bool:
    """A control row made over this config's settings (rows without a key apply everywhere)."""
    made_over = row["reason"].get("config")
    return made_over is None or made_over == config_key(cfg)


def effective_settings(cfg: Any, events: RolloutEvents | None) -> tuple[Settings, dict[str, Any] | None]:
    """The config's settings with every operator change made over them applied in order, and
    the latest such change."""
    settings, last = Settings.from_config(cfg), None
    for row in [r for r in events.control() if applies(r, cfg)] if events is not None else []:
        try:
            settings, last = settings.apply(row["reason"]["settings"]), row
        except TunesmithError as exc:  # a hand-written row: skip it, say so
            log.warning("rollout event %s ignored: %s", row["seq"], exc)
    return settings, last


Promoter = Callable[[str, str], Any]  # (challenger version, reason) -> the registry's AliasChange


class Rollout:
    """Shadow and canary over the live aliases (``cfg.serve.rollout``), for :class:`ChatService`.

    Args:
        cfg: the ``serve.rollout`` section.
        aliases: the current ``{alias: version id}``.
        loaded: the version ids the engine serves.
        events: the event ledger and control channel (None: nowhere; settings stay the config's).
        salt: the router's salt (default: none); the deployment name keeps keys sticky across restarts.
        promoter: moves the champion alias to the challenger (``promote_after``); None: no promotion.
        poll_every: seconds between two reads of the control rows.
    """

    def __init__(self, cfg: Any, aliases: Callable[[], dict[str, str]], loaded: set[str] | dict[str, Any], *,
                 events: RolloutEvents | None = None, salt: str = "", promoter: Promoter | None = None,
                 poll_every: float = 1.0):
        self.cfg, self.aliases, self.loaded, self.events = cfg, aliases, set(loaded), events
        self.promoter, self.poll_every = promoter, poll_every
        self.labels_fields = getattr(cfg, "agreement_fields", None)
        self._lock = threading.RLock()
        self.settings, _ = effective_settings(cfg, events)
        self._seen = max((e["seq"] for e in events.control()), default=0) if events is not None else 0
        self._polled = time.monotonic()
        self.router = Router(self.settings.share, salt)
        self.shadow_router = Router(self.settings.shadow_share, salt + "/shadow")
        self.monitor = CanaryMonitor(cfg.window, Checks.from_config(cfg), router=self.router, events=events,
                                     on_promote=self._promote)
        self._pair: tuple[str, str] | None = None  # (champion, challenger) of the running canary or shadow
        self._promoted: tuple[str, str] | None = None  # a pair that ended with the challenger promoted
        self._missing: str | None = None  # why no canary runs (said once)

    @property
    def enabled(self) -> bool:
        """Canary routing is on."""
        return self.settings.mode == CANARY

    @property
    def shadowing(self) -> bool:
        return self.settings.mode == SHADOW

    # ------------------------------------------------------------------ routing
    def route(self, champion: Route, key: str) -> Route:
        """The route for a request the deployment name sent to ``champion``: the canary's, or
        ``champion`` unchanged."""
        self.poll()
        if not self.enabled:
            return champion
        canary = self._challenger(champion.version)
        if canary is None or self.router.variant(key) != CANARY:
            return champion
        return Route(champion.model, canary, canary, CANARY)

    def shadow_route(self, champion: Route, key: str) -> Route | None:
        """Where a copy of a request answered by ``champion`` goes in shadow mode (None: nowhere)."""
        self.poll()
        if not self.shadowing or champion.variant != CHAMPION:
            return None
        challenger = self._challenger(champion.version)
        if challenger is None or not self.shadow_router.picks(key):
            return None
        return Route(champion.model, challenger, challenger, SHADOW)

    def _challenger(self, champion: str) -> str | None:
        """The challenger's version when a canary or shadow runs against ``champion`` (a new
        pair starts one)."""
        try:
            challenger = self.aliases().get(self.cfg.challenger_alias)
        except Exception:
            log.exception("reading the aliases failed; no challenger traffic")
            challenger = None
        if challenger is not None and (champion, challenger) == self._promoted:
            return None  # promoted: the server's alias cache has not caught up yet
        if challenger is None or challenger not in self.loaded or challenger == champion:
            why = ("no alias" if challenger is None else "not loaded" if challenger not in self.loaded
                   else "the champion's version")
            self._abort(f"{self.cfg.challenger_alias!r}: {why}", champion, challenger)
            return None
        with self._lock:
            if self._pair != (champion, challenger):
                self._pair, self._missing, self._promoted = (champion, challenger), None, None
                self.router.share = float(self.settings.share)
                self.monitor.reset(champion, challenger)
                self._write("start", champion, challenger, {"alias": self.cfg.challenger_alias,
                                                            "mode": self.settings.mode})
        return challenger

    def _abort(self, why: str, champion: str, challenger: str | None) -> None:
        with self._lock:
            if self._missing == why:
                return
            self._missing = why
            if self._pair is not None and self._pair[1] == champion:  # promoted elsewhere (the CLI)
                log.info("the challenger %s is now the champion; the rollout of that pair ends", champion)
                self._pair = None
            elif self._pair is not None:  # a running canary ends
                self._write("abort", champion, challenger, {"why": why, "was": list(self._pair)})
                self._pair = None
            else:
                log.warning("%s rollout is on, but the challenger alias %s; serving the champion only",
                            self.settings.mode, why)

    def _write(self, event: str, champion: str | None, canary: str | None, reason: dict[str, Any]) -> None:
        if self.events is not None:
            try:
                self.events.append(event, champion=champion, canary=canary, share=self.router.share, reason=reason)
            except sqlite3.Error:
                log.exception("writing the rollout event %r failed", event)

    # ------------------------------------------------------------------ settings
    def set_share(self, share: float, reason: str | None = None) -> None:
        """Change the canary's share by hand (recorded, and applied by every server on this workspace)."""
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"share must be within [0, 1], got {share}")
        with self._lock:
            pair = self._pair or (None, None)
            self.router.share = float(share)
            self._write("set", pair[0], pair[1], {"why": reason, "settings": {"share": float(share)},
                                                  "config": config_key(self.cfg)})
            self.poll(force=True)

    def poll(self, *, force: bool = False) -> None:
        """Apply the control rows written since the last look (at most once per ``poll_every``)."""
        if self.events is None or (not force and time.monotonic() - self._polled < self.poll_every):
            return
        self._polled = time.monotonic()
        try:
            rows = self.events.control(self._seen)
        except sqlite3.Error:
            log.exception("reading the rollout settings failed; keeping the current ones")
            return
        for row in rows:
            self._apply(row)

    def _apply(self, row: dict[str, Any]) -> None:
        with self._lock:
            self._seen = max(self._seen, row["seq"])
            if not applies(row, self.cfg):
                return
            try:
                new = self.settings.apply(row["reason"]["settings"])
            except TunesmithError as exc:
                log.warning("rollout event %s ignored: %s", row["seq"], exc)
                return
            old, self.settings = self.settings, new
            self.shadow_router.share = new.shadow_share
            if new.mode != old.mode:  # a new mode starts over (a start row on the next request)
                self._pair, self._missing = None, None
                self.router.share = new.share
                log.info("rollout mode %s -> %s (event %s)", old.mode, new.mode, row["seq"])
            elif new.share != self.router.share:
                self.router.share = new.share
                if self.monitor.rolled_back and new.share > 0:  # the operator re-opens a rolled-back canary
                    self.monitor.reset()
                log.info("canary share -> %s (event %s)", new.share, row["seq"])

    # ------------------------------------------------------------------ outcomes
    def observe(self, route: Route, status: int, answers: list[str], json_asked: bool,
                latency_ms: float | None) -> None:
        """Feed one request of the deployment name (or one shadow copy) to the monitor: 200 is
        ok, 5xx an error; other statuses are skipped (4xx: the client's mistake or a full queue,
        499: the client went away before an answer could be judged)."""
        if self.settings.mode == "off" or (status != 200 and status < 500):
            return
        if route.variant not in (CHAMPION, CANARY, SHADOW):
            return
        pair = self._pair
        if pair is None or route.version != pair[0 if route.variant == CHAMPION else 1]:
            return
        ok = status == 200
        json_valid = None
        if ok and json_asked:
            json_valid = all(_parses(a) for a in answers) if answers else False
        found = tuple(labels(a, self.labels_fields) for a in answers) if ok else ()
        self.monitor.record(route.variant, Outcome(ok, json_valid, latency_ms, found))

    def observe_pair(self, route: Route, champion: list[str], shadow: list[str]) -> None:
        """A shadow's answers beside the champion's answers to the same request."""
        pair = self._pair
        if pair is None or route.version != pair[1]:
            return
        self.monitor.record_pair([labels(a, self.labels_fields) for a in champion],
                                 [labels(a, self.labels_fields) for a in shadow])

    # ------------------------------------------------------------------ promotion
    def _promote(self, result: CheckResult) -> None:
        """Called by the monitor (under its lock, on a request's path): the registry write runs
        on a thread of its own."""
        pair = self._pair
        if pair is None or self.promoter is None:
            return
        threading.Thread(target=self._do_promote, args=(pair, result), name="tunesmith-promote",
                         daemon=True).start()

    def _do_promote(self, pair: tuple[str, str], result: CheckResult) -> None:
        champion, challenger = pair
        c, canary = self.monitor.checks, result.canary
        checks = ["error_rate"] + ["json_validity"] * (canary.json_validity is not None) + [
            "p95_latency"] * (canary.p95_latency_ms is not None) + [
            "agreement"] * (bool(result.agreement) and (c.max_label_distance is not None))
        reason = (f"rollout: {self.monitor.clean} canary requests without a failed check "
                  f"(promote_after {c.promote_after}); last check passed: {', '.join(checks)}")
        numbers = {"champion": asdict(result.champion), "canary": asdict(result.canary),
                   "thresholds": result.thresholds, "why": reason}
        try:
            change = self.promoter(challenger, reason)  # type: ignore[misc]
        except Exception as exc:  # the gate refused, the alias moved meanwhile, the database is locked
            if not isinstance(exc, TunesmithError):
                log.exception("promoting %s failed", challenger)
            log.warning("the canary %s was not promoted: %s", challenger, exc)
            self._write("promote_refused", champion, challenger, {**numbers, "error": str(exc)})
            return
        with self._lock:
            self._promoted, self._pair = pair, None
            self.router.share = 0.0
            move = getattr(change, "move", None)
            self._write("promote", champion, challenger,
                        {**numbers, "by": "rollout", "ledger_seq": getattr(move, "seq", None)})
        log.warning("canary %s promoted to champion (was %s)", challenger, champion)

    # ------------------------------------------------------------------ status
    def status(self, events: int = 20) -> dict[str, Any]:
        self.poll()
        champion, canary = self.monitor.stats()
        _, shadow = self.monitor.stats(SHADOW)
        pair = self._pair
        agreement = self.monitor.agreement(SHADOW if self.shadowing else CANARY)
        return {
            "mode": self.settings.mode, "challenger_alias": self.cfg.challenger_alias, "share": self.router.share,
            "shadow_share": self.settings.shadow_share, "configured_share": self.cfg.share,
            "champion": pair[0] if pair else None, "canary": pair[1] if pair else None,
            "rolled_back": self.monitor.rolled_back, "failures_in_a_row": self.monitor.failures,
            "clean_requests": self.monitor.clean, "promote_after": self.monitor.checks.promote_after,
            "windows": {CHAMPION: asdict(champion), CANARY: asdict(canary), SHADOW: asdict(shadow)},
            "agreement": {f: asdict(a) for f, a in agreement.items()},
            "last_check": self.monitor.last_check.reason() | {"passed": self.monitor.last_check.passed}
            if self.monitor.last_check else None,
            "shadow_check": (lambda r: r.reason() | {"passed": r.passed})(self.monitor.shadow_check())
            if self.shadowing else None,
            "events": self.events.read(events) if self.events is not None else [],
        }


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except (ValueError, TypeError):
        return False
    return True
