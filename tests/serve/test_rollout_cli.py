"""`tunesmith rollout status|set|promote|abort` through typer on a generated workspace (the
registry tests' FakeProject: versions, evals and gates written by hand; nothing is trained)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from registry.conftest import FakeProject
from tunesmith.cli import app


@pytest.fixture
def proj(tmp_path) -> FakeProject:
    return FakeProject(tmp_path / "proj")


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def status(proj: FakeProject) -> dict:
    res = invoke("rollout", "status", "-c", str(proj.root), "--json")
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_status_of_a_fresh_project(proj):
    st = status(proj)
    assert (st["project"], st["mode"], st["share"], st["shadow_share"], st["settings_from"]) == (
        "support-triage", "off", 0.1, 1.0, "config")
    assert st["challenger"] is None and st["events"] == [] and st["checks"] == {}
    assert all(w["requests"] == 0 for w in st["windows"].values())
    res = invoke("rollout", "status", "-c", str(proj.root))
    assert res.exit_code == 0 and "rollout of support-triage: mode off" in res.output


def test_set_and_abort_validate_and_record(proj):
    c = str(proj.root)
    cases = [(["--mode", "canary", "--share", "0.2"], "no 'challenger' alias"),
             (["--share", "1.5"], "within 0..1"), (["--shadow-share", "-0.1"], "within 0..1"),
             (["--mode", "blue-green"], "one of off, canary, shadow"), ([], "nothing to set")]
    for args, message in cases:
        res = invoke("rollout", "set", "-c", c, *args)
        assert res.exit_code == 2 and message in res.output, (args, res.output)
        assert "Traceback" not in res.output and len(res.output.strip().splitlines()) <= 3
    model_id, _ = proj.version()
    assert invoke("promote", model_id, "--alias", "challenger", "-c", c).exit_code == 0
    res = invoke("rollout", "set", "-c", c, "--mode", "canary", "--share", "0.2", "--reason", "ramp", "--by", "ann")
    assert res.exit_code == 0 and "mode canary, canary share 0.2" in res.output, res.output
    st = status(proj)
    assert (st["mode"], st["share"], st["challenger"]) == ("canary", 0.2, model_id)
    assert (st["settings_from"]["by"], st["settings_from"]["why"], st["settings_from"]["event"]) == ("ann", "ramp", "set")
    assert st["events"][-1]["reason"]["settings"] == {"mode": "canary", "share": 0.2}

    res = invoke("rollout", "abort", "-c", c)
    assert res.exit_code == 2 and "--reason" in res.output
    res = invoke("rollout", "abort", "-c", c, "--reason", "wrong labels", "--json")
    assert res.exit_code == 0, res.output
    done = json.loads(res.stdout)
    assert done["settings"] == {"mode": "canary", "share": 0.0, "shadow_share": 0.0}
    st = status(proj)
    assert (st["share"], st["shadow_share"], st["events"][-1]["event"]) == (0.0, 0.0, "abort")
    assert [e["event"] for e in st["events"]] == ["set", "abort"]


def test_an_unknown_project_is_a_one_line_error(tmp_path):
    for command in (["status"], ["set", "--share", "0.2"], ["promote"], ["abort", "--reason", "x"]):
        res = invoke("rollout", *command, "-c", str(tmp_path / "nowhere"))
        assert res.exit_code == 2 and "error:" in res.output and "Traceback" not in res.output, res.output


def test_promote_follows_the_gate_and_records_a_ledger_row_and_an_event(proj):
    from tunesmith.registry import ModelRegistry

    c = str(proj.root)
    res = invoke("rollout", "promote", "-c", c)
    assert res.exit_code == 2 and "no 'challenger' alias" in res.output
    good, pack = proj.version()
    bad, _ = proj.version(pack=pack, passed=False)
    for model_id, alias in ((good, "champion"), (bad, "challenger")):
        assert invoke("promote", model_id, "--alias", alias, "-c", c, "--force", "--reason", "setup").exit_code == 0
    res = invoke("rollout", "promote", "-c", c)
    assert res.exit_code == 2 and "gate failed" in res.output
    res = invoke("rollout", "promote", "-c", c, "--force")
    assert res.exit_code == 2 and "--reason" in res.output
    res = invoke("rollout", "promote", "-c", c, "--force", "--reason", "canary looked fine", "--by", "ann", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["changed"] and data["model_id"] == bad and data["previous"] == good
    move = ModelRegistry(proj.ws, "support-triage").history("champion")[-1]
    assert (move.by, move.to_model, move.forced, move.reason) == ("ann", bad, True, "canary looked fine")
    event = data["event"]
    assert (event["event"], event["champion"], event["canary"], event["share"]) == ("promote", good, bad, 0.0)
    assert event["reason"]["ledger_seq"] == move.seq
    res = invoke("rollout", "promote", "-c", c)  # already the champion: nothing recorded
    assert res.exit_code == 0 and "nothing recorded" in res.output


def test_status_reads_windows_agreement_and_checks_from_the_request_log(proj):
    from tunesmith.serve.requestlog import Answer, LogEntry, RequestLog

    c = str(proj.root)
    champion, pack = proj.version()
    challenger, _ = proj.version(pack=pack)
    invoke("promote", champion, "-c", c)
    invoke("promote", challenger, "--alias", "challenger", "-c", c)
    log = RequestLog(proj.ws.db_path, scrub=lambda text: text)
    log.start()
    t = 1000.0

    def entry(request_id, version, variant, answer, status=200, latency=100.0, shadow_of=None):
        nonlocal t
        t += 1
        return LogEntry(request_id, t, status, model="support-triage", version=version, adapter=version,
                        variant=variant, prompt="p", answers=[Answer(answer, "stop", 3)] if answer else [],
                        latency_ms=latency, shadow_of=shadow_of, json_asked=True)

    champion_answers = ['{"category": "billing"}', '{"category": "billing"}', '{"category": "tech"}',
                        '{"category": "tech"}']
    shadow_answers = ['{"category": "billing"}', '{"category": "tech"}', '{"category": "tech"}', "not json"]
    for i, (a, b) in enumerate(zip(champion_answers, shadow_answers, strict=True)):
        log.record(entry(f"c{i}", champion, "champion", a))
        log.record(entry(f"shadow-{i}", challenger, "shadow", b, latency=50.0, shadow_of=f"c{i}"))
    for i, a in enumerate(['{"category": "billing"}', '{"category": "billing"}']):
        log.record(entry(f"k{i}", challenger, "canary", a, latency=300.0))
    log.record(entry("k-err", challenger, "canary", None, status=500))
    log.record(entry("k-429", challenger, "canary", None, status=429))  # not counted
    log.flush()
    log.stop()

    st = status(proj)
    w = st["windows"]
    assert (w["champion"]["requests"], w["champion"]["json_validity"], w["champion"]["p95_latency_ms"]) == (
        4, 1.0, 100.0)
    assert (w["shadow"]["requests"], w["shadow"]["json_validity"]) == (4, 0.75)
    assert (w["canary"]["requests"], w["canary"]["error_rate"], w["canary"]["p95_latency_ms"]) == (
        3, pytest.approx(1 / 3), 300.0)
    shadow = st["agreement"]["shadow"]
    assert shadow["category"]["agreement"] == pytest.approx(2 / 4) and shadow["category"]["answers"] == 4
    assert shadow["answer"]["agreement"] == 0.0
    canary = st["agreement"]["canary"]["category"]  # champion 2:2 billing/tech, canary 2:0
    assert canary["distance"] == pytest.approx(0.5) and canary["agreement"] is None
    assert st["checks"]["canary"]["failed"] == ["error_rate", "p95_latency"]
    assert st["checks"]["shadow"]["failed"] == ["json_validity"]
    res = invoke("rollout", "status", "-c", c)
    assert res.exit_code == 0, res.output
    for part in ("agreement, shadow", "category 50.0% (n 4)", "checks, canary vs champion: failed", "p95 ms"):
        assert part in res.output, part
