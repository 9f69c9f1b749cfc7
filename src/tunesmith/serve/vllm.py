"""``serve.engine: vllm``: a ``vllm serve`` child process generates; tunesmith keeps the rest.

On GPUs, vLLM's paged attention and multi-LoRA batching outrun tunesmith's engine. This module
runs ``vllm serve <base model> --enable-lora --lora-modules <version id>=<adapter dir> ...``
bound to 127.0.0.1 with a random per-process API key, waits for its ``/health``, and forwards
the generation to it, while everything a deployment is judged on stays in tunesmith:

- routing (model names, aliases read live, the canary), the API key, limits (429), the
  request log (PII-scrubbed), ``/metrics``, the response cache, the response headers;
- **the prompt**: tunesmith renders it with the function training used (``models/chat.py``:
  template, system prompt) and sends the token ids to vLLM's ``/v1/completions``, with the
  end-of-turn ids as ``stop_token_ids``. vLLM never applies a chat template of its own, so it
  answers exactly the prompt the model was trained on.

The answer comes back as a chat completion (or chat chunks, streamed as vLLM produces them);
vLLM's errors become OpenAI-shaped errors (its 4xx keep their status and message, anything
else is a 502). ``/v1/completions`` is forwarded as it is, with the model name mapped.

The child dies with the server: it is stopped (SIGTERM to its process group, then SIGKILL)
when the app shuts down, at interpreter exit, and, on Linux, by the kernel when the parent
dies without cleaning up (``PR_SET_PDEATHSIG``).

vLLM cannot be installed on a CPU-only machine: a missing executable is a clear error. The tests
run this module against a small fake OpenAI server; vLLM itself was not run here.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunesmith.errors import TunesmithError
from tunesmith.serve.errors import APIError
from tunesmith.serve.protocol import ChatCompletionChunk, ChunkChoice, Delta, Usage
from tunesmith.serve.service import (
    DEFAULT_MAX_TOKENS,
    Answered,
    ChatService,
    Prepared,
    _sse,
    checked_grammar,
)

if TYPE_CHECKING:
    import httpx

    from tunesmith.config import Config, VllmConfig
    from tunesmith.generate.constrain import Grammar
    from tunesmith.models.chat import Messages
    from tunesmith.review.live import Reviewed
    from tunesmith.serve.auth import ApiKeys
    from tunesmith.serve.catalog import AliasResolver, Route
    from tunesmith.serve.launch import Loaded
    from tunesmith.serve.protocol import ChatCompletionRequest
    from tunesmith.serve.scheduler import Job
    from tunesmith.workspace import Workspace

log = logging.getLogger(__name__)

BASE_NAME = "base"  # --served-model-name: what the base model is called at the child
LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # the --max-lora-rank values vLLM accepts
MAX_LORAS = 8  # default --max-loras cap: vLLM reserves GPU memory for every slot
INSTALL_HINT = ("install it with `pip install vllm` (it needs an NVIDIA GPU with CUDA), or set serve.engine: "
                "tunesmith to use the built-in engine")


class VllmError(TunesmithError):
    """vLLM is missing, cannot serve this project, or its child process failed."""


# ------------------------------------------------------------------ what vLLM serves
@dataclass(frozen=True, slots=True)
class LoraVersion:
    """A model version as vLLM loads it: a PEFT LoRA folder and its rank."""

    id: str
    adapter: Path
    rank: int
    created: float


def lora_versions(ws: Workspace, base_fingerprint: str | None, base_name: str, required: str | None = None
                  ) -> tuple[dict[str, LoraVersion], dict[str, str]]:
    """The versions vLLM can serve as ``--lora-modules`` (LoRA adapters trained on this base),
    and why each other one is skipped. Only ``required`` must be servable."""
    from tunesmith.generate.adapters import (
        ADAPTER_CONFIG,
        AdapterError,
        adapter_dir,
        check_base,
        read_record,
    )

    served, skipped = {}, {}
    for version in ws.list("model"):
        try:
            check_base(Path(version.path), base_fingerprint, base_name)
            record = read_record(Path(version.path)) or {}
            if record.get("weights") == "model":
                raise AdapterError("a full fine-tune is a whole model; vLLM serves one base model per process "
                                   "(serve it with its own `vllm serve`, or use serve.engine: tunesmith)")
            folder = adapter_dir(version.path)
            config = json.loads((folder / ADAPTER_CONFIG).read_text())
            if config.get("peft_type") != "LORA":
                raise AdapterError(f"{config.get('peft_type')} adapters are not served by vLLM (LoRA only)")
            if config.get("use_dora"):
                raise AdapterError("DoRA adapters are not served by vLLM (LoRA only)")
            served[version.id] = LoraVersion(version.id, folder, int(config.get("r") or 8), version.created)
        except (AdapterError, OSError, ValueError) as exc:
            if version.id == required:
                raise VllmError(f"model version {version.id} cannot be served by vLLM: {exc}") from exc
            skipped[version.id] = str(exc).splitlines()[0][:200]
    return served, skipped


def lora_rank(versions: Sequence[LoraVersion]) -> int:
    """The smallest ``--max-lora-rank`` vLLM accepts that fits every version."""
    need = max((v.rank for v in versions), default=8)
    for rank in LORA_RANKS:
        if rank >= need:
            return rank
    raise VllmError(f"a LoRA rank of {need} is more than vLLM supports (at most {LORA_RANKS[-1]})")


def vllm_command(executable: str, base: str, versions: Sequence[LoraVersion], opts: VllmConfig, *, port: int,
                 api_key: str) -> list[str]:
    """The ``vllm serve`` command line: the base model on loopback, each version a LoRA module
    named by its id, then ``serve.vllm.extra_args``."""
    cmd = [executable, "serve", base, "--host", "127.0.0.1", "--port", str(port), "--api-key", api_key,
           "--served-model-name", BASE_NAME, "--gpu-memory-utilization", str(opts.gpu_memory_utilization)]
    if opts.max_model_len is not None:
        cmd += ["--max-model-len", str(opts.max_model_len)]
    if versions:
        cmd += ["--enable-lora", "--max-loras", str(opts.max_loras or min(len(versions), MAX_LORAS)),
                "--max-lora-rank", str(opts.max_lora_rank or lora_rank(versions)),
                "--lora-modules", *[f"{v.id}={v.adapter}" for v in versions]]
    return cmd + list(opts.extra_args)


def find_executable(name: str) -> str:
    """The vLLM command as a path (a name on PATH, or a path).

    Raises:
        VllmError: it is not installed.
    """
    found = shutil.which(name)
    if found is None:
        raise VllmError(f"serve.engine: vllm, but the vLLM command {name!r} was not found; {INSTALL_HINT}")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------ the child process
def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the kernel sends SIGTERM to the child when the parent dies (even by SIGKILL)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class VllmProcess:
    """``vllm serve`` as a child process in its own process group (vLLM starts workers of its own).

    Args:
        command: the full command line (see :func:`vllm_command`).
        port: the loopback port it listens on.
        api_key: the key it was given (every request must send it).
        startup_timeout: seconds to wait for ``/health``.
    """

    def __init__(self, command: list[str], *, port: int, api_key: str, startup_timeout: float = 600.0):
        self.command, self.port, self.api_key, self.startup_timeout = command, port, api_key, startup_timeout
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the child and wait until it answers ``/health``.

        Raises:
            VllmError: it exited, or was not ready within ``startup_timeout`` (then it is stopped).
        """
        if self.proc is not None:
            return
        shown = [("<key>" if i and self.command[i - 1] == "--api-key" else a) for i, a in enumerate(self.command)]
        log.info("starting vLLM: %s", " ".join(shown))
        try:
            self.proc = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, start_new_session=True,
                                         preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        except OSError as exc:
            raise VllmError(f"cannot start {self.command[0]}: {exc.strerror}; {INSTALL_HINT}") from None
        atexit.register(self.stop)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        import httpx

        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            code = self.proc.poll() if self.proc is not None else None
            if code is not None:
                raise VllmError(f"vllm serve exited with code {code} before it was ready (its log is above)")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=2, trust_env=False).status_code == 200:
                    log.info("vLLM is ready on %s", self.url)
                    return
            time.sleep(0.25)
        raise VllmError(f"vllm serve did not answer {self.url}/health within {self.startup_timeout:.0f} s "
                        "(serve.vllm.startup_timeout)")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM to the child's process group, SIGKILL after ``timeout`` seconds."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        atexit.unregister(self.stop)
        if proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                try:
                    proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    log.warning("vLLM did not stop after %s; killing it", sig.name)
        log.info("vLLM stopped (exit code %s)", proc.returncode)


# ------------------------------------------------------------------ the prompt side
class Renderer:
    """What the chat service needs of an engine when vLLM generates: the tokenizer, the
    rendering training used, the end-of-turn ids and the context length; no weights."""

    def __init__(self, tokenizer: Any, *, system: str | None, fallback_template: str | None, context: int | None):
        from tunesmith.models.chat import end_of_turn_ids

        self.tokenizer, self.system, self.fallback_template = tokenizer, system, fallback_template
        self.context = context
        self.stop_ids = end_of_turn_ids(tokenizer, fallback_template=fallback_template)
        self.max_batch_size = 1
        self.model = None

    def encode(self, conversation: Messages) -> list[int]:
        from tunesmith.models.chat import encode_prompt

        return encode_prompt(self.tokenizer, conversation, system=self.system,
                             fallback_template=self.fallback_template)

    def constrainer(self) -> Any:
        raise TunesmithError("constrained decoding runs in vLLM (serve.engine: vllm)")


def load_renderer(cfg: Config, base: str) -> Renderer:
    from transformers import AutoConfig

    from tunesmith.models.loading import load_tokenizer

    trust = cfg.model.trust_remote_code
    tokenizer = load_tokenizer(base, trust_remote_code=trust)
    context = cfg.serve.vllm.max_model_len or getattr(
        AutoConfig.from_pretrained(base, trust_remote_code=trust), "max_position_embeddings", None)
    return Renderer(tokenizer, system=cfg.model.system_prompt, fallback_template=cfg.model.chat_template,
                    context=context)


# ------------------------------------------------------------------ forwarding
def upstream_error(status: int, body: bytes) -> APIError:
    """vLLM's error response as ours: a 4xx keeps its status and message (the client can fix
    it), anything else is a 502 (the engine failed, not the request)."""
    message = body.decode("utf-8", "replace")[:500]
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        data = json.loads(body)
        info = data.get("error", data) if isinstance(data.get("error"), dict) else data
        message = str(info.get("message") or message)
    if 400 <= status < 500 and status not in (401, 403):
        return APIError(status, f"vLLM refused the request: {message}", code="invalid_request")
    return APIError(502, f"generation failed in vLLM (HTTP {status}): {message}", code="generation_failed")


def unreachable(exc: Exception) -> APIError:
    log.error("vLLM is unreachable: %s", exc)
    return APIError(502, f"the vLLM engine is unreachable ({type(exc).__name__}); see the server log",
                    code="generation_failed")


def lora_name(route: Route) -> str:
    """The model name at the child: the version id (its LoRA module) or the base."""
    return route.adapter or BASE_NAME


@dataclass(slots=True)
class ProxiedAnswer:
    text: str
    finish_reason: str
    tokens: int


class VllmChatService(ChatService):
    """The chat service with vLLM generating (see the module docstring).

    Args:
        renderer: the prompt side (tokenizer, rendering, context).
        child: the vLLM process (started and stopped with the service).
        max_queue: requests allowed at the child at once (more get 429).
        Others as :class:`ChatService`.
    """

    def __init__(self, renderer: Renderer, catalog: Any, *, child: VllmProcess, max_queue: int = 128,
                 **kw: Any):
        super().__init__(renderer, catalog, max_queue=max_queue, **kw)  # type: ignore[arg-type]
        self.child, self.max_in_flight = child, max_queue
        if self.shadow is not None and self.rollout is not None and self.rollout.cfg.mode == "shadow":
            log.warning("serve.rollout.mode: shadow is not available with serve.engine: vllm (shadow copies need "
                        "the built-in engine's background queue); no shadow copies will be made")
        self.shadow = None  # copies would wait for a worker that does not run here
        self.in_flight = 0
        self._client: httpx.AsyncClient | None = None
        from tunesmith.serve.metrics import ServeMetrics

        self.metrics = ServeMetrics(waiting=lambda: 0, running=lambda: self.in_flight,
                                    cache_entries=lambda: len(self.cache) if self.cache is not None else 0)

    def start(self) -> None:
        self.child.start()
        if self.request_log is not None:
            self.request_log.start()

    def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(RuntimeError):  # no running loop: the process is ending anyway
                asyncio.get_running_loop().create_task(client.aclose())
        self.child.stop()
        self.scheduler.stop()  # jobs other features queued (none run here) are failed, not left waiting
        if self.request_log is not None:
            self.request_log.stop()

    @property
    def client(self) -> httpx.AsyncClient:
        import httpx

        if self._client is None:
            self._client = httpx.AsyncClient(base_url=self.child.url, trust_env=False,
                                             headers={"Authorization": f"Bearer {self.child.api_key}"},
                                             timeout=httpx.Timeout(600.0, connect=10.0),
                                             limits=httpx.Limits(max_connections=self.max_in_flight))
        return self._client

    def _submit(self, job: Job) -> Job:
        raise APIError(400, "this endpoint needs the built-in engine; the server runs with serve.engine: vllm",
                       code="unsupported_with_vllm")

    def _grammar(self, req: ChatCompletionRequest) -> Grammar | None:
        """Check the schema here (a clear 400); vLLM enforces it."""
        return checked_grammar(req)

    async def prepare(self, req: ChatCompletionRequest, request_id: str, route: Route) -> Prepared:
        if req.logprobs:
            raise APIError(400, "logprobs are not available with serve.engine: vllm", param="logprobs",
                           code="unsupported_parameter")
        return await super().prepare(req, request_id, route)

    # ------------------------------------------------------------------ the request to vLLM
    def request_body(self, p: Prepared, *, stream: bool) -> dict[str, Any]:
        """vLLM's ``/v1/completions`` body: the rendered prompt's token ids and the settings."""
        cfg = p.cfg
        body: dict[str, Any] = {
            "model": lora_name(p.route), "prompt": p.prompt_ids, "max_tokens": p.budget, "n": p.n,
            "temperature": cfg.temperature, "top_p": cfg.top_p, "stop": list(cfg.stop),
            "stop_token_ids": list(self.engine.stop_ids), "skip_special_tokens": True,
        }
        if p.seeded:
            body["seed"] = cfg.seed
        if cfg.grammar is not None:
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "response", "schema": json.loads(cfg.grammar.source)}}
        if stream:
            body["stream"], body["stream_options"] = True, {"include_usage": True}
        return body

    def _admit(self) -> None:
        if self.in_flight >= self.max_in_flight:
            raise APIError(429, f"the server is busy: {self.max_in_flight} requests are already at the engine; "
                                "retry shortly", code="queue_full")
        self.in_flight += 1

    async def _generate(self, p: Prepared, model: str, started: float
                        ) -> tuple[Sequence[Answered], float | None, list[Reviewed] | None]:
        """vLLM's answers; no first-token time and no reviews (confidence needs our engine)."""
        import httpx

        self._admit()
        try:
            resp = await self.client.post("/v1/completions", json=self.request_body(p, stream=False))
        except asyncio.CancelledError:
            self._record(p, model, started, 499, error="the client went away")
            raise
        except httpx.HTTPError as exc:
            raise unreachable(exc) from None
        finally:
            self.in_flight -= 1
        if resp.status_code != 200:
            raise upstream_error(resp.status_code, resp.content)
        data = resp.json()
        choices = sorted(data.get("choices", []), key=lambda c: c.get("index", 0))
        total = int((data.get("usage") or {}).get("completion_tokens") or 0)
        return self._answers([c.get("text") or "" for c in choices], [c.get("finish_reason") for c in choices],
                             total), None, None

    def _answers(self, texts: list[str], finishes: list[str | None], total: int) -> list[ProxiedAnswer]:
        """Answers with their token counts: vLLM's usage gives the total; with ``n > 1`` it is
        split in proportion to each answer's re-tokenised length (the sum stays exact)."""
        finish = [f if f in ("stop", "length") else "stop" for f in finishes]
        if len(texts) == 1:
            return [ProxiedAnswer(texts[0], finish[0], total)]
        sizes = [len(self.engine.tokenizer(t, add_special_tokens=False)["input_ids"]) + (f == "stop")
                 for t, f in zip(texts, finish, strict=True)]
        counts = [round(total * s / max(1, sum(sizes))) for s in sizes]
        if counts:
            counts[-1] = total - sum(counts[:-1])
        return [ProxiedAnswer(t, f, c) for t, f, c in zip(texts, finish, counts, strict=True)]

    async def stream(self, p: Prepared, model: str, started: float, *,  # type: ignore[override]
                     include_usage: bool) -> AsyncIterator[str]:
        """Open the stream at vLLM (its refusal is an error response, before any byte is sent)
        and return the chat chunks made of its completion chunks."""
        import httpx

        key, hit = self.cache_lookup(p)
        if hit is not None:
            return self._cached_chunks(p, model, started, hit, include_usage)
        self._admit()
        try:
            request = self.client.build_request("POST", "/v1/completions", json=self.request_body(p, stream=True))
            resp = await self.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            self.in_flight -= 1
            raise unreachable(exc) from None
        except BaseException:
            self.in_flight -= 1
            raise
        if resp.status_code != 200:
            body = await resp.aread()
            await resp.aclose()
            self.in_flight -= 1
            raise upstream_error(resp.status_code, body)
        return self._relay(p, model, started, resp, include_usage, key)

    async def _relay(self, p: Prepared, model: str, started: float, resp: httpx.Response, include_usage: bool,
                     key: Any) -> AsyncIterator[str]:
        def chunk(choices: list[ChunkChoice], usage: Usage | None = None) -> str:
            return _sse(ChatCompletionChunk(id=p.request_id, choices=choices, model=model, usage=usage), include_usage)

        texts, finishes = [""] * p.n, [None] * p.n
        total, first = 0, None
        status, failure = 499, "the client went away"
        try:
            yield chunk([ChunkChoice(index=i, delta=Delta(role="assistant", content="")) for i in range(p.n)])
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    break
                data = json.loads(payload)
                if "error" in data:  # vLLM failed mid-stream: said as OpenAI says it, then the end
                    error = upstream_error(500, json.dumps(data).encode())
                    status, failure = error.status, error.message
                    yield f"data: {json.dumps(error.body())}\n\n"
                    yield "data: [DONE]\n\n"
                    return
                if data.get("usage"):
                    total = int(data["usage"].get("completion_tokens") or 0)
                for c in data.get("choices") or []:
                    i, text, finish = int(c.get("index", 0)), c.get("text") or "", c.get("finish_reason")
                    if i >= p.n:
                        continue
                    if text and first is None:
                        first = time.perf_counter()
                    texts[i] += text
                    finish = finish if finish in (None, "stop", "length") else "stop"
                    finishes[i] = finish or finishes[i]
                    if text or finish:
                        yield chunk([ChunkChoice(index=i, delta=Delta(content=text or None), finish_reason=finish)])
            gens = self._answers(texts, finishes, total)
            if include_usage:
                yield chunk([], Usage(prompt_tokens=len(p.prompt_ids), completion_tokens=total,
                                      total_tokens=len(p.prompt_ids) + total))
            status = 200
            self.cache_store(key, gens)
            yield "data: [DONE]\n\n"
        except (OSError, ValueError) as exc:  # the child went away or sent garbage mid-stream
            error = unreachable(exc)
            status, failure = error.status, error.message
            yield f"data: {json.dumps(error.body())}\n\n"
        finally:
            self.in_flight -= 1
            await resp.aclose()
            ttft = None if first is None else (first - started) * 1000
            self._record(p, model, started, status, gens=self._answers(texts, finishes, total) if status == 200
                         else None, stream=True, first_token_ms=ttft, first_token=first,
                         error=None if status == 200 else failure)

    def completion_service(self) -> VllmCompletions:
        return VllmCompletions(self)


class _Forwarded:
    """A child's JSON response, returned as it is (``model_dump`` for the route)."""

    def __init__(self, data: dict[str, Any]):
        self.data = data

    def model_dump(self) -> dict[str, Any]:
        return self.data


@dataclass
class PreparedForward:
    request_id: str
    route: Route
    body: dict[str, Any]


class VllmCompletions:
    """``POST /v1/completions`` forwarded to vLLM with the model name mapped (routing, auth,
    metrics and the request log stay here)."""

    endpoint = "completions"

    def __init__(self, chat: VllmChatService):
        self.chat = chat

    @staticmethod
    def new_request_id() -> str:
        from tunesmith.serve.completions import CompletionService

        return CompletionService.new_request_id()

    async def prepare(self, req: Any, request_id: str, route: Route) -> PreparedForward:
        problem = req.unsupported()
        if problem:
            raise APIError(400, problem[1], param=problem[0], code="unsupported_parameter")
        body = {**(req.model_extra or {}), **req.model_dump(exclude_unset=True, by_alias=True),
                "model": lora_name(route)}
        return PreparedForward(request_id, route, body)

    async def create(self, p: PreparedForward, model: str, started: float) -> _Forwarded:
        import httpx

        from tunesmith.serve.requestlog import Answer, LogEntry

        chat = self.chat
        chat._admit()
        try:
            resp = await chat.client.post("/v1/completions", json=p.body)
        except httpx.HTTPError as exc:
            raise unreachable(exc) from None
        finally:
            chat.in_flight -= 1
        if resp.status_code != 200:
            raise upstream_error(resp.status_code, resp.content)
        data = {**resp.json(), "id": p.request_id, "model": model}
        usage = data.get("usage") or {}
        latency = time.perf_counter() - started
        chat.metrics.observe(endpoint=self.endpoint, model=model, version=p.route.version, variant=p.route.variant,
                             status=200, latency_s=latency, prompt_tokens=int(usage.get("prompt_tokens") or 0),
                             completion_tokens=int(usage.get("completion_tokens") or 0))
        if chat.request_log is not None:
            prompt = p.body.get("prompt")
            chat.request_log.record(LogEntry(
                request_id=p.request_id, created=time.time() - latency, status=200, model=model,
                version=p.route.version, adapter=p.route.adapter, variant=p.route.variant,
                prompt=prompt if isinstance(prompt, str) else json.dumps(prompt)[:100_000],
                prompt_tokens=usage.get("prompt_tokens"), latency_ms=latency * 1000,
                answers=[Answer(c.get("text") or "", c.get("finish_reason"), 0) for c in data.get("choices", [])]))
        return _Forwarded(data)

    def record_error(self, request_id: str, started: float, error: APIError, *, model: str | None,
                     route: Route | None) -> None:
        self.chat.record_error(request_id, started, error, model=model, route=route, stream=False)


# ------------------------------------------------------------------ building the app
def build_vllm_app(cfg: Config, *, keys: ApiKeys, model: str | None = None, max_queue: int = 128,
                   default_max_tokens: int | None = None, aliases: AliasResolver | None = None) -> Loaded:
    """``build_app`` for ``serve.engine: vllm``: the tokenizer (not the weights) loads here; the
    child starts with the app (its lifespan) and stops with it.

    Raises:
        VllmError: vLLM is not installed, the base model is a GGUF file, or ``--model`` is not a
            LoRA version vLLM can serve.
    """
    from tunesmith.data.pipeline import input_shaper
    from tunesmith.models.loading import model_fingerprint, resolve_model
    from tunesmith.serve.app import create_app
    from tunesmith.serve.cache import ResponseCache
    from tunesmith.serve.catalog import ModelCatalog
    from tunesmith.serve.launch import Loaded, canary_rollout, log_scrubber, registry_aliases
    from tunesmith.serve.requestlog import RequestLog
    from tunesmith.train.recipe import model_reference
    from tunesmith.workspace import Workspace

    opts = cfg.serve.vllm
    executable = find_executable(opts.executable)
    ref = resolve_model(model_reference(cfg))
    if ref.is_gguf:
        raise VllmError(f"serve.engine: vllm needs a Hugging Face model (a folder or a hub id) as model.base, "
                        f"not {ref.ref!r} (GGUF); use serve.engine: tunesmith")
    ws = Workspace(cfg.workspace_dir)
    pinned = ws.get("model", model).id if model else None
    scrub = log_scrubber(cfg)
    versions, skipped = lora_versions(ws, model_fingerprint(ref), ref.ref, pinned)
    renderer = load_renderer(cfg, ref.location)
    port, api_key = opts.port or free_port(), secrets.token_hex(24)
    child = VllmProcess(vllm_command(executable, ref.location, list(versions.values()), opts, port=port,
                                     api_key=api_key), port=port, api_key=api_key,
                        startup_timeout=opts.startup_timeout)
    served = {v.id: v.created for v in versions.values()}
    champion = pinned or max(served, key=lambda v: served[v], default=None)
    catalog = ModelCatalog(cfg.project, served, champion=champion, pinned=pinned is not None,
                           aliases=aliases or registry_aliases(ws, cfg.project), created=time.time())
    service = VllmChatService(renderer, catalog, child=child, request_log=RequestLog(ws.db_path, scrub=scrub),
                              max_queue=max_queue, default_max_tokens=default_max_tokens or DEFAULT_MAX_TOKENS,
                              rollout=canary_rollout(cfg, ws, catalog),
                              cache=ResponseCache(cfg.serve.cache.max_entries), shape=input_shaper(cfg))
    app = create_app(service, keys=keys, metrics_require_key=cfg.serve.metrics.require_key)
    return Loaded(app, renderer, catalog, skipped)  # type: ignore[arg-type]
