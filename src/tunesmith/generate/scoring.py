"""Token-level log-likelihood of given text, batched: the basis of perplexity metrics.

Sequences are sorted by length and right-padded into batches bounded in rows and in tokens,
because the logits of one batch are rows x length x vocabulary floats (2048 tokens of a
49k-vocabulary model are 400 MB).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

SCORE_TOKENS = 2048  # tokens per scoring forward pass unless max_batch_tokens is smaller


@dataclass(frozen=True)
class Score:
    """Negative log-likelihood (nats, summed) of the scored tokens of one sequence."""

    nll: float
    tokens: int

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll / self.tokens) if self.tokens else float("nan")


@dataclass(frozen=True)
class ScoreRequest:
    """Token ids and the ``[start, end)`` token spans whose likelihood counts (start >= 1)."""

    ids: list[int]
    spans: list[tuple[int, int]]


def corpus_perplexity(scores: list[Score]) -> float:
    """exp(total NLL / total tokens): every token weighs the same, long texts count more."""
    tokens = sum(s.tokens for s in scores)
    return math.exp(sum(s.nll for s in scores) / tokens) if tokens else float("nan")


def plan_batches(lengths: list[int], *, max_rows: int, max_tokens: int) -> list[list[int]]:
    """Indices grouped into batches of similar length, each within ``max_rows`` rows and
    ``max_tokens`` padded tokens (a sequence longer than that gets a batch of its own)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    for i in order:
        cur = batches[-1] if batches else None
        # sorted ascending, so this sequence is the longest of the batch it joins
        if cur and len(cur) < max_rows and (len(cur) + 1) * lengths[i] <= max_tokens:
            cur.append(i)
        else:
            batches.append([i])
    return batches


def score_batch(model: Any, requests: list[ScoreRequest], pad_id: int) -> list[Score]:
    """One forward pass over right-padded sequences; NLL summed over each one's spans."""
    device = next(model.parameters()).device
    width = max(len(r.ids) for r in requests)
    ids = torch.full((len(requests), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    weight = torch.zeros((len(requests), width - 1))
    for row, req in enumerate(requests):
        ids[row, : len(req.ids)] = torch.tensor(req.ids)
        mask[row, : len(req.ids)] = 1
        for start, end in req.spans:
            weight[row, start - 1 : end - 1] = 1  # token t is predicted by the logits at t - 1
    ids, mask, weight = ids.to(device), mask.to(device), weight.to(device)
    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1]
    nll = torch.nn.functional.cross_entropy(
        logits.float().transpose(1, 2), ids[:, 1:], reduction="none"
    )  # [B, L-1]
    sums = (nll * weight).sum(dim=1).tolist()
    counts = weight.sum(dim=1).long().tolist()
    return [Score(s, c) for s, c in zip(sums, counts, strict=True)]
