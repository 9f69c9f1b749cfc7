"""Token-level log-likelihood of given text, batched: the basis of perplexity metrics.

Sequences are sorted by length and right-padded into batches bounded in rows and in tokens,
because the logits of one batch are rows x length x vocabulary floats (2048 tokens of a
49k-vocabulary model are 400 MB).
"""

from __future__ import annotations

import functools
import inspect
import math
from dataclasses import dataclass
from typing import Any

import torch

from tunesmith.generate.kv import SharedPrefix, cache_kwargs, fork

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


def accepts_logits_to_keep(model: Any) -> bool:
    """Whether the causal LM (under a PEFT wrapper, if any) can return logits at chosen positions."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return _forward_takes_logits_to_keep(type(inner))


@functools.cache
def _forward_takes_logits_to_keep(cls: type) -> bool:  # per model class, not per batch
    return "logits_to_keep" in inspect.signature(cls.forward).parameters


def score_batch(model: Any, requests: list[ScoreRequest], pad_id: int, prefix: SharedPrefix | None = None) -> list[Score]:
    """One forward pass over right-padded sequences; NLL summed over each one's spans.

    Only the positions that predict a scored token go through the output head and the
    softmax (an answer is ~20 of a prompt's ~300 tokens, and the head of a 49k-vocabulary
    model is a fifth of its compute); models without ``logits_to_keep`` return them all.

    ``prefix``: tokens every request starts with, already run (see :func:`scoring_prefix`);
    only the rest of each sequence is computed, on top of a copy of the prefix's keys/values.
    """
    skip = prefix.length if prefix is not None else 0
    if skip:
        requests = [ScoreRequest(r.ids[skip:], [(a - skip, b - skip) for a, b in r.spans]) for r in requests]
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
    keep = weight.sum(dim=0).nonzero().flatten()  # positions some row scores
    ids, mask, weight, keep = ids.to(device), mask.to(device), weight.to(device), keep.to(device)
    kw: dict[str, Any] = {"use_cache": False}
    if prefix is not None:  # columns [prefix][sequence][padding]: positions continue from the prefix
        kw = {**cache_kwargs(model, fork(prefix.cache, len(requests))), "use_cache": True}
        mask = torch.cat([mask.new_ones(len(requests), skip), mask], dim=1)
    if accepts_logits_to_keep(model):
        logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=keep, **kw).logits
    else:
        logits = model(input_ids=ids, attention_mask=mask, **kw).logits[:, keep]
    rows, kept = logits.shape[:2]
    nll = torch.nn.functional.cross_entropy(
        logits.float().reshape(rows * kept, -1), ids[:, keep + 1].reshape(-1), reduction="none"
    ).view(rows, kept)
    w = weight[:, keep]
    sums = (nll * w).sum(dim=1).tolist()
    counts = w.sum(dim=1).long().tolist()
    return [Score(s, c) for s, c in zip(sums, counts, strict=True)]


def scoring_prefix(model: Any, requests: list[ScoreRequest]) -> SharedPrefix | None:
    """The tokens all ``requests`` start with and that no span scores (a chat test set's
    system prompt), run once; None when too short to pay off or the cache cannot be shared.
    The first scored token of each request stays out of it: its logits come from the token
    before, which the batch pass must compute."""
    heads = [r.ids[: min(a for a, _ in r.spans)] for r in requests if r.spans]
    if len(heads) < 2 or len(heads) < len(requests):
        return None
    return SharedPrefix.build(model, heads)
