"""The FastAPI app: routes (thin), API-key check, error handlers, start/stop of the worker.

Routes:

- ``GET /health``: liveness and queue length; no key needed.
- ``GET /v1/models``, ``GET /v1/models/{id}``: the names a client may send (see
  :mod:`tunesmith.serve.catalog`).
- ``POST /v1/chat/completions``: OpenAI chat completions, streamed (SSE) or not.
- ``GET /v1/rollout``: the canary rollout's share, window stats and latest events
  (:mod:`tunesmith.serve.rollout`).

The key check runs before anything else on ``/v1`` (before the body is even parsed), so an
unauthenticated caller learns nothing about the API, not even that its JSON was malformed.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from tunesmith.serve import errors
from tunesmith.serve.auth import ApiKeys
from tunesmith.serve.errors import APIError
from tunesmith.serve.protocol import ChatCompletionRequest, ModelCard, ModelList
from tunesmith.serve.rollout import ROUTE_KEY_HEADER
from tunesmith.serve.service import ChatService

CHAT_PATH = "/v1/chat/completions"


class RequireKey:
    """ASGI middleware: a 401 for ``/v1`` requests without an accepted key."""

    def __init__(self, app: ASGIApp, keys: ApiKeys, on_error: errors.OnError):
        self.app, self.keys, self.on_error = app, keys, on_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.keys.enabled and scope["path"].startswith("/v1"):
            request = Request(scope, receive)
            try:
                self.keys.check(request)
            except APIError as exc:
                self.on_error(request, exc)
                await exc.response({"WWW-Authenticate": "Bearer"})(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(service: ChatService, *, keys: ApiKeys) -> FastAPI:
    """The server around ``service``; ``keys`` decides who may call it (``ApiKeys.disabled()``
    lets everyone in: the caller chooses that explicitly)."""

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

    def on_error(request: Request, error: APIError) -> None:
        if request.url.path != CHAT_PATH:
            return
        state = request.state
        service.record_error(getattr(state, "request_id", None) or service.new_request_id(),
                             getattr(state, "started", time.perf_counter()), error,
                             model=getattr(state, "model", None), route=getattr(state, "route", None),
                             stream=getattr(state, "stream", False))

    errors.install(app, on_error)
    app.add_middleware(RequireKey, keys=keys, on_error=on_error)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "waiting": service.scheduler.waiting, "busy": service.scheduler.busy}

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
        return service.rollout.status() if service.rollout is not None else {"mode": "off"}

    @app.post(CHAT_PATH, response_model=None)
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> JSONResponse | StreamingResponse:
        state = request.state
        state.started, state.request_id = time.perf_counter(), service.new_request_id()
        state.model, state.stream = body.model, body.stream
        state.route = service.route(body, state.request_id, request.headers.get(ROUTE_KEY_HEADER))
        prepared = await service.prepare(body, state.request_id, state.route)
        headers = {"x-request-id": state.request_id}
        if body.stream:
            usage = bool(body.stream_options and body.stream_options.include_usage)
            chunks = service.stream(prepared, body.model, state.started, include_usage=usage)
            return StreamingResponse(chunks, media_type="text/event-stream",
                                     headers={**headers, "Cache-Control": "no-cache"})
        result = await service.complete(prepared, body.model, state.started)
        return JSONResponse(result.model_dump(), headers=headers)

    return app
