"""The response cache: a greedy request asked again gets the answer it got before, without the engine.

Only deterministic requests are cached: ``temperature: 0`` (greedy decoding; the engine's
greedy answers do not depend on the batch they ran in). The key is everything the answer
depends on:

- the **model version id** the request resolved to (not the name sent: when an alias moves to
  another version, its requests miss and fill new entries; the old ones age out);
- the prompt's **token ids** as rendered (template and system prompt included);
- every generation setting: ``max_tokens``, ``stop``, ``top_p``, the ``response_format``
  grammar and ``n``.

A sampled request (``temperature > 0``), seeded or not, is never looked up nor stored.

The cache is an in-memory LRU bounded by entries (``serve.cache.max_entries``; 0 switches it
off). It holds answers as the engine produced them; a hit is a new response (its own id and
``created``) with the same choices and usage.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tunesmith.generate.sampling import GenerationConfig


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """One choice as it was answered."""

    text: str
    finish_reason: str
    tokens: int  # generated tokens, end-of-turn token included


def cache_key(version: str, prompt_ids: Sequence[int], cfg: GenerationConfig, n: int) -> Hashable | None:
    """The key of a request, or None when its answer is not deterministic (sampled)."""
    if not cfg.greedy:
        return None
    grammar = None if cfg.grammar is None else (cfg.grammar.kind, cfg.grammar.source)
    return (version, tuple(prompt_ids), cfg.max_new_tokens, tuple(cfg.stop), cfg.top_p, grammar, n)


class ResponseCache:
    """An LRU of ``key -> answers`` holding at most ``max_entries`` requests (thread-safe).

    Args:
        max_entries: requests kept; the least recently used goes first. 0: nothing is kept.
    """

    def __init__(self, max_entries: int):
        if max_entries < 0:
            raise ValueError(f"max_entries must be >= 0, got {max_entries}")
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, tuple[CachedAnswer, ...]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.max_entries > 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> tuple[CachedAnswer, ...] | None:
        with self._lock:
            answers = self._entries.get(key)
            if answers is not None:
                self._entries.move_to_end(key)
            return answers

    def put(self, key: Hashable, answers: Sequence[CachedAnswer]) -> None:
        if not self.enabled:
            return
        with self._lock:
            self._entries[key] = tuple(answers)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
