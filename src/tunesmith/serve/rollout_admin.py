"""`tunesmith rollout status|set|promote|abort`: a project's rollout, from its workspace database.

Everything here reads and writes the workspace database only, so it works while a server runs in
another process (SQLite WAL lets both in):

- :func:`rollout_status` computes the windows from the request log (the latest ``window``
  requests per variant of the deployment name), the agreement per label field (shadow: paired
  by ``shadow_of``; canary: distance between distributions) and the checks, as the server's
  monitor does; plus the settings in force and the latest events.
- :func:`set_rollout` / :func:`abort_rollout` append a ``set`` / ``abort`` row with
  ``settings``: running servers apply it within a second (:meth:`Rollout.poll`), and a server
  started later applies it too: a change holds until the next one, over the config file.
- :func:`promote_challenger` is the registry's gated promote of the challenger's version to
  ``champion`` (the same ledger row as `tunesmith promote`), plus a ``promote`` event.
"""

from __future__ import annotations

import sqlite3
from collections import OrderedDict
from dataclasses import asdict
from typing import Any

from tunesmith.config import Config
from tunesmith.errors import TunesmithError
from tunesmith.serve.agreement import label_distance, labels, paired_agreement
from tunesmith.serve.catalog import CHAMPION
from tunesmith.serve.rollout import (
    CANARY,
    SHADOW,
    Checks,
    Outcome,
    RolloutEvents,
    check_settings,
    compare,
    config_key,
    effective_settings,
    window_stats,
)

MAX_ANSWERS = 8  # rows a request may have in the log (n)


def _events(cfg: Config) -> RolloutEvents:
    from tunesmith.workspace import Workspace

    return RolloutEvents(Workspace(cfg.workspace_dir).db_path)


def _registry(cfg: Config) -> Any:
    from tunesmith.registry import ModelRegistry

    return ModelRegistry.from_config(cfg)


# ------------------------------------------------------------------ status
def rollout_status(cfg: Config, *, events: int = 10) -> dict[str, Any]:
    """Mode, shares, the versions in play, per-variant window stats, agreement per label field,
    the checks and the latest ``events`` rows."""
    from tunesmith.serve.requestlog import connect

    r = cfg.serve.rollout
    ledger = _events(cfg)
    settings, last = effective_settings(r, ledger)
    aliases = _registry(cfg).aliases()
    checks = Checks.from_config(r)
    db = connect(ledger.db_path)
    try:
        requests = {v: _window(db, cfg.project, v, r.window) for v in (CHAMPION, CANARY, SHADOW)}
        champion_version = _latest_version(requests[CHAMPION]) or aliases.get(CHAMPION)
        challenger = aliases.get(r.challenger_alias)
        for v, version in ((CHAMPION, champion_version), (CANARY, challenger), (SHADOW, challenger)):
            requests[v] = [q for q in requests[v] if version is None or q["version"] == version]
        pairs = _pairs(db, requests[SHADOW], r.agreement_fields)
    finally:
        db.close()
    outcomes = {v: [_outcome(q, r.agreement_fields) for q in qs] for v, qs in requests.items()}
    outcomes = {v: [o for o in os_ if o is not None] for v, os_ in outcomes.items()}
    stats = {v: window_stats(os_) for v, os_ in outcomes.items()}
    answers = {v: [x for o in os_ if o.ok for x in o.labels] for v, os_ in outcomes.items()}
    canary_agreement = label_distance(answers[CHAMPION], answers[CANARY])
    shadow_agreement = paired_agreement(pairs)
    result = {
        "project": cfg.project, "mode": settings.mode, "share": settings.share, "shadow_share": settings.shadow_share,
        "settings_from": "config" if last is None else {k: last[k] for k in ("seq", "time", "event")}
        | {"by": last["reason"].get("by"), "why": last["reason"].get("why")},
        "challenger_alias": r.challenger_alias, "champion": champion_version, "challenger": challenger,
        "promote_after": r.promote_after, "window": r.window,
        "windows": {v: asdict(s) for v, s in stats.items()},
        "agreement": {CANARY: {f: asdict(a) for f, a in canary_agreement.items()},
                      SHADOW: {f: asdict(a) for f, a in shadow_agreement.items()}},
        "checks": {},
        "events": ledger.read(events),
    }
    for v, agreement in ((CANARY, canary_agreement), (SHADOW, shadow_agreement)):
        if stats[v].requests:
            check = compare(stats[CHAMPION], stats[v], checks, agreement)
            result["checks"][v] = {"passed": check.passed, "failed": check.failed,
                                   "failed_fields": check.failed_fields, "thresholds": check.thresholds}
    return result


def _window(db: sqlite3.Connection, model: str, variant: str, window: int) -> list[dict[str, Any]]:
    """The latest ``window`` requests of one variant of the deployment name, newest first."""
    rows = db.execute(
        "SELECT request_id, choice, version, answer, status, latency_ms, json_asked, shadow_of FROM request_log "
        "WHERE model = ? AND variant = ? ORDER BY created DESC, choice LIMIT ?",
        (model, variant, window * MAX_ANSWERS)).fetchall()
    requests: OrderedDict[str, dict[str, Any]] = OrderedDict()
    for request_id, choice, version, answer, status, latency, json_asked, shadow_of in rows:
        q = requests.setdefault(request_id, {"request_id": request_id, "version": version, "status": status,
                                             "latency_ms": latency, "json_asked": json_asked,
                                             "shadow_of": shadow_of, "answers": {}})
        if answer is not None:
            q["answers"][choice] = answer
    return list(requests.values())[:window]


def _latest_version(requests: list[dict[str, Any]]) -> str | None:
    return requests[0]["version"] if requests else None


def _outcome(q: dict[str, Any], fields: list[str] | None) -> Outcome | None:
    """A logged request as the monitor saw it (4xx and 499 are not counted)."""
    status = q["status"]
    if status != 200 and status < 500:
        return None
    ok = status == 200
    texts = [q["answers"][c] for c in sorted(q["answers"])]
    json_valid = None
    if ok and q["json_asked"]:
        json_valid = bool(texts) and all(_parses(t) for t in texts)
    return Outcome(ok, json_valid, q["latency_ms"], tuple(labels(t, fields) for t in texts) if ok else ())


def _pairs(db: sqlite3.Connection, shadows: list[dict[str, Any]], fields: list[str] | None) -> list[tuple]:
    """(champion labels, shadow labels) for each answered shadow copy and its champion's answer."""
    answered = [q for q in shadows if q["status"] == 200 and q["shadow_of"]]
    found: dict[tuple[str, int], str] = {}
    ids = [q["shadow_of"] for q in answered]
    for start in range(0, len(ids), 500):  # SQLite's variable limit
        chunk = ids[start : start + 500]
        for request_id, choice, answer in db.execute(
                f"SELECT request_id, choice, answer FROM request_log WHERE status = 200 AND request_id IN "
                f"({', '.join('?' * len(chunk))})", chunk):
            if answer is not None:
                found[(request_id, choice)] = answer
    pairs = []
    for q in answered:
        for choice, text in sorted(q["answers"].items()):
            champion = found.get((q["shadow_of"], choice))
            if champion is not None:
                pairs.append((labels(champion, fields), labels(text, fields)))
    return pairs


def _parses(text: str) -> bool:
    import json

    try:
        json.loads(text)
    except ValueError:
        return False
    return True


# ------------------------------------------------------------------ changes
def set_rollout(cfg: Config, *, mode: str | None = None, share: float | None = None,
                shadow_share: float | None = None, reason: str | None = None, by: str | None = None) -> dict[str, Any]:
    """Record new settings (a ``set`` row); running servers apply them within a second."""
    from tunesmith.registry.model_registry import current_user

    check_settings(mode, share, shadow_share)
    changes = {k: v for k, v in (("mode", mode), ("share", share), ("shadow_share", shadow_share)) if v is not None}
    if not changes:
        raise TunesmithError("nothing to set: give --mode, --share and/or --shadow-share")
    r = cfg.serve.rollout
    ledger = _events(cfg)
    settings = effective_settings(r, ledger)[0].apply(changes)
    aliases = _registry(cfg).aliases()
    challenger = aliases.get(r.challenger_alias)
    sends = (settings.mode == CANARY and settings.share > 0) or (settings.mode == SHADOW and settings.shadow_share > 0)
    if sends and challenger is None:
        raise TunesmithError(f"no '{r.challenger_alias}' alias in {cfg.workspace_dir}, so {settings.mode} rollout has "
                             f"no version to send traffic to; point it at one first: `tunesmith promote ID --alias "
                             f"{r.challenger_alias}`")
    row = ledger.append("set", champion=aliases.get(CHAMPION), canary=challenger, share=settings.share,
                        reason={"settings": changes, "by": by or current_user(), "why": reason,
                                "config": config_key(r)})
    return {"event": row, "settings": asdict(settings)}


def abort_rollout(cfg: Config, *, reason: str, by: str | None = None) -> dict[str, Any]:
    """Stop all challenger traffic (canary share and shadow share 0; the mode stays); recorded
    with ``reason``. `rollout set --share` (or ``--shadow-share``) starts it again."""
    from tunesmith.registry.model_registry import current_user

    if not (reason or "").strip():
        raise TunesmithError("abort needs --reason \"...\": the rollout events record why traffic was stopped")
    r = cfg.serve.rollout
    ledger = _events(cfg)
    changes = {"share": 0.0, "shadow_share": 0.0}
    settings = effective_settings(r, ledger)[0].apply(changes)
    aliases = _registry(cfg).aliases()
    row = ledger.append("abort", champion=aliases.get(CHAMPION), canary=aliases.get(r.challenger_alias), share=0.0,
                        reason={"settings": changes, "by": by or current_user(), "why": reason.strip(),
                                "config": config_key(r)})
    return {"event": row, "settings": asdict(settings)}


def promote_challenger(cfg: Config, *, force: bool = False, reason: str | None = None,
                       by: str | None = None) -> tuple[Any, dict[str, Any] | None]:
    """The challenger alias's version becomes ``champion`` through the registry's gated promote
    (``force`` + ``reason`` overrides the gate); (the registry's change, the ``promote`` event
    or None when nothing moved)."""
    r = cfg.serve.rollout
    registry = _registry(cfg)
    aliases = registry.aliases()
    challenger = aliases.get(r.challenger_alias)
    if challenger is None:
        raise TunesmithError(f"no '{r.challenger_alias}' alias in {cfg.workspace_dir}: nothing to promote; set it "
                             f"with `tunesmith promote ID --alias {r.challenger_alias}`")
    change = registry.promote(challenger, CHAMPION, force=force, reason=reason, by=by)
    if not change.changed:
        return change, None
    move = change.move
    row = _events(cfg).append("promote", champion=change.previous, canary=challenger, share=0.0,
                              reason={"by": move.by, "why": reason, "forced": move.forced, "ledger_seq": move.seq,
                                      "source": "tunesmith rollout promote"})
    return change, row
