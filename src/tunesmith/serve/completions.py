"""``POST /v1/completions``: OpenAI's legacy completions, raw text in and out (no chat template).

This is what log-likelihood evaluations speak: lm-evaluation-harness's ``local-completions``
sends token-id prompts with ``echo: true``, ``logprobs: 1`` and ``max_tokens`` 0 or 1, and
reads the log-probability of every prompt token from ``choices[i].logprobs``.

1. ``prepare``: the prompt(s) as token ids (strings are tokenised as the model's tokenizer
   does by default, special tokens such as a BOS included; token ids are taken as they are),
   checked against the vocabulary and the context. Every mistake is a 400 before anything is
   queued.
2. ``create``: per request two jobs at most, both run by the engine's worker thread (see
   :mod:`.scheduler`): a ``raw`` job continues every prompt ``n`` times (``max_tokens`` > 0),
   a ``score`` job computes the prompt tokens' logprobs (``echo`` with ``logprobs``).
3. The response: choice ``p * n + j`` is answer ``j`` to prompt ``p``, as in OpenAI's API.

Routing (model names, the canary), the API key, the queue limit (429), ``/metrics`` and the
request log (PII-scrubbed) are the chat endpoint's: this module borrows the
:class:`~tunesmith.serve.service.ChatService`'s.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tunesmith.errors import TunesmithError
from tunesmith.generate.sampling import GenerationConfig
from tunesmith.serve.errors import APIError
from tunesmith.serve.logprobs import TokenText, completion_logprobs
from tunesmith.serve.protocol import Completion, CompletionChoice, CompletionRequest, Usage
from tunesmith.serve.requestlog import Answer, LogEntry
from tunesmith.serve.scheduler import Job, batch_key
from tunesmith.serve.service import _engine_error

if TYPE_CHECKING:
    from tunesmith.generate.engine import Generation
    from tunesmith.generate.logprobs import TokenLogprob
    from tunesmith.serve.catalog import Route
    from tunesmith.serve.service import ChatService

MAX_ROWS = 128  # prompts x n per request: each is a row of the engine's batches


@dataclass
class PreparedCompletion:
    """A completions request ready to queue: token-id prompts and what to do with them."""

    request_id: str
    route: Route
    prompts: list[list[int]]
    texts: list[str]  # each prompt as text (what echo returns)
    cfg: GenerationConfig | None  # None: no answer (max_tokens 0)
    n: int
    seeded: bool
    echo: bool
    logprobs: int | None

    def jobs(self) -> tuple[Job | None, Job | None]:
        """(the answers' job, the prompt-scoring job); either may be None."""
        adapter = self.route.adapter
        answers = scoring = None
        if self.cfg is not None:
            rows = [p for p in self.prompts for _ in range(self.n)]
            key = batch_key(adapter, self.cfg, seeded=self.seeded, request_id=self.request_id, kind="raw")
            answers = Job([], len(rows), adapter, self.cfg, key, random_seed=not self.seeded and not self.cfg.greedy,
                          kind="raw", prompts=rows)
        if self.echo and self.logprobs is not None:
            cfg = GenerationConfig(logprobs=self.logprobs)
            key = batch_key(adapter, cfg, seeded=False, request_id=self.request_id, kind="score")
            scoring = Job([], len(self.prompts), adapter, cfg, key, kind="score", prompts=self.prompts)
        return answers, scoring


class CompletionService:
    """The completions endpoint over a chat service's engine, queue, routing and logs."""

    endpoint = "completions"  # the metrics' label

    def __init__(self, chat: ChatService):
        self.chat = chat
        self.engine = chat.engine
        self.text = TokenText(chat.engine.tokenizer)
        self.vocab = chat.engine.model.get_input_embeddings().weight.shape[0]

    @staticmethod
    def new_request_id() -> str:
        return f"cmpl-{uuid.uuid4().hex}"

    # ------------------------------------------------------------------ 1. prepare
    async def prepare(self, req: CompletionRequest, request_id: str, route: Route) -> PreparedCompletion:
        problem = req.unsupported()
        if problem:
            raise APIError(400, problem[1], param=problem[0], code="unsupported_parameter")
        self.chat._note_ignored(req)  # type: ignore[arg-type]
        prompts, texts = await asyncio.to_thread(self._tokenize, req.prompt)
        if len(prompts) * req.n > MAX_ROWS:
            raise APIError(400, f"{len(prompts)} prompts x n={req.n} is more than the {MAX_ROWS} answers one request "
                                "may ask for; split the request", param="prompt", code="invalid_request")
        answer = req.max_tokens > 0
        room = 1 if answer else 0  # positions the answer needs beyond the prompt
        context = self.engine.context
        for i, ids in enumerate(prompts):
            if not ids:
                raise APIError(400, f"prompt {i} is empty: give at least one token", param="prompt",
                               code="invalid_request")
            bad = next((t for t in ids if not 0 <= t < self.vocab), None)
            if bad is not None:
                raise APIError(400, f"prompt {i}: token id {bad} is not in this model's vocabulary (0 to "
                                    f"{self.vocab - 1})", param="prompt", code="invalid_request")
            if context is not None and len(ids) + room > context:
                need = "and the answer needs at least one more" if answer else "(max_tokens is 0)"
                raise APIError(400, f"prompt {i} has {len(ids)} tokens; this model's context is {context} tokens "
                                    f"{need}: shorten the prompt", param="prompt", code="context_length_exceeded")
        cfg = None
        if answer:
            try:
                cfg = GenerationConfig(max_new_tokens=req.max_tokens, temperature=req.temperature, top_p=req.top_p,
                                       stop=req.stops(), seed=req.seed or 0, logprobs=req.logprobs)
            except TunesmithError as exc:
                raise APIError(400, str(exc)) from None
        return PreparedCompletion(request_id, route, prompts, texts, cfg, req.n, req.seed is not None, req.echo,
                                  req.logprobs)

    def _tokenize(self, prompt: Any) -> tuple[list[list[int]], list[str]]:
        """Token ids and texts of each prompt (off the event loop: tokenising takes time)."""
        tok = self.engine.tokenizer
        if isinstance(prompt, str):
            prompt = [prompt]
        if not prompt:
            raise APIError(400, "prompt is an empty list: give at least one prompt", param="prompt",
                           code="invalid_request")
        if isinstance(prompt[0], int):
            prompt = [prompt]
        if isinstance(prompt[0], str):
            return [tok(p, add_special_tokens=True)["input_ids"] for p in prompt], list(prompt)
        return prompt, [tok.decode(p) for p in prompt]

    # ------------------------------------------------------------------ 2. answer
    async def create(self, p: PreparedCompletion, model: str, started: float) -> Completion:
        answers, scoring = p.jobs()
        queued = []
        try:
            for job in (answers, scoring):
                if job is not None:
                    queued.append(self.chat._submit(job))
            results = await asyncio.gather(*(asyncio.wrap_future(j.future) for j in queued))
        except asyncio.CancelledError:
            for job in queued:
                job.cancelled = True
            self._record(p, model, started, 499, error="the client went away")
            raise
        except APIError:  # 429/503 while queueing: the queued part is not wanted any more
            for job in queued:
                job.cancelled = True
            raise
        except Exception as exc:
            raise _engine_error(exc) from None
        gens: list[Generation] = results.pop(0) if answers is not None else []
        scores: list[list[TokenLogprob | None]] | None = results.pop(0) if scoring is not None else None
        self._record(p, model, started, 200, gens=gens)
        return self._response(p, model, gens, scores)

    def _response(self, p: PreparedCompletion, model: str, gens: list[Generation],
                  scores: list[list[TokenLogprob | None]] | None) -> Completion:
        choices = []
        for i, prompt in enumerate(p.prompts):
            for j in range(p.n):
                gen = gens[i * p.n + j] if gens else None
                choices.append(self._choice(p, i * p.n + j, prompt, p.texts[i], gen,
                                            scores[i] if scores is not None else None))
        completion = sum(g.tokens for g in gens)
        prompt_tokens = sum(len(ids) for ids in p.prompts)
        usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=completion,
                      total_tokens=prompt_tokens + completion)
        return Completion(id=p.request_id, choices=choices, model=model, usage=usage)

    def _choice(self, p: PreparedCompletion, index: int, prompt: list[int], prompt_text: str,
                gen: Generation | None, score: list[TokenLogprob | None] | None) -> CompletionChoice:
        """Answer text (after the prompt's, with ``echo``) and the logprobs of its tokens: every
        generated token, an end-of-text token or one past a stop string included (so there are
        as many as ``usage.completion_tokens`` counts), after the prompt's with ``echo``."""
        answer = gen.text if gen is not None else ""
        text = prompt_text + answer if p.echo else answer
        finish = gen.finish_reason if gen is not None else "length"
        if p.logprobs is None:
            return CompletionChoice(text=text, index=index, finish_reason=finish)
        ids: list[int] = []
        records: list[TokenLogprob | None] = []
        if p.echo:
            ids, records = list(prompt), list(score or [None] * len(prompt))
        if gen is not None:
            ids += gen.token_ids
            records += gen.logprobs or [None] * len(gen.token_ids)
        logprobs = completion_logprobs(records, ids, self.text)
        return CompletionChoice(text=text, index=index, logprobs=logprobs, finish_reason=finish)

    # ------------------------------------------------------------------ request log
    def _record(self, p: PreparedCompletion, model: str, started: float, status: int, *,
                gens: list[Generation] | None = None, error: str | None = None) -> None:
        """One request-log entry per prompt (request id ``<id>`` for one prompt, ``<id>:<p>``
        for several; one row per answer), /metrics and the canary's monitor."""
        latency = time.perf_counter() - started
        chat = self.chat
        if chat.rollout is not None:
            chat.rollout.observe(p.route, status, [g.text for g in gens or []], False, latency * 1000)
        chat.metrics.observe(endpoint=self.endpoint, model=model, version=p.route.version, variant=p.route.variant,
                             status=status, latency_s=latency,
                             prompt_tokens=sum(len(ids) for ids in p.prompts) if status == 200 else 0,
                             completion_tokens=sum(g.tokens for g in gens or []))
        if chat.request_log is None:
            return
        created = time.time() - latency
        for i, ids in enumerate(p.prompts):
            mine = (gens or [])[i * p.n : (i + 1) * p.n]
            chat.request_log.record(LogEntry(
                request_id=p.request_id if len(p.prompts) == 1 else f"{p.request_id}:{i}", created=created,
                status=status, model=model, version=p.route.version, adapter=p.route.adapter,
                variant=p.route.variant, prompt=p.texts[i], prompt_tokens=len(ids),
                answers=[Answer(g.text, g.finish_reason, g.tokens) for g in mine], latency_ms=latency * 1000,
                error=error))

    def record_error(self, request_id: str, started: float, error: APIError, *, model: str | None,
                     route: Route | None) -> None:
        """A refused request: its status and message, no prompt."""
        chat = self.chat
        if chat.rollout is not None and route is not None:
            chat.rollout.observe(route, error.status, [], False, (time.perf_counter() - started) * 1000)
        chat.metrics.observe(endpoint=self.endpoint, model=model if route else None,
                             version=route.version if route else None, variant=route.variant if route else None,
                             status=error.status)
        if chat.request_log is None:
            return
        chat.request_log.record(LogEntry(
            request_id=request_id, created=time.time() - (time.perf_counter() - started), status=error.status,
            model=model, version=route.version if route else None, adapter=route.adapter if route else None,
            variant=route.variant if route else None, latency_ms=(time.perf_counter() - started) * 1000,
            error=error.message))
