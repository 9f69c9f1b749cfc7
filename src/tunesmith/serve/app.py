"""The FastAPI app: routes (thin), API-key check, error handlers, start/stop of the worker.

Routes:

- ``GET /health``: liveness and queue length; no key needed.
- ``GET /v1/models``, ``GET /v1/models/{id}``: the names a client may send (see
  :mod:`tunesmith.serve.catalog`).
- ``POST /v1/chat/completions``: OpenAI chat completions, streamed (SSE) or not.
- ``POST /v1/completions``: OpenAI legacy completions, raw text or token ids, with ``echo``
  and ``logprobs`` (:mod:`tunesmith.serve.completions`).
- ``GET /v1/rollout``: the rollout (shadow or canary): mode, share, window stats, agreement per
  label field, shadow copy counts and latest events (:mod:`tunesmith.serve.rollout`).
- ``GET /metrics``: Prometheus metrics (:mod:`tunesmith.serve.metrics`); needs the key unless
  ``serve.metrics.require_key`` is false.

Every chat answer carries ``x-tunesmith-model-version`` (the version that answered, or ``base``)
and ``x-tunesmith-variant`` (``champion``, ``canary``, the alias, or ``direct``).

The key check runs before anything else on ``/v1`` (before the body is even parsed), so an
unauthenticated caller learns nothing about the API, not even that its JSON was malformed.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask
from starlette.types import ASGIApp, Receive, Scope, Send

from tunesmith.serve import errors
from tunesmith.serve.auth import ApiKeys
from tunesmith.serve.errors import APIError
from tunesmith.serve.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from tunesmith.serve.protocol import ChatCompletionRequest, CompletionRequest, ModelCard, ModelList
from tunesmith.serve.rollout import ROUTE_KEY_HEADER
from tunesmith.serve.service import ChatService

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
METRICS_PATH = "/metrics"
VERSION_HEADER, VARIANT_HEADER = "x-tunesmith-model-version", "x-tunesmith-variant"


class RequireKey:
    """ASGI middleware: a 401 for ``/v1`` requests (and ``/metrics`` when ``metrics`` is set)
    without an accepted key."""

    def __init__(self, app: ASGIApp, keys: ApiKeys, on_error: errors.OnError, metrics: bool = True):
        self.app, self.keys, self.on_error, self.metrics = app, keys, on_error, metrics

    def _protected(self, path: str) -> bool:
        return path.startswith("/v1") or (self.metrics and path == METRICS_PATH)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.keys.enabled and self._protected(scope["path"]):
            request = Request(scope, receive)
            try:
                self.keys.check(request)
            except APIError as exc:
                self.on_error(request, exc)
                await exc.response({"WWW-Authenticate": "Bearer"})(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(service: ChatService, *, keys: ApiKeys, metrics_require_key: bool = True) -> FastAPI:
    """The server around ``service``; ``keys`` decides who may call it (``ApiKeys.disabled()``
    lets everyone in: the caller chooses that explicitly); ``metrics_require_key: False`` opens
    ``/metrics`` to scrapers that send no key."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            service.stop()

    # no /docs or /openapi.json: they would be reachable without a key
    app = FastAPI(title="tunesmith", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service

    completions = service.completion_service()

    def on_error(request: Request, error: APIError) -> None:
        state = request.state
        if request.url.path == COMPLETIONS_PATH:
            completions.record_error(getattr(state, "request_id", None) or completions.new_request_id(),
                                     getattr(state, "started", time.perf_counter()), error,
                                     model=getattr(state, "model", None), route=getattr(state, "route", None))
        if request.url.path != CHAT_PATH:
            return
        service.record_error(getattr(state, "request_id", None) or service.new_request_id(),
                             getattr(state, "started", time.perf_counter()), error,
                             model=getattr(state, "model", None), route=getattr(state, "route", None),
                             stream=getattr(state, "stream", False))

    errors.install(app, on_error)
    app.add_middleware(RequireKey, keys=keys, on_error=on_error, metrics=metrics_require_key)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "waiting": service.scheduler.waiting, "busy": service.scheduler.busy}

    @app.get(METRICS_PATH)
    async def metrics() -> Response:
        return Response(service.metrics.render(), media_type=METRICS_CONTENT_TYPE)

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return ModelList(data=service.catalog.cards()).model_dump()

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str) -> dict[str, Any]:
        service.catalog.resolve(model_id)  # 404 for a name it does not serve
        card = next((c for c in service.catalog.cards() if c.id == model_id), None)
        return (card or ModelCard(id=model_id, created=int(service.catalog.created))).model_dump()

    @app.get("/v1/rollout")
    async def rollout() -> dict[str, Any]:
        if service.rollout is None:
            return {"mode": "off"}
        status = await asyncio.to_thread(service.rollout.status)  # reads the events table
        return {**status, "shadow_copies": asdict(service.shadow.counts) if service.shadow else None}

    @app.post(CHAT_PATH, response_model=None)
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> JSONResponse | StreamingResponse:
        state = request.state
        state.started, state.request_id = time.perf_counter(), service.new_request_id()
        state.model, state.stream = body.model, body.stream
        state.route = service.route(body, state.request_id, request.headers.get(ROUTE_KEY_HEADER))
        prepared = await service.prepare(body, state.request_id, state.route)
        headers = {"x-request-id": state.request_id, VERSION_HEADER: state.route.version,
                   VARIANT_HEADER: state.route.variant}
        # runs once the whole response has been sent: the shadow copy (serve.rollout.mode: shadow)
        after = BackgroundTask(service.after_response, prepared, body, request.headers.get(ROUTE_KEY_HEADER))
        if body.stream:
            usage = bool(body.stream_options and body.stream_options.include_usage)
            chunks = service.stream(prepared, body.model, state.started, include_usage=usage)
            if inspect.isawaitable(chunks):  # serve.engine: vllm opens the upstream stream first
                chunks = await chunks
            return StreamingResponse(chunks, media_type="text/event-stream",
                                     headers={**headers, "Cache-Control": "no-cache"}, background=after)
        result = await service.complete(prepared, body.model, state.started)
        return JSONResponse(result.model_dump(), headers=headers, background=after)

    @app.post(COMPLETIONS_PATH)
    async def legacy_completions(body: CompletionRequest, request: Request) -> JSONResponse:
        state = request.state
        state.started, state.request_id = time.perf_counter(), completions.new_request_id()
        state.model = body.model
        state.route = service.route(body, state.request_id, request.headers.get(ROUTE_KEY_HEADER))  # type: ignore[arg-type]
        prepared = await completions.prepare(body, state.request_id, state.route)
        result = await completions.create(prepared, body.model, state.started)
        return JSONResponse(result.model_dump(), headers={"x-request-id": state.request_id,
                                                          VERSION_HEADER: state.route.version,
                                                          VARIANT_HEADER: state.route.variant})

    return app
