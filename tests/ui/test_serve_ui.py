"""`tunesmith serve --ui`: the UI mounted at /ui of the API server's app (the model loading is
stubbed: what is tested is the wiring, the keys' check before loading, and the mount)."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from .conftest import KEYS, REVIEWER_KEY

for _module in ("fastapi", "uvicorn", "jinja2", "itsdangerous", "python_multipart", "markdown_it"):
    pytest.importorskip(_module, reason="the web UI needs the ui extra: pip install 'tunesmith[ui]'")


@pytest.fixture
def stubbed_server(monkeypatch):
    from fastapi import FastAPI

    import tunesmith.serve.launch as launch
    from tunesmith import deps

    seen: dict = {}
    catalog = SimpleNamespace(deployment="support-triage", versions={}, resolve=lambda name: SimpleNamespace(version="base"))
    monkeypatch.setattr(deps, "preflight", lambda *a, **k: None)
    monkeypatch.setattr(launch, "build_app", lambda cfg, keys, model: seen.setdefault(
        "loaded", SimpleNamespace(app=FastAPI(), skipped={}, catalog=catalog)))
    monkeypatch.setattr(launch, "run", lambda app, **kw: seen.update(kw, app=app))
    monkeypatch.setenv("TUNESMITH_API_KEYS", "k" * 20)
    return seen


def test_serve_ui_mounts_the_ui_at_slash_ui(generated, stubbed_server, monkeypatch):
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from tunesmith.cli import app

    monkeypatch.setenv("TUNESMITH_UI_KEYS", KEYS)
    res = CliRunner().invoke(app, ["serve", "-c", str(generated.root), "--ui"])
    assert res.exit_code == 0, res.output
    assert "web UI on http://127.0.0.1:8000/ui/" in res.output
    client = TestClient(stubbed_server["app"])
    r = client.get("/ui/", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/ui/login")
    page = client.get("/ui/login")
    assert page.status_code == 200 and 'action="/ui/login"' in page.text


def test_serve_ui_without_a_ui_key_fails_before_loading_models(generated, stubbed_server, monkeypatch):
    from typer.testing import CliRunner

    from tunesmith.cli import app

    monkeypatch.delenv("TUNESMITH_UI_KEYS", raising=False)
    monkeypatch.delenv("TUNESMITH_UI_KEY_FILE", raising=False)
    res = CliRunner().invoke(app, ["serve", "-c", str(generated.root), "--ui"])
    assert res.exit_code == 2 and "no UI key configured" in res.output
    assert "loaded" not in stubbed_server  # the models were never loaded


def test_login_through_the_mounted_ui(generated, stubbed_server, monkeypatch):
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from tunesmith.cli import app

    monkeypatch.setenv("TUNESMITH_UI_KEYS", KEYS)
    assert CliRunner().invoke(app, ["serve", "-c", str(generated.root), "--ui"]).exit_code == 0
    client = TestClient(stubbed_server["app"])
    page = client.get("/ui/login")
    token = re.search(r'name="login_csrf" value="([^"]+)"', page.text).group(1)
    r = client.post("/ui/login", data={"key": REVIEWER_KEY, "login_csrf": token, "next": "/review"},
                    follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui/review"
    assert "Review workbench" in client.get("/ui/review").text
