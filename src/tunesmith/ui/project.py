"""The project the UI shows: its config and the workspace readers, opened once per app.

Artifacts are immutable once published, so what is parsed from them (an eval's results.json,
an eval pack's cases) is kept in a small cache keyed by artifact id: a second look at the same
eval costs nothing, whatever its size.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tunesmith.config import Config
from tunesmith.registry import ModelRegistry
from tunesmith.review.queue import ReviewQueue
from tunesmith.serve.rollout import RolloutEvents
from tunesmith.workspace import Workspace

CACHE_ITEMS = 16


@dataclass
class Project:
    cfg: Config
    ws: Workspace
    registry: ModelRegistry
    queue: ReviewQueue
    events: RolloutEvents
    _cache: OrderedDict[tuple[str, str], Any] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _scrubber: Callable[[str], str] | None = None
    _scrub_lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def open(cls, cfg: Config) -> Project:
        registry = ModelRegistry.from_config(cfg)
        ws = registry.ws
        return cls(cfg, ws, registry, ReviewQueue(ws.db_path), RolloutEvents(ws.db_path))

    @property
    def name(self) -> str:
        return self.cfg.project

    def scrub(self, text: str) -> str:
        """The request log's PII scrubber (the project's ``data.pii`` settings, always on, the
        workspace's pseudonym salt): for raw records the UI shows, such as quarantined lines."""
        def build() -> Callable[[str], str]:
            from tunesmith.data.pipeline import _salt  # the workspace secret the prepare stage uses
            from tunesmith.serve.requestlog import pii_scrubber

            return pii_scrubber(self.cfg.data.pii, _salt(self.cfg))

        if self._scrubber is None:
            with self._scrub_lock:
                if self._scrubber is None:
                    self._scrubber = build()
        return self._scrubber(text)

    def cached(self, kind: str, key: str, load: Callable[[], Any]) -> Any:
        """``load()`` once per immutable artifact (the latest ``CACHE_ITEMS`` kept)."""
        with self._lock:
            if (kind, key) in self._cache:
                self._cache.move_to_end((kind, key))
                return self._cache[(kind, key)]
        value = load()
        with self._lock:
            self._cache[(kind, key)] = value
            while len(self._cache) > CACHE_ITEMS:
                self._cache.popitem(last=False)
        return value
