"""Every error the server returns has OpenAI's shape, ``{"error": {message, type, param, code}}``:
ours (:class:`APIError`), FastAPI's request validation (400, not 422), Starlette's routing
errors (404 unknown path, 405 wrong method) and anything unexpected (500, traceback logged,
never sent). OpenAI's clients turn the status into their exception class
(``AuthenticationError``, ``NotFoundError``, ``BadRequestError``, ``RateLimitError``) and show
``message``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tunesmith.serve.protocol import ErrorInfo, ErrorResponse

log = logging.getLogger(__name__)

TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "invalid_request_error",
         405: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error"}


class APIError(Exception):
    """An error response: the HTTP status, a message that says how to fix the request, and
    optionally the offending ``param`` and a machine-readable ``code``."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type or TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")

    def response(self, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=headers)

    def body(self) -> dict[str, Any]:
        info = ErrorInfo(message=self.message, type=self.type, param=self.param, code=self.code)
        return ErrorResponse(error=info).model_dump()


def from_validation(exc: RequestValidationError) -> APIError:
    """FastAPI's list of pydantic errors as one 400: every problem, each with its field path."""
    problems, params = [], []
    for e in exc.errors():
        loc = [str(p) for p in e.get("loc", ()) if p != "body"]
        param = ".".join(loc) or None
        if e.get("type") == "json_invalid":
            return APIError(400, f"the request body is not valid JSON ({e.get('msg')})", code="invalid_json")
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        problems.append(f"{param}: {msg}" if param else msg)
        params.append(param)
    message = "; ".join(problems) or "malformed request body"
    return APIError(400, message, param=params[0] if params else None, code="invalid_request")


OnError = Callable[[Request, APIError], None]


def install(app: FastAPI, on_error: OnError | None = None) -> None:
    """Register the handlers; ``on_error(request, error)`` sees every error response (the
    request log records the chat endpoint's)."""

    def respond(request: Request, error: APIError, headers: dict[str, str] | None = None) -> JSONResponse:
        if on_error is not None:
            try:
                on_error(request, error)
            except Exception:  # logging an error must never turn it into another one
                log.exception("recording an error response failed")
        return error.response(headers)

    async def api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, APIError)
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return respond(request, exc, headers)

    async def validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return respond(request, from_validation(exc))

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        status = exc.status_code
        if status == 404:
            message = f"no route {request.method} {request.url.path}; the API is under /v1 (GET /v1/models, POST /v1/chat/completions)"
        else:
            message = str(exc.detail) if exc.detail else HTTPStatus(status).phrase
        return respond(request, APIError(status, message, code=HTTPStatus(status).phrase.lower().replace(" ", "_")),
                       getattr(exc, "headers", None))

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return respond(request, APIError(500, f"internal server error ({type(exc).__name__}); see the server log",
                                         code="internal_error"))

    handlers: dict[Any, Callable[[Request, Exception], Awaitable[JSONResponse]]] = {
        APIError: api_error, RequestValidationError: validation, StarletteHTTPException: http_error,
        Exception: unexpected,
    }
    for kind, handler in handlers.items():
        app.add_exception_handler(kind, handler)
