"""The OpenAI wire format: request, response, stream-chunk, model-list and error schemas.

Fields are ordered as in OpenAI's API reference (https://platform.openai.com/docs/api-reference/chat),
so a reader can hold the two side by side. Only what the server implements is declared; any other
field a client sends is accepted and ignored (``extra="allow"``; the service logs each unknown
name once). A declared field the server cannot honour (``logprobs: true``, ``tools``) is a 400,
never silently dropped.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    model_validator,
)

MAX_N = 8  # choices per request: n answers cost n rows of the batch
MAX_STOP = 4  # stop strings per request, as OpenAI allows
MAX_TOP_LOGPROBS = 20  # chat's top_logprobs, as OpenAI allows
MAX_COMPLETION_LOGPROBS = 5  # completions' logprobs (alternatives per token), as OpenAI allows


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
def _stop_list(v: str | list[str] | None) -> list[str]:
    stops = [] if v is None else [v] if isinstance(v, str) else v
    if len(stops) > MAX_STOP:
        raise ValueError(f"at most {MAX_STOP} stop sequences, got {len(stops)}")
    if not all(stops):
        raise ValueError("stop sequences must be non-empty strings")
    return stops


def _n_message(v: Any) -> Any:
    if isinstance(v, int) and not isinstance(v, bool) and v > MAX_N:
        raise ValueError(f"n is at most {MAX_N} on this server, got {v}")
    return v


Stops = Annotated[str | list[str] | None, AfterValidator(_stop_list)]  # validated: a list
Choices = Annotated[int, BeforeValidator(_n_message), Field(ge=1, le=MAX_N)]


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
    n: Choices = 1
    response_format: ResponseFormat | None = None
    seed: int | None = None
    stop: Stops = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float = Field(1.0, ge=0, le=2)
    tools: list[dict[str, Any]] | None = None
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    top_p: float = Field(1.0, gt=0, le=1)
    user: str | None = None  # the canary's sticky routing key

    def stops(self) -> list[str]:
        return self.stop if isinstance(self.stop, list) else []

    def max_new_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def unsupported(self) -> tuple[str, str] | None:
        """(param, message) for a declared field the server cannot honour, or None."""
        if self.top_logprobs and not self.logprobs:
            return "top_logprobs", "top_logprobs needs logprobs: true"
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


class TopLogprob(_Wire):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(_Wire):
    """A generated token's log-probability (the model's log-softmax, before temperature) and
    the most likely tokens at its position."""

    token: str
    logprob: float
    bytes: list[int] | None
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(_Wire):
    content: list[TokenLogprob] | None
    refusal: list[TokenLogprob] | None = None


class Choice(_Wire):
    index: int
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: Literal["stop", "length"]
    tunesmith: dict[str, Any] | None = None  # extension: confidence and review decision (review.live)


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
    logprobs: ChoiceLogprobs | None = None  # streamed: all of an answer's, in its finish chunk
    finish_reason: Literal["stop", "length"] | None = None
    tunesmith: dict[str, Any] | None = None  # extension, in the finish chunk (see Choice)


class ChatCompletionChunk(_Wire):
    id: str
    choices: list[ChunkChoice]
    created: int = Field(default_factory=_now)
    model: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    system_fingerprint: str | None = None
    usage: Usage | None = None


# ---------------------------------------------------------------------------- legacy completions
def _prompt_shape(v: Any) -> Any:
    """One clear message instead of pydantic's one per member of the union."""

    def is_id(x: Any) -> bool:
        return isinstance(x, int) and not isinstance(x, bool)

    if isinstance(v, str) or (isinstance(v, list) and (
            all(isinstance(x, str) for x in v) or all(is_id(x) for x in v)
            or all(isinstance(x, list) and all(is_id(t) for t in x) for x in v))):
        return v
    raise ValueError("must be a string, a list of strings, a list of token ids or a list of token-id lists")


Prompt = Annotated[str | list[str] | list[int] | list[list[int]], PlainValidator(_prompt_shape)]


class CompletionRequest(BaseModel):
    """``POST /v1/completions`` (OpenAI's legacy completions): raw text in, no chat template.
    Fields ordered as in OpenAI's reference."""

    model_config = ConfigDict(extra="allow")

    model: str
    prompt: Prompt
    best_of: int | None = Field(None, ge=1)
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=MAX_COMPLETION_LOGPROBS)
    max_tokens: int = Field(16, ge=0)  # OpenAI's default; 0 = no answer (echo: score the prompt)
    n: Choices = 1
    seed: int | None = None
    stop: Stops = None
    stream: bool = False
    suffix: str | None = None
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    user: str | None = None  # the canary's sticky routing key

    def stops(self) -> list[str]:
        return self.stop if isinstance(self.stop, list) else []

    def unsupported(self) -> tuple[str, str] | None:
        """(param, message) for a declared field the server cannot honour, or None."""
        if self.stream:
            return "stream", "stream is not supported on /v1/completions by this server; send stream: false"
        if self.suffix:
            return "suffix", "suffix (insertion) is not supported by this server"
        if self.best_of is not None and self.best_of != self.n:
            return "best_of", "best_of is not supported by this server; leave it out (or equal to n)"
        return None


class CompletionLogprobs(_Wire):
    """Per token of ``text``: its string, logprob (None for the very first prompt token, which
    has no context), its ``k`` most likely alternatives and its character offset in ``text``."""

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(_Wire):
    text: str
    index: int
    logprobs: CompletionLogprobs | None = None
    finish_reason: Literal["stop", "length"]


class Completion(_Wire):
    id: str
    choices: list[CompletionChoice]
    created: int = Field(default_factory=_now)
    model: str
    object: Literal["text_completion"] = "text_completion"
    system_fingerprint: str | None = None
    usage: Usage
