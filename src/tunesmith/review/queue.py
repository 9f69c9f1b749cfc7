"""The review queue, in the workspace database: the answers routed to people, and every
decision on them as an append-only audit trail.

- ``review_items``: one row per queued answer (request id and answer index, model version,
  input turns, the answer, its label fields with their confidence and allowed values, the tier
  and why). Queuing the same answer twice is a no-op.
- ``review_audit``: one row per decision (approve, reject) or per changed field (correct), with
  who, when, the field, from what, to what, and the reason code. Rows of one decision share its
  id. Both tables refuse UPDATE and DELETE (SQLite triggers): a decision is replaced by
  appending a newer one, and the older one stays readable.

A reviewer decides an item once (``revise=True`` appends a replacement); two reviewers on one
item give the agreement figure (:func:`agreement`). For the training data, the latest decision
on an item wins (:func:`final_decision`); each item counts once.
"""

from __future__ import annotations

import getpass
import itertools
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tunesmith.config import OutputSpec
from tunesmith.errors import TunesmithError
from tunesmith.review import answers as ans
from tunesmith.review.routing import Decision, RoutingPolicy, decide
from tunesmith.workspace import append_only, connect_db, transaction

Action = Literal["approve", "correct", "reject"]
ACTIONS: tuple[Action, ...] = ("approve", "correct", "reject")
REJECTED = "<rejected>"  # a rejected item's value of every field, for agreement

SCHEMA = """
CREATE TABLE IF NOT EXISTS review_items (
    item INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL,
    choice INTEGER NOT NULL DEFAULT 0,   -- answer index of the request (n > 1)
    queued REAL NOT NULL,
    model_version TEXT,
    kind TEXT NOT NULL CHECK (kind IN ('json', 'label', 'text')),
    input TEXT NOT NULL,                 -- JSON: the input turns [{role, content}], PII scrubbed
    input_hash TEXT NOT NULL,            -- sha256 of the normalised user turns (eval-pack overlap)
    answer TEXT NOT NULL,                -- the model's answer
    fields TEXT NOT NULL,                -- JSON: {field: {value, confidence, allowed}}
    confidence REAL,                     -- the answer's (its lowest field's)
    tier TEXT NOT NULL CHECK (tier IN ('mandatory', 'low_confidence', 'sampled')),
    reason TEXT NOT NULL,                -- why it was routed here
    UNIQUE (request_id, choice)
);
CREATE TABLE IF NOT EXISTS review_audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    decision TEXT NOT NULL,              -- the rows of one decision share this id
    item INTEGER NOT NULL REFERENCES review_items (item),
    at REAL NOT NULL,
    by TEXT NOT NULL,
    action TEXT NOT NULL CHECK (action IN ('approve', 'correct', 'reject')),
    field TEXT,                          -- correct: the changed field; else NULL
    from_value TEXT,
    to_value TEXT,
    reason TEXT                          -- a reason code (review.reason_codes)
);
CREATE INDEX IF NOT EXISTS review_audit_item ON review_audit (item, seq);
""" + append_only("review_items") + append_only("review_audit")

AUDIT_COLUMNS = ("seq", "decision", "item", "at", "by", "action", "field", "from_value", "to_value", "reason")
ITEM_COLUMNS = ("item", "request_id", "choice", "queued", "model_version", "kind", "input", "input_hash", "answer",
                "fields", "confidence", "tier", "reason")


# ----------------------------------------------------------------------------- records
@dataclass(frozen=True)
class FieldValue:
    """One label field of a queued answer."""

    value: str | None  # None: missing, or the answer did not parse
    confidence: float | None = None
    allowed: tuple[str, ...] = ()  # empty: any value (free text)

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "confidence": self.confidence, "allowed": list(self.allowed)}


@dataclass(frozen=True)
class NewItem:
    """An answer to queue."""

    request_id: str
    model_version: str | None
    kind: str
    input: list[dict[str, str]]
    answer: str
    fields: dict[str, FieldValue]
    decision: Decision
    choice: int = 0


@dataclass(frozen=True)
class AuditRow:
    seq: int
    decision: str
    item: int
    at: float
    by: str
    action: Action
    field: str | None
    from_value: str | None
    to_value: str | None
    reason: str | None


@dataclass(frozen=True)
class ReviewDecision:
    """One reviewer's decision on one item: its audit rows together."""

    id: str
    item: int
    at: float
    by: str
    action: Action
    changes: dict[str, tuple[str | None, str]]  # field -> (from, to); correct only
    reason: str | None
    seq: int  # the first audit row's: decisions order by it

    @classmethod
    def from_rows(cls, rows: Sequence[AuditRow]) -> ReviewDecision:
        first = rows[0]
        changes = {r.field: (r.from_value, r.to_value) for r in rows if r.field is not None}
        return cls(first.decision, first.item, first.at, first.by, first.action, changes,  # type: ignore[arg-type]
                   first.reason, first.seq)


@dataclass(frozen=True)
class ReviewItem:
    item: int
    request_id: str
    choice: int
    queued: float
    model_version: str | None
    kind: str
    input: list[dict[str, str]]
    input_hash: str
    answer: str
    fields: dict[str, FieldValue]
    confidence: float | None
    tier: str
    reason: str
    decisions: list[ReviewDecision] = field(default_factory=list)

    @property
    def status(self) -> str:
        return "decided" if self.decisions else "pending"

    @property
    def parsed(self) -> bool:
        return all(f.value is not None for f in self.fields.values())

    def reviewers(self) -> list[str]:
        return list(dict.fromkeys(d.by for d in self.decisions))

    def latest_by(self, reviewer: str) -> ReviewDecision | None:
        mine = [d for d in self.decisions if d.by == reviewer]
        return mine[-1] if mine else None

    def values_after(self, decision: ReviewDecision) -> dict[str, str | None]:
        """The field values a decision leaves: the model's, with a correction's changes."""
        if decision.action == "reject":
            return {name: REJECTED for name in self.fields}
        return {name: decision.changes.get(name, (None, f.value))[1] for name, f in self.fields.items()}

    def to_dict(self) -> dict[str, Any]:
        return {"item": self.item, "request_id": self.request_id, "choice": self.choice, "queued": self.queued,
                "model_version": self.model_version, "kind": self.kind, "input": self.input,
                "input_hash": self.input_hash, "answer": self.answer,
                "fields": {k: v.to_dict() for k, v in self.fields.items()}, "confidence": self.confidence,
                "tier": self.tier, "reason": self.reason, "status": self.status,
                "decisions": [{"id": d.id, "at": d.at, "by": d.by, "action": d.action,
                               "changes": {k: {"from": a, "to": b} for k, (a, b) in d.changes.items()},
                               "reason": d.reason} for d in self.decisions]}


def reviewer_name(by: str | None) -> str:
    """``--by``, else the OS user."""
    name = (by if by is not None else _os_user()).strip()
    if not name:
        raise TunesmithError("the reviewer's name is empty: pass --by NAME")
    return name


def _os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in this environment (containers): the caller must say
        return ""


# ----------------------------------------------------------------------------- the queue
class ReviewQueue:
    """The review queue of one workspace database (``<workspace>/tunesmith.db``)."""

    def __init__(self, db_path: Path):
        self.db_path = Path(db_path)
        with connect_db(self.db_path) as db:
            db.executescript(SCHEMA)

    # ------------------------------------------------------------------ enqueue
    def enqueue(self, items: Iterable[NewItem]) -> tuple[int, int]:
        """Queue answers that need review; returns (newly queued, already queued). An ``auto``
        decision is refused: the queue holds only what people must look at."""
        new = old = 0
        now = time.time()
        with transaction(self.db_path, write=True) as db:
            for it in items:
                if not it.decision.needs_review:
                    raise ValueError(f"request {it.request_id}: an auto-approved answer is not queued")
                if db.execute("SELECT 1 FROM review_items WHERE request_id = ? AND choice = ?",
                              (it.request_id, it.choice)).fetchone():
                    old += 1  # checked first: a refused insert would still use up an item number
                    continue
                conf = it.decision.confidence
                db.execute(
                    f"INSERT INTO review_items ({', '.join(ITEM_COLUMNS[1:])}) "
                    f"VALUES ({', '.join('?' * (len(ITEM_COLUMNS) - 1))})",
                    (it.request_id, it.choice, now, it.model_version, it.kind, json.dumps(it.input, ensure_ascii=False),
                     ans.input_hash(it.input), it.answer,
                     json.dumps({k: v.to_dict() for k, v in it.fields.items()}, ensure_ascii=False),
                     conf, it.decision.tier, it.decision.reason))
                new += 1
        return new, old

    # ------------------------------------------------------------------ read
    def items(self, *, status: str = "all", tier: str | None = None, not_by: str | None = None,
              limit: int | None = None) -> list[ReviewItem]:
        """Items oldest first: ``status`` pending | decided | all; ``not_by``: items this
        reviewer has not decided (a second reviewer's work list)."""
        if status not in ("pending", "decided", "all"):
            raise TunesmithError(f"unknown status {status!r}; one of pending, decided, all")
        with transaction(self.db_path) as db:
            rows = db.execute(f"SELECT {', '.join(ITEM_COLUMNS)} FROM review_items ORDER BY item").fetchall()
            audit = db.execute(f"SELECT {', '.join(AUDIT_COLUMNS)} FROM review_audit ORDER BY seq").fetchall()
        decisions = _decisions(audit)
        out = []
        for row in rows:
            it = _item(row, decisions.get(row[0], []))
            if ((status == "all" or it.status == status) and (tier is None or it.tier == tier)
                    and (not_by is None or not_by not in it.reviewers())):
                out.append(it)
        return out[:limit] if limit is not None else out

    def get(self, ref: int | str) -> ReviewItem:
        """An item by its number or its request id."""
        with transaction(self.db_path) as db:
            return self._get(db, ref)

    def _get(self, db: Any, ref: int | str) -> ReviewItem:
        key = str(ref).strip()
        where, arg = ("item = ?", int(key)) if key.isdigit() else ("request_id = ?", key)
        rows = db.execute(f"SELECT {', '.join(ITEM_COLUMNS)} FROM review_items WHERE {where} ORDER BY choice",
                          (arg,)).fetchall()
        if not rows:
            count = db.execute("SELECT COUNT(*) FROM review_items").fetchone()[0]
            raise TunesmithError(f"no review item {key!r} in the queue ({count} item(s); "
                                 "`tunesmith review list` shows them)")
        if len(rows) > 1:
            raise TunesmithError(f"request {key} has {len(rows)} queued answers (items "
                                 f"{', '.join(str(r[0]) for r in rows)}); name the item number")
        audit = db.execute(f"SELECT {', '.join(AUDIT_COLUMNS)} FROM review_audit WHERE item = ? ORDER BY seq",
                           (rows[0][0],)).fetchall()
        return _item(rows[0], _decisions(audit).get(rows[0][0], []))

    def audit(self, item: int | None = None) -> list[AuditRow]:
        """The audit trail, oldest first (of one item, or all)."""
        query, args = f"SELECT {', '.join(AUDIT_COLUMNS)} FROM review_audit", ()
        if item is not None:
            query, args = query + " WHERE item = ?", (item,)
        with transaction(self.db_path) as db:
            return [AuditRow(*r) for r in db.execute(query + " ORDER BY seq", args).fetchall()]

    def page(self, *, status: str = "pending", tier: str | None = None, after: int | None = None,
             before: int | None = None, limit: int = 50, field: str | None = None,
             below: float | None = None) -> list[ReviewItem]:
        """At most ``limit`` items in item order, read with SQL (a queue of 10,000 items pages in
        milliseconds; :meth:`items` reads them all): those after item ``after`` (oldest first),
        or the nearest ones before item ``before`` (still returned oldest first). ``below``
        keeps items whose confidence is under it: the answer's (its lowest field's), or with
        ``field`` that field's."""
        if status not in ("pending", "decided", "all"):
            raise TunesmithError(f"unknown status {status!r}; one of pending, decided, all")
        where, args = [], []
        if field is not None and not field.replace("_", "").replace(".", "").isalnum():
            raise TunesmithError(f"unknown field {field!r}")
        if below is not None:
            where.append("confidence < ?" if field is None else "json_extract(fields, ?) < ?")
            args += [below] if field is None else [f'$."{field}".confidence', below]
        if status != "all":
            where.append(("NOT " if status == "pending" else "")
                         + "EXISTS (SELECT 1 FROM review_audit a WHERE a.item = review_items.item)")
        if tier is not None:
            where.append("tier = ?")
            args.append(tier)
        if after is not None:
            where.append("item > ?")
            args.append(after)
        if before is not None:
            where.append("item < ?")
            args.append(before)
        order = "DESC" if before is not None else "ASC"
        sql = (f"SELECT {', '.join(ITEM_COLUMNS)} FROM review_items"
               + (" WHERE " + " AND ".join(where) if where else "") + f" ORDER BY item {order} LIMIT ?")
        with transaction(self.db_path) as db:
            rows = db.execute(sql, (*args, limit)).fetchall()
            ids = [r[0] for r in rows]
            audit = db.execute(f"SELECT {', '.join(AUDIT_COLUMNS)} FROM review_audit WHERE item IN "
                               f"({', '.join('?' * len(ids))}) ORDER BY seq", ids).fetchall() if ids else []
        decisions = _decisions(audit)
        return sorted((_item(r, decisions.get(r[0], [])) for r in rows), key=lambda it: it.item)

    def history(self, by: str, *, limit: int = 50) -> list[ReviewDecision]:
        """``by``'s latest ``limit`` decisions, newest first."""
        with transaction(self.db_path) as db:
            ids = [r[0] for r in db.execute("SELECT decision FROM review_audit WHERE by = ? GROUP BY decision "
                                            "ORDER BY MIN(seq) DESC LIMIT ?", (by, limit))]
            rows = db.execute(f"SELECT {', '.join(AUDIT_COLUMNS)} FROM review_audit WHERE decision IN "
                              f"({', '.join('?' * len(ids))}) ORDER BY seq", ids).fetchall() if ids else []
        decisions = [d for ds in _decisions(rows).values() for d in ds]
        return sorted(decisions, key=lambda d: -d.seq)

    def shared_with_others(self, reviewer: str) -> list[ReviewItem]:
        """The items ``reviewer`` decided that someone else decided too (their agreement's
        items), read with SQL rather than the whole queue."""
        with transaction(self.db_path) as db:
            ids = [r[0] for r in db.execute(
                "SELECT item FROM review_audit GROUP BY item HAVING SUM(by = ?) > 0 AND COUNT(DISTINCT by) > 1",
                (reviewer,))]
            items = []
            for start in range(0, len(ids), 500):  # SQLite's variable limit
                chunk = ids[start:start + 500]
                marks = ", ".join("?" * len(chunk))
                rows = db.execute(f"SELECT {', '.join(ITEM_COLUMNS)} FROM review_items WHERE item IN ({marks})",
                                  chunk).fetchall()
                audit = _decisions(db.execute(f"SELECT {', '.join(AUDIT_COLUMNS)} FROM review_audit WHERE item IN "
                                              f"({marks}) ORDER BY seq", chunk).fetchall())
                items += [_item(r, audit.get(r[0], [])) for r in rows]
        return sorted(items, key=lambda it: it.item)

    def counts(self) -> dict[str, dict[str, int]]:
        """{tier: {"pending": n, "decided": n}} over the whole queue, in one query."""
        with transaction(self.db_path) as db:
            rows = db.execute(
                "SELECT tier, EXISTS (SELECT 1 FROM review_audit a WHERE a.item = i.item) AS decided, COUNT(*) "
                "FROM review_items i GROUP BY tier, decided").fetchall()
        out: dict[str, dict[str, int]] = {}
        for tier, decided, n in rows:
            out.setdefault(tier, {"pending": 0, "decided": 0})["decided" if decided else "pending"] += n
        return out

    # ------------------------------------------------------------------ decide
    def decide(self, ref: int | str, action: str, *, by: str | None = None,
               changes: Mapping[str, str] | None = None, reason: str | None = None,
               reason_codes: Sequence[str] = (), revise: bool = False,
               expect_decisions: int | None = None) -> ReviewDecision:
        """Record one reviewer's decision; every check runs before anything is written, and the
        check and the write happen in one locked transaction.

        Raises:
            StaleItem: ``expect_decisions`` is given (the number of decisions the reviewer saw
                when the form was drawn) and the item has a different number now: someone decided
                it meanwhile; nothing is written.
            TunesmithError: no such item; this reviewer already decided it (and not ``revise``);
                a correction naming an unknown field, a value outside the allowed ones, or no
                change; approving an answer that did not parse; a reason code not configured;
                rejecting without a reason code.
        """
        if action not in ACTIONS:
            raise TunesmithError(f"unknown review action {action!r}; one of {', '.join(ACTIONS)}")
        reviewer = reviewer_name(by)
        changes = dict(changes or {})
        with transaction(self.db_path, write=True) as db:
            item = self._get(db, ref)
            if expect_decisions is not None and len(item.decisions) != expect_decisions:
                raise StaleItem(item.item, item.decisions[expect_decisions:])
            _check_not_decided(item, reviewer, revise)
            _check_reason(action, reason, reason_codes)
            rows = _rows_for(item, action, changes, reason)
            decision_id, now = uuid.uuid4().hex[:12], time.time()
            for fld, old, new in rows:
                db.execute("INSERT INTO review_audit (decision, item, at, by, action, field, from_value, to_value, "
                           "reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           (decision_id, item.item, now, reviewer, action, fld, old, new, reason))
            stored = db.execute(f"SELECT {', '.join(AUDIT_COLUMNS)} FROM review_audit WHERE decision = ? "
                                "ORDER BY seq", (decision_id,)).fetchall()
        return ReviewDecision.from_rows([AuditRow(*r) for r in stored])


class StaleItem(TunesmithError):
    """The item changed since the reviewer's form was drawn (web UI: another reviewer decided it)."""

    def __init__(self, item: int, newer: list[ReviewDecision]):
        who = ", ".join(f"{d.action} by {d.by}" for d in newer) or "its decisions changed"
        super().__init__(f"item {item} was decided meanwhile ({who}); nothing was written. Look at it again "
                         "and decide with the new decision in view")
        self.item, self.newer = item, newer


def _check_not_decided(item: ReviewItem, reviewer: str, revise: bool) -> None:
    earlier = item.latest_by(reviewer)
    if earlier is not None and not revise:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(earlier.at))
        raise TunesmithError(
            f"item {item.item} was already decided by {reviewer} ({earlier.action} at {when}); a reviewer decides "
            "an item once. Pass --revise to replace your decision (the earlier one stays in the audit trail)")
    if earlier is None and revise:
        raise TunesmithError(f"--revise: {reviewer} has not decided item {item.item} yet; decide it without --revise")


def _check_reason(action: str, reason: str | None, codes: Sequence[str]) -> None:
    if reason is None:
        if action == "reject":
            raise TunesmithError("a rejection needs a reason code (--reason); one of: " + ", ".join(codes))
        return
    if codes and reason not in codes:
        raise TunesmithError(f"unknown reason code {reason!r}; one of: {', '.join(codes)} (review.reason_codes)")


def _rows_for(item: ReviewItem, action: str, changes: dict[str, str],
              reason: str | None) -> list[tuple[str | None, str | None, str | None]]:
    """The audit rows of a decision: (field, from, to); validated against the item."""
    if action != "correct":
        if changes:
            raise TunesmithError(f"{action} takes no field values; use `correct` to change fields")
        if action == "approve" and not item.parsed:
            missing = [k for k, f in item.fields.items() if f.value is None]
            raise TunesmithError(f"item {item.item}: the answer has no value for {', '.join(missing)} (it did not "
                                 "parse): correct every field, or reject it")
        return [(None, None, None)]
    if not changes:
        raise TunesmithError(f"correct needs at least one field=value; item {item.item}'s fields: "
                             + ", ".join(item.fields))
    rows = []
    for name, value in changes.items():
        if name not in item.fields:
            raise TunesmithError(f"item {item.item} has no field {name!r}; its fields: {', '.join(item.fields)}")
        f = item.fields[name]
        if f.allowed and value not in f.allowed:
            raise TunesmithError(f"{value!r} is not an allowed value of {name}; allowed: {', '.join(f.allowed)}")
        if value == f.value:
            raise TunesmithError(f"{name} is already {value!r} in the model's answer: nothing to correct "
                                 "(approve the answer instead)")
        rows.append((name, f.value, value))
    unset = [k for k, f in item.fields.items() if f.value is None and k not in changes]
    if unset:
        raise TunesmithError(f"item {item.item}: the answer has no value for {', '.join(unset)} (it did not parse): "
                             "a correction must give them too")
    return rows


def _decisions(audit: Iterable[tuple]) -> dict[int, list[ReviewDecision]]:
    rows = [AuditRow(*r) for r in audit]
    by_item: dict[int, list[ReviewDecision]] = {}
    for _, group in itertools.groupby(sorted(rows, key=lambda r: (r.decision, r.seq)), key=lambda r: r.decision):
        d = ReviewDecision.from_rows(list(group))
        by_item.setdefault(d.item, []).append(d)
    for decisions in by_item.values():
        decisions.sort(key=lambda d: d.seq)
    return by_item


def _item(row: tuple, decisions: list[ReviewDecision]) -> ReviewItem:
    d = dict(zip(ITEM_COLUMNS, row, strict=True))
    fields = {k: FieldValue(v["value"], v.get("confidence"), tuple(v.get("allowed") or ()))
              for k, v in json.loads(d["fields"]).items()}
    return ReviewItem(d["item"], d["request_id"], d["choice"], d["queued"], d["model_version"], d["kind"],
                      json.loads(d["input"]), d["input_hash"], d["answer"], fields, d["confidence"], d["tier"],
                      d["reason"], decisions)


def final_decision(item: ReviewItem) -> ReviewDecision | None:
    """The decision that counts for the training data: the latest one (any reviewer)."""
    return item.decisions[-1] if item.decisions else None


# ----------------------------------------------------------------------------- agreement
@dataclass(frozen=True)
class Agreement:
    """How often two reviewers of the same item agree (each reviewer's latest decision; a
    rejection counts as the value ``<rejected>`` of every field)."""

    items: int  # items decided by two or more reviewers
    pairs: int  # reviewer pairs compared (an item with 3 reviewers gives 3)
    item_agreement: float | None  # share of pairs agreeing on every field
    field_agreement: float | None  # share of (pair, field) agreeing
    per_field: dict[str, float]
    kappa: dict[str, float | None]  # Cohen's kappa per field over the pooled pairs (None: undefined)

    def to_dict(self) -> dict[str, Any]:
        return {"items": self.items, "pairs": self.pairs, "item_agreement": self.item_agreement,
                "field_agreement": self.field_agreement, "per_field": self.per_field, "kappa": self.kappa}


def agreement(items: Iterable[ReviewItem]) -> Agreement:
    pairs_by_field: dict[str, list[tuple[str, str]]] = {}
    n_items = n_pairs = whole = 0
    for it in items:
        reviewers = it.reviewers()
        if len(reviewers) < 2:
            continue
        n_items += 1
        finals = {r: it.values_after(it.latest_by(r)) for r in reviewers}  # type: ignore[arg-type]
        for a, b in itertools.combinations(reviewers, 2):
            n_pairs += 1
            whole += finals[a] == finals[b]
            for name in it.fields:
                pairs_by_field.setdefault(name, []).append((str(finals[a][name]), str(finals[b][name])))
    per_field = {k: sum(x == y for x, y in v) / len(v) for k, v in pairs_by_field.items()}
    total = sum(len(v) for v in pairs_by_field.values())
    return Agreement(n_items, n_pairs, whole / n_pairs if n_pairs else None,
                     sum(sum(x == y for x, y in v) for v in pairs_by_field.values()) / total if total else None,
                     per_field, {k: _kappa(v) for k, v in pairs_by_field.items()})


def _kappa(pairs: list[tuple[str, str]]) -> float | None:
    """Cohen's kappa, (observed - chance agreement) / (1 - chance), chance from each reviewer's
    own value frequencies; None where it is undefined (both used one value throughout). The
    tests check it against scikit-learn's ``cohen_kappa_score`` (not imported here: 5 s)."""
    a, b = zip(*pairs, strict=True)
    n = len(pairs)
    observed = sum(x == y for x, y in pairs) / n
    ca, cb = Counter(a), Counter(b)
    chance = sum(ca[v] * cb[v] for v in ca) / n**2
    return None if chance == 1 else (observed - chance) / (1 - chance)


# ----------------------------------------------------------------------------- from the request log
@dataclass(frozen=True)
class LoggedAnswer:
    """One answer of the request log, with what the queue needs: the input turns, the per-field
    confidence and the routing decision recorded with it (None where the log has none)."""

    request_id: str
    choice: int
    created: float
    version: str | None
    messages: list[dict[str, str]] | None
    answer: str
    confidence: dict[str, float] | None = None
    decision: Decision | None = None


# The request-log columns the queue reads (JSON text; serve/requestlog.py), written beside each
# answer: the request's input turns (PII scrubbed), the per-field calibrated confidence, and the
# routing decision (Decision.to_dict()). A log from an older tunesmith may lack their values.
LOG_COLUMNS = ("messages", "confidence", "decision")


def logged_answers(db_path: Path, *, since: float | None = None, until: float | None = None) -> list[LoggedAnswer]:
    """Answered requests (status 200) of the request log, oldest first. Shadow copies are left
    out (nobody received them)."""
    from tunesmith.serve import requestlog

    db = requestlog.connect(Path(db_path))
    try:
        have = {row[1] for row in db.execute("PRAGMA table_info(request_log)")}
        extra = [c for c in LOG_COLUMNS if c in have]
        where = ["status = 200", "answer IS NOT NULL"]
        args: list[Any] = []
        if "shadow_of" in have:
            where.append("shadow_of IS NULL")
        if since is not None:
            where.append("created >= ?")
            args.append(since)
        if until is not None:
            where.append("created < ?")
            args.append(until)
        cols = ["request_id", "choice", "created", "version", "answer", *extra]
        rows = db.execute(f"SELECT {', '.join(cols)} FROM request_log WHERE {' AND '.join(where)} "
                          "ORDER BY created, request_id, choice", args).fetchall()
    finally:
        db.close()
    out = []
    for row in rows:
        d = dict(zip(cols, row, strict=True))
        decision = json.loads(d["decision"]) if d.get("decision") else None
        out.append(LoggedAnswer(d["request_id"], d["choice"], d["created"], d["version"],
                                json.loads(d["messages"]) if d.get("messages") else None, d["answer"],
                                json.loads(d["confidence"]) if d.get("confidence") else None,
                                Decision.from_dict(decision) if decision else None))
    return out


@dataclass(frozen=True)
class EnqueueReport:
    """Every logged answer accounted for."""

    answers: int
    queued: int  # newly queued
    already_queued: int
    auto: int  # auto-approved: not queued
    no_decision: int  # no recorded decision and no policy to decide with
    no_input: int  # the log has no input turns for it (an older log): cannot be reviewed for training
    tiers: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def enqueue_from_request_log(queue: ReviewQueue, spec: OutputSpec, answers: Iterable[LoggedAnswer], *,
                             policy: RoutingPolicy | None = None,
                             route: Callable[[LoggedAnswer], Decision] | None = None) -> EnqueueReport:
    """Queue the logged answers whose decision needs a person.

    The decision recorded with an answer is used as it is (so the queue sees what the client
    was told); an answer logged without one is routed now with ``policy`` (or ``route``), or
    counted as ``no_decision`` when neither is given.
    """
    items, counts = [], {"answers": 0, "auto": 0, "no_decision": 0, "no_input": 0}
    tiers: dict[str, int] = {}
    kind, names = ans.answer_kind(spec), ans.field_names(spec)
    allowed = {n: tuple(ans.allowed(spec, n)) for n in names}
    for a in answers:
        counts["answers"] += 1
        values = ans.answer_fields(spec, a.answer)
        decision = a.decision
        if decision is None and route is not None:
            decision = route(a)
        elif decision is None and policy is not None:
            decision = decide(a.request_id, values, _lowest(a.confidence, names), policy)
        if decision is None:
            counts["no_decision"] += 1
            continue
        if not decision.needs_review:
            counts["auto"] += 1
            continue
        if not a.messages:
            counts["no_input"] += 1
            continue
        tiers[decision.tier] = tiers.get(decision.tier, 0) + 1
        conf = a.confidence or {}
        fields = {n: FieldValue((values or {}).get(n), conf.get(n), allowed[n]) for n in names}
        turns = list(a.messages[:-1] if a.messages[-1].get("role") == "assistant" else a.messages)
        items.append(NewItem(a.request_id, a.version, kind, turns, a.answer, fields, decision, a.choice))
    new, old = queue.enqueue(items)
    return EnqueueReport(counts["answers"], new, old, counts["auto"], counts["no_decision"], counts["no_input"], tiers)


def _lowest(confidence: Mapping[str, float] | None, names: Sequence[str]) -> float | None:
    if not confidence:
        return None
    values = [confidence[n] for n in names if confidence.get(n) is not None]
    return min(values) if values else None
