"""KV caches for the engine: a layer that grows in place, and a shared prompt prefix.

transformers' ``DynamicLayer`` appends a token by concatenating the whole cache
(``torch.cat``): each decode step copies every row's keys and values once. At batch 1 that is
small next to reading the weights; at 16 rows of 300 tokens it is ~220 MB per step for a
135M model. :class:`GrowingLayer` writes into spare capacity instead (amortised O(1) per
token) and is otherwise a ``DynamicLayer``, so transformers' cache code keeps working.

Prompts in one call usually start with the same tokens (system prompt, instructions).
:class:`SharedPrefix` runs those once and hands each prefill batch a copy of their keys and
values, so only the part after it is recomputed per prompt.
"""

from __future__ import annotations

import functools
import inspect
import os
from dataclasses import dataclass
from typing import Any

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

MIN_SHARED_PREFIX = 16  # shorter common prefixes are not worth a separate forward pass


class GrowingLayer(DynamicLayer):
    """A ``DynamicLayer`` whose keys/values live in a buffer with spare room along time.

    ``keys``/``values`` read as views of the filled part; assigning them (as transformers'
    ``batch_select_indices`` and our merge/trim do) replaces the buffer by the tensor given.
    """

    SPARE = 64

    def __init__(self) -> None:
        self._k: torch.Tensor | None = None
        self._v: torch.Tensor | None = None
        self._len = 0
        super().__init__()

    @classmethod
    def holding(cls, keys: torch.Tensor, values: torch.Tensor) -> GrowingLayer:
        layer = cls()
        layer.lazy_initialization(keys, values)
        layer.keys, layer.values = keys, values
        return layer

    @staticmethod
    def _filled(buf: torch.Tensor | None, n: int) -> torch.Tensor | None:
        return buf if buf is None or buf.dim() != 4 else buf[:, :, :n]

    @property
    def keys(self) -> torch.Tensor | None:  # type: ignore[override]
        return self._filled(self._k, self._len)

    @keys.setter
    def keys(self, t: torch.Tensor | None) -> None:
        self._k = t
        self._len = t.shape[2] if t is not None and t.dim() == 4 else 0

    @property
    def values(self) -> torch.Tensor | None:  # type: ignore[override]
        return self._filled(self._v, self._len)

    @values.setter
    def values(self, t: torch.Tensor | None) -> None:
        self._v = t

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n = key_states.shape[2]
        assert self._k is not None and self._v is not None
        if self._k.dim() != 4 or self._k.shape[2] < self._len + n:
            self._grow(key_states, value_states, self._len + n)
        self._k[:, :, self._len : self._len + n] = key_states
        self._v[:, :, self._len : self._len + n] = value_states
        self._len += n
        return self.keys, self.values  # type: ignore[return-value]

    def _grow(self, k: torch.Tensor, v: torch.Tensor, need: int) -> None:
        """Reallocate with room for ``need`` tokens plus half again (at least SPARE)."""
        cap = need + max(self.SPARE, need // 2)
        old_k, old_v, n = self.keys, self.values, self._len
        self._k = k.new_empty(k.shape[0], k.shape[1], cap, k.shape[3])
        self._v = v.new_empty(v.shape[0], v.shape[1], cap, v.shape[3])
        if n:
            self._k[:, :, :n] = old_k
            self._v[:, :, :n] = old_v


@functools.cache
def _cache_kwarg_of(model_class: type) -> str:
    params = inspect.signature(model_class.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def cache_kwargs(model: Any, cache: Any) -> dict[str, Any]:
    """``{name: cache}`` under the name the installed transformers' forward takes: ``cache``
    (transformers >= 5.24) or ``past_key_values`` (before; the old name now warns)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return {_cache_kwarg_of(type(inner)): cache}


def returned_cache(output: Any) -> Any:
    """The cache a forward returned, under either name (see :func:`cache_kwargs`)."""
    cache = output.get("cache")
    return cache if cache is not None else output.past_key_values


def growing_cache_supported(model: Any) -> bool:
    """True when every layer of the model's default cache is a plain full-attention layer
    (sliding-window or recurrent layers need their own cache classes)."""
    if os.environ.get("TUNESMITH_PLAIN_KV_CACHE") == "1":  # escape hatch for debugging
        return False
    try:
        probe = DynamicCache(config=model.config)
    except Exception:  # an architecture transformers cannot describe: let it build its own
        return False
    return bool(probe.layers) and all(type(layer) is DynamicLayer for layer in probe.layers)


def new_cache(model: Any) -> DynamicCache | None:
    """An empty cache of :class:`GrowingLayer` for ``model``, or None to let it build its own."""
    if not growing_cache_supported(model):
        return None
    cache = DynamicCache()
    cache.layer_class_to_replicate = GrowingLayer  # layers are created on first update
    return cache


def fork(cache: DynamicCache, rows: int) -> DynamicCache:
    """A new cache holding ``rows`` copies of a one-row cache (the copies are made on the
    first append, by :meth:`GrowingLayer._grow`)."""
    layers = [GrowingLayer.holding(layer.keys.expand(rows, -1, -1, -1),
                                   layer.values.expand(rows, -1, -1, -1)) for layer in cache.layers]
    out = DynamicCache()
    out.layers, out.layer_class_to_replicate = layers, None
    return out


def truncate(cache: DynamicCache, length: int) -> None:
    """Cut every layer of ``cache`` back to its first ``length`` tokens (a :class:`GrowingLayer`
    keeps its buffer: the next append writes over what was cut)."""
    for layer in cache.layers:
        if isinstance(layer, GrowingLayer):
            layer._len = min(layer._len, length)
        elif layer.keys is not None and layer.keys.dim() == 4:
            layer.keys, layer.values = layer.keys[:, :, :length], layer.values[:, :, :length]


def common_prefix(seqs: list[list[int]]) -> list[int]:
    """The longest list every sequence starts with (the lexicographic min and max bound it)."""
    lo, hi = min(seqs), max(seqs)
    n = next((i for i, (a, b) in enumerate(zip(lo, hi, strict=False)) if a != b), min(len(lo), len(hi)))
    return lo[:n]


@dataclass
class SharedPrefix:
    """The tokens every prompt of a call starts with, and their keys/values (one row)."""

    tokens: list[int]
    cache: DynamicCache

    @property
    def length(self) -> int:
        return len(self.tokens)

    @classmethod
    def build(cls, model: Any, prompts: list[list[int]]) -> SharedPrefix | None:
        """Run the longest common prefix of ``prompts`` once; None when it is too short to
        pay off or the model's cache cannot be forked.

        At least one token of every prompt stays out of the prefix: the prefill of the rest
        must produce each prompt's next-token logits.
        """
        if len(prompts) < 2 or not growing_cache_supported(model):
            return None
        common = common_prefix(prompts)
        common = common[: min(len(p) for p in prompts) - 1]
        if len(common) < MIN_SHARED_PREFIX:
            return None
        return cls.of(model, common)

    @classmethod
    def of(cls, model: Any, tokens: list[int]) -> SharedPrefix:
        """Run ``tokens`` once into a one-row cache (the model must support
        :func:`growing_cache_supported`)."""
        ids = torch.tensor([tokens], device=next(model.parameters()).device)
        cache = new_cache(model)
        model(input_ids=ids, attention_mask=torch.ones_like(ids), **cache_kwargs(model, cache),
              use_cache=True, logits_to_keep=1)
        return cls(list(tokens), cache)


class PrefixMemo:
    """The keys/values of the tokens consecutive calls' prompts start with (the system prompt
    and instructions every request of a deployment shares), one entry per model/adapter.

    :meth:`SharedPrefix.build` finds a prefix only among the prompts of one call; a server
    answering one request at a time (and the confidence scorer, one answer at a time) would
    recompute the system prompt for each. The memo keeps the common prefix of the last two
    prompt sets seen under a key, narrows it when a prompt starts differently (a new system
    prompt), and is a one-row cache (a few MB per key). Callers hold the engine's lock.
    """

    def __init__(self) -> None:
        self._seen: dict[Any, tuple[list[int], SharedPrefix | None]] = {}

    def get(self, key: Any, model: Any, prompts: list[list[int]]) -> SharedPrefix | None:
        """A prefix every prompt of ``prompts`` starts with and extends, or None; remembers
        ``prompts`` for the next call under ``key`` (which must name the weights: model and
        adapter)."""
        if not prompts or not growing_cache_supported(model):
            return None
        head = common_prefix(prompts)
        seen = self._seen.get(key)
        shortest = min(len(p) for p in prompts)
        if seen is not None and seen[1] is not None:
            prefix = seen[1]
            if head[: prefix.length] == prefix.tokens and shortest > prefix.length:
                self._seen[key] = (head, prefix)
                return prefix
        self._seen[key] = (head, None)
        if seen is None:
            return None
        common = common_prefix([seen[0], head])[: shortest - 1]
        if len(common) < MIN_SHARED_PREFIX:
            return None
        prefix = SharedPrefix.of(model, common)
        self._seen[key] = (head, prefix)
        return prefix


class FinishedRows:
    """The keys/values of answers the engine just finished, kept for the confidence scorer.

    Scoring an answer's label fields needs the cache of its prompt and the answer's beginning:
    the very tokens generation has just run. Recomputing them was half of the scorer's time
    (a ~300-token prefill per answer). When ``capacity`` > 0 the engine copies each finished
    row's cache out of the batch (its real columns only: the one-row cache of ``prompt +
    answer[:-1]``, the last token being sampled but never fed) and keeps the latest
    ``capacity`` rows; :meth:`take` hands the one that shares the most tokens with the scorer's
    context over (and forgets it). A row is ~14 MB for a 135M model at 300 tokens; capacity 0
    (the default) keeps none and costs nothing. Callers hold the engine's lock.
    """

    def __init__(self, capacity: int = 0) -> None:
        self.capacity = capacity
        self._rows: list[tuple[Any, list[int], DynamicCache]] = []
        self.hits = 0  # rows taken (counted for tests and the scorer's cost figures)

    def put(self, key: Any, tokens: list[int], cache: DynamicCache) -> None:
        if self.capacity <= 0:
            return
        self._rows.append((key, tokens, cache))
        del self._rows[: max(0, len(self._rows) - self.capacity)]

    def take(self, key: Any, tokens: list[int], *, at_least: int = 1) -> tuple[list[int], DynamicCache] | None:
        """The kept row (under ``key``: model and adapter) sharing the longest prefix with
        ``tokens``, at least ``at_least`` tokens of it, removed from the memo; else None."""
        best, best_n = None, at_least - 1
        for i, (k, row, _) in enumerate(self._rows):
            if k != key:
                continue
            n = len(common_prefix([row, tokens]))
            if n > best_n:
                best, best_n = i, n
        if best is None:
            return None
        _, row, cache = self._rows.pop(best)
        self.hits += 1
        return row, cache

    def clear(self) -> None:
        self._rows.clear()
