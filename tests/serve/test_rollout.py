"""Canary rollout: sticky hash routing, the monitor's checks and automatic rollback with its
append-only event rows, the config section, and the served deployment routing to the canary."""

from __future__ import annotations

import json
import random
import sqlite3

import pytest
from scipy.stats import binom

from tunesmith.config import RolloutConfig
from tunesmith.serve.catalog import Route
from tunesmith.serve.rollout import (
    CanaryMonitor,
    Checks,
    Outcome,
    Rollout,
    RolloutEvents,
    Router,
    config_key,
    route_key,
)


def random_keys(n: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    return [f"user-{rng.getrandbits(64):016x}" for _ in range(n)]


# ------------------------------------------------------------------ router
def test_a_10_percent_share_lands_in_the_binomial_99_interval():
    n, share = 2000, 0.1
    router = Router(share, salt="deploy-1")
    canary = sum(router.variant(k) == "canary" for k in random_keys(n))
    low, high = binom.interval(0.99, n, share)
    assert low <= canary <= high, (canary, low, high)


def test_a_sticky_key_keeps_its_variant_and_the_salt_reshuffles():
    router = Router(0.5, salt="a")
    for key in random_keys(20):
        assert len({router.variant(key) for _ in range(100)}) == 1
        assert Router(0.5, salt="a").variant(key) == router.variant(key)  # across restarts too
    keys = random_keys(200)
    other = Router(0.5, salt="b")
    changed = sum(router.variant(k) != other.variant(k) for k in keys)
    assert 0 < changed < len(keys)


def test_share_bounds_and_monotonic_growth():
    keys = random_keys(500)
    assert all(Router(0.0, "s").variant(k) == "champion" for k in keys)
    assert all(Router(1.0, "s").variant(k) == "canary" for k in keys)
    small = {k for k in keys if Router(0.1, "s").variant(k) == "canary"}
    large = {k for k in keys if Router(0.3, "s").variant(k) == "canary"}
    assert small <= large  # raising the share only moves keys to the canary
    with pytest.raises(ValueError):
        Router(1.5, "s")


def test_route_key_prefers_user_then_header_then_request_id():
    assert route_key("ann", "h", "r1") == ("user:ann", True)
    assert route_key(None, "h", "r1") == ("key:h", True)
    assert route_key("", None, "r1") == ("request:r1", False)


# ------------------------------------------------------------------ monitor
CHECKS = Checks(check_every=10, min_requests=20, failures_to_rollback=3, max_error_increase=0.05,
                min_json_validity=0.95, max_latency_ratio=2.0)


def monitor(tmp_path, checks: Checks = CHECKS, window: int = 50) -> tuple[CanaryMonitor, Router, RolloutEvents]:
    router = Router(0.2, "s")
    events = RolloutEvents(tmp_path / "tunesmith.db")
    return CanaryMonitor(window, checks, router=router, events=events, champion="v-champ", canary="v-canary"), router, events


def feed(mon: CanaryMonitor, champion: Outcome, canary: Outcome, n: int) -> list:
    checks = []
    for _ in range(n):
        mon.record("champion", champion)
        if (result := mon.record("canary", canary)) is not None:
            checks.append(result)
    return checks


def test_a_canary_answering_invalid_json_is_rolled_back(tmp_path):
    mon, router, events = monitor(tmp_path)
    good, bad = Outcome(True, True, 100.0), Outcome(True, False, 100.0)
    checks = feed(mon, good, bad, 19)
    assert checks == [] and events.read() == []  # fewer than min_requests: no check yet
    seen = []
    while not mon.rolled_back:
        checks += feed(mon, good, bad, 1)
        seen.append([dict(r) for r in events.read()])
        assert len(checks) <= CHECKS.failures_to_rollback
    assert len(checks) == CHECKS.failures_to_rollback and not any(c.passed for c in checks)
    assert router.share == 0.0 and all(router.variant(k) == "champion" for k in random_keys(200))

    rows = events.read()
    assert [r["event"] for r in rows] == ["check_failed"] * 3 + ["rollback"]
    assert [r["seq"] for r in rows] == sorted(r["seq"] for r in rows)
    assert all((r["champion"], r["canary"]) == ("v-champ", "v-canary") for r in rows)
    assert [r["share"] for r in rows] == [0.2, 0.2, 0.2, 0.0]
    for i, r in enumerate(rows[:3], 1):
        assert r["reason"]["failed"] == ["json_validity"]
        assert r["reason"]["canary"]["json_validity"] == 0.0
        assert r["reason"]["champion"]["json_validity"] == 1.0
        assert r["reason"]["thresholds"]["min_json_validity"] == 0.95
        assert r["reason"]["failures_in_a_row"] == i
    assert rows[3]["reason"]["failures_in_a_row"] == 3 and "3 failed checks" in rows[3]["reason"]["why"]
    # rows are never updated: every earlier read is a prefix of the final table, unchanged
    for snapshot in seen:
        assert snapshot == rows[:len(snapshot)]
    db = sqlite3.connect(tmp_path / "tunesmith.db")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE rollout_events SET share = 1")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("DELETE FROM rollout_events")
    # after the rollback, further outcomes trigger no checks and no rows
    assert feed(mon, good, bad, 100) == [] and len(events.read()) == 4


def test_a_healthy_canary_is_not_rolled_back(tmp_path):
    mon, router, events = monitor(tmp_path, Checks(), window=200)  # the config's defaults
    rng = random.Random(3)
    checks = []
    for _ in range(3000):  # both fail 2% of requests; the canary is a little slower, valid JSON 99%
        champion = Outcome(rng.random() > 0.02, True, rng.uniform(80, 120))
        canary = Outcome(rng.random() > 0.02, rng.random() > 0.01, rng.uniform(90, 140))
        checks += feed(mon, champion, canary, 1)
    assert len(checks) == 3000 // 50 and all(c.passed for c in checks)
    assert not mon.rolled_back and router.share == 0.2 and events.read() == []


def test_error_rate_and_latency_checks_fail_with_their_numbers(tmp_path):
    mon, _, events = monitor(tmp_path, Checks(check_every=10, min_requests=20, failures_to_rollback=2))
    feed(mon, Outcome(True, None, 100.0), Outcome(False), 10)  # 10 canary errors ...
    feed(mon, Outcome(True, None, 100.0), Outcome(True, None, 500.0), 20)  # ... then slow answers
    assert mon.rolled_back
    failed = [r for r in events.read() if r["event"] == "check_failed"]
    reason = failed[0]["reason"]
    assert set(reason["failed"]) == {"error_rate", "p95_latency"}
    assert reason["canary"]["error_rate"] == 0.5 and reason["champion"]["error_rate"] == 0.0  # 10 of 20
    reason = failed[1]["reason"]  # 10 errors and 20 slow answers
    assert reason["canary"]["error_rate"] == pytest.approx(10 / 30)
    assert reason["canary"]["p95_latency_ms"] == 500.0 and reason["thresholds"]["max_p95_latency_ms"] == 200.0
    assert reason["canary"]["json_validity"] is None  # no JSON asked for: that check does not apply


def test_a_passed_check_resets_the_failure_count(tmp_path):
    mon, _, events = monitor(tmp_path, Checks(check_every=10, min_requests=20, failures_to_rollback=6))
    good, bad = Outcome(True, True, 100.0), Outcome(True, False, 100.0)
    feed(mon, good, bad, 20)  # a failed check
    assert mon.failures == 1
    feed(mon, good, good, 40)  # the 20 invalid answers are still in the window of 50: 4 more fail
    assert mon.failures == 5 and not mon.rolled_back
    feed(mon, good, good, 10)  # they left it: the check passes, the count starts over
    assert mon.failures == 0 and not mon.rolled_back
    assert [r["event"] for r in events.read()] == ["check_failed"] * 5


# ------------------------------------------------------------------ the server's rollout
def test_rollout_routes_the_deployment_and_recovers_after_rollback(tmp_path):
    cfg = RolloutConfig(mode="canary", share=1.0, window=20, check_every=5, min_requests=5,
                        failures_to_rollback=1)
    aliases = {"challenger": "v2"}
    events = RolloutEvents(tmp_path / "tunesmith.db")
    rollout = Rollout(cfg, lambda: aliases, {"v1", "v2"}, events=events, salt="proj")
    champion = Route("proj", "v1", "v1", "champion")
    route = rollout.route(champion, "user:ann")
    assert route == Route("proj", "v2", "v2", "canary")
    for _ in range(5):
        rollout.observe(champion, 200, ['{"a": 1}'], True, 10.0)
        rollout.observe(route, 200, ["not json"], True, 10.0)
    assert rollout.monitor.rolled_back and rollout.router.share == 0.0
    assert rollout.route(champion, "user:ann") == champion  # no restart needed
    status = rollout.status()
    assert status["share"] == 0.0 and status["rolled_back"] and status["canary"] == "v2"
    assert [e["event"] for e in status["events"]] == ["start", "check_failed", "rollback"]
    json.dumps(status)  # the endpoint's body
    # a new challenger version starts a new canary at the configured share
    aliases["challenger"] = "v3"
    rollout.loaded.add("v3")
    assert rollout.route(champion, "user:ann").version == "v3" and rollout.router.share == 1.0
    rollout.set_share(0.25, "ramp")
    assert rollout.router.share == 0.25
    # the alias gone: the canary is aborted, the champion serves everything
    del aliases["challenger"]
    assert rollout.route(champion, "user:ann") == champion
    rows = events.read()
    assert [e["event"] for e in rows][-3:] == ["start", "set", "abort"]
    assert (rows[-2]["share"], rows[-2]["reason"], rows[-2]["canary"]) == (
        0.25, {"why": "ramp", "settings": {"share": 0.25}, "config": config_key(cfg)}, "v3")


def test_observe_counts_server_errors_and_json_only_where_asked(tmp_path):
    cfg = RolloutConfig(mode="canary", share=0.5, min_requests=1, check_every=1000)
    rollout = Rollout(cfg, lambda: {"challenger": "v2"}, {"v1", "v2"}, salt="proj")
    champion = Route("proj", "v1", "v1", "champion")
    rollout.route(champion, "user:ann")  # starts the canary (v1 vs v2)
    canary = Route("proj", "v2", "v2", "canary")
    for status in (200, 500, 503, 400, 429, 499):
        rollout.observe(canary, status, ["not json"], False, 5.0)
    rollout.observe(canary, 200, ['{"ok": true}', "nope"], True, 5.0)  # n=2: one invalid answer
    rollout.observe(Route("proj", "v9", "v9", "canary"), 500, [], False, 5.0)  # not this pair's
    rollout.observe(Route("proj@challenger", "v2", "v2", "challenger"), 500, [], False, 5.0)  # by alias
    _, stats = rollout.monitor.stats()
    assert (stats.requests, stats.error_rate, stats.json_requests, stats.json_validity) == (4, 0.5, 1, 0.0)


def test_off_mode_never_routes_to_the_challenger(tmp_path):
    rollout = Rollout(RolloutConfig(share=1.0), lambda: {"challenger": "v2"}, {"v1", "v2"})
    champion = Route("proj", "v1", "v1", "champion")
    assert rollout.route(champion, "user:ann") == champion


def test_config_section_defaults_and_bounds():
    from tunesmith.config import Config

    cfg = Config.model_validate({"data": {"sources": [{"path": "x.jsonl"}]}})
    r = cfg.serve.rollout
    assert (r.mode, r.challenger_alias, r.share, r.window, r.check_every, r.min_requests,
            r.failures_to_rollback, r.max_error_increase, r.min_json_validity, r.max_latency_ratio) == (
        "off", "challenger", 0.1, 200, 50, 50, 3, 0.05, 0.95, 2.0)
    assert Checks.from_config(r) == Checks()
    with pytest.raises(ValueError):
        RolloutConfig(share=1.5)
    with pytest.raises(ValueError):
        RolloutConfig(mode="blue-green")
    assert (r.shadow_share, r.shadow_queue, r.promote_after, r.min_agreement, r.max_label_distance) == (
        1.0, 16, None, None, None)


# ------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_served_deployment_sends_a_canary_key_to_the_challenger(project, tmp_path):
    import shutil

    import httpx
    import yaml

    from serve.conftest import KEY, running
    from tunesmith.config import load_config
    from tunesmith.registry import ModelRegistry
    from tunesmith.serve import requestlog
    from tunesmith.serve.auth import ApiKeys
    from tunesmith.serve.launch import build_app
    from tunesmith.train.recipe import train
    from tunesmith.workspace import Workspace

    base_cfg, first = project
    root = tmp_path / "p"
    shutil.copytree(base_cfg.base_dir, root)  # the session's workspace stays untouched
    data = yaml.safe_load((root / "tunesmith.yaml").read_text())
    data["train"].update({"max_steps": 2, "lr": 0.03})
    data["serve"] = {"rollout": {"mode": "canary", "share": 1.0}}
    (root / "tunesmith.yaml").write_text(yaml.safe_dump(data))
    cfg = load_config(root)
    second = train(cfg).model_id  # the latest version: the champion
    assert second != first
    ws = Workspace(cfg.workspace_dir)
    ModelRegistry(ws, cfg.project).promote(first, "challenger", force=True, reason="canary test", by="test")

    loaded = build_app(cfg, keys=ApiKeys([KEY]), default_max_tokens=4)
    with running(loaded.app) as url:
        headers = {"Authorization": f"Bearer {KEY}"}
        body = {"model": cfg.project, "messages": [{"role": "user", "content": "where is my parcel?"}],
                "temperature": 0, "user": "ann"}
        resp = httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=60, trust_env=False)
        assert resp.status_code == 200, resp.text
        request_id = resp.headers["x-request-id"]
        status = httpx.get(f"{url}/v1/rollout", headers=headers, timeout=60, trust_env=False)
        assert httpx.get(f"{url}/v1/rollout", timeout=60, trust_env=False).status_code == 401
        loaded.app.state.service.request_log.flush()
    rows = [r for r in requestlog.read(ws.db_path) if r["request_id"] == request_id]
    assert [(r["variant"], r["version"]) for r in rows] == [("canary", first)]
    state = status.json()
    assert state["share"] == 1.0 and (state["champion"], state["canary"]) == (second, first)
    assert state["windows"]["canary"]["requests"] == 1 and state["events"][0]["event"] == "start"
