"""lm-evaluation-harness against the running server, offline: a local multiple-choice task
through ``local-completions`` gives the same per-request log-likelihoods (within 1e-3) as
lm-eval's own ``hf`` backend on the same model folder, and a ``generate_until`` task runs
through ``local-chat-completions`` with the answers the engine gives in-process."""

from __future__ import annotations

import json

import pytest

from serve.conftest import KEY
from tunesmith.generate import GenerationConfig

pytest.importorskip("lm_eval")

MC_TASK = """task: tunesmith_served_mc
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

GEN_TASK = """task: tunesmith_served_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n\\n"]
  max_gen_toks: 6
  do_sample: false
  temperature: 0
metric_list:
  - metric: exact_match
"""

ROWS = [{"question": f"What is {a} plus {b}?", "choices": [str(a + b), str(a + b + 1), "I do not know"],
         "answer": 0} for a, b in [(1, 2), (2, 3), (3, 4), (4, 5), (5, 6)]]


@pytest.fixture
def tasks(tmp_path):
    folder = tmp_path / "tasks"
    folder.mkdir()
    data = tmp_path / "arith.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    (folder / "served_mc.yaml").write_text(MC_TASK.format(data=data))
    (folder / "served_gen.yaml").write_text(GEN_TASK.format(data=data))
    return folder


def evaluate(model: str, model_args: dict, task: str, folder, **kw) -> list[dict]:
    """The task's per-document samples (sorted by document)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    out = lm_eval.simple_evaluate(model=model, model_args=model_args, tasks=[task],
                                  task_manager=TaskManager(include_path=str(folder)), log_samples=True,
                                  verbosity="ERROR", **kw)
    return sorted(out["samples"][task], key=lambda s: s["doc_id"])


@pytest.mark.slow
def test_local_completions_loglikelihoods_equal_the_hf_backend(served, tasks, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)  # local-completions sends it as the bearer key
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    folder = served.cfg.resolve(served.cfg.model.base)  # the base model as saved: safetensors + tokenizer
    served_args = {"model": "base", "base_url": f"{served.url}/v1/completions", "tokenizer_backend": "huggingface",
                   "tokenizer": str(folder), "tokenized_requests": True, "max_length": served.engine.context,
                   "num_concurrent": 1, "max_retries": 1}
    before = served.service.scheduler.batches
    remote = evaluate("local-completions", served_args, "tunesmith_served_mc", tasks)
    assert served.service.scheduler.batches > before  # the server's engine answered
    local = evaluate("hf", {"pretrained": str(folder), "dtype": "float32", "device": "cpu"},
                     "tunesmith_served_mc", tasks)
    assert len(remote) == len(local) == len(ROWS)
    for r, h in zip(remote, local, strict=True):
        got, want = [float(x[0]) for x in r["filtered_resps"]], [float(x[0]) for x in h["filtered_resps"]]
        assert len(got) == 3 and got == pytest.approx(want, abs=1e-3, rel=0), r["doc_id"]
        assert [x[1] for x in r["filtered_resps"]] == [x[1] for x in h["filtered_resps"]]  # is_greedy
        assert r["acc"] == h["acc"]


@pytest.mark.slow
def test_local_chat_completions_generation_runs(served, tasks, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    args = {"model": "base", "base_url": f"{served.url}/v1/chat/completions", "num_concurrent": 1,
            "max_retries": 1}
    samples = evaluate("local-chat-completions", args, "tunesmith_served_gen", tasks, apply_chat_template=True)
    assert len(samples) == len(ROWS)
    for s, row in zip(samples, ROWS, strict=True):
        messages = [{"role": "user", "content": row["question"]}]
        (g,) = served.engine.generate([messages], GenerationConfig(max_new_tokens=6, stop=["\n\n"]), adapter=None)
        assert s["resps"][0][0] == g.text  # what the engine answers in-process
