"""Adapter isolation under concurrency: 50 simultaneous requests spread over ``base`` and two
LoRA model versions each get exactly the answer that version gives in-process.

The server batches concurrent requests; a batch that ran one request through another
request's adapter (or left an adapter switched on for the base) would change answers. The two
versions are random nonzero LoRA adapters on a tiny random Llama, large enough that the three
models disagree on (almost) every prompt, so a mix-up cannot go unnoticed.
"""

from __future__ import annotations

import hashlib
import json
import random
from concurrent.futures import ThreadPoolExecutor

import pytest

from serve.conftest import KEY, Served, running
from tunesmith.generate import GenerationConfig

MAX_TOKENS = 8


def publish_lora(cfg, seed: int) -> str:
    """A LoRA model version (all linear layers, random nonzero weights) registered in the
    workspace like a trained one: ``adapter/`` plus ``model_version.json`` with the base's
    fingerprint."""
    import torch
    from peft import LoraConfig, get_peft_model

    from tunesmith.models.loading import load_model, model_fingerprint, resolve_model
    from tunesmith.train.recipe import model_reference
    from tunesmith.workspace import Workspace

    ref = resolve_model(model_reference(cfg))
    model = get_peft_model(load_model(ref), LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                                       target_modules="all-linear", task_type="CAUSAL_LM"))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    ws = Workspace(cfg.workspace_dir)
    with ws.staging() as staging:
        model.save_pretrained(str(staging / "adapter"), safe_serialization=True)
        version = hashlib.sha256((staging / "adapter" / "adapter_model.safetensors").read_bytes()).hexdigest()[:20]
        record = {"kind": "tunesmith.model_version", "id": version, "base_model": cfg.model.base,
                  "base_fingerprint": model_fingerprint(ref), "method": "lora", "weights": "adapter"}
        (staging / "model_version.json").write_text(json.dumps(record))
        ws.publish(staging, "model", version, meta={"base_model": cfg.model.base, "method": "lora"})
    return version


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory):
    """A served tiny project with versions A and B (and the base)."""
    from train.test_trainer import make_project
    from tunesmith.config import load_config
    from tunesmith.serve.auth import ApiKeys
    from tunesmith.serve.launch import build_app

    cfg = load_config(make_project(tmp_path_factory.mktemp("isolation")))
    a, b = publish_lora(cfg, seed=1), publish_lora(cfg, seed=2)
    loaded = build_app(cfg, keys=ApiKeys([KEY]), default_max_tokens=MAX_TOKENS)
    assert set(loaded.catalog.versions) == {a, b}
    with running(loaded.app) as url:
        yield Served(url, loaded, cfg, a), a, b


@pytest.mark.slow  # ~10 s idle, 25 s on a busy 2-core machine
def test_fifty_concurrent_mixed_requests_each_answer_like_their_version_alone(two_versions):
    from tunesmith.serve.requestlog import read

    served, a, b = two_versions
    targets = {"base": None, a: a, b: b}  # model name -> engine adapter
    rng = random.Random(5)
    words = ["refund", "login", "parcel", "invoice", "password", "delivery", "billing", "account"]
    jobs = [(rng.choice(list(targets)), [{"role": "user", "content": f"ticket {i}: my {rng.choice(words)} "
                                                                     f"problem, ref {rng.randrange(1000)}"}])
            for i in range(50)]
    assert {model for model, _ in jobs} == set(targets)  # all three are in the mix

    # in-process, one engine call per version (greedy answers do not depend on the batch:
    # tests/generate checks that against one-at-a-time generate)
    cfg = GenerationConfig(max_new_tokens=MAX_TOKENS)
    expected = {name: [g.text for g in served.engine.generate([m for _, m in jobs], cfg, adapter=adapter)]
                for name, adapter in targets.items()}
    for x, y in ((a, "base"), (b, "base"), (a, b)):  # a misrouted request would show
        assert sum(p != q for p, q in zip(expected[x], expected[y], strict=True)) >= 45, (x, y)

    client = served.client()
    before = served.service.scheduler.batches

    def call(job):
        model, messages = job
        resp = client.chat.completions.create(model=model, messages=messages, temperature=0,
                                              max_tokens=MAX_TOKENS)
        return resp.id, resp.choices[0].message.content

    with ThreadPoolExecutor(len(jobs)) as pool:
        got = list(pool.map(call, jobs))
    calls = served.service.scheduler.batches - before
    assert calls < len(jobs)  # they really were batched together
    mismatches = [(i, model) for i, ((model, _), (_, text)) in enumerate(zip(jobs, got, strict=True))
                  if text != expected[model][i]]
    assert not mismatches, f"{len(mismatches)} of 50 answers differ from their version's own: {mismatches[:5]}"

    served.service.request_log.flush()
    logged = {r["request_id"]: r for r in read(served.service.request_log.db_path, limit=200)}
    for (model, _), (request_id, text) in zip(jobs, got, strict=True):
        row = logged[request_id]
        assert (row["version"], row["adapter"], row["answer"]) == (model, targets[model], text)
