"""Shadow copies: the challenger answers a request after the champion's answer has been sent.

The chat handler hands the finished request to :meth:`ShadowRunner.submit` once the client has
its response (non-streaming: a background task of the response; streaming: after ``[DONE]``).
The copy is queued as a *background* job (see :mod:`tunesmith.serve.scheduler`): it runs only
when no client job waits, its engine call stops at the next token when one arrives, and when
``serve.rollout.shadow_queue`` copies already wait, new ones are dropped. Nothing of it can reach
the client: ``submit`` never raises and never blocks, and the result is handled on the worker
thread by a callback that catches everything.

Each answered copy is a request-log row (variant ``shadow``, ``shadow_of`` = the champion's
request id, its own request id ``shadow-…``) and feeds the rollout monitor: its outcome (the
shadow window: errors, JSON validity, engine latency) and its answers beside the champion's
(paired agreement per label field). Dropped and preempted copies are counted, not logged.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tunesmith.serve.requestlog import Answer, LogEntry
from tunesmith.serve.scheduler import Preempted, QueueFull, Scheduler, ShuttingDown

if TYPE_CHECKING:
    from tunesmith.serve.catalog import Route
    from tunesmith.serve.requestlog import RequestLog
    from tunesmith.serve.rollout import Rollout
    from tunesmith.serve.scheduler import Job

log = logging.getLogger(__name__)

MAX_TRIES = 3  # engine calls a copy may start before it is dropped (each preemption wastes one)


@dataclass
class ShadowCounts:
    """What happened to the copies since the server started (``GET /v1/rollout``)."""

    submitted: int = 0
    answered: int = 0
    failed: int = 0  # the engine raised
    dropped: int = 0  # the shadow queue was full, the server stopping, or preempted MAX_TRIES times
    preempted: int = 0  # engine calls stopped mid-way for a client request (the copy queues again)


class ShadowRunner:
    """Queues shadow copies and records their answers.

    Args:
        scheduler: the engine's scheduler (copies go to its background queue).
        rollout: the monitor the outcomes feed.
        request_log: where answered copies are written (None: nowhere).
        decode: token ids -> the prompt text logged (the champion's rendering, unchanged).
    """

    def __init__(self, scheduler: Scheduler, rollout: Rollout, *, request_log: RequestLog | None = None,
                 decode: Callable[[list[int]], str] | None = None):
        self.scheduler, self.rollout, self.request_log, self.decode = scheduler, rollout, request_log, decode
        self.counts = ShadowCounts()
        self._lock = threading.Lock()

    def submit(self, p: Any, route: Route, model: str, champion_answers: list[str]) -> None:
        """Queue a copy of the prepared request ``p`` (answered by the champion with
        ``champion_answers``) for ``route``. Never raises, never blocks."""
        try:
            copy = dataclasses.replace(p, request_id=f"shadow-{uuid.uuid4().hex}", route=route)
            self._count("submitted")
            self._queue(copy, model, p.request_id, champion_answers, time.time(), 1)
        except Exception:  # a shadow must never touch the client's request
            log.exception("queueing a shadow copy failed")

    def _queue(self, copy: Any, model: str, champion_id: str, champion_answers: list[str], queued: float,
               tries: int) -> None:
        job: Job = copy.job()
        job.background = True
        try:
            self.scheduler.submit(job)
        except (QueueFull, ShuttingDown):
            self._count("dropped")
            if self.counts.dropped in (1, 10, 100) or self.counts.dropped % 1000 == 0:
                log.warning("shadow queue full: %d copies dropped so far", self.counts.dropped)
            return
        job.future.add_done_callback(lambda f: self._done(f, job, copy, model, champion_id, champion_answers,
                                                          queued, tries))

    def _done(self, future: Any, job: Job, p: Any, model: str, champion_id: str, champion_answers: list[str],
              queued: float, tries: int) -> None:
        """On the worker thread, when the copy's call ended."""
        try:
            error = future.exception()
            if isinstance(error, Preempted):
                self._count("preempted")
                if tries < MAX_TRIES:  # behind the client jobs again; runs when the engine is idle
                    self._queue(p, model, champion_id, champion_answers, queued, tries + 1)
                else:
                    self._count("dropped")
                return
            if isinstance(error, ShuttingDown):
                self._count("dropped")
                return
            latency_ms = (time.perf_counter() - job.started) * 1000 if job.started else None
            texts = [g.text for g in future.result()] if error is None else []
            self._count("answered" if error is None else "failed")
            status = 200 if error is None else 500
            self.rollout.observe(p.route, status, texts, p.cfg.grammar is not None, latency_ms)
            if error is None:
                self.rollout.observe_pair(p.route, champion_answers, texts)
            if self.request_log is not None:
                gens = future.result() if error is None else []
                self.request_log.record(LogEntry(
                    request_id=p.request_id, created=queued, status=status, model=model, version=p.route.version,
                    adapter=p.route.adapter, variant=p.route.variant,
                    prompt=self.decode(p.prompt_ids) if self.decode else None, prompt_tokens=len(p.prompt_ids),
                    answers=[Answer(g.text, g.finish_reason, g.tokens) for g in gens], latency_ms=latency_ms,
                    error=None if error is None else f"shadow generation failed: {error}", shadow_of=champion_id,
                    json_asked=p.cfg.grammar is not None))
        except Exception:
            log.exception("recording a shadow answer failed")

    def _count(self, name: str) -> None:
        with self._lock:
            setattr(self.counts, name, getattr(self.counts, name) + 1)
