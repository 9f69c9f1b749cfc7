"""The UI over HTTP (in-process): login, roles, CSRF, expiry, every page, and the writes going
through the CLI's functions into the same ledger and audit trail, or refused with nothing written."""

from __future__ import annotations

import sqlite3
import time

import pytest

from .conftest import ADMIN_KEY, REVIEWER_KEY, SECOND_KEY, csrf_of, login, make_app

for _module in ("fastapi", "uvicorn", "jinja2", "itsdangerous", "python_multipart", "markdown_it"):
    pytest.importorskip(_module, reason="the web UI needs the ui extra: pip install 'tunesmith[ui]'")

PAGES = ["/", "/models", "/evaluation", "/evaluation?field=category&q=order", "/runs", "/data", "/data?page=2",
         "/review", "/review?tier=sampled", "/deployments", "/monitoring"]


def _count(gen, table: str) -> int:
    db = sqlite3.connect(gen.cfg.workspace_dir / "tunesmith.db")
    try:
        return db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    finally:
        db.close()


def test_pages_need_a_login_and_a_bad_key_is_refused(client):
    r = client.get("/models", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=%2Fmodels"
    r = login(client, "not-a-key-not-a-key")
    assert r.status_code == 401 and "not accepted" in r.text


def test_login_without_the_login_token_is_refused(client):
    client.get("/login")
    r = client.post("/login", data={"key": ADMIN_KEY, "login_csrf": "forged", "next": "/"}, follow_redirects=False)
    assert r.status_code == 401 and "expired" in r.text


def test_every_page_renders_for_a_reviewer(client, generated):
    assert login(client, REVIEWER_KEY).status_code == 303
    for path in [*PAGES, f"/models/{generated.versions[1]}", f"/runs?model={generated.versions[0]}"]:
        r = client.get(path)
        assert r.status_code == 200, (path, r.text[-800:])
        assert "rita" in r.text and 'name="csrf"' in r.text
        assert r.headers["content-security-policy"].startswith("default-src 'self'")


def test_pages_show_the_workspace(client, generated):
    login(client, ADMIN_KEY)
    overview = client.get("/").text
    assert generated.versions[1][:12] in overview and generated.versions[2][:12] in overview  # champion, challenger
    assert "mandatory" in overview and "input_drift" in overview
    model = client.get(f"/models/{generated.versions[1]}").text
    assert "<svg class=\"lineage\"" in model and "Model card" in model and "first release" in model
    evaluation = client.get("/evaluation").text
    assert "fields_mean" in evaluation and "Confusion matrices" in evaluation and "Worst errors" in evaluation
    assert evaluation.count('<circle class="bin"') >= 2  # the reliability diagram of the rung with confidences
    data = client.get("/data").text
    assert "50 records" in data and "exact_dedup:duplicate" in data
    assert "example.com" not in data  # quarantined previews are PII-scrubbed
    assert "loss-chart" in client.get("/runs").text


def test_a_reviewer_pressing_promote_writes_nothing(client, generated):
    login(client, REVIEWER_KEY)
    csrf = csrf_of(client.get(f"/models/{generated.versions[2]}").text)
    before = _count(generated, "alias_moves")
    r = client.post("/models/promote", data={"csrf": csrf, "ref": generated.versions[2], "alias": "champion",
                                             "reason": "try"})
    assert r.status_code == 403 and "Only an admin may promote" in r.text and "nothing was written" in r.text
    r = client.post("/models/rollback", data={"csrf": csrf, "alias": "champion", "reason": "try"})
    assert r.status_code == 403
    r = client.post("/deployments/rollout", data={"csrf": csrf, "action": "abort", "reason": "try"})
    assert r.status_code == 403
    assert _count(generated, "alias_moves") == before


def test_an_admin_promotes_and_rolls_back_into_the_ledger(client, generated):
    from tunesmith.registry import ModelRegistry

    login(client, ADMIN_KEY)
    csrf = csrf_of(client.get(f"/models/{generated.versions[2]}").text)
    r = client.post("/models/promote", data={"csrf": csrf, "ref": generated.versions[2], "alias": "champion",
                                             "reason": "better on the pinned pack"})
    assert r.status_code == 200 and "ledger row" in r.text
    reg = ModelRegistry.from_config(generated.cfg)
    last = reg.history("champion")[-1]
    assert (last.action, last.to_model, last.by, last.reason) == ("promote", generated.versions[2], "alice",
                                                                   "better on the pinned pack")
    r = client.post("/models/rollback", data={"csrf": csrf, "alias": "champion", "reason": "errors doubled"})
    assert r.status_code == 200 and "rolled back" in r.text
    last = reg.history("champion")[-1]
    assert (last.action, last.to_model, last.reason) == ("rollback", generated.versions[1], "errors doubled")


def test_a_failed_gate_is_refused_with_the_registry_message(client, generated):
    login(client, ADMIN_KEY)
    csrf = csrf_of(client.get("/models").text)
    before = _count(generated, "alias_moves")
    r = client.post("/models/promote", data={"csrf": csrf, "ref": generated.versions[0], "alias": "champion",
                                             "reason": "x"})
    assert r.status_code == 400 and "gate failed" in r.text
    assert _count(generated, "alias_moves") == before


def test_a_form_without_the_csrf_token_writes_nothing(client, generated):
    login(client, ADMIN_KEY)
    before = _count(generated, "alias_moves")
    r = client.post("/models/rollback", data={"alias": "champion", "reason": "x"})
    assert r.status_code == 403 and "security token" in r.text
    assert _count(generated, "alias_moves") == before


def test_an_expired_session_goes_back_to_the_login_and_writes_nothing(generated):
    from fastapi.testclient import TestClient

    client = TestClient(make_app(generated, session_seconds=1))
    login(client, REVIEWER_KEY)
    page = client.get("/review")
    csrf, item = csrf_of(page.text), page.text.split('action="/review/', 1)[1].split('"', 1)[0]
    time.sleep(2.1)
    before = _count(generated, "review_audit")
    r = client.post(f"/review/{item}", data={"csrf": csrf, "action": "approve", "seen": "0"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=%2F&why=expired"
    assert "session expired" in client.get(r.headers["location"]).text
    assert _count(generated, "review_audit") == before


def _item_form(client, path="/review"):
    page = client.get(path).text
    item = int(page.split('action="/review/', 1)[1].split('"', 1)[0])
    return page, item, csrf_of(page)


def test_review_approve_correct_reject_land_in_the_audit_trail(client, generated):
    from tunesmith.review.queue import ReviewQueue

    login(client, REVIEWER_KEY)
    queue = ReviewQueue(generated.cfg.workspace_dir / "tunesmith.db")
    _, item, csrf = _item_form(client)
    r = client.post(f"/review/{item}", data={"csrf": csrf, "action": "approve", "seen": "0"})
    assert r.status_code == 200 and f"Saved item {item} (approve)" in r.text
    _, item2, _ = _item_form(client, str(r.url).split("testserver", 1)[1])
    current = queue.get(item2)
    other = next(v for v in current.fields["urgency"].allowed if v != current.fields["urgency"].value)
    form = {"csrf": csrf, "action": "save", "seen": "0", "reason": "wrong_label",
            **{f"f_{k}": f.value for k, f in current.fields.items()}, "f_urgency": other}
    r = client.post(f"/review/{item2}", data=form)
    assert r.status_code == 200 and "(correct)" in r.text
    _, item3, _ = _item_form(client, str(r.url).split("testserver", 1)[1])
    r = client.post(f"/review/{item3}", data={"csrf": csrf, "action": "reject", "seen": "0", "reason": "off_topic"})
    rows = {(a.item, a.action, a.field, a.to_value, a.by) for a in queue.audit()}
    assert (item, "approve", None, None, "rita") in rows
    assert (item2, "correct", "urgency", other, "rita") in rows
    if "off_topic" in generated.cfg.review.reason_codes:
        assert any(a.item == item3 and a.action == "reject" for a in queue.audit())
    else:
        assert r.status_code == 400 and "unknown reason code" in r.text


def test_review_refusals_write_nothing(client, generated):
    from tunesmith.review.queue import ReviewQueue

    queue = ReviewQueue(generated.cfg.workspace_dir / "tunesmith.db")
    login(client, REVIEWER_KEY)
    _, item, csrf = _item_form(client)
    before = len(queue.audit())
    # a correction outside the allowed values
    r = client.post(f"/review/{item}", data={"csrf": csrf, "action": "save", "seen": "0", "f_category": "weather"})
    assert r.status_code == 400 and "not an allowed value of category" in r.text
    # a rejection without a reason code
    r = client.post(f"/review/{item}", data={"csrf": csrf, "action": "reject", "seen": "0"})
    assert r.status_code == 400 and "needs a reason code" in r.text
    assert len(queue.audit()) == before
    # stale: another reviewer decides the item while this form is open
    queue.decide(item, "approve", by="sam")
    r = client.post(f"/review/{item}", data={"csrf": csrf, "action": "approve", "seen": "0"})
    assert r.status_code == 409 and "decided meanwhile" in r.text and "approve by sam" in r.text
    assert len(queue.audit()) == before + 1


def test_a_second_reviewer_sees_the_first_decision(client, generated):
    from fastapi.testclient import TestClient

    login(client, REVIEWER_KEY)
    _, item, csrf = _item_form(client)
    client.post(f"/review/{item}", data={"csrf": csrf, "action": "approve", "seen": "0"})
    other = TestClient(client.app)
    login(other, SECOND_KEY)
    page = other.get(f"/review?item={item}").text
    assert "approve by rita" in page and 'name="seen" value="1"' in page


def test_the_ui_can_be_mounted_under_a_prefix(generated):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    outer = FastAPI()
    outer.mount("/ui", make_app(generated))
    client = TestClient(outer)
    r = client.get("/ui/models", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui/login?next=%2Fmodels"
    page = client.get("/ui/login").text
    assert 'action="/ui/login"' in page and "/ui/static/ui.css" in page
    assert client.get("/ui/static/vendor/uPlot-1.6.32.iife.min.js").status_code == 200


def test_ui_keys_are_checked():
    from tunesmith.errors import TunesmithError
    from tunesmith.ui.auth import UiKeys

    keys = UiKeys.parse("admin:" + "k" * 20, "reviewer " + "r" * 20 + " rita\n# comment\n")
    assert keys.login("k" * 20).role == "admin" and keys.login("r" * 20).name == "rita"
    assert keys.login("k" * 19) is None
    for env, text, message in (("boss:" + "k" * 20, "", "unknown role 'boss'"), ("admin:short", "", "shorter than"),
                               ("", "reviewer", "line 1"), ("", "", "no UI key configured")):
        with pytest.raises(TunesmithError, match=message):
            UiKeys.parse(env, text)


def test_review_filters_and_my_decisions(client, generated):
    from fastapi.testclient import TestClient

    from tunesmith.review.queue import ReviewQueue

    queue = ReviewQueue(generated.cfg.workspace_dir / "tunesmith.db")
    login(client, REVIEWER_KEY)
    _, item, csrf = _item_form(client, "/review?below=0.5&field=urgency")
    assert queue.get(item).fields["urgency"].confidence < 0.5
    assert all(it.fields["urgency"].confidence < 0.5 for it in queue.page(below=0.5, field="urgency", limit=100))
    r = client.post(f"/review/{item}", data={"csrf": csrf, "action": "approve", "seen": "0", "field": "urgency",
                                             "below": "0.5"}, follow_redirects=False)
    assert "below=0.5" in r.headers["location"] and "field=urgency" in r.headers["location"]
    other = TestClient(client.app)
    login(other, SECOND_KEY)
    other.post(f"/review/{item}", data={"csrf": csrf_of(other.get(f"/review?item={item}").text), "action": "reject",
                                        "seen": "1", "reason": "other"})
    mine = client.get("/review/mine").text
    assert f"#{item}</a>" in mine and "shared items</dt><dd>1" in mine
    assert client.get("/review?below=x").status_code == 400
    assert "unknown tier" in client.get("/review?tier=urgent").text


def test_an_admin_changes_and_aborts_the_rollout(client, generated):
    from tunesmith.serve.rollout import RolloutEvents

    events = RolloutEvents(generated.cfg.workspace_dir / "tunesmith.db")
    before = len(events.read())
    login(client, ADMIN_KEY)
    csrf = csrf_of(client.get("/deployments").text)
    r = client.post("/deployments/rollout", data={"csrf": csrf, "action": "set", "share": "0.25",
                                                  "reason": "more canary traffic"})
    assert r.status_code == 200 and "rollout settings recorded" in r.text
    r = client.post("/deployments/rollout", data={"csrf": csrf, "action": "set", "share": "2", "reason": "x"})
    assert r.status_code == 400 and "within 0..1" in r.text
    r = client.post("/deployments/rollout", data={"csrf": csrf, "action": "abort", "reason": "errors"})
    assert r.status_code == 200 and "aborted" in r.text
    rows = events.read()[before:]
    assert [(e["event"], e["share"], e["reason"]["by"]) for e in rows] == [("set", 0.25, "alice"), ("abort", 0.0, "alice")]


def test_tunesmith_ui_refuses_to_start_without_a_key(generated, monkeypatch):
    from typer.testing import CliRunner

    from tunesmith.cli import app

    monkeypatch.delenv("TUNESMITH_UI_KEYS", raising=False)
    monkeypatch.delenv("TUNESMITH_UI_KEY_FILE", raising=False)
    result = CliRunner().invoke(app, ["ui", "-c", str(generated.root)])
    assert result.exit_code != 0 and "no UI key configured" in result.output


def test_logging_out_ends_the_session(client):
    login(client, REVIEWER_KEY)
    csrf = csrf_of(client.get("/").text)
    r = client.post("/logout", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert client.get("/", follow_redirects=False).status_code == 303


def test_bad_addresses_say_what_was_wrong(client):
    login(client, REVIEWER_KEY)
    r = client.get("/review?item=abc")
    assert r.status_code == 400 and "item: Input should be a valid integer" in r.text
    r = client.get("/models/no-such-version")
    assert r.status_code == 400 and "no model version or alias" in r.text
    assert client.get("/data?page=0").status_code == 200


def test_a_field_quality_alarm_charts_its_rise_against_the_smallest_alarming_rise(generated, client):
    from tunesmith.monitor import alarms

    detail = {"quality.field.next_action": {"test": "stratified-z", "p_value": 1e-4, "rise": 0.12,
                                            "error_rate": 0.39, "previous_rate": 0.27}}
    alarms.record(generated.cfg.workspace_dir / "tunesmith.db", alarms.Alarm(
        "quality", list(detail), "requests 501-1000", 2e9, 2e9 + 60, 500, "requests 1-500", {"v1": 500}, detail))
    login(client, ADMIN_KEY)
    page = client.get("/monitoring").text
    assert "quality.field.next_action: rise over time" in page
    assert "smallest alarming rise" in page and "0.05" in page  # monitor.quality.min_field_rise
