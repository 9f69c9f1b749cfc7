"""`tunesmith serve`: refuses to start without a key; loads the project and binds to loopback."""

from __future__ import annotations

from typer.testing import CliRunner

from tunesmith.cli import app


def test_serve_refuses_to_start_without_a_key(project, monkeypatch):
    cfg, _ = project
    monkeypatch.delenv("TUNESMITH_API_KEYS", raising=False)
    res = CliRunner().invoke(app, ["serve", "-c", str(cfg.base_dir)])
    assert res.exit_code == 2 and "no API key configured" in res.output


def test_serve_loads_every_version_and_binds_to_loopback(project, monkeypatch):
    import tunesmith.serve.launch as launch

    cfg, version = project
    seen = {}
    monkeypatch.setattr(launch, "run", lambda app, **kw: seen.update(kw, app=app))
    monkeypatch.setenv("TUNESMITH_API_KEYS", "k" * 20)
    res = CliRunner().invoke(app, ["serve", "-c", str(cfg.base_dir), "--port", "8123"])
    assert res.exit_code == 0, res.output
    assert (seen["host"], seen["port"]) == ("127.0.0.1", 8123)
    catalog = seen["app"].state.service.catalog
    assert list(catalog.versions) == [version] and catalog.champion == version
    assert version in res.output and "127.0.0.1:8123" in res.output


def test_the_pre_flight_asks_for_the_server_packages(project):
    from tunesmith import deps

    cfg, _ = project
    needed = {r.package for r in deps.needed(cfg, ["serve"])}
    assert {"fastapi", "uvicorn", "torch", "transformers", "peft"} <= needed
    assert not {"fastapi", "uvicorn"} & {r.package for r in deps.needed(cfg, ["train", "eval"])}
