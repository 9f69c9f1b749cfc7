"""Chat completions: from a validated request to an answer (or a stream of chunks).

1. ``prepare``: route the model name, render the prompt with the engine's rendering (the one
   training used), check it fits the context, build the generation settings and grammar.
   Every mistake a client can fix is a 4xx here, before anything is queued.
2. ``complete`` / ``stream``: queue the job for the engine's worker and await it; build the
   OpenAI response or the SSE chunks; record the request in the request log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from tunesmith.errors import TunesmithError
from tunesmith.generate.sampling import GenerationConfig, StopChecker
from tunesmith.serve.cache import CachedAnswer, ResponseCache, cache_key
from tunesmith.serve.catalog import ModelCatalog, Route
from tunesmith.serve.errors import APIError
from tunesmith.serve.logprobs import TokenText, chat_content
from tunesmith.serve.metrics import ServeMetrics
from tunesmith.serve.protocol import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChoiceLogprobs,
    ChunkChoice,
    Delta,
    Usage,
)
from tunesmith.serve.requestlog import Answer, LogEntry, RequestLog
from tunesmith.serve.rollout import Rollout, route_key
from tunesmith.serve.scheduler import Job, QueueFull, Scheduler, ShuttingDown, batch_key
from tunesmith.serve.shadow import ShadowRunner
from tunesmith.serve.streaming import TextStream

if TYPE_CHECKING:
    from tunesmith.generate.constrain import Grammar
    from tunesmith.generate.engine import Engine, Generation
    from tunesmith.models.chat import Messages
    from tunesmith.review.live import AnswerReviewer, Reviewed
    from tunesmith.serve.completions import CompletionService

log = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 512  # answer budget when a request names none (cut to the context left)


@dataclass
class Prepared:
    """A request ready to queue."""

    request_id: str
    route: Route
    conversation: Messages
    prompt_ids: list[int]
    cfg: GenerationConfig
    n: int
    budget: int  # the tokens each answer may take: max tokens, cut to the context left
    seeded: bool
    answers: list[str] | None = None  # the answers sent (set once the request succeeded)

    def job(self) -> Job:
        key = batch_key(self.route.adapter, self.cfg, seeded=self.seeded, request_id=self.request_id)
        return Job(self.conversation, self.n, self.route.adapter, self.cfg, key,
                   random_seed=not self.seeded and not self.cfg.greedy)


def checked_grammar(req: ChatCompletionRequest) -> Grammar | None:
    """``response_format`` as a grammar, its schema checked (a 400 naming the problem); None for
    text. Compiling it for the engine is the caller's step."""
    fmt = req.response_format
    if fmt is None or fmt.type == "text":
        return None
    import jsonschema

    from tunesmith.generate.constrain import Grammar

    schema = {"type": "object"} if fmt.type == "json_object" else fmt.json_schema.schema_  # type: ignore[union-attr]
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise APIError(400, f"response_format.json_schema.schema is not a valid JSON Schema: {exc.message}",
                       param="response_format", code="invalid_json_schema") from None
    return Grammar.json_schema(schema)


class ChatService:
    """The chat endpoint's logic over one engine (owned by the scheduler's worker thread).

    Args:
        engine: the loaded engine (base + adapters named by model version id).
        catalog: the names clients may send.
        request_log: where requests are recorded (None: nowhere).
        max_queue: requests allowed to wait for the engine (more get 429).
        default_max_tokens: answer budget when a request names none.
        rollout: canary routing of the deployment name and its monitor (None: off).
        cache: the response cache of greedy requests (None: off).
        reviewer: each answer's confidence and review decision (None: the project's answers
            have no label fields; see :mod:`tunesmith.review.live`).
        shape: applied to each request's messages before anything else reads them (the
            project's prepare normalisation and PII scrubbing: ``serve.shape_inputs``).
    """

    endpoint = "chat"  # the metrics' label

    def __init__(self, engine: Engine, catalog: ModelCatalog, *, request_log: RequestLog | None = None,
                 max_queue: int = 128, default_max_tokens: int = DEFAULT_MAX_TOKENS, rollout: Rollout | None = None,
                 cache: ResponseCache | None = None, reviewer: AnswerReviewer | None = None,
                 batch_wait: float = 0.0, shape: Callable[[Messages], Messages] | None = None):
        self.engine, self.catalog, self.request_log, self.rollout = engine, catalog, request_log, rollout
        self.shape = shape
        self.reviewer = reviewer
        shadow_queue = getattr(getattr(rollout, "cfg", None), "shadow_queue", 16)
        self.scheduler = Scheduler(engine, max_queue=max_queue, max_background=shadow_queue, batch_wait=batch_wait)
        self.shadow = None if rollout is None else ShadowRunner(self.scheduler, rollout, request_log=request_log,
                                                                decode=engine.tokenizer.decode)
        self.default_max_tokens = default_max_tokens
        self.cache = cache if cache is not None and cache.enabled else None
        self.metrics = ServeMetrics(waiting=lambda: self.scheduler.waiting, running=lambda: self.scheduler.running,
                                    cache_entries=lambda: len(self.cache) if self.cache is not None else 0)
        self._ignored: set[str] = set()
        self._ignored_lock = threading.Lock()
        self.token_text = TokenText(engine.tokenizer)  # logprobs: token id -> text, bytes

    def start(self) -> None:
        try:  # built once, before any request: handlers and the worker then share it
            self.engine.constrainer()
        except TunesmithError as exc:  # llguidance missing: response_format answers 400 with this
            log.warning("response_format is unavailable: %s", exc)
        self.scheduler.start()
        if self.request_log is not None:
            self.request_log.start()

    def stop(self) -> None:
        self.scheduler.stop()
        if self.request_log is not None:
            self.request_log.stop()

    @staticmethod
    def new_request_id() -> str:
        return f"chatcmpl-{uuid.uuid4().hex}"

    def completion_service(self) -> CompletionService:
        """The ``/v1/completions`` endpoint over this service's engine, queue, routing and logs."""
        from tunesmith.serve.completions import CompletionService

        return CompletionService(self)

    def route(self, req: ChatCompletionRequest, request_id: str, route_header: str | None = None) -> Route:
        """The catalog's route; for the deployment name, the canary's when the rollout picks it
        (routing key: ``user``, else the route-key header, else the request id)."""
        route = self.catalog.resolve(req.model)
        if self.rollout is None or req.model != self.catalog.deployment:
            return route
        key, _ = route_key(req.user, route_header, request_id)
        return self.rollout.route(route, key)

    def after_response(self, p: Prepared, req: ChatCompletionRequest, route_header: str | None = None) -> None:
        """Once the response has been sent: in shadow mode, a copy of a successful request to
        the deployment goes to the challenger (see :mod:`tunesmith.serve.shadow`). Never raises."""
        if self.shadow is None or p.answers is None or req.model != self.catalog.deployment:
            return
        try:
            key, _ = route_key(req.user, route_header, p.request_id)
            target = self.rollout.shadow_route(p.route, key)  # type: ignore[union-attr]
            if target is not None:
                self.shadow.submit(p, target, req.model, p.answers)
        except Exception:
            log.exception("the shadow copy of %s was not sent", p.request_id)

    # ------------------------------------------------------------------ 1. prepare
    async def prepare(self, req: ChatCompletionRequest, request_id: str, route: Route) -> Prepared:
        """Render and check a request routed to ``route`` (4xx for anything the client can fix)."""
        problem = req.unsupported()
        if problem:
            raise APIError(400, problem[1], param=problem[0], code="unsupported_parameter")
        self._note_ignored(req)
        max_new = req.max_new_tokens() or self.default_max_tokens
        conversation, grammar, prompt_ids = await asyncio.to_thread(self._render, req)
        context = self.engine.context
        if context is not None and len(prompt_ids) >= context:
            raise APIError(400, f"the prompt has {len(prompt_ids)} tokens; this model's context is {context} "
                                "tokens, and the answer needs at least one more: shorten the messages",
                           param="messages", code="context_length_exceeded")
        try:
            cfg = GenerationConfig(max_new_tokens=max_new, temperature=req.temperature, top_p=req.top_p,
                                   stop=req.stops(), seed=req.seed or 0, grammar=grammar,
                                   logprobs=(req.top_logprobs or 0) if req.logprobs else None)
        except TunesmithError as exc:
            raise APIError(400, str(exc)) from None
        budget = max_new if context is None else min(max_new, context - len(prompt_ids))
        return Prepared(request_id, route, conversation, prompt_ids, cfg, req.n, budget, req.seed is not None)

    def _render(self, req: ChatCompletionRequest) -> tuple[Messages, Grammar | None, list[int]]:
        """Off the event loop (shaping, rendering, tokenising and compiling a grammar take
        milliseconds): the messages as the model sees them (shaped as prepare shaped the training
        data: ``serve.shape_inputs``), the grammar, the prompt's token ids."""
        from tunesmith.models.chat import ChatTemplateError

        conversation = [m.as_turn() for m in req.messages]
        if self.shape is not None:
            conversation = self.shape(conversation)
        grammar = self._grammar(req)
        try:
            return conversation, grammar, self.engine.encode(conversation)
        except ChatTemplateError as exc:
            raise APIError(400, f"the messages cannot be rendered for this model: {exc}", param="messages",
                           code="invalid_messages") from None

    def _grammar(self, req: ChatCompletionRequest) -> Grammar | None:
        """``response_format`` as a grammar every answer must follow (400 if it cannot be one)."""
        grammar = checked_grammar(req)
        if grammar is not None:
            try:
                self.engine.constrainer().matcher(grammar)  # compiles it (cached for the worker)
            except (TunesmithError, ValueError, TypeError) as exc:  # llguidance's refusals are GrammarErrors
                raise APIError(400, f"response_format cannot be enforced: {exc}", param="response_format",
                               code="unsupported_json_schema") from None
        return grammar

    def _note_ignored(self, req: ChatCompletionRequest) -> None:
        fields = set(req.model_extra or {})
        with self._ignored_lock:
            new = sorted(fields - self._ignored)
            self._ignored |= fields
        if new:
            log.info("ignoring request field(s) this server does not implement: %s (said once per field)",
                     ", ".join(new))

    # ------------------------------------------------------------------ 2. answer
    def _submit(self, job: Job) -> Job:
        try:
            return self.scheduler.submit(job)
        except QueueFull:
            raise APIError(429, f"the server is busy: {self.scheduler.max_queue} requests are already waiting; "
                                "retry shortly", code="queue_full") from None
        except ShuttingDown:
            raise APIError(503, "the server is shutting down", code="shutting_down") from None

    # ------------------------------------------------------------------ response cache
    def cache_lookup(self, p: Prepared) -> tuple[Hashable | None, tuple[CachedAnswer, ...] | None]:
        """(the request's cache key, its cached answers): (None, None) when it is not cacheable
        or the cache is off; a lookup counts as a hit or a miss on /metrics."""
        cacheable = self.cache is not None and p.cfg.logprobs is None  # cached answers keep no logprobs
        key = cache_key(p.route.version, p.prompt_ids, p.cfg, p.n) if cacheable else None
        if key is None:
            return None, None
        hit = self.cache.get(key)  # type: ignore[union-attr]
        self.metrics.cache_lookup(hit is not None)
        return key, hit

    def cache_store(self, key: Hashable | None, gens: Sequence[Answered]) -> None:
        if key is not None and self.cache is not None:
            self.cache.put(key, [CachedAnswer(g.text, g.finish_reason, g.tokens) for g in gens])

    # ------------------------------------------------------------------ complete
    async def complete(self, p: Prepared, model: str, started: float) -> ChatCompletion:
        key, hit = self.cache_lookup(p)
        if hit is not None:
            reviews = await self._review(p, hit)
            self._record(p, model, started, 200, gens=hit, cached=True, reviews=reviews)
            return _completion(p, model, hit, reviews)
        gens, first_token, reviews = await self._generate(p, model, started)
        self.cache_store(key, gens)
        self._record(p, model, started, 200, gens=gens, first_token=first_token, reviews=reviews)
        result = _completion(p, model, gens, reviews)
        if p.cfg.logprobs is not None:
            for choice, g in zip(result.choices, gens, strict=True):
                choice.logprobs = self._logprobs(g)  # type: ignore[arg-type]
        return result

    async def _review(self, p: Prepared, gens: Sequence[Answered]) -> list[Reviewed] | None:
        """Each answer's confidence and review decision (:mod:`tunesmith.review.live`), off the
        event loop; None without a reviewer. A failure costs the answers their decision (logged),
        never the response."""
        if self.reviewer is None or not gens:
            return None
        return await asyncio.to_thread(self._review_now, p, gens)

    def _review_now(self, p: Prepared, gens: Sequence[Answered]) -> list[Reviewed] | None:
        """:meth:`_review` on the calling thread: the scheduler's worker runs it right after a
        job's engine call (the job's ``after`` step), a cache hit on a thread of its own."""
        if self.reviewer is None or not gens:
            return None
        try:
            return self.reviewer.review_answers(
                p.request_id, p.prompt_ids, [g.text for g in gens], adapter=p.route.adapter,
                version=p.route.version, logprobs=[getattr(g, "logprobs", None) for g in gens])
        except Exception:
            log.exception("confidence for %s failed; its answers carry no review decision", p.request_id)
            return None

    def _job(self, p: Prepared) -> Job:
        """The request's job, with the review step on the worker when answers get one."""
        job = p.job()
        if self.reviewer is not None:
            job.after = lambda gens: self._review_now(p, gens)
        return job

    def _logprobs(self, g: Generation) -> ChoiceLogprobs:
        """The answer's tokens with their logprobs, the end-of-turn token left out (it is not
        part of the content)."""
        records = g.logprobs or []
        if g.token_ids and g.token_ids[-1] in self.engine.stop_ids:
            records = records[:-1]
        return ChoiceLogprobs(content=chat_content(records, self.token_text))

    async def _generate(self, p: Prepared, model: str, started: float
                        ) -> tuple[Sequence[Answered], float | None, list[Reviewed] | None]:
        """The engine's answers, when its first token came (perf_counter) and their reviews."""
        first = FirstToken()
        job = self._job(p)
        job.on_token = first
        self._submit(job)
        try:
            gens = await asyncio.wrap_future(job.future)
        except asyncio.CancelledError:
            job.cancelled = True
            self._record(p, model, started, 499, error="the client went away", first_token=first.at)
            raise
        except Exception as exc:
            raise _engine_error(exc) from None
        return gens, first.at, job.extra

    def stream(self, p: Prepared, model: str, started: float, *, include_usage: bool) -> AsyncIterator[str]:
        """Queue the job now (a full queue is a 429 before any byte is sent) and return its SSE
        lines: a role chunk per answer, text deltas as tokens come, a finish chunk per answer,
        the usage chunk (``include_usage``), then ``data: [DONE]``. Call on the event loop.
        A request the response cache holds is answered from it: one text chunk per answer."""
        key, hit = self.cache_lookup(p)
        if hit is not None:
            return self._cached_chunks(p, model, started, hit, include_usage)
        loop = asyncio.get_running_loop()
        first = FirstToken()
        events: asyncio.Queue[tuple[int, str, str | None] | None] = asyncio.Queue()
        checker = StopChecker(self.engine.tokenizer, self.engine.stop_ids, p.cfg.stop)
        streams = [TextStream(self.engine.tokenizer, checker, p.budget) for _ in range(p.n)]

        def on_token(choice: int, token_ids: list[int]) -> None:  # on the worker thread
            first(choice, token_ids)
            delta, finish = streams[choice].update(token_ids)
            if delta or finish:
                loop.call_soon_threadsafe(events.put_nowait, (choice, delta, finish))

        job = self._job(p)
        job.on_token = on_token
        self._submit(job)
        job.future.add_done_callback(lambda _: loop.call_soon_threadsafe(events.put_nowait, None))
        return self._chunks(p, model, started, job, events, streams, include_usage, first, key)

    async def _cached_chunks(self, p: Prepared, model: str, started: float, hit: Sequence[CachedAnswer],
                             include_usage: bool) -> AsyncIterator[str]:
        """A cached answer as a stream: the role chunk, one chunk per answer with its whole text
        and finish reason, the usage chunk, ``[DONE]``."""
        def chunk(choices: list[ChunkChoice], usage: Usage | None = None) -> str:
            body = ChatCompletionChunk(id=p.request_id, choices=choices, model=model, usage=usage)
            return _sse(body, include_usage)

        status = 499
        reviews = await self._review(p, hit)
        try:
            yield chunk([ChunkChoice(index=i, delta=Delta(role="assistant", content="")) for i in range(p.n)])
            for i, answer in enumerate(hit):
                yield chunk([ChunkChoice(index=i, delta=Delta(content=answer.text or None),
                                         finish_reason=answer.finish_reason,  # type: ignore[arg-type]
                                         tunesmith=reviews[i].extension() if reviews else None)])
            if include_usage:
                yield chunk([], _usage(p, hit))
            status = 200
            yield "data: [DONE]\n\n"
        finally:
            self._record(p, model, started, status, gens=hit if status == 200 else None, stream=True, cached=True,
                         error=None if status == 200 else "the client went away", reviews=reviews)

    async def _chunks(self, p: Prepared, model: str, started: float, job: Job,
                      events: asyncio.Queue[tuple[int, str, str | None] | None], streams: list[TextStream],
                      include_usage: bool, first: FirstToken, key: Hashable | None) -> AsyncIterator[str]:
        def chunk(choices: list[ChunkChoice], usage: Usage | None = None) -> str:
            body = ChatCompletionChunk(id=p.request_id, choices=choices, model=model, usage=usage)
            return _sse(body, include_usage)

        first_token: float | None = None
        status, gens, failure, reviews = 499, None, "the client went away", None
        deferred = p.cfg.logprobs is not None or self.reviewer is not None  # finish chunks carry them
        try:
            yield chunk([ChunkChoice(index=i, delta=Delta(role="assistant", content="")) for i in range(p.n)])
            while (event := await events.get()) is not None:
                choice, delta, finish = event
                if delta and first_token is None:
                    first_token = time.perf_counter()
                if deferred:  # the finish chunk comes last, with the answer's logprobs / review
                    finish = None
                if delta or finish:
                    yield chunk([ChunkChoice(index=choice, delta=Delta(content=delta or None), finish_reason=finish)])
            try:
                gens = job.future.result()
            except Exception as exc:
                error = _engine_error(exc)
                status, failure = error.status, error.message
                yield f"data: {json.dumps(error.body())}\n\n"
                yield "data: [DONE]\n\n"
                return
            reviews = job.extra
            for i, (s, g) in enumerate(zip(streams, gens, strict=True)):  # answers the tokens did not end
                if s.finish is None or deferred:
                    rest = s.finish_with(g.text, g.finish_reason) if s.finish is None else ""
                    logprobs = self._logprobs(g) if p.cfg.logprobs is not None else None  # type: ignore[arg-type]
                    yield chunk([ChunkChoice(index=i, delta=Delta(content=rest or None), logprobs=logprobs,
                                             finish_reason=g.finish_reason,
                                             tunesmith=reviews[i].extension() if reviews else None)])
            if include_usage:
                yield chunk([], _usage(p, gens))
            status = 200
            self.cache_store(key, gens)
            yield "data: [DONE]\n\n"
        finally:
            job.cancelled = status == 499
            ttft = None if first_token is None else (first_token - started) * 1000
            self._record(p, model, started, status, gens=gens, stream=True, first_token_ms=ttft,
                         error=None if status == 200 else failure, first_token=first.at, reviews=reviews)

    # ------------------------------------------------------------------ request log
    def _record(self, p: Prepared, model: str, started: float, status: int, *,
                gens: Sequence[Answered] | None = None, stream: bool = False, first_token_ms: float | None = None,
                error: str | None = None, first_token: float | None = None, cached: bool = False,
                reviews: Sequence[Reviewed] | None = None) -> None:
        """One finished request: the rollout monitor (not for cached answers: they say nothing
        new about the version), /metrics and the request log (with the input turns, and each
        answer's confidence and review decision when ``reviews``). ``first_token``:
        perf_counter time of the first generated token."""
        latency = time.perf_counter() - started
        if status == 200 and gens:
            p.answers = [g.text for g in gens]
        if self.rollout is not None and not cached:
            self.rollout.observe(p.route, status, [g.text for g in gens or []], p.cfg.grammar is not None,
                                 latency * 1000)
        self.metrics.observe(endpoint=self.endpoint, model=model, version=p.route.version, variant=p.route.variant,
                             status=status, latency_s=latency,
                             ttft_s=None if first_token is None else first_token - started,
                             prompt_tokens=len(p.prompt_ids) if gens else 0,
                             completion_tokens=sum(g.tokens for g in gens or []))
        if self.request_log is None:
            return
        answers = [Answer(g.text, g.finish_reason, g.tokens) for g in gens or []]
        for a, r in zip(answers, reviews or [], strict=False):
            a.confidence, a.decision = r.field_confidence(), r.decision.to_dict()
        self.request_log.record(LogEntry(
            request_id=p.request_id, created=time.time() - (time.perf_counter() - started), status=status,
            model=model, version=p.route.version, adapter=p.route.adapter, variant=p.route.variant,
            prompt=self.engine.tokenizer.decode(p.prompt_ids), prompt_tokens=len(p.prompt_ids), answers=answers,
            latency_ms=(time.perf_counter() - started) * 1000, first_token_ms=first_token_ms, error=error,
            stream=stream, cached=cached, json_asked=p.cfg.grammar is not None,
            messages=p.conversation if gens else None))

    def record_error(self, request_id: str, started: float, error: APIError, *, model: str | None,
                     route: Route | None, stream: bool) -> None:
        """A refused request (its status and message; no prompt was rendered)."""
        if self.rollout is not None and route is not None:  # an engine failure counts against its variant
            self.rollout.observe(route, error.status, [], False, (time.perf_counter() - started) * 1000)
        self.metrics.observe(endpoint=self.endpoint, model=model if route else None,
                             version=route.version if route else None, variant=route.variant if route else None,
                             status=error.status)
        if self.request_log is None:
            return
        self.request_log.record(LogEntry(
            request_id=request_id, created=time.time() - (time.perf_counter() - started), status=error.status,
            model=model, version=route.version if route else None, adapter=route.adapter if route else None,
            variant=route.variant if route else None, latency_ms=(time.perf_counter() - started) * 1000,
            error=error.message, stream=stream))


class Answered(Protocol):
    """An answer as the response needs it: an engine :class:`Generation` or a cached one."""

    text: str
    finish_reason: Any
    tokens: int


class FirstToken:
    """An ``on_token`` callback that notes when the first token of any answer came."""

    def __init__(self) -> None:
        self.at: float | None = None

    def __call__(self, choice: int, token_ids: list[int]) -> None:
        if self.at is None:
            self.at = time.perf_counter()


def _completion(p: Prepared, model: str, gens: Sequence[Answered],
                reviews: Sequence[Reviewed] | None = None) -> ChatCompletion:
    choices = [Choice(index=i, message=AssistantMessage(content=g.text), finish_reason=g.finish_reason,
                      tunesmith=reviews[i].extension() if reviews else None)
               for i, g in enumerate(gens)]
    return ChatCompletion(id=p.request_id, choices=choices, model=model, usage=_usage(p, gens))


def _usage(p: Prepared, gens: Sequence[Answered]) -> Usage:
    """The prompt counts once (as rendered); every answer's generated tokens count, the
    end-of-turn token included."""
    completion = sum(g.tokens for g in gens)
    return Usage(prompt_tokens=len(p.prompt_ids), completion_tokens=completion,
                 total_tokens=len(p.prompt_ids) + completion)


def _engine_error(exc: BaseException) -> APIError:
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, ShuttingDown):
        return APIError(503, "the server is shutting down", code="shutting_down")
    log.error("generation failed", exc_info=exc)
    return APIError(500, f"generation failed: {exc}", code="generation_failed")


def _sse(chunk: ChatCompletionChunk, include_usage: bool) -> str:
    data: dict[str, Any] = chunk.model_dump(exclude=None if include_usage else {"usage"})
    for choice in data["choices"]:
        choice["delta"] = {k: v for k, v in choice["delta"].items() if v is not None}
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"
