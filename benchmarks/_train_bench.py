"""Pieces of ``train_throughput.py`` shared by its contenders: the data every contender trains
on, the LoRA they all use, the one validation-loss function, the FLOP count and the matmul
ceiling. Each contender runs in its own process (see ``train_throughput.py``), so the model
is loaded here, never in the parent.

Identical inputs are the point: every contender gets the same tokenised examples with the
same labels (tunesmith's rendering and assistant-only mask), the same adapter initialisation
(``set_seed`` right before ``get_peft_model``), the same learning-rate schedule and the same
precision (bf16 autocast where the CPU has native bf16, fp32 weights), so what differs is
the trainer alone.
"""

from __future__ import annotations

import json
import resource
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from tunesmith.train.masks import IGNORE_INDEX, TokenizedExample

CONTENDERS = ("tunesmith", "tunesmith_noshare", "tunesmith_top10", "tunesmith_full_top10", "hf_trainer", "trl_sft")


@dataclass
class BenchSpec:
    """Everything a contender process needs; written as JSON by the parent."""

    snapshot: str
    examples: int = 96
    val_examples: int = 64
    max_length: int = 1024
    rows_per_step: int = 1  # packed rows of max_length per optimizer step (tunesmith, TRL)
    examples_per_step: int = 4  # padded examples per optimizer step (HF Trainer): ~ the same tokens
    lr: float = 1e-3
    # No warmup: the cosine schedules of tunesmith and transformers are then the same function
    # of the step (with warmup, transformers' first step has lr 0 and rounds the step count up).
    warmup_ratio: float = 0.0
    seed: int = 13
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    threads: int = 0  # torch threads (0: torch's default, one per core)
    top_layers: int = 0  # LoRA on the last N layers only (0 = all); set by the tunesmith_top10 child
    full_top_layers: int = 0  # full fine-tuning of the last N layers instead of LoRA (tunesmith_full_top10)
    full_lr: float = 6e-4  # its learning rate (the sample project's demo setting)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: Path) -> BenchSpec:
        return cls(**json.loads(path.read_text()))


# --------------------------------------------------------------------------- data and model
def tokenizer() -> Any:
    from transformers.utils import logging as hf_logging

    from tunesmith.models.loading import load_tokenizer, resolve_model

    hf_logging.disable_progress_bar()  # per-shard "Loading weights" bars
    return load_tokenizer(resolve_model("starter"))


def model_config() -> Any:
    from transformers import AutoConfig

    from tunesmith.models.loading import local_source, resolve_model

    return AutoConfig.from_pretrained(local_source(resolve_model("starter"))[0])


def load_data(spec: BenchSpec, tok: Any) -> tuple[list[TokenizedExample], list[TokenizedExample]]:
    """The first ``examples`` train and ``val_examples`` validation examples that pass tunesmith's
    pre-flight check at ``max_length`` (so no contender truncates or drops anything)."""
    from tunesmith.data.pipeline import load_split
    from tunesmith.train.masks import enforce_preflight, preflight, tokenize_examples

    def take(split: str, n: int) -> list[TokenizedExample]:
        tokenized = tokenize_examples(tok, load_split(Path(spec.snapshot), split)[: n + n // 4 + 8])
        kept = enforce_preflight(tokenized, preflight(tokenized, spec.max_length), on_problem="drop")
        kept = [ex for ex in kept if len(ex) <= spec.max_length]
        if len(kept) < n:
            raise SystemExit(f"only {len(kept)} usable {split} examples, asked for {n}")
        return kept[:n]

    return take("train", spec.examples), take("validation", spec.val_examples)


def base_model() -> Any:
    """The starter in float32, sdpa attention: what ``recipe.train`` loads on a CPU."""
    from tunesmith.models.loading import load_model, resolve_model

    return load_model(resolve_model("starter"), dtype="float32", device="cpu")


def lora_model(spec: BenchSpec, model: Any) -> Any:
    """The same LoRA, initialised from the same seed, for every contender (or, with
    ``full_top_layers``, the base with only its last layers and final norm trainable)."""
    import peft
    from transformers import set_seed

    if spec.full_top_layers:
        from tunesmith.config import TrainConfig
        from tunesmith.train.methods import apply_method

        return apply_method(model, TrainConfig(method="full", full={"top_layers": spec.full_top_layers}), None)

    from tunesmith.config import LoraConfig
    from tunesmith.train.methods import lora_config

    set_seed(spec.seed)
    lora = LoraConfig(r=spec.r, alpha=spec.alpha, dropout=spec.dropout, top_layers=spec.top_layers or None)
    return peft.get_peft_model(model, lora_config(model, lora))


def tunesmith_config(spec: BenchSpec, *, row_length: int | None = None, share_prefix: bool = True,
                     scheduler: str = "cosine") -> Any:
    """tunesmith's TrainConfig for the benchmark's LoRA, optimiser and schedule (one epoch,
    packed rows, no mid-run validation, checkpoints or trackers)."""
    from tunesmith.config import TrainConfig

    full = spec.full_top_layers
    return TrainConfig(
        method="full" if full else "lora", full={"top_layers": full or None},
        max_length=row_length or spec.max_length, packing=True, share_prefix=share_prefix,
        batch_size=spec.rows_per_step, grad_accum=1, epochs=1, lr=spec.full_lr if full else spec.lr, scheduler=scheduler,
        warmup_ratio=spec.warmup_ratio, max_grad_norm=1.0, eval_every=10**6, save_every=10**6,
        early_stopping_patience=None, precision="auto",
        lora={"r": spec.r, "alpha": spec.alpha, "dropout": spec.dropout, "target_modules": "all-linear"},
        tracking={"mlflow": False, "tensorboard": False},
    )


def bf16_autocast() -> bool:
    from tunesmith.models.precision import cpu_bf16_pays

    return cpu_bf16_pays()


# --------------------------------------------------------------------------- measurements
def cpu_seconds() -> float:
    """User + system CPU time of this process, all threads: less sensitive than wall time to
    other jobs sharing the cores (with one thread it is close to the work done)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def adapter_state(model: Any) -> dict[str, torch.Tensor]:
    """The trained weights: the LoRA adapter, or the trainable parameters of a full fine-tune."""
    from peft import get_peft_model_state_dict

    if not hasattr(model, "peft_config"):
        return {k: p.detach().float().cpu().clone() for k, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach().float().cpu().clone() for k, v in get_peft_model_state_dict(model).items()}


@torch.no_grad()
def validation_loss(spec: BenchSpec, state: dict[str, torch.Tensor] | None,
                    val: list[TokenizedExample], pad_id: int) -> dict[str, float]:
    """Token-weighted cross-entropy and next-token accuracy on the assistant tokens of ``val``.

    The same function for every contender: a fresh float32 base model, the contender's adapter
    weights (``None``: the untrained base), padded batches of 4 under the same autocast.
    """
    from peft import set_peft_model_state_dict

    from tunesmith.train.packing import collate_padded

    model = base_model()
    if state is not None and spec.full_top_layers:
        assert not model.load_state_dict(state, strict=False).unexpected_keys
    elif state is not None:
        model = lora_model(spec, model)
        set_peft_model_state_dict(model, state)
    model.eval()
    loss, correct, count = 0.0, 0, 0
    for start in range(0, len(val), 4):
        batch = collate_padded(val[start : start + 4], pad_id=pad_id, max_length=spec.max_length)
        labels = batch.pop("labels")[:, 1:]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16_autocast()):
            logits = model(**batch, use_cache=False).logits[:, :-1]
        keep = labels != IGNORE_INDEX
        picked = logits[keep].float()
        loss += float(torch.nn.functional.cross_entropy(picked, labels[keep], reduction="sum"))
        correct += int((picked.argmax(-1) == labels[keep]).sum())
        count += int(keep.sum())
    return {"val_loss": loss / count, "val_token_accuracy": correct / count, "val_tokens": count}


def matmul_rate(dtype: torch.dtype, size: int = 2048, seconds: float = 3.0) -> float:
    """Best FLOP/s of a ``size``² @ ``size``² torch matmul loop: this machine's ceiling."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    torch.mm(a, b)  # warm-up: kernel selection, page faults
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        for _ in range(3):
            torch.mm(a, b)
        best = max(best, 3 * 2 * size**3 / (time.perf_counter() - t0))
    return best


def flops_per_token(config: Any, lengths: list[int]) -> tuple[float, int]:
    """Training FLOPs per token for LoRA, and the parameter count N used.

    Why 4·N and not the usual 6·N: the forward pass costs 2·N per token (one multiply-add per
    weight), and the backward pass of a frozen weight only computes the gradient with respect
    to its input (another 2·N); the weight gradient (the third 2·N of full fine-tuning) exists
    only for the LoRA matrices, a fraction r·(d_in + d_out)/(d_in·d_out) < 6% of each layer,
    left out. N counts every matmul weight, the tied LM head included (embedding lookups are
    not matmuls, and with tied weights the head *is* the embedding), i.e. all parameters.
    Attention scores: per layer and token, QKᵀ and AV cost 2·2·d_attn·c forward (c = keys
    attended, the example's causal prefix: (n+1)/2 on average over an example of n tokens);
    backward twice that, so 12·layers·d_attn·c̄ in all, with c̄ the token-weighted mean.
    """
    n_params = _param_count(config)
    d_attn = config.num_attention_heads * getattr(config, "head_dim", config.hidden_size // config.num_attention_heads)
    mean_keys = sum(n * (n + 1) / 2 for n in lengths) / sum(lengths)
    return 4 * n_params + 12 * config.num_hidden_layers * d_attn * mean_keys, n_params


def _param_count(config: Any) -> int:
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())
