"""Tiny models and tokenizers built in code, so model tests run in seconds without a network.

Weights are random: the tests compare a model with itself (packed vs alone, saved vs loaded),
never with expected text. The tokenizer is a real byte-level BPE (trained here on a few
sentences) so that merges across chat-template boundaries happen the way they do in real
tokenizers.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    LlamaConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

CHATML_TEMPLATE = (
    "{% for m in messages %}"
    "{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# The generation prompt ends with a space ("[/INST] ") and the answer follows it, so
# byte-level BPE merges that space into the answer's first word ("ĠHow"): a token crosses
# the prompt/answer boundary, the case the masks must survive and the checks must flag.
SPACE_JOINED_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'user' %}{{ '[INST] ' + m['content'] + ' [/INST] ' }}"
    "{% elif m['role'] == 'assistant' %}{{ m['content'] + eos_token }}"
    "{% else %}{{ '<<SYS>>' + m['content'] + '<</SYS>>' }}{% endif %}"
    "{% endfor %}"
)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello! How can I help you today? My order has not arrived yet.",
    "Please reset my password, I cannot log in to my account.",
    "Your refund was approved and will arrive in three to five days.",
    "system user assistant INST SYS answer question policy billing",
    "Thanks, that fixed it. Goodbye!",
    "Numbers 0 1 2 3 4 5 6 7 8 9 and symbols: - _ . , ; : ? ! ( ) [ ] < > / |",
]


def build_tokenizer(*, chat_template: str | None = CHATML_TEMPLATE) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (vocab ~400) with ChatML special tokens.

    ``chat_template=None`` gives a "base model" tokenizer without a template.
    """
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_CORPUS * 4, trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>" if chat_template else "<|endoftext|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
    )
    if chat_template:
        tok.chat_template = chat_template
    return tok


def _config(arch: str, vocab_size: int, pad_id: int, eos_id: int):
    common = {"vocab_size": vocab_size, "pad_token_id": pad_id, "eos_token_id": eos_id}
    if arch == "llama":
        return LlamaConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            **common,
        )
    if arch == "qwen2":
        return Qwen2Config(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            **common,
        )
    if arch == "gpt2":
        return GPT2Config(
            n_embd=32, n_layer=2, n_head=4, n_positions=256, bos_token_id=eos_id, **common
        )
    raise ValueError(f"unknown tiny architecture {arch!r}: use llama, qwen2 or gpt2")


ARCHITECTURES = ("llama", "qwen2", "gpt2")


def build_model(
    arch: str, tokenizer: PreTrainedTokenizerFast, *, attn: str = "sdpa", seed: int = 0
) -> PreTrainedModel:
    """A 2-layer random model of the given architecture, in eval mode, float32."""
    torch.manual_seed(seed)
    cfg = _config(arch, len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation=attn)
    return model.eval()


def save_model_dir(
    path: Path, arch: str = "llama", *, chat_template: str | None = CHATML_TEMPLATE
) -> Path:
    """Write a tiny model + tokenizer to ``path`` as safetensors, like a downloaded checkpoint."""
    tok = build_tokenizer(chat_template=chat_template)
    build_model(arch, tok).save_pretrained(path)
    tok.save_pretrained(path)
    return path
