"""Per-token log-probabilities: of generated tokens (recorded while decoding) and of given
tokens (a prompt, in one forward pass), each with the ``k`` most likely alternatives.

The numbers are the model's log-softmax of its raw logits: before temperature, top-p and a
grammar's mask, i.e. what the model thinks, not the distribution a token was drawn from. That
is what OpenAI's API reports and what log-likelihood evaluations (lm-evaluation-harness)
compare, and it does not change with the sampling settings of the request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

MAX_TOP = 20  # alternatives per token: OpenAI's limit for chat's top_logprobs


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """A token's log-probability given the tokens before it, and the ``k`` most likely tokens
    at that position (``top``: (token id, logprob), most likely first)."""

    token: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


def pick_logprobs(logits: torch.Tensor, tokens: torch.Tensor, k: int) -> list[TokenLogprob]:
    """One record per row: ``tokens`` [B] under ``logits`` [B, V] (raw, before any mask)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    chosen = logp.gather(-1, tokens.view(-1, 1)).squeeze(-1).tolist()
    tops = _top(logp, k)
    return [TokenLogprob(t, lp, top) for t, lp, top in zip(tokens.tolist(), chosen, tops, strict=True)]


def _top(logp: torch.Tensor, k: int) -> list[tuple[tuple[int, float], ...]]:
    """The ``k`` most likely tokens of each row of ``logp`` [N, V] (ties: lowest id first)."""
    if k <= 0:
        return [()] * logp.shape[0]
    values, ids = logp.topk(min(k, logp.shape[-1]), dim=-1)
    return [tuple(zip(i, v, strict=True)) for i, v in zip(ids.tolist(), values.tolist(), strict=True)]


def sequence_logprobs(model: Any, prompts: list[list[int]], pad_id: int, k: int) -> list[list[TokenLogprob | None]]:
    """Each prompt's tokens scored in one right-padded forward pass: entry ``t`` is token ``t``
    given tokens ``< t``; the first token has no context, so its entry is None (as in OpenAI's
    ``echo`` logprobs)."""
    device = next(model.parameters()).device
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, p in enumerate(prompts):
        ids[row, : len(p)] = torch.tensor(p, dtype=torch.long)
        mask[row, : len(p)] = 1
    ids, mask = ids.to(device), mask.to(device)
    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    out: list[list[TokenLogprob | None]] = []
    for row, p in enumerate(prompts):
        if len(p) < 2:
            out.append([None] * len(p))
            continue
        # logits at position t - 1 predict token t
        records = pick_logprobs(logits[row, : len(p) - 1], ids[row, 1 : len(p)], k)
        out.append([None, *records])
    return out
