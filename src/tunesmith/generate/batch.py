"""Continuous batching over a KV cache: prompts join the batch as others finish.

The rows in flight share one ``DynamicCache`` of shape [B, heads, T, head_dim] per layer and a
2D attention mask [B, T]. Rows are padded on the left (``[padding][prompt][answer]``), or,
with a shared prefix, inside (``[padding][prefix][padding][rest of prompt][answer]``); mask 0
hides padding. Position ids are kept per row, so a row's positions (and its rotary or learned
position embeddings) do not depend on how much padding its columns hold: the maths of each
row is the maths of running it alone, up to floating-point summation order.

- **prefill**: new prompts, left-padded to their longest, run in one forward pass; the cache
  it returns is then *merged* into the running one (the shorter of the two is left-padded
  with zero keys/values and mask 0 to the longer's length, then they are concatenated).
- **step**: one token per row.
- **retire**: finished rows leave (``batch_select_indices``); cache columns that are padding
  in every remaining row are cut off, so T tracks the longest live row, not history.

Only caches made of plain ``DynamicLayer``s can be merged and trimmed; for others (sliding
window or hybrid layers) new prompts wait until the batch has drained.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from transformers.cache_utils import DynamicCache

from tunesmith.generate.kv import (
    GrowingLayer,
    SharedPrefix,
    cache_kwargs,
    fork,
    new_cache,
    returned_cache,
)

if TYPE_CHECKING:
    from tunesmith.generate.logprobs import TokenLogprob
    from tunesmith.generate.sampling import FinishReason


@dataclass
class Request:
    """One prompt's progress. ``budget`` = the most new tokens it may produce."""

    index: int
    prompt: list[int]
    budget: int
    generator: torch.Generator | None = None
    generated: list[int] = field(default_factory=list)
    finish: FinishReason | None = None
    started: float = 0.0
    seconds: float = 0.0
    matcher: Any = None  # constrained decoding: the grammar state this request's tokens follow
    logprobs: list[TokenLogprob] = field(default_factory=list)  # per generated token, when asked for

    def reset(self, generator: torch.Generator | None) -> None:
        """Forget progress (after an out-of-memory back-off): it will be re-run from scratch."""
        self.generated, self.finish, self.generator, self.logprobs = [], None, generator, []
        if self.matcher is not None:
            self.matcher.reset()


def _left_pad(rows: list[list[int]], pad_id: int, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r) :] = 1
    return ids.to(device), mask.to(device)


PAD_SLACK = 1.15  # a prefill pass may compute at most 15% more positions than real tokens


def prefill_groups(requests: list[Request], skip: int) -> list[list[Request]]:
    """Split prompts (sorted longest first) into prefill passes of similar length.

    Left-padding a 180-token prompt beside a 20-token one computes 160 positions for nothing;
    a prefill pass of ~100 real tokens already runs the matmuls near full speed, so smaller
    passes cost less than padded ones. ``skip``: the shared prefix's length (not recomputed).
    """
    groups: list[list[Request]] = []
    real = 0
    for r in requests:
        n = len(r.prompt) - skip
        if groups and (len(groups[-1]) + 1) * (len(groups[-1][0].prompt) - skip) <= PAD_SLACK * (real + n):
            groups[-1].append(r)
            real += n
        else:
            groups.append([r])
            real = n
    return groups


def _mergeable(cache: Any) -> bool:
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer) in (DynamicLayer, GrowingLayer) for layer in layers)


class DecodeBatch:
    """The rows in flight: requests, KV cache, attention mask, next position and last token."""

    def __init__(self, requests: list[Request], cache: Any, mask: torch.Tensor, positions: torch.Tensor):
        self.requests = requests
        self.cache = cache
        self.mask = mask  # [B, T] 1 = real token
        self.positions = positions  # [B] position id of each row's next token
        self.last = torch.zeros_like(positions)  # [B] each row's latest token (the next input)
        self.mergeable = _mergeable(cache)

    def __len__(self) -> int:
        return len(self.requests)

    @property
    def width(self) -> int:
        return self.mask.shape[1]

    @classmethod
    def prefill(cls, model: Any, requests: list[Request], pad_id: int,
                prefix: SharedPrefix | None = None) -> tuple[DecodeBatch, torch.Tensor]:
        """Run the prompts (past the shared prefix, if any) through the model; returns the
        batch and its last-position logits [B, V].

        With a prefix the columns are ``[prefix][padding][rest of the prompt]``: the mask
        hides the padding and position ids continue from the prefix, so each row computes
        what it would compute alone.
        """
        device = next(model.parameters()).device
        skip = prefix.length if prefix is not None else 0
        ids, mask = _left_pad([r.prompt[skip:] for r in requests], pad_id, device)
        # Same position ids as transformers' generate: count real tokens; padding gets 1.
        position_ids = (mask.cumsum(-1) - 1 + skip).masked_fill(mask == 0, 1)
        if prefix is not None:
            cache = fork(prefix.cache, len(requests))
            mask = torch.cat([mask.new_ones(len(requests), skip), mask], dim=1)
        else:
            cache = new_cache(model)
        now = time.perf_counter()
        for r in requests:
            r.started = now
        out = model(input_ids=ids, attention_mask=mask, position_ids=position_ids,
                    **cache_kwargs(model, cache), use_cache=True, logits_to_keep=1)
        batch = cls(requests, returned_cache(out), mask, position_ids[:, -1] + 1)
        return batch, out.logits[:, -1, :]

    def step(self, model: Any) -> torch.Tensor:
        """Feed each row's last token; returns the next logits [B, V]."""
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(self), 1)], dim=1)
        out = model(input_ids=self.last[:, None], attention_mask=self.mask,
                    position_ids=self.positions[:, None], **cache_kwargs(model, self.cache),
                    use_cache=True)
        self.positions = self.positions + 1
        return out.logits[:, -1, :]

    def step_drafts(self, model: Any, drafts: list[list[int]], pad_id: int) -> torch.Tensor:
        """Feed each row's last token followed by its draft (guessed next tokens), in one pass;
        returns the logits after every fed token [B, W, V], W = 1 + the longest draft. Row i's
        tokens sit in the last ``1 + len(drafts[i])`` columns (left-padded, padding masked).
        Call :meth:`accept` next with the drafts' lengths and how many tokens each row kept."""
        width = 1 + max(len(d) for d in drafts)
        ids = torch.full((len(self), width), pad_id, dtype=torch.long)
        fed = torch.zeros((len(self), width), dtype=self.mask.dtype)
        for i, (last, draft) in enumerate(zip(self.last.tolist(), drafts, strict=True)):
            ids[i, width - 1 - len(draft):] = torch.tensor([last, *draft], dtype=torch.long)
            fed[i, width - 1 - len(draft):] = 1
        device = self.mask.device
        ids, fed = ids.to(device), fed.to(device)
        # position of column c in row i: its next position + (c - the column of its last token)
        lead = torch.tensor([width - 1 - len(d) for d in drafts], device=device)
        positions = self.positions[:, None] + torch.arange(width, device=device)[None, :] - lead[:, None]
        positions = positions.masked_fill(fed == 0, 1)
        self.mask = torch.cat([self.mask, fed], dim=1)
        out = model(input_ids=ids, attention_mask=self.mask, position_ids=positions,
                    **cache_kwargs(model, self.cache), use_cache=True, logits_to_keep=width)
        return out.logits

    def accept(self, drafted: list[int], appended: list[int], last: torch.Tensor) -> None:
        """After :meth:`step_drafts` fed row i a draft of ``drafted[i]`` tokens: it produced
        ``appended[i]`` tokens (its accepted draft tokens, then one the model picked); the
        draft tokens after the first ``appended[i] - 1`` are masked out of the cache (the cache
        then holds each row's tokens but its newest, as after :meth:`step`). ``last``: each
        row's newest token."""
        for i, (n, k) in enumerate(zip(appended, drafted, strict=True)):
            if n - 1 < k:  # columns of the tokens not kept: the draft's rejected tail
                self.mask[i, self.mask.shape[1] - k + max(n - 1, 0):] = 0
        self.positions = self.positions + torch.tensor(appended, device=self.positions.device)
        self.last = last

    def merge(self, other: DecodeBatch) -> DecodeBatch:
        """Append ``other``'s rows (both batches must be mergeable)."""
        gap = self.width - other.width
        if gap > 0:
            other._pad_left(gap)
        elif gap < 0:
            self._pad_left(-gap)
        for mine, theirs in zip(self.cache.layers, other.cache.layers, strict=True):
            mine.keys = torch.cat([mine.keys, theirs.keys])
            mine.values = torch.cat([mine.values, theirs.values])
        self.mask = torch.cat([self.mask, other.mask])
        self.positions = torch.cat([self.positions, other.positions])
        self.last = torch.cat([self.last, other.last])
        self.requests = self.requests + other.requests
        return self

    def row_cache(self, i: int) -> Any:
        """Row ``i``'s keys/values alone, its real columns only (a one-row cache, as if it had
        run by itself); None when the cache is not made of plain layers."""
        if not self.mergeable:
            return None
        cols = self.mask[i].nonzero().squeeze(1)
        out = DynamicCache()
        out.layers = [GrowingLayer.holding(layer.keys[i : i + 1].index_select(2, cols),
                                           layer.values[i : i + 1].index_select(2, cols))
                      for layer in self.cache.layers]
        out.layer_class_to_replicate = None
        return out

    def _pad_left(self, n: int) -> None:
        """Prepend ``n`` padding columns: zero keys/values, mask 0."""
        for layer in self.cache.layers:
            k, v = layer.keys, layer.values
            layer.keys = torch.cat([k.new_zeros(*k.shape[:2], n, k.shape[3]), k], dim=2)
            layer.values = torch.cat([v.new_zeros(*v.shape[:2], n, v.shape[3]), v], dim=2)
        self.mask = torch.cat([self.mask.new_zeros(len(self), n), self.mask], dim=1)

    def retire(self) -> DecodeBatch | None:
        """Drop finished rows and all-padding columns; None when no row is left."""
        keep = [i for i, r in enumerate(self.requests) if r.finish is None]
        if not keep:
            return None
        if len(keep) < len(self):
            index = torch.tensor(keep, device=self.mask.device)
            self.cache.batch_select_indices(index)
            self.mask, self.positions, self.last = self.mask[index], self.positions[index], self.last[index]
            self.requests = [self.requests[i] for i in keep]
            if self.mergeable:
                self._trim()
        return self

    def _trim(self) -> None:
        first = int(self.mask.any(dim=0).long().argmax())  # first column some row still uses
        if first == 0:
            return
        self.mask = self.mask[:, first:]
        for layer in self.cache.layers:
            layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]
