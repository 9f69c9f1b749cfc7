"""A generated project workspace (benchmarks/_ui_workspace.py: versions, evals, request log,
review queue, alarms) and the UI app over it, with one admin and two reviewer keys."""

from __future__ import annotations

import contextlib
import importlib.util
import re
import sys
from pathlib import Path

import pytest

ADMIN_KEY = "admin-key-0123456789abcdef"
REVIEWER_KEY = "reviewer-key-0123456789ab"
SECOND_KEY = "second-reviewer-key-012345"
KEYS = f"admin:{ADMIN_KEY}:alice,reviewer:{REVIEWER_KEY}:rita,reviewer:{SECOND_KEY}:sam"
_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "_ui_workspace.py"


def _load():
    spec = importlib.util.spec_from_file_location("ui_workspace", _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


ui_workspace = _load()


@pytest.fixture
def generated(tmp_path):
    return ui_workspace.build(tmp_path / "proj", requests=400, items=40, cases=30)


def make_app(gen, **kwargs):
    from tunesmith.ui import create_ui_app
    from tunesmith.ui.auth import UiKeys

    return create_ui_app(gen.cfg, keys=UiKeys.parse(KEYS), secret="test-secret", **kwargs)


def login(client, key: str, next_url: str = "/"):
    page = client.get("/login")
    token = re.search(r'name="login_csrf" value="([^"]+)"', page.text).group(1)
    return client.post("/login", data={"key": key, "login_csrf": token, "next": next_url}, follow_redirects=False)


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


@pytest.fixture
def client(generated):
    from fastapi.testclient import TestClient

    return TestClient(make_app(generated))


def running(app) -> contextlib.AbstractContextManager[str]:
    """``app`` under uvicorn on 127.0.0.1 (a port the OS picked) in a thread, until the block ends."""
    from serve.conftest import running as serve_running

    return serve_running(app, lifespan="off", what="the UI server")
