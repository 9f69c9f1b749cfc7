"""Batch prediction: every record answered in order, the same answers as the engine, resumable
after an interruption without answering or logging a record twice, unreadable records kept."""

from __future__ import annotations

import json
import time

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tunesmith.cli import app
from tunesmith.errors import TunesmithError
from tunesmith.serve import predict as predict_mod
from tunesmith.serve.predict import predict
from tunesmith.serve.requestlog import read


def write_input(path, n=10, bad_line=True):
    lines = [json.dumps({"messages": [{"role": "user", "content": f"ticket {i}: my billing problem {i}"}]})
             for i in range(n)]
    if bad_line:
        lines.insert(3, "{not json")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.slow
def test_predict_answers_every_record_like_the_engine_and_logs_them(project, tmp_path):
    cfg, version = project
    cfg.eval.generation.max_new_tokens = 6
    src = write_input(tmp_path / "in.jsonl")
    res = predict(cfg, src, tmp_path / "out.jsonl", model=version)
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert res.records == 11 and res.failed == 1 and res.model == version and len(rows) == 11
    assert rows[3]["answer"] is None and "line 4" in rows[3]["error"]
    from tunesmith.generate.sampling import GenerationConfig
    from tunesmith.serve.launch import load_engine

    engine = load_engine(cfg)
    engine.add_adapter(version, cfg.workspace_dir / "artifacts" / "model" / version)
    want = engine.generate([[{"role": "user", "content": f"ticket {i}: my billing problem {i}"}] for i in range(10)],
                           GenerationConfig(max_new_tokens=6, seed=cfg.seed), adapter=version)
    assert [r["answer"] for r in rows if r["error"] is None] == [g.text for g in want]
    logged = [r for r in read(cfg.workspace_dir / "tunesmith.db", limit=1000) if r["variant"] == "batch"]
    assert len(logged) == 10 and {r["version"] for r in logged} == {version}
    assert not (tmp_path / "out.jsonl.partial.jsonl").exists()


@pytest.mark.slow
def test_an_interrupted_prediction_resumes_where_it_stopped(project, tmp_path, monkeypatch):
    cfg, version = project
    cfg.eval.generation.max_new_tokens = 4
    src = write_input(tmp_path / "in.jsonl", n=12, bad_line=False)
    monkeypatch.setattr(predict_mod, "CHUNK", 5)
    calls = []
    real = predict_mod._write

    def crash_first(rows, path):
        calls.append(len(rows))
        raise KeyboardInterrupt

    monkeypatch.setattr(predict_mod, "_write", crash_first)
    with pytest.raises(KeyboardInterrupt):
        predict(cfg, src, tmp_path / "out.parquet", model=version)
    assert calls == [12] and (tmp_path / "out.parquet.partial.jsonl").exists()
    monkeypatch.setattr(predict_mod, "_write", real)
    again = predict(cfg, src, tmp_path / "out.parquet", model=version)
    assert again.answered == 0 and again.records == 12  # nothing answered twice
    table = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert len(table) == 12 and all(r["answer"] is not None for r in table)


def test_bad_arguments_are_clear_errors(project, tmp_path):
    cfg, _ = project
    with pytest.raises(TunesmithError, match=r"write \.jsonl, \.csv or \.parquet"):
        predict(cfg, tmp_path / "in.jsonl", tmp_path / "out.txt")
    with pytest.raises(TunesmithError, match="no such file"):
        predict(cfg, tmp_path / "missing.jsonl", tmp_path / "out.jsonl")
    src = write_input(tmp_path / "in.jsonl", n=2, bad_line=False)
    res = CliRunner().invoke(app, ["predict", "-c", str(cfg.base_dir), "--input", str(src), "--output",
                                   str(tmp_path / "o.csv"), "--model", "nope"])
    assert res.exit_code == 2 and "nope" in res.output and "Traceback" not in res.output


def test_unanswered_records_read_only_inside_the_block(tmp_path):
    from tunesmith.config import SourceConfig
    from tunesmith.data.ingest import Quarantined, read_source
    from tunesmith.data.ingest.formats import unanswered_records

    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [
        {"messages": [{"role": "user", "content": "chat with no answer"}]},
        {"instruction": "alpaca with no output"},
        {"prompt": "prompt with no completion"},
    ]) + "\n")
    src = SourceConfig(path=str(path))

    def read():
        return list(read_source(src, path, base_dir=tmp_path, max_line_bytes=1 << 20))

    assert all(isinstance(r, Quarantined) for r in read())  # training data needs its answers
    with unanswered_records():
        got = read()
    assert [r.messages[-1] for r in got] == [{"role": "user", "content": c} for c in (
        "chat with no answer", "alpaca with no output", "prompt with no completion")]
    assert all(isinstance(r, Quarantined) for r in read())  # and only inside the block


def test_predicted_records_reach_the_model_shaped_like_the_training_data(project, tmp_path):
    """With ``data.pii`` on, each record's email reaches the model as ``<EMAIL>`` (as in the
    training data): the logged prompt token counts are those of the shaped messages."""
    from tunesmith.data.pipeline import input_shaper
    from tunesmith.serve.launch import load_engine

    cfg, version = project
    cfg = cfg.model_copy(deep=True)
    cfg._base_dir = project[0].base_dir
    cfg.data.pii.enabled = True
    cfg.eval.generation.max_new_tokens = 2
    records = [[{"role": "user", "content": f"ticket {i}: write to jane.doe{i}@example.com about billing"}]
               for i in range(3)]
    src = tmp_path / "pii.jsonl"
    src.write_text("".join(json.dumps({"messages": m}) + "\n" for m in records))
    started = time.time()
    predict(cfg, src, tmp_path / "pii-out.jsonl", model=version)
    engine = load_engine(cfg)
    shape = input_shaper(cfg)
    want = sorted(len(engine.encode(shape(m))) for m in records)
    assert want != sorted(len(engine.encode(m)) for m in records)
    logged = [r for r in read(cfg.workspace_dir / "tunesmith.db", limit=1000)
              if r["variant"] == "batch" and r["created"] >= started]
    assert sorted(r["prompt_tokens"] for r in logged) == want
