import sqlite3

import pytest

from tunesmith.errors import TunesmithError
from tunesmith.workspace import Workspace, write_atomic


def test_publish_is_atomic_and_content_addressed(tmp_path):
    ws = Workspace(tmp_path / "ws")
    with ws.staging() as staged:
        (staged / "a.txt").write_text("hello")
        art = ws.publish(staged, "snapshot", "abc123", meta={"n": 1}, parents=[("source", "s1", "input")])
    assert (art.path / "a.txt").read_text() == "hello"
    assert not list((tmp_path / "ws" / "tmp").iterdir())  # staging cleaned
    assert ws.get("snapshot", "abc").id == "abc123"  # prefix lookup
    assert ws.parents("snapshot", "abc123") == [("source", "s1", "input")]
    # publishing the same id again keeps the first copy
    with ws.staging() as staged:
        (staged / "a.txt").write_text("other")
        again = ws.publish(staged, "snapshot", "abc123")
    assert (again.path / "a.txt").read_text() == "hello"
    assert len(ws.list("snapshot")) == 1


def test_crash_during_staging_leaves_no_artifact(tmp_path):
    ws = Workspace(tmp_path / "ws")
    with pytest.raises(RuntimeError), ws.staging() as staged:
        (staged / "half.parquet").write_text("partial")
        raise RuntimeError("killed")
    assert ws.list("snapshot") == []
    assert not (tmp_path / "ws" / "artifacts" / "snapshot").exists()


def test_runs_and_wal(tmp_path):
    ws = Workspace(tmp_path)
    run = ws.start_run("prepare", "cfg1")
    ws.finish_run(run, "ok", {"snapshot": "x"})
    [row] = ws.runs("prepare")
    assert row["status"] == "ok" and row["summary"] == {"snapshot": "x"}
    mode = sqlite3.connect(tmp_path / "tunesmith.db").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_unknown_artifact_message(tmp_path):
    with pytest.raises(TunesmithError, match="no snapshot 'zzz'"):
        Workspace(tmp_path).get("snapshot", "zzz")


def test_write_atomic(tmp_path):
    write_atomic(tmp_path / "d" / "f.json", "{}")
    assert (tmp_path / "d" / "f.json").read_text() == "{}"
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["f.json"]
