"""The CLI's error path: a missing optional package and an unexpected exception each print one
clear line (no traceback) and exit non-zero; the traceback goes to a log file in the workspace."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunesmith import deps
from tunesmith.cli import app

runner = CliRunner()


@pytest.fixture
def project(tmp_path):
    (tmp_path / "data").mkdir()
    rec = {"messages": [{"role": "user", "content": "My parcel has not arrived after two weeks, please check."},
                        {"role": "assistant", "content": "shipping"}]}
    (tmp_path / "data" / "a.jsonl").write_text(json.dumps(rec) + "\n")
    (tmp_path / "tunesmith.yaml").write_text("data:\n  sources:\n    - path: data\n  workers: 1\nmodel:\n  base: starter\n")
    return tmp_path


def hide(monkeypatch, *modules: str) -> None:
    """Make find_spec report these packages as not installed."""
    real = importlib.util.find_spec
    monkeypatch.setattr(deps.importlib.util, "find_spec",
                        lambda name, *a: None if name.split(".")[0] in modules else real(name, *a))


def test_a_missing_optional_package_is_one_line_with_the_extra_before_any_work(project, monkeypatch):
    hide(monkeypatch, "mlflow")
    loaded = []
    import tunesmith.models.loading as loading

    monkeypatch.setattr(loading, "load_model", lambda *a, **k: loaded.append(a))
    res = runner.invoke(app, ["train", "-c", str(project)])
    assert res.exit_code == 2
    # the extra survives printing (rich would read [train] as markup and drop it)
    assert "train.tracking.mlflow: true needs the 'mlflow' package. Install it with " \
           "`pip install 'tunesmith[train]'`." in res.output
    assert "Traceback" not in res.output and not loaded


def test_several_missing_packages_are_listed_together(project, monkeypatch):
    hide(monkeypatch, "mlflow", "tensorboard", "bm25s")
    res = runner.invoke(app, ["run", "-c", str(project)])
    assert res.exit_code == 2 and "3 packages this config needs are not installed" in res.output
    for line in ("tensorboard (for train.tracking.tensorboard: true): `pip install 'tunesmith[train]'`",
                 "bm25s (for BM25 retrieval (few-shot and RAG rungs)): `pip install 'tunesmith[rag]'`"):
        assert line in res.output
    assert not (project / ".tunesmith").exists()  # nothing ran, not even prepare


def test_an_unexpected_exception_is_one_line_and_a_log_file(project, monkeypatch):
    import tunesmith.data.pipeline as pipeline

    def broken(*args, **kwargs):
        raise RuntimeError("disk [quota] exceeded")

    monkeypatch.setattr(pipeline, "prepare", broken)
    res = runner.invoke(app, ["prepare", "-c", str(project)])
    assert res.exit_code == 1 and "Traceback" not in res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1, res.output
    assert lines[0].startswith("error: `tunesmith prepare` failed: RuntimeError: disk [quota] exceeded (full traceback: ")
    log = re.search(r"full traceback: (\S+);", lines[0]).group(1)
    assert log.startswith(str(project / ".tunesmith" / "logs" / "error-"))
    text = Path(log).read_text()
    assert "Traceback (most recent call last)" in text and "RuntimeError: disk [quota] exceeded" in text

    shown = runner.invoke(app, ["--debug", "prepare", "-c", str(project)])
    assert shown.exit_code == 1 and "Traceback" in shown.output and "disk [quota] exceeded" in shown.output


def test_run_names_the_stage_that_failed(project, monkeypatch):
    import tunesmith.data.pipeline as pipeline

    monkeypatch.setattr(pipeline, "prepare", lambda *a, **k: {}["missing"])
    res = runner.invoke(app, ["run", "-c", str(project)])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "error: stage 'prepare' of `tunesmith run` failed: KeyError: 'missing'" in res.output


def test_an_import_error_of_a_known_package_gets_its_install_line(project, monkeypatch):
    import tunesmith.data.pipeline as pipeline

    def needs_ray(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'ray'", name="ray")

    monkeypatch.setattr(pipeline, "prepare", needs_ray)
    res = runner.invoke(app, ["prepare", "-c", str(project)])
    assert res.exit_code == 1
    assert "prepare --executor ray needs the 'ray' package, which is not installed. Install it with " \
           "`pip install 'tunesmith[ray]'`." in res.output
