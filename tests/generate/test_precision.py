"""bf16 engines store their frozen linear weights in bf16 (models/precision.py): the very
tensors autocast would cast to on every step, so every answer and logprob stays the same."""

from __future__ import annotations

import peft
import pytest
import torch

import tunesmith.generate.engine as engine_module
from models.tiny import build_model, build_tokenizer, save_model_dir
from tunesmith.generate import Engine, GenerationConfig
from tunesmith.models.precision import engine_bf16_weights

from .test_engine import SYSTEM, conversations


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def _frozen(arch: str, tok, *, tied: bool = False) -> torch.nn.Module:
    model = build_model(arch, tok, seed=4)
    if tied:  # the starter (SmolLM2) ties its LM head to the input embeddings
        model.get_output_embeddings().weight = model.get_input_embeddings().weight
    return model.requires_grad_(False)


def _answers(engine: Engine, convs) -> list:
    gens = engine.generate(convs, GenerationConfig(max_new_tokens=12, logprobs=2))
    return [(g.token_ids, g.logprobs) for g in gens]


@pytest.mark.parametrize(("arch", "tied"), [("llama", True), ("llama", False), ("gpt2", False)])
def test_stored_bf16_weights_answer_exactly_as_autocast(monkeypatch, tok, arch, tied):
    convs = conversations(7)
    stored = Engine(_frozen(arch, tok, tied=tied), tok, system=SYSTEM, max_batch_size=3, bf16_autocast=True)
    linears = [m for m in stored.model.modules() if isinstance(m, torch.nn.Linear) or type(m).__name__ == "Conv1D"]
    assert linears and all(m.weight.dtype == torch.bfloat16 for m in linears)
    assert stored.model.get_input_embeddings().weight.dtype == torch.float32  # not a linear: stays
    monkeypatch.setattr(engine_module, "engine_bf16_weights", lambda model: 0)  # autocast casts each step
    cast = Engine(_frozen(arch, tok, tied=tied), tok, system=SYSTEM, max_batch_size=3, bf16_autocast=True)
    assert {p.dtype for p in cast.model.parameters()} == {torch.float32}
    assert _answers(stored, convs) == _answers(cast, convs)


def test_trainable_weights_of_a_callers_model_stay_float32(tok):
    model = build_model("llama", tok)  # requires grad: rehearsal answers with the model it trains next
    Engine(model, tok, bf16_autocast=True)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert engine_bf16_weights(model) == 0


def test_float32_engines_are_untouched(tok):
    engine = Engine(_frozen("llama", tok), tok)
    assert {p.dtype for p in engine.model.parameters()} == {torch.float32}


def test_dora_base_layers_and_lora_weights_stay_float32(tok):
    cfg = peft.LoraConfig(task_type=peft.TaskType.CAUSAL_LM, r=2, target_modules=["q_proj"], use_dora=True)
    model = peft.get_peft_model(_frozen("llama", tok), cfg).requires_grad_(False)
    engine_bf16_weights(model)
    for name, p in model.named_parameters():
        if "q_proj" in name or "lora_" in name:
            assert p.dtype == torch.float32, name
        elif "mlp" in name:
            assert p.dtype == torch.bfloat16, name


def test_loaded_base_and_full_model_versions_are_stored_in_bf16(tmp_path, tok):
    base = save_model_dir(tmp_path / "base", "llama")
    full = tmp_path / "full"
    save_model_dir(full / "model", "llama")
    (full / "model_version.json").write_text('{"weights": "model"}')
    engine = Engine.load(str(base), device="cpu", bf16_autocast=True)
    engine.add_adapter("ft", full)
    for model in (engine.model, engine.full_models["ft"]):
        assert model.model.layers[0].mlp.down_proj.weight.dtype == torch.bfloat16
        assert not any(p.requires_grad for p in model.parameters())
    assert engine.generate(conversations(2), GenerationConfig(max_new_tokens=4), adapter="ft")
