"""Agreement per label field on known answers, the agreement check, auto-promotion over a
scripted sequence, control rows picked up by a running rollout, the events table migration,
and shadow jobs in the scheduler (lower priority, bounded, preempted)."""

from __future__ import annotations

import json
import sqlite3
import threading
import time

import pytest

from tunesmith.config import RolloutConfig
from tunesmith.serve.agreement import label_distance, labels, paired_agreement
from tunesmith.serve.catalog import Route
from tunesmith.serve.rollout import (
    Checks,
    Outcome,
    Rollout,
    RolloutEvents,
    WindowStats,
    compare,
    config_key,
    effective_settings,
)


# ------------------------------------------------------------------ labels and agreement
def test_labels_read_json_fields_or_the_whole_answer():
    assert labels('{"category": "billing", "urgency": " high ", "tags": ["a"], "n": 2, "ok": true}') == {
        "category": "billing", "urgency": "high", "n": 2, "ok": True}  # lists are not labels
    assert labels("  billing\n") == {"answer": "billing"}
    assert labels("3") == {"answer": 3}
    assert labels("[1, 2]") == {"answer": "[1, 2]"}
    assert labels('{"category": "x", "urgency": "y"}', fields=["urgency"]) == {"urgency": "y"}


def test_paired_agreement_on_known_answers():
    champion = ['{"category": "billing", "urgency": "high"}', '{"category": "billing", "urgency": "low"}',
                '{"category": "shipping", "urgency": "low"}', '{"category": "tech", "urgency": "high"}']
    shadow = ['{"category": "billing", "urgency": "high"}', '{"category": "shipping", "urgency": "low"}',
              '{"category": "shipping", "urgency": "high"}', 'not json at all']
    result = paired_agreement([(labels(a), labels(b)) for a, b in zip(champion, shadow, strict=True)])
    assert set(result) == {"category", "urgency", "answer"}
    assert result["category"].agreement == pytest.approx(2 / 4)  # the invalid answer lacks it: a disagreement
    assert result["category"].answers == 4
    assert result["urgency"].agreement == pytest.approx(2 / 4)
    assert result["answer"].agreement == 0.0 and result["answer"].answers == 1
    # distributions: champion category {billing 2, shipping 1, tech 1}, shadow {billing 1, shipping 2, missing 1}
    assert result["category"].distance == pytest.approx(0.5 * (1 / 4 + 1 / 4 + 1 / 4 + 1 / 4))


def test_label_distance_is_total_variation_between_the_windows():
    champion = [labels(t) for t in ["billing"] * 6 + ["shipping"] * 4]
    same = [labels(t) for t in ["shipping"] * 2 + ["billing"] * 3]
    shifted = [labels(t) for t in ["billing"] * 2 + ["shipping"] * 8]
    assert label_distance(champion, same)["answer"].distance == pytest.approx(0.0, abs=1e-12)
    assert label_distance(champion, shifted)["answer"].distance == pytest.approx(0.4)  # |.6-.2| / 2 + |.4-.8| / 2
    assert label_distance(champion, []) == {}
    assert label_distance([{"a": 1}], [{"a": "1"}])["a"].distance == 1.0  # 1 and "1" differ


def test_the_agreement_check_fails_only_when_configured():
    stats = WindowStats(100, 0.0, 0, None, 100.0)
    agreement = paired_agreement([({"category": "a"}, {"category": "b"})] * 3 + [({"category": "a"},) * 2] * 7)
    assert compare(stats, stats, Checks(), agreement).passed  # reported, not checked
    result = compare(stats, stats, Checks(min_agreement=0.8), agreement)
    assert result.failed == ["agreement"] and result.failed_fields == ["category"]
    assert result.reason()["agreement"]["category"]["agreement"] == pytest.approx(0.7)
    assert compare(stats, stats, Checks(min_agreement=0.7), agreement).passed
    far = label_distance([{"c": "a"}] * 10, [{"c": "a"}] * 5 + [{"c": "b"}] * 5)
    assert compare(stats, stats, Checks(max_label_distance=0.4), far).failed == ["agreement"]
    assert compare(stats, stats, Checks(max_label_distance=0.5), far).passed


def test_a_canary_that_changes_its_labels_is_rolled_back(tmp_path):
    cfg = RolloutConfig(mode="canary", share=1.0, window=20, check_every=5, min_requests=5,
                        failures_to_rollback=2, max_label_distance=0.3)
    events = RolloutEvents(tmp_path / "tunesmith.db")
    rollout = Rollout(cfg, lambda: {"challenger": "v2"}, {"v1", "v2"}, events=events)
    champion = Route("proj", "v1", "v1", "champion")
    canary = rollout.route(champion, "user:ann")
    for i in range(10):
        rollout.observe(champion, 200, [json.dumps({"category": ["billing", "tech"][i % 2]})], True, 10.0)
        rollout.observe(canary, 200, [json.dumps({"category": "billing"})], True, 10.0)
    assert rollout.monitor.rolled_back
    failed = [e for e in events.read() if e["event"] == "check_failed"]
    assert failed[0]["reason"]["failed"] == ["agreement"] and failed[0]["reason"]["failed_fields"] == ["category"]
    assert failed[0]["reason"]["agreement"]["category"]["distance"] == pytest.approx(0.4)  # 3:2 vs 5:0


# ------------------------------------------------------------------ auto-promotion
def promoting_rollout(tmp_path, promoter, **overrides):
    cfg = RolloutConfig(mode="canary", share=0.5, window=5, check_every=5, min_requests=5, failures_to_rollback=3,
                        promote_after=20, **overrides)
    aliases = {"champion": "v1", "challenger": "v2"}
    events = RolloutEvents(tmp_path / "tunesmith.db")
    return Rollout(cfg, lambda: dict(aliases), {"v1", "v2"}, events=events, promoter=promoter), aliases, events


def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_auto_promotion_after_n_clean_canary_requests(tmp_path):
    calls = []

    def promoter(version, reason):
        calls.append((version, reason))
        aliases["champion"] = version
        return None

    rollout, aliases, events = promoting_rollout(tmp_path, promoter)
    champion, canary = Route("proj", "v1", "v1", "champion"), Route("proj", "v2", "v2", "canary")
    assert rollout.route(champion, "user:x").version in ("v1", "v2")  # starts the pair
    good, bad = Outcome(True, True, 10.0), Outcome(True, False, 10.0)
    script = [good] * 8 + [bad] * 5 + [good] * 19  # the failed check at request 10 restarts the count
    for i, outcome in enumerate(script):
        rollout.observe(champion, 200, ['{"a": 1}'], True, 10.0)
        rollout.observe(canary, 200, ['{"a": 1}' if outcome.json_valid else "nope"], True, 10.0)
        if i < len(script) - 1:
            assert not calls, i
    # the failed checks (requests 10 and 15, the bad answers still in the window) reset the count;
    # 19 clean requests after request 15 are not 20 yet ...
    assert not calls and rollout.monitor.clean == 17
    for _ in range(3):
        rollout.observe(champion, 200, ['{"a": 1}'], True, 10.0)
        rollout.observe(canary, 200, ['{"a": 1}'], True, 10.0)
    wait_for(lambda: any(e["event"] == "promote" for e in events.read()))
    assert len(calls) == 1 and calls[0][0] == "v2" and "20 canary requests without a failed check" in calls[0][1]
    assert rollout.router.share == 0.0
    assert [e["event"] for e in events.read()] == ["start", "check_failed", "check_failed", "promote"]
    promote = events.read()[-1]
    assert (promote["champion"], promote["canary"], promote["share"]) == ("v1", "v2", 0.0)
    assert promote["reason"]["by"] == "rollout"
    # before the alias cache catches up the old pair stays ended; after, v2 is the champion alone
    assert rollout.route(champion, "user:x") == champion
    new = Route("proj", "v2", "v2", "champion")
    assert rollout.route(new, "user:x") == new and len(events.read()) == 4


def test_a_refused_promotion_is_recorded_and_not_retried(tmp_path):
    from tunesmith.errors import TunesmithError

    calls = []

    def promoter(version, reason):
        calls.append(version)
        raise TunesmithError("cannot promote v2 to 'champion': its gate failed")

    rollout, _, events = promoting_rollout(tmp_path, promoter)
    champion, canary = Route("proj", "v1", "v1", "champion"), Route("proj", "v2", "v2", "canary")
    rollout.route(champion, "user:x")
    for _ in range(40):
        rollout.observe(champion, 200, ["x"], False, 10.0)
        rollout.observe(canary, 200, ["x"], False, 10.0)
    wait_for(lambda: any(e["event"] == "promote_refused" for e in events.read()))
    time.sleep(0.1)
    assert calls == ["v2"] and rollout.router.share == 0.5
    refused = [e for e in events.read() if e["event"] == "promote_refused"]
    assert len(refused) == 1 and "gate failed" in refused[0]["reason"]["error"]


def test_promotion_is_off_by_default(tmp_path):
    calls = []
    cfg = RolloutConfig(mode="canary", share=0.5, min_requests=1, check_every=1)
    rollout = Rollout(cfg, lambda: {"challenger": "v2"}, {"v1", "v2"}, promoter=lambda v, r: calls.append(v))
    champion, canary = Route("proj", "v1", "v1", "champion"), Route("proj", "v2", "v2", "canary")
    rollout.route(champion, "user:x")
    for _ in range(500):
        rollout.observe(champion, 200, ["x"], False, 10.0)
        rollout.observe(canary, 200, ["x"], False, 10.0)
    time.sleep(0.05)
    assert calls == []


# ------------------------------------------------------------------ control rows
def test_a_running_rollout_picks_up_set_rows_and_ignores_other_configs(tmp_path):
    cfg = RolloutConfig(mode="off", share=0.1)
    events = RolloutEvents(tmp_path / "tunesmith.db")
    rollout = Rollout(cfg, lambda: {"challenger": "v2"}, {"v1", "v2"}, events=events, poll_every=0.0)
    champion = Route("proj", "v1", "v1", "champion")
    assert rollout.route(champion, "user:ann") == champion
    events.append("set", champion="v1", canary="v2", share=1.0,
                  reason={"settings": {"mode": "canary", "share": 1.0}, "config": config_key(cfg), "by": "ann"})
    assert rollout.route(champion, "user:ann").variant == "canary"
    events.append("set", champion="v1", canary="v2", share=0.0,  # made over another config: ignored
                  reason={"settings": {"share": 0.0}, "config": "someother"})
    events.append("abort", champion="v1", canary="v2", share=0.0, reason={"why": "alias gone"})  # no settings
    assert rollout.route(champion, "user:ann").variant == "canary"
    events.append("set", champion="v1", canary="v2", share=0.0,
                  reason={"settings": {"mode": "shadow", "shadow_share": 1.0}, "config": config_key(cfg)})
    assert rollout.route(champion, "user:ann") == champion
    assert rollout.shadow_route(champion, "user:ann") == Route("proj", "v2", "v2", "shadow")
    # a server started later applies the same rows; one with another config does not
    assert effective_settings(cfg, events)[0].mode == "shadow"
    assert effective_settings(RolloutConfig(mode="canary"), events)[0].mode == "canary"
    later = Rollout(cfg, lambda: {"challenger": "v2"}, {"v1", "v2"}, events=events)
    assert later.shadowing and later.settings.share == 1.0


def test_an_older_events_table_is_migrated_with_its_rows(tmp_path):
    db_path = tmp_path / "tunesmith.db"
    db = sqlite3.connect(db_path)
    db.executescript("""
CREATE TABLE rollout_events (seq INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL,
    event TEXT NOT NULL CHECK (event IN ('start', 'check_failed', 'rollback', 'abort', 'set')),
    champion TEXT, canary TEXT, share REAL NOT NULL, reason TEXT);
CREATE TRIGGER rollout_events_no_update BEFORE UPDATE ON rollout_events
BEGIN SELECT RAISE(ABORT, 'rollout_events is append-only'); END;
INSERT INTO rollout_events (time, event, champion, canary, share, reason) VALUES (1.0, 'start', 'a', 'b', 0.1, '{}');
INSERT INTO rollout_events (time, event, champion, canary, share, reason) VALUES (2.0, 'rollback', 'a', 'b', 0, '{}');
""")
    db.close()
    events = RolloutEvents(db_path)
    assert [(e["seq"], e["event"]) for e in events.read()] == [(1, "start"), (2, "rollback")]
    assert events.append("promote", champion="a", canary="b", share=0.0)["seq"] == 3
    db = sqlite3.connect(db_path)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE rollout_events SET share = 1")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("DELETE FROM rollout_events")
    RolloutEvents(db_path)  # a second open changes nothing
    assert len(events.read()) == 3


# ------------------------------------------------------------------ the scheduler's background queue
class SlowEngine:
    """Each engine call decodes ``steps`` tokens of 10 ms through ``on_token``."""

    max_batch_size = 8

    def __init__(self, steps: int = 30):
        self.steps, self.calls = steps, []

    def generate(self, conversations, cfg, *, adapter=None, on_token=None):
        from tunesmith.generate.engine import Generation

        self.calls.append((adapter, len(conversations)))
        for i in range(self.steps):
            time.sleep(0.01)
            if on_token is not None:
                for row in range(len(conversations)):
                    on_token(row, [0] * (i + 1))
        return [Generation("ok", self.steps, 1, "length", 0.0, [0]) for _ in conversations]


def job(adapter: str, background: bool = False):
    from tunesmith.generate.sampling import GenerationConfig
    from tunesmith.serve.scheduler import Job, batch_key

    cfg = GenerationConfig(max_new_tokens=4, temperature=0.0)
    j = Job([{"role": "user", "content": "x"}], 1, adapter, cfg, batch_key(adapter, cfg, seeded=False,
                                                                           request_id="r"))
    j.background = background
    return j


def test_background_jobs_yield_to_clients_are_bounded_and_preempted():
    from tunesmith.serve.scheduler import Preempted, QueueFull, Scheduler

    engine = SlowEngine()
    scheduler = Scheduler(engine, max_queue=8, max_background=2)
    shadows = [scheduler.submit(job("v2", True)), scheduler.submit(job("v2", True))]
    with pytest.raises(QueueFull):
        scheduler.submit(job("v2", True))
    client = scheduler.submit(job("v1"))
    scheduler.start()
    try:
        client.future.result(5)
        assert engine.calls[0] == ("v1", 1)  # waiting client jobs go first, never batched with shadows
        shadows[0].future.result(5)
        shadows[1].future.result(5)  # same key: they shared the next call
        assert engine.calls[1] == ("v2", 2)
        # a shadow call running when a client job arrives stops at the next token
        slow = scheduler.submit(job("v2", True))
        wait_for(lambda: scheduler.busy)
        t0 = time.perf_counter()
        client = scheduler.submit(job("v1"))
        client.future.result(5)
        assert time.perf_counter() - t0 < 0.3 + 0.5  # one 10 ms token, then the client's 0.3 s call
        with pytest.raises(Preempted):
            slow.future.result(0)
    finally:
        scheduler.stop()


def test_client_jobs_are_never_preempted():
    from tunesmith.serve.scheduler import Scheduler

    engine = SlowEngine(steps=20)
    scheduler = Scheduler(engine)
    scheduler.start()
    try:
        first = scheduler.submit(job("v1"))
        wait_for(lambda: scheduler.busy)
        done = threading.Event()
        second = scheduler.submit(job("v2"))
        second.future.add_done_callback(lambda _: done.set())
        assert first.future.result(5)[0].text == "ok" and done.wait(5)
    finally:
        scheduler.stop()
