"""The CPU speed-ups of the trainer change speed, not results: bf16 frozen weights give the same
logits under bf16 autocast, and the cheaper dropout keeps dropout's distribution."""

import peft
import pytest
import torch

from models.tiny import build_model, build_tokenizer
from tunesmith.train.trainer import FastDropout, use_bf16_frozen_weights


def _lora(arch: str, *, dora: bool = False):
    torch.manual_seed(0)
    model = build_model(arch, build_tokenizer())
    cfg = peft.LoraConfig(task_type=peft.TaskType.CAUSAL_LM, r=4, lora_alpha=8, target_modules="all-linear",
                          use_dora=dora, init_lora_weights=False)  # non-zero B: LoRA changes the output
    return peft.get_peft_model(model, cfg)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_bf16_frozen_weights_give_the_same_logits_under_autocast(arch):
    model = _lora(arch).eval()
    ids = torch.randint(5, 200, (2, 24))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        before = model(input_ids=ids).logits.float()
    changed = use_bf16_frozen_weights(model)
    assert changed > 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        after = model(input_ids=ids).logits.float()
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    for name, p in model.named_parameters():
        if p.requires_grad:  # what the optimizer updates stays float32
            assert p.dtype == torch.float32, name
    tied = model.get_base_model().get_output_embeddings().weight
    assert tied.dtype == torch.float32  # embeddings / LM head are not LoRA base layers


def test_dora_layers_keep_float32_weights():
    model = _lora("llama", dora=True)
    assert use_bf16_frozen_weights(model) == 0
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_fast_dropout_keeps_the_distribution_and_the_mean():
    torch.manual_seed(0)
    drop = FastDropout(0.1).train()
    x = torch.ones(4, 1000, 256, requires_grad=True)
    y = drop(x)
    kept = (y != 0).float().mean().item()
    assert abs(kept - 0.9) < 0.002
    assert abs(y.mean().item() - 1.0) < 0.003  # unbiased: scaled by 1 / (1 - p)
    y.sum().backward()
    torch.testing.assert_close(x.grad, y.detach())  # d(x * mask)/dx = mask
    assert torch.equal(drop.eval()(x), x)
    # masks differ call to call, and are reproducible from the seed
    torch.manual_seed(1)
    a = FastDropout(0.5).train()(torch.ones(10_000))
    b = FastDropout(0.5).train()(torch.ones(10_000))
    torch.manual_seed(1)
    assert not torch.equal(a, b) and torch.equal(a, FastDropout(0.5).train()(torch.ones(10_000)))
