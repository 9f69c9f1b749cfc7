"""The engine, the scorer and the trainer on a CUDA GPU.

CI has no GPU: every test here skips there. They ran on a lent H200 with
``scripts/gpu_check.sh`` (docs/gpu.md has that run's output and figures). Each asks of the GPU
what the CPU tests ask of the CPU: continuous batching must not change a greedy answer, a
grammar must hold, a scored log-likelihood must equal a direct computation, a real CUDA
out-of-memory must shrink the batch instead of ending the call, and training must pick bf16,
learn, and resume from a checkpoint to the same weights.
"""

from __future__ import annotations

import json

import pytest
import torch

from generate.test_engine import SYSTEM, VARIED, conversations, varied_model
from models.tiny import build_model, build_tokenizer
from train.test_trainer import _interrupt_after, adapter_weights, make_project
from tunesmith.config import load_config
from tunesmith.generate import Engine, GenerationConfig
from tunesmith.generate.constrain import Grammar
from tunesmith.models.chat import encode_prompt, end_of_turn_ids
from tunesmith.train.recipe import train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

LABELS = ["billing", "shipping", "account"]
SCHEMA = {"type": "object", "properties": {"category": {"enum": LABELS}, "urgent": {"enum": ["yes", "no"]}},
          "required": ["category", "urgent"], "additionalProperties": False}


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def reference_on(model, tok, convs, max_new: int) -> list[list[int]]:
    """One prompt at a time through ``model.generate`` on the model's device (greedy)."""
    stop = end_of_turn_ids(tok)
    outs = []
    with torch.inference_mode():
        for conv in convs:
            ids = torch.tensor([encode_prompt(tok, conv, system=SYSTEM)], device=model.device)
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new,
                                 do_sample=False, eos_token_id=stop, pad_token_id=tok.pad_token_id)
            outs.append(out[0, ids.shape[1]:].tolist())
    return outs


@pytest.mark.parametrize(("arch", "seed", "scale"), VARIED)
def test_greedy_on_cuda_equals_one_at_a_time_generate(tok, arch, seed, scale):
    model = varied_model(tok, arch, seed, scale).to("cuda")
    convs = conversations(12)
    want = reference_on(model, tok, convs, max_new=20)
    got = Engine(model, tok, system=SYSTEM, max_batch_size=4).generate(convs, GenerationConfig(max_new_tokens=20))
    assert [g.token_ids for g in got] == want
    assert len({len(w) for w in want}) >= 2  # rows retire at different steps, others join


@pytest.mark.parametrize(("arch", "seed", "scale"), VARIED)
def test_drafted_greedy_on_cuda_changes_no_token(tok, arch, seed, scale):
    """A warm draft book: guesses checked on the GPU, the answers still those of generate."""
    model = varied_model(tok, arch, seed, scale).to("cuda")
    convs = conversations(12)
    want = reference_on(model, tok, convs, max_new=20)
    engine = Engine(model, tok, system=SYSTEM, max_batch_size=4)
    engine.generate(convs, GenerationConfig(max_new_tokens=20))
    assert [g.token_ids for g in engine.generate(convs, GenerationConfig(max_new_tokens=20))] == want
    assert engine.drafts is not None and engine.drafts.accepted > 0


@pytest.mark.parametrize("bf16", [False, True])
def test_grammar_holds_on_cuda(tok, bf16):
    engine = Engine(build_model("llama", tok, seed=3).to("cuda"), tok, system=SYSTEM, max_batch_size=3,
                    bf16_autocast=bf16)
    convs = conversations(8)
    labels = engine.generate(convs, GenerationConfig(max_new_tokens=12, grammar=Grammar.choice(LABELS)))
    assert {g.text for g in labels} <= set(LABELS)
    answers = engine.generate(convs, GenerationConfig(max_new_tokens=80, grammar=Grammar.json_schema(SCHEMA)))
    for g in answers:
        parsed = json.loads(g.text)
        assert parsed["category"] in LABELS and parsed["urgent"] in ("yes", "no")


def test_loglikelihood_on_cuda_equals_a_direct_computation_and_the_cpu(tok):
    model = build_model("llama", tok)
    texts = [f"please help with my order number {i} it is late" * (1 + i % 3) for i in range(7)]
    on_cpu = Engine(model, tok, max_batch_size=3).loglikelihood(texts)
    model = model.to("cuda")
    on_gpu = Engine(model, tok, max_batch_size=3).loglikelihood(texts)
    for text, gpu, cpu in zip(texts, on_gpu, on_cpu, strict=True):
        ids = tok(text)["input_ids"]
        with torch.inference_mode():
            logp = torch.log_softmax(model(torch.tensor([ids], device="cuda")).logits[0].float(), dim=-1)
        direct = -sum(float(logp[t - 1, ids[t]]) for t in range(1, len(ids)))
        assert gpu.tokens == cpu.tokens == len(ids) - 1
        assert gpu.nll == pytest.approx(direct, rel=1e-4, abs=1e-4)
        assert gpu.nll == pytest.approx(cpu.nll, rel=1e-3, abs=1e-3)


def test_a_real_cuda_out_of_memory_halves_the_batch_and_finishes(tok, monkeypatch):
    """The first forward with more than two rows asks the CUDA allocator for ~1 PB: a genuine
    ``torch.cuda.OutOfMemoryError``, which the engine must take as "fewer rows"."""
    model = build_model("llama", tok, seed=1).to("cuda")
    engine = Engine(model, tok, system=SYSTEM, max_batch_size=8)
    convs = conversations(8)
    want = [g.token_ids for g in engine.generate(convs, GenerationConfig(max_new_tokens=10))]
    real_forward, raised = model.forward, []

    def forward(*args, **kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if not raised and ids is not None and ids.shape[0] > 2:
            try:
                torch.empty(2**48, dtype=torch.float32, device="cuda")
            except torch.cuda.OutOfMemoryError as exc:
                raised.append(exc)
                raise
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", forward)
    engine = Engine(model, tok, system=SYSTEM, max_batch_size=8)
    got = engine.generate(convs, GenerationConfig(max_new_tokens=10))
    assert raised and engine.oom_backoffs == 1 and engine.max_batch_size == 4
    assert [g.token_ids for g in got] == want


def test_training_on_cuda_picks_bf16_learns_and_resumes_to_the_same_weights(tmp_path, monkeypatch):
    from tunesmith.train import trainer as trainer_mod

    spec = "{max_steps: 8, save_every: 100, precision: auto}"
    whole_events: list[dict] = []
    whole = train(load_config(make_project(tmp_path / "whole", spec)), log=whole_events.append)
    start = next(e for e in whole_events if e.get("event") == "loading_model")
    assert start["device"].startswith("cuda") and start["dtype"] == "bfloat16"
    assert next(e for e in whole_events if "precision" in e)["precision"] == "bf16"
    losses = [e["loss"] for e in whole_events if e.get("event") == "step"]
    assert len(losses) == 8 and sum(losses[-3:]) < sum(losses[:3])

    cfg = load_config(make_project(tmp_path / "split", spec))
    real = _interrupt_after(monkeypatch, 4)
    assert train(cfg).interrupted
    monkeypatch.setattr(trainer_mod.Trainer, "_train_step", real)
    resumed = train(cfg, resume=True)
    assert resumed.metrics["steps"] == 8
    want, got = adapter_weights(whole), adapter_weights(resumed)
    assert want.keys() == got.keys()
    for name in want:  # cuBLAS may reorder a reduction between the runs: equal to float tolerance
        torch.testing.assert_close(got[name], want[name], rtol=1e-3, atol=1e-4, msg=name)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_answer_confidence_on_cuda_equals_the_cpu(tok, attention):
    """The confidence scorer's packed row (each field's alternatives as a token trie under a 4D
    mask) on CUDA: the same per-value log-likelihoods as on the CPU, from a prefill and from the
    keys/values generation kept (generate_scored)."""
    from tunesmith.config import OutputSpec
    from tunesmith.review.confidence import generate_scored, score_answers

    spec = OutputSpec(kind="json", json_schema=SCHEMA, label_fields=["category", "urgent"])
    convs = conversations(5)
    cfg = GenerationConfig(max_new_tokens=40, grammar=Grammar.json_schema(SCHEMA))

    def run(device: str):
        model = build_model("llama", tok, seed=3).to(device)
        model.config._attn_implementation = attention
        engine = Engine(model, tok, max_batch_size=4, system=SYSTEM)
        prompts, gens, kept = generate_scored(engine, spec, convs, cfg, adapter=None)
        fresh = score_answers(engine, spec, prompts, [g.text for g in gens])
        return [g.text for g in gens], kept, fresh

    cpu_texts, cpu_kept, _ = run("cpu")
    gpu_texts, gpu_kept, gpu_fresh = run("cuda")
    assert gpu_texts == cpu_texts
    compared = 0
    for cpu, kept, fresh in zip(cpu_kept, gpu_kept, gpu_fresh, strict=True):
        for name, values in cpu.logliks.items():
            for value, ll in values.items():
                assert kept.logliks[name][value] == pytest.approx(ll, rel=1e-3, abs=1e-3)
                assert fresh.logliks[name][value] == pytest.approx(ll, rel=1e-3, abs=1e-3)
                compared += 1
    assert compared >= 5 * len(LABELS)  # the grammar makes JSON of the random model: fields were scored
