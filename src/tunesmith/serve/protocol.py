"""The OpenAI wire format: request, response, stream-chunk, model-list and error schemas.

Fields are ordered as in OpenAI's API reference (https://platform.openai.com/docs/api-reference/chat),
so a reader can hold the two side by side. Only what the server implements is declared; any other
field a client sends is accepted and ignored (``extra="allow"``; the service logs each unknown
name once). A declared field the server cannot honour (``logprobs: true``, ``tools``) is a 400,
never silently dropped.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_N = 8  # choices per request: n answers cost n rows of the batch
MAX_STOP = 4  # stop strings per request, as OpenAI allows


class _Wire(BaseModel):
    """Responses: exactly the declared fields, in order."""

    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------------------- errors
class ErrorInfo(_Wire):
    message: str
    type: str  # invalid_request_error | authentication_error | rate_limit_error | server_error
    param: str | None = None
    code: str | None = None


class ErrorResponse(_Wire):
    error: ErrorInfo


# ---------------------------------------------------------------------------- models
class ModelCard(_Wire):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "tunesmith"


class ModelList(_Wire):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# ---------------------------------------------------------------------------- request
class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    """One turn. ``developer`` is OpenAI's newer name for ``system``; text content parts are
    joined. Tool and function turns are not supported (there are no tools)."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)

    def as_turn(self) -> dict[str, str]:
        """The engine's ``{"role", "content"}`` turn."""
        return {"role": "system" if self.role == "developer" else self.role, "content": self.text()}


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = "response"
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=lambda: {"type": "object"}, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("response_format of type json_schema needs a `json_schema` object with a `schema`")
        return self


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions``. Fields ordered as in OpenAI's reference."""

    model_config = ConfigDict(extra="allow")

    messages: list[ChatMessage] = Field(min_length=1)
    model: str
    logprobs: bool | None = None
    max_completion_tokens: int | None = Field(None, ge=1)
    max_tokens: int | None = Field(None, ge=1)  # deprecated by OpenAI in favour of max_completion_tokens
    n: int = Field(1, ge=1, le=MAX_N)
    response_format: ResponseFormat | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float = Field(1.0, ge=0, le=2)
    tools: list[dict[str, Any]] | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    top_p: float = Field(1.0, gt=0, le=1)
    user: str | None = None  # the canary's sticky routing key

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, v: str | list[str] | None) -> list[str]:
        stops = [] if v is None else [v] if isinstance(v, str) else v
        if len(stops) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop sequences, got {len(stops)}")
        if not all(stops):
            raise ValueError("stop sequences must be non-empty strings")
        return stops

    @field_validator("n", mode="before")
    @classmethod
    def _n_message(cls, v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool) and v > MAX_N:
            raise ValueError(f"n is at most {MAX_N} on this server, got {v}")
        return v

    def stops(self) -> list[str]:
        return self.stop if isinstance(self.stop, list) else []

    def max_new_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def unsupported(self) -> tuple[str, str] | None:
        """(param, message) for a declared field the server cannot honour, or None."""
        if self.logprobs:
            return "logprobs", "logprobs are not supported by this server; send logprobs: false or leave it out"
        if self.top_logprobs:
            return "top_logprobs", "top_logprobs needs logprobs, which this server does not support"
        if self.tools:
            return "tools", "tools (function calling) are not supported by this server"
        return None


# ---------------------------------------------------------------------------- response
class Usage(_Wire):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(_Wire):
    role: Literal["assistant"] = "assistant"
    content: str
    refusal: str | None = None


class Choice(_Wire):
    index: int
    message: AssistantMessage
    logprobs: None = None
    finish_reason: Literal["stop", "length"]


def _now() -> int:
    return int(time.time())


class ChatCompletion(_Wire):
    id: str
    choices: list[Choice]
    created: int = Field(default_factory=_now)
    model: str
    object: Literal["chat.completion"] = "chat.completion"
    system_fingerprint: str | None = None
    usage: Usage


class Delta(_Wire):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(_Wire):
    index: int
    delta: Delta
    logprobs: None = None
    finish_reason: Literal["stop", "length"] | None = None


class ChatCompletionChunk(_Wire):
    id: str
    choices: list[ChunkChoice]
    created: int = Field(default_factory=_now)
    model: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    system_fingerprint: str | None = None
    usage: Usage | None = None
