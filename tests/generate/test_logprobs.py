"""Per-token logprobs from the engine: recorded while decoding they equal the model's own
log-softmax over the full sequence (float32, tiny model), whatever the batch, the sampling
temperature or a grammar's mask; prompt logprobs likewise, the first token without one."""

from __future__ import annotations

import pytest
import torch

from models.tiny import build_model, build_tokenizer
from tunesmith.errors import TunesmithError
from tunesmith.generate import Engine, GenerationConfig
from tunesmith.generate.constrain import Grammar

LABELS = ["billing", "shipping", "account_access"]
TEXTS = ["my parcel is late", "refund please, it has been weeks", "cannot login"]


@pytest.fixture(scope="module")
def engine():
    tok = build_tokenizer()
    return Engine(build_model("llama", tok, seed=5), tok, max_batch_size=2)


def full_log_softmax(engine, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        logits = engine.model(input_ids=torch.tensor([ids]), use_cache=False).logits[0]
    return torch.log_softmax(logits.float(), dim=-1)


def convs():
    return [[{"role": "user", "content": t}] for t in TEXTS]


@pytest.mark.parametrize("cfg", [
    GenerationConfig(max_new_tokens=6, logprobs=3),
    GenerationConfig(max_new_tokens=6, temperature=1.5, top_p=0.9, seed=2, logprobs=0),  # raw, not tempered
    GenerationConfig(max_new_tokens=8, grammar=Grammar.choice(LABELS), logprobs=2),  # raw, before the mask
], ids=["greedy", "sampled", "grammar"])
def test_generated_logprobs_are_the_models_log_softmax(engine, cfg):
    gens = engine.generate(convs(), cfg)  # 3 prompts, batch of 2: rows join and leave mid-call
    for conv, g in zip(convs(), gens, strict=True):
        prompt = engine.encode(conv)
        want = full_log_softmax(engine, prompt + g.token_ids)
        assert [r.token for r in g.logprobs] == g.token_ids
        for i, r in enumerate(g.logprobs):
            row = want[len(prompt) - 1 + i]
            assert abs(r.logprob - row[r.token].item()) < 1e-4
            assert len(r.top) == cfg.logprobs
            assert [v for _, v in r.top] == pytest.approx(row.topk(cfg.logprobs).values.tolist(), abs=1e-4)
    assert engine.generate(convs()[:1], GenerationConfig(max_new_tokens=3))[0].logprobs is None  # off by default


def test_prompt_logprobs(engine):
    prompts = [engine.tokenizer(t)["input_ids"] for t in TEXTS] + [[7]]
    got = engine.prompt_logprobs(prompts, top=2)
    for ids, records in zip(prompts, got, strict=True):
        assert len(records) == len(ids) and records[0] is None
        want = full_log_softmax(engine, ids)
        for t in range(1, len(ids)):
            assert records[t].token == ids[t] and abs(records[t].logprob - want[t - 1, ids[t]].item()) < 1e-4
            assert records[t].top[0][0] == int(want[t - 1].argmax())


def test_logprobs_setting_is_checked():
    with pytest.raises(TunesmithError, match="logprobs"):
        GenerationConfig(logprobs=21)
