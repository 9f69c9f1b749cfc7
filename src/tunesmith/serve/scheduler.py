"""One worker thread owns the engine; requests wait in a bounded queue and are batched.

The HTTP handlers run on the asyncio event loop and never touch the model: they ``submit`` a
:class:`Job` and await its future, so a slow client (or a slow stream reader) never holds up
anyone else. The worker takes the oldest waiting job together with every other waiting job
that can share its ``engine.generate`` call (same adapter and the same generation settings; up
to the engine's batch size in answers) and runs them as one continuous batch.

Batching never changes an answer: greedy answers do not depend on the batch (the engine's
guarantee), a request with a ``seed`` runs in its own call (the engine seeds answer ``i`` of a
call with ``(seed, i)``, so its answers are what ``engine.generate([conv] * n, cfg)`` gives),
and sampled requests without a seed share a call with a fresh random seed.

The queue is bounded: when ``max_queue`` jobs wait, ``submit`` raises :class:`QueueFull` (the
server answers 429) instead of letting latency grow without limit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
import threading
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tunesmith.generate.sampling import GenerationConfig

if TYPE_CHECKING:
    from tunesmith.generate.engine import Engine, Generation
    from tunesmith.models.chat import Messages

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """``max_queue`` jobs are already waiting."""


class ShuttingDown(Exception):
    """The server is stopping; the job was not run."""


@dataclass(eq=False)
class Job:
    """One request: ``n`` answers to ``conversation`` with ``cfg`` through ``adapter``.

    ``key`` decides who may share an engine call (see :func:`batch_key`). ``on_token(choice,
    token_ids)`` (streaming) runs on the worker thread after each token of answer ``choice``;
    it must be quick and must not raise. ``future`` resolves to the ``n`` generations.
    """

    conversation: Messages
    n: int
    adapter: str | None
    cfg: GenerationConfig
    key: Hashable
    random_seed: bool = False
    on_token: Callable[[int, list[int]], None] | None = None
    future: Future[list[Generation]] = field(default_factory=Future)
    cancelled: bool = False  # set by the handler when its client went away before the job ran


def batch_key(adapter: str | None, cfg: GenerationConfig, *, seeded: bool, request_id: str) -> Hashable:
    """Jobs with equal keys run in one engine call. A seeded sampled request gets a key of its
    own (its answers depend on their index in the call)."""
    settings = (adapter, cfg.max_new_tokens, cfg.temperature, cfg.top_p, tuple(cfg.stop), cfg.grammar)
    if cfg.greedy:
        return (*settings, "greedy")
    return (*settings, request_id if seeded else "unseeded")


class Scheduler:
    """The bounded queue and the worker thread in front of one :class:`Engine`.

    Args:
        engine: the engine; only the worker thread calls it once started.
        max_queue: jobs allowed to wait; more are refused with :class:`QueueFull`.
    """

    def __init__(self, engine: Engine, *, max_queue: int = 128):
        self.engine, self.max_queue = engine, max_queue
        self._pending: deque[Job] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.batches = 0  # engine calls made
        self.busy = False  # a call is running

    # ------------------------------------------------------------------ the handlers' side
    def submit(self, job: Job) -> Job:
        with self._cond:
            if self._stopping:
                raise ShuttingDown
            if len(self._pending) >= self.max_queue:
                raise QueueFull
            self._pending.append(job)
            self._cond.notify()
        return job

    @property
    def waiting(self) -> int:
        return len(self._pending)

    # ------------------------------------------------------------------ life cycle
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="tunesmith-engine", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Refuse new jobs, fail the waiting ones, let the running call finish."""
        with self._cond:
            self._stopping = True
            waiting, self._pending = list(self._pending), deque()
            self._cond.notify_all()
        for job in waiting:
            _settle(job, error=ShuttingDown())
        if self._thread is not None:
            self._thread.join(timeout)

    # ------------------------------------------------------------------ the worker's side
    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            self._execute(batch)

    def _next_batch(self) -> list[Job] | None:
        """The oldest live job and every waiting job with its key, up to the batch size in
        answers (the oldest always goes, however many answers it asks for)."""
        with self._cond:
            while not self._stopping and not any(not j.cancelled for j in self._pending):
                self._pending = deque(j for j in self._pending if not j.cancelled)
                self._cond.wait()
            if self._stopping:
                return None
            live = [j for j in self._pending if not j.cancelled]
            first, limit = live[0], self.engine.max_batch_size
            taken, rest, rows = [], deque(), 0
            for job in live:
                if job.key == first.key and (not taken or rows + job.n <= limit):
                    taken.append(job)
                    rows += job.n
                else:
                    rest.append(job)
            self._pending = rest
            self.busy = True
            return taken

    def _execute(self, batch: list[Job]) -> None:
        owners = [(job, choice) for job in batch for choice in range(job.n)]
        cfg = batch[0].cfg
        if batch[0].random_seed:
            cfg = dataclasses.replace(cfg, seed=random.getrandbits(31))

        def on_token(index: int, token_ids: list[int]) -> None:
            job, choice = owners[index]
            if job.on_token is not None and not job.cancelled:
                try:
                    job.on_token(choice, token_ids)
                except Exception:  # a broken stream must not end the other requests' answers
                    log.exception("streaming callback failed; this stream stops, the batch goes on")
                    job.cancelled = True

        try:
            results = self.engine.generate([j.conversation for j, _ in owners], cfg, adapter=batch[0].adapter,
                                           on_token=on_token)
        except Exception as exc:
            log.warning("engine call for %d request(s) failed: %s", len(batch), exc)
            for job in batch:
                _settle(job, error=exc)
        else:
            start = 0
            for job in batch:
                _settle(job, result=results[start : start + job.n])
                start += job.n
        finally:
            self.batches += 1
            self.busy = False


def _settle(job: Job, *, result: list[Generation] | None = None, error: BaseException | None = None) -> None:
    with contextlib.suppress(Exception):  # already cancelled by its waiter: nobody to tell
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(result or [])
