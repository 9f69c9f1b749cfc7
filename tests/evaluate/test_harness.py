"""lm-evaluation-harness as an optional forgetting check: a local multiple-choice task (offline)
on a tiny base model and a changed copy of it, before vs after; clear errors otherwise."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from tunesmith.config import LmEvalConfig
from tunesmith.errors import TunesmithError

pytest.importorskip("lm_eval")

TASK = """task: tunesmith_local_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
"""


@pytest.fixture
def task_dir(tmp_path):
    folder = tmp_path / "tasks"
    folder.mkdir()
    data = tmp_path / "mc.jsonl"
    rows = [{"question": f"What is {a} plus {b}?", "choices": [str(a + b), str(a + b + 1)], "answer": 0}
            for a, b in [(1, 2), (2, 3), (3, 4), (4, 5), (5, 6), (6, 7)]]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "local_mc.yaml").write_text(TASK.format(data=data))
    return folder


def _engine():
    from models.tiny import build_model, build_tokenizer
    from tunesmith.generate.engine import Engine

    tok = build_tokenizer()
    base = build_model("llama", tok)
    tuned = copy.deepcopy(base)
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_(torch.randn_like(p) * 0.5, alpha=1.0)
    engine = Engine(base, tok)
    engine.full_models["finetuned"], engine.adapters["finetuned"] = tuned, None
    return engine


@pytest.mark.slow
def test_local_task_runs_before_and_after(task_dir, monkeypatch):
    from lm_eval.models.huggingface import HFLM

    from tunesmith.evaluate.harness import run_harness

    seen = []
    init = HFLM.__init__

    def record(self, pretrained, **kw):
        seen.append(pretrained)
        init(self, pretrained=pretrained, **kw)

    monkeypatch.setattr(HFLM, "__init__", record)
    engine = _engine()
    base, tuned = engine.model, engine.full_models["finetuned"]
    scores = run_harness(engine, LmEvalConfig(tasks=["tunesmith_local_mc"], limit=6, batch_size=2),
                         include_dir=task_dir, adapter="finetuned")
    assert seen == [base, tuned]  # the base model, then the fine-tuned one, each loaded once already
    acc = scores["tunesmith_local_mc"]["acc"]
    assert set(acc) == {"before", "after"}
    assert all(0.0 <= v <= 1.0 and v * 6 == round(v * 6) for v in acc.values())  # k of 6 documents


def test_unknown_task_and_missing_folder_are_clear_errors(task_dir, tmp_path):
    from tunesmith.evaluate.harness import run_harness

    with pytest.raises(TunesmithError, match="unknown task"):
        run_harness(_engine(), LmEvalConfig(tasks=["no_such_task_xyz"]), include_dir=task_dir, adapter=None)
    with pytest.raises(TunesmithError, match="folder not found"):
        run_harness(_engine(), LmEvalConfig(tasks=["x"]), include_dir=tmp_path / "missing", adapter=None)
