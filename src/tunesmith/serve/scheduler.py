"""One worker thread owns the engine; requests wait in a bounded queue and are batched.

The HTTP handlers run on the asyncio event loop and never touch the model: they ``submit`` a
:class:`Job` and await its future, so a slow client (or a slow stream reader) never holds up
anyone else. The worker takes the oldest waiting job together with every other waiting job
that can share its ``engine.generate`` call (same adapter and the same generation settings; up
to the engine's batch size in answers) and runs them as one continuous batch.

Batching never changes an answer in float32: greedy answers do not depend on the batch (the
engine's guarantee; in bf16 a few do, see :mod:`tunesmith.generate.engine`), a request with a ``seed`` runs in its own call (the engine seeds answer ``i`` of a
call with ``(seed, i)``, so its answers are what ``engine.generate([conv] * n, cfg)`` gives),
and sampled requests without a seed share a call with a fresh random seed.

Besides chat jobs (a conversation, rendered with the chat template) there are two kinds for
``/v1/completions``: ``raw`` (continue token-id prompts as they are, no template) and ``score``
(the log-probability of every token of a prompt: ``echo`` + ``logprobs``). Jobs of
different kinds never share an engine call (the kind is part of the key).

A job may carry an ``after`` step (the server's confidence scoring and review routing): the
worker runs it on the job's answers right after the engine call, before the job's future
resolves. Scoring on the worker, batch after batch, keeps generation batched: scored on other
threads, it took the engine's lock between generation calls and the requests that arrived
meanwhile ran one or two at a time (2.5 s per request at 8 in flight, docs/operate.md). Every
after-step of a call runs before any of its futures resolves: responses sent between two steps
took a core from the scorer's OpenMP team (the served scorer ran 1.2x slower).

The queue is bounded: when ``max_queue`` jobs wait, ``submit`` raises :class:`QueueFull` (the
server answers 429) instead of letting latency grow without limit.

Background jobs (shadow copies, see :mod:`tunesmith.serve.shadow`) wait in a second bounded queue
(``max_background``; a full one refuses them with :class:`QueueFull`, which the caller counts as a
drop). The worker takes one only when no client job waits, never batches it with client jobs,
and stops its engine call at the next token when a client job arrives (:class:`Preempted`): a
client waits at most one decoding step for shadow work.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from tunesmith.generate.sampling import GenerationConfig

if TYPE_CHECKING:
    from tunesmith.generate.engine import Engine, Generation
    from tunesmith.models.chat import Messages

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """``max_queue`` jobs are already waiting."""


class ShuttingDown(Exception):
    """The server is stopping; the job was not run."""


class Preempted(Exception):
    """A background job's engine call was stopped because a client request arrived."""


@dataclass(eq=False)
class Job:
    """One request: ``n`` answers to ``conversation`` with ``cfg`` through ``adapter``.

    ``kind``: ``chat`` (the default), ``raw`` (answer ``i`` continues ``prompts[i]``, token
    ids, no chat template) or ``score`` (result ``i`` lists each token of ``prompts[i]`` with
    its logprob and ``cfg.logprobs`` alternatives, see :meth:`Engine.prompt_logprobs`). For
    both, ``n`` is ``len(prompts)``.

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
    kind: JobKind = "chat"
    prompts: list[list[int]] | None = None  # raw and score jobs: token ids, one prompt per row
    background: bool = False  # shadow work: runs only when no client job waits, stopped when one arrives
    started: float | None = None  # perf_counter time the worker took it
    submitted: float = field(default_factory=time.perf_counter)  # when it joined the queue
    after: Callable[[list[Any]], Any] | None = None  # run on the worker on the answers; result in ``extra``
    extra: Any = None  # what ``after`` returned (None: no step, or it failed: logged, the answers still go)


JobKind = Literal["chat", "raw", "score"]


def batch_key(adapter: str | None, cfg: GenerationConfig, *, seeded: bool, request_id: str,
              kind: JobKind = "chat") -> Hashable:
    """Jobs with equal keys run in one engine call. A seeded sampled request gets a key of its
    own (its answers depend on their index in the call)."""
    if kind == "score":
        return (adapter, kind, cfg.logprobs)
    settings = (adapter, kind, cfg.max_new_tokens, cfg.temperature, cfg.top_p, tuple(cfg.stop), cfg.grammar,
                cfg.logprobs)
    if cfg.greedy:
        return (*settings, "greedy")
    return (*settings, request_id if seeded else "unseeded")


class Scheduler:
    """The bounded queue and the worker thread in front of one :class:`Engine`.

    Args:
        engine: the engine; only the worker thread calls it once started.
        max_queue: jobs allowed to wait; more are refused with :class:`QueueFull`.
    """

    def __init__(self, engine: Engine, *, max_queue: int = 128, max_background: int = 16,
                 batch_wait: float = 0.0):
        self.engine, self.max_queue, self.max_background = engine, max_queue, max_background
        self.batch_wait = batch_wait  # seconds a part-full batch waits for more jobs (after concurrent traffic)
        self._recent: deque[int] = deque(maxlen=8)  # requests in flight as each recent client call ended
        self._answered_at = 0.0  # when the latest client call's answers went back
        self._pending: deque[Job] = deque()
        self._background: deque[Job] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.batches = 0  # engine calls made
        self.busy = False  # a call is running
        self.running = 0  # requests in the running call

    # ------------------------------------------------------------------ the handlers' side
    def submit(self, job: Job) -> Job:
        with self._cond:
            if self._stopping:
                raise ShuttingDown
            queue, limit = (self._background, self.max_background) if job.background else (self._pending,
                                                                                           self.max_queue)
            if len(queue) >= limit:
                raise QueueFull
            queue.append(job)
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
            waiting, self._pending = list(self._pending) + list(self._background), deque()
            self._background = deque()
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
            live: list[Job] = []
            while not live:  # the batch wait releases the lock: its jobs may be cancelled meanwhile
                while not self._stopping and not self._client_waiting() and not any(
                        not j.cancelled for j in self._background):
                    self._pending = deque(j for j in self._pending if not j.cancelled)
                    self._background = deque(j for j in self._background if not j.cancelled)
                    self._cond.wait()
                if self._client_waiting():
                    self._fill_wait()
                if self._stopping:
                    return None
                background = not self._client_waiting()  # client jobs first, always
                queue = self._background if background else self._pending
                live = [j for j in queue if not j.cancelled]
            first, limit = live[0], self.engine.max_batch_size
            taken, rest, rows = [], deque(), 0
            for job in live:
                if job.key == first.key and (not taken or rows + job.n <= limit):
                    taken.append(job)
                    rows += job.n
                else:
                    rest.append(job)
            if background:
                self._background = rest
            else:
                self._pending = rest
            now = time.perf_counter()
            for job in taken:
                job.started = now
            self.busy, self.running = True, len(taken)
            return taken

    def _fill_wait(self) -> None:
        """Hold a part-full batch of client jobs up to ``batch_wait`` after its oldest job
        arrived, while more may come (called with the lock held).

        Only while clients run concurrently: when a batch's answers go back together, their
        clients' next requests arrive over the next milliseconds, and a worker that took the
        first at once would run it nearly alone while the others wait a whole call. It waits
        until as many answers are asked for as were in flight (running and waiting) when the
        latest calls ended, at most ``batch_wait`` after the oldest arrived or the latest answers
        went back, whichever is later: jobs that queued during a call are old by its end, and
        timed from their arrival they would never wait for the clients that call just answered,
        whose next requests are on their way. Two groups of clients would then take turns in
        half-full batches, call after call. A lone client (one request in flight) never waits."""
        expected = max(self._recent, default=0)
        if self.batch_wait <= 0 or expected <= 1:
            return
        while not self._stopping:
            live = [j for j in self._pending if not j.cancelled]
            if not live:
                return
            first = live[0]
            rows = sum(j.n for j in live if j.key == first.key)
            left = max(first.submitted, self._answered_at) + self.batch_wait - time.perf_counter()
            if rows >= min(self.engine.max_batch_size, expected) or left <= 0:
                return
            self._cond.wait(left)

    def _client_waiting(self) -> bool:
        return any(not j.cancelled for j in self._pending)

    def _execute(self, batch: list[Job]) -> None:
        owners = [(job, choice) for job in batch for choice in range(job.n)]
        background = batch[0].background
        cfg = batch[0].cfg
        if batch[0].random_seed:
            cfg = dataclasses.replace(cfg, seed=random.getrandbits(31))

        def on_token(index: int, token_ids: list[int]) -> None:
            if background and self._pending:  # (no lock: a length read; iterating could race a submit)
                raise Preempted  # out of the engine call: the client's job runs next
            job, choice = owners[index]
            if job.on_token is not None and not job.cancelled:
                try:
                    job.on_token(choice, token_ids)
                except Exception:  # a broken stream must not end the other requests' answers
                    log.exception("streaming callback failed; this stream stops, the batch goes on")
                    job.cancelled = True

        try:
            try:
                results = self._call(batch, owners, cfg, on_token)
            finally:
                self.batches += 1  # counted before any future resolves: a waiter sees its own call
        except Exception as exc:
            if not isinstance(exc, Preempted):
                log.warning("engine call for %d request(s) failed: %s", len(batch), exc)
            for job in batch:
                _settle(job, error=exc)
        else:
            if not background:  # its answers go back now: as many requests may follow
                with self._cond:
                    self._recent.append(sum(j.n for j in batch) + sum(j.n for j in self._pending if not j.cancelled))
            # every after-step first, then every answer back: a response sent meanwhile (the
            # event loop's work) would take a core from the scorer's OpenMP team
            start, answered = 0, []
            for job in batch:
                answers = results[start : start + job.n]
                start += job.n
                if job.after is not None and not job.cancelled:
                    try:
                        job.extra = job.after(answers)
                    except Exception:
                        log.exception("a job's after-step failed; its answers go without it")
                answered.append((job, answers))
            for job, answers in answered:
                _settle(job, result=answers)
            if not background:
                self._answered_at = time.perf_counter()
        finally:
            self.busy, self.running = False, 0

    def _call(self, batch: list[Job], owners: list[tuple[Job, int]], cfg: GenerationConfig,
              on_token: Callable[[int, list[int]], None]) -> list[Any]:
        """The engine call for a batch of one kind: ``n`` results per job, in job order."""
        adapter, kind = batch[0].adapter, batch[0].kind
        if kind in ("raw", "score"):
            rows = [(j.prompts or [])[choice] for j, choice in owners]
            if kind == "score":
                return self.engine.prompt_logprobs(rows, top=cfg.logprobs or 0, adapter=adapter)
            return self.engine.complete_ids(rows, cfg, adapter=adapter, on_token=on_token)
        return self.engine.generate([j.conversation for j, _ in owners], cfg, adapter=adapter, on_token=on_token)


def _settle(job: Job, *, result: list[Generation] | None = None, error: BaseException | None = None) -> None:
    with contextlib.suppress(Exception):  # already cancelled by its waiter: nobody to tell
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(result or [])
