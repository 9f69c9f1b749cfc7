"""The generation engine: every strategy in eval (and the server) answers through it.

One base model is loaded once; fine-tuned versions are PEFT adapters switched by name on top
of it (``adapter=None`` = the base alone). Prompts are rendered with THE chat-rendering
function used in training (:func:`tunesmith.models.chat.encode_prompt`) and stop on the
template's end-of-turn tokens (:func:`~tunesmith.models.chat.end_of_turn_ids`).

Decoding is continuous batching over a KV cache (:mod:`tunesmith.generate.batch`): up to
``max_batch_size`` prompts are in flight, the longest first; a finished answer leaves the
batch at once and the next prompt takes its place, so the batch stays full until the queue
runs dry. The tokens all prompts of a call start with (system prompt, instructions) are
run once and their keys/values copied to every row (:mod:`tunesmith.generate.kv`). Greedy
decoding in float32 yields the same tokens as one-at-a-time ``model.generate`` (tested here on tiny
models, and on the starter in benchmarks/bench_generate.py), because each row keeps its own
position ids and its padding is masked.

Greedy decoding drafts (:mod:`tunesmith.generate.draft`): where the engine's recent answers
agree on what follows a row's last tokens (a schema's keys, the end of a value), that guess is
fed with the row's last token in one pass and kept as far as each guessed token is the model's
own pick; a decode step of few rows costs little more for a few more tokens, so an answer takes
fewer, barely dearer steps. The answers are the greedy ones.

Precision is float32 by default: bf16 autocast is faster where this CPU's bf16 matmuls measure
faster (1.2x in benchmarks/results/bench_generate.txt, on AMX; some AVX512-BF16 hosts measured
half float32's rate, others four times it: :func:`tunesmith.models.precision.cpu_bf16_pays`) but changed 16 of the starter's 32
greedy answers there, so it is opt-in. bf16 answers also depend a little on what is computed with them: every
matmul rounds its output to 8 bits of mantissa, so the rows beside a prompt, or where its shared
prefix ends, can flip a close pick. Measured on the demo's model and 96 fresh tickets: 2 of 96
greedy answers differ between one call of 96 and one call each, and 2 between a call with and
without the shared prefix; in float32, 0 of 96 in each comparison. A bf16 server under
concurrent load is therefore not replay-exact. A bf16 engine stores its frozen linear weights in bf16
(:mod:`tunesmith.models.precision`): autocast would cast them to exactly those tensors on every
forward, so the answers are the same and each decode step skips ~135M element casts.

Out of memory (CUDA OOM, a CPU allocation failure, ``MemoryError``) does not end a run: the
unfinished prompts are re-queued, the batch limit halves, and the engine remembers the
smaller limit for later calls.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from tunesmith.errors import TunesmithError
from tunesmith.generate.adapters import AdapterError, adapter_dir, check_base, read_record
from tunesmith.generate.batch import DecodeBatch, Request, prefill_groups
from tunesmith.generate.constrain import Constrainer
from tunesmith.generate.draft import DraftBook
from tunesmith.generate.kv import FinishedRows, PrefixMemo, SharedPrefix
from tunesmith.generate.logprobs import TokenLogprob, pick_logprobs, sequence_logprobs
from tunesmith.generate.sampling import (
    FinishReason,
    GenerationConfig,
    StopChecker,
    pick_tokens,
    row_generator,
)
from tunesmith.generate.scoring import (
    SCORE_TOKENS,
    Score,
    ScoreRequest,
    corpus_perplexity,
    plan_batches,
    score_batch,
    scoring_prefix,
)
from tunesmith.models.chat import (
    ChatTemplateError,
    Messages,
    encode_prompt,
    end_of_turn_ids,
    render_for_training,
)
from tunesmith.models.precision import engine_bf16_weights

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from tunesmith.config import Config
    from tunesmith.models.loading import ModelRef

log = logging.getLogger(__name__)

PREFILL_TOKENS = 4096  # padded prompt tokens per prefill pass: bounds the attention scratch
# Tokens a drafted decode step may feed in all (rows x (1 + the longest draft)). A step's cost
# grows little with its tokens while they are few (the weights are read once either way) and
# at the prefill rate beyond: on the 2-core CPU one row of 9 tokens costs 1.7x one token, 32
# rows of 9 4.6x 32 rows of 1 (benchmarks/results/bench_draft.txt). Larger batches draft less.
DRAFT_STEP_TOKENS = 48

OnToken = Callable[[int, list[int]], None]  # (conversation index, its tokens so far): see Engine.generate
OnFinish = Callable[[int, "Generation"], None]  # (conversation index, its answer): see Engine.generate


def engine_options(cfg: Config) -> dict[str, Any]:
    """The :class:`Engine` settings a project's config gives (``eval.generation``'s batch size,
    drafts and precision, the model section's system prompt and chat template): eval, the
    server and retrain's comparison load their engines with them."""
    from tunesmith.models.precision import use_bf16

    gen = cfg.eval.generation
    return {"max_batch_size": gen.batch_size, "draft_tokens": gen.draft_tokens,
            "bf16_autocast": use_bf16(gen.precision), "system": cfg.model.system_prompt,
            "fallback_template": cfg.model.chat_template}


class GenerationError(TunesmithError):
    """A prompt the engine cannot run (too long, unrenderable) or memory it cannot find."""


@dataclass
class Generation:
    """One answer. ``tokens`` counts generated tokens, the end-of-turn token included
    (``token_ids`` holds them); ``seconds`` is the time from its prefill to its last token."""

    text: str
    tokens: int
    prompt_tokens: int
    finish_reason: FinishReason
    seconds: float
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None  # one per generated token, with cfg.logprobs set


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA OOM, a failed CPU allocation, or Python's MemoryError."""
    if isinstance(exc, MemoryError):
        return True
    cuda_oom = getattr(torch.cuda, "OutOfMemoryError", None)
    if cuda_oom is not None and isinstance(exc, cuda_oom):
        return True
    msg = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg)


def _is_peft(model: Any) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # peft is only needed once adapters are used
        return False
    return isinstance(model, PeftModel)


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class Engine:
    """Batched generation and scoring over one base model and named PEFT adapters.

    Args:
        model: a causal LM (or a ``PeftModel`` already holding adapters).
        tokenizer: its tokenizer; supplies the chat template.
        system: default system prompt (used when a conversation has none), as in training.
        fallback_template: named template for tokenizers without one, as in training.
        max_batch_size: prompts in flight at once; halves on out-of-memory.
        max_batch_tokens: optional cap on rows x (longest prompt + new tokens) in flight.
        bf16_autocast: run matmuls in bfloat16 (faster on CPUs with AVX512-BF16/AMX, but
            greedy answers may differ from float32; see benchmarks/bench_generate.py).
        share_prefix: compute the prompts' common first tokens (system prompt, instructions)
            once per call instead of once per prompt.
        draft_tokens: greedy decoding guesses up to this many next tokens per row from the
            engine's recent answers and checks them in one step (:mod:`.draft`); the answers
            are the greedy ones either way. 0 = off.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        system: str | None = None,
        fallback_template: str | None = None,
        max_batch_size: int = 16,
        max_batch_tokens: int | None = None,
        bf16_autocast: bool = False,
        share_prefix: bool = True,
        draft_tokens: int = 8,
    ):
        if max_batch_size < 1 or (max_batch_tokens is not None and max_batch_tokens < 1):
            raise GenerationError(
                f"max_batch_size and max_batch_tokens must be >= 1, got {max_batch_size}, {max_batch_tokens}"
            )
        if draft_tokens < 0:
            raise GenerationError(f"draft_tokens must be >= 0 (0 = off), got {draft_tokens}")
        self.model = model.eval()
        if bf16_autocast:  # frozen weights stored as the bf16 autocast casts them to each step
            engine_bf16_weights(self.model)  # (same results; a caller's trainable weights stay)
        self.tokenizer = tokenizer
        self.system, self.fallback_template = system, fallback_template
        self.max_batch_size, self.max_batch_tokens = max_batch_size, max_batch_tokens
        self.bf16_autocast, self.share_prefix = bf16_autocast, share_prefix
        self.stop_ids = end_of_turn_ids(tokenizer, fallback_template=fallback_template)
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (self.stop_ids[0] if self.stop_ids else 0)
        self.context = getattr(model.config, "max_position_embeddings", None)
        self.adapters: dict[str, Path | None] = dict.fromkeys(model.peft_config) if _is_peft(model) else {}
        self.full_models: dict[str, PreTrainedModel] = {}  # full fine-tunes, by name (see add_adapter)
        self.base_ref: ModelRef | None = None
        self.oom_backoffs = 0  # how often memory ran out (the limits shrank that often)
        self._lock = threading.RLock()  # one model, one caller at a time (the server shares it)
        self._peak = 0  # most rows run together in the current attempt
        self._constrainer: Constrainer | None = None  # built on the first constrained call
        self.prefix_memo = PrefixMemo()  # the system prompt's keys/values across calls
        self.finished = FinishedRows()  # finished answers' keys/values for the scorer (off: capacity 0)
        self._active: str | None = None  # the adapter the running block uses (a prefix memo key)
        self.drafts = DraftBook(length=draft_tokens) if draft_tokens else None

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(
        cls,
        base_ref: str,
        *,
        adapters: dict[str, Path] | None = None,
        dtype: str = "float32",
        device: str = "auto",
        trust_remote_code: bool = False,
        allow_pickle: bool = False,
        **kw: Any,
    ) -> Engine:
        """Load the base model once (``starter``, a folder, a ``.gguf`` or a hub id) and the
        named adapters (model version folders or PEFT adapter folders) on top of it."""
        from tunesmith.models.loading import load_model, load_tokenizer, resolve_model

        ref = resolve_model(base_ref)
        tokenizer = load_tokenizer(ref, trust_remote_code=trust_remote_code)
        model = load_model(ref, dtype=dtype, device=device, trust_remote_code=trust_remote_code,
                           allow_pickle=allow_pickle)
        model.requires_grad_(False)  # the engine's own: frozen (and bf16-storable, see __init__)
        engine = cls(model, tokenizer, **kw)
        engine.base_ref = ref
        for name, path in (adapters or {}).items():
            engine.add_adapter(name, path)
        return engine

    def add_adapter(self, name: str, path: str | Path) -> None:
        """Load a PEFT adapter under ``name`` without touching (or reloading) the base weights;
        a full fine-tune's model version loads as a second model under that name.

        Raises:
            AdapterError: the name is taken, the folder holds no adapter, the adapter was
                trained on another base, or it is a prompt-learning adapter.
        """
        from peft import PeftConfig

        if name in self.adapters:
            raise AdapterError(f"adapter {name!r} is already loaded (from {self.adapters[name]})")
        if self.base_ref is not None:
            from tunesmith.models.loading import model_fingerprint

            check_base(Path(path), model_fingerprint(self.base_ref), self.base_ref.ref)
        record = read_record(Path(path).expanduser())
        if record and record.get("weights") == "model":
            self._add_full_model(name, Path(path).expanduser() / "model")
            return
        folder = adapter_dir(path)
        if PeftConfig.from_pretrained(str(folder)).is_prompt_learning:
            raise AdapterError(
                f"adapter {folder}: prompt-learning adapters (prompt tuning) are not supported by "
                "the generation engine; train with LoRA or DoRA"
            )
        with self._lock:
            self._attach(name, folder)
        self.adapters[name] = folder

    def _add_full_model(self, name: str, folder: Path) -> None:
        """A full fine-tune is a whole second model (same tokenizer, its own weights): loaded
        beside the base in the base's dtype and device, and swapped in while it is in use."""
        from tunesmith.models.loading import load_model

        if not folder.is_dir():
            raise AdapterError(f"model version {folder.parent}: its weights folder {folder} is missing")
        first = next(self.model.parameters())
        model = load_model(str(folder), dtype=first.dtype, device=str(first.device)).requires_grad_(False)
        if self.bf16_autocast:
            engine_bf16_weights(model)
        with self._lock:
            self.full_models[name] = model
        self.adapters[name] = folder

    def _attach(self, name: str, folder: Path) -> None:
        try:
            if _is_peft(self.model):
                self.model.load_adapter(str(folder), adapter_name=name, is_trainable=False)
            else:
                from peft import PeftModel

                self.model = PeftModel.from_pretrained(self.model, str(folder), adapter_name=name,
                                                       is_trainable=False)
        except (RuntimeError, ValueError, KeyError) as exc:  # shape or module-name mismatch
            raise AdapterError(
                f"adapter {folder} does not fit this base model ({str(exc).splitlines()[0][:200]}); "
                "was it trained on another model?"
            ) from exc
        self.model.eval()

    @contextlib.contextmanager
    def _using(self, adapter: str | None) -> Iterator[None]:
        """Activate ``adapter`` (None = base model, adapters disabled) for the block. Blocks nest
        (the scorer called back from generation): PEFT's ``disable_adapter`` restores the state
        it found."""
        if adapter is not None and adapter not in self.adapters:
            known = ", ".join(self.adapters) or "none"
            raise AdapterError(f"unknown adapter {adapter!r}; loaded adapters: {known}")
        self._active = adapter
        if adapter in self.full_models:
            base, self.model = self.model, self.full_models[adapter]
            try:
                yield
            finally:
                self.model = base
        elif adapter is not None:
            self.model.set_adapter(adapter)
            yield
        elif _is_peft(self.model):
            with self.model.disable_adapter():
                yield
        else:
            yield

    def running(self, adapter: str | None) -> contextlib.AbstractContextManager[None]:
        """``self.model`` as ``adapter`` (None = the base), under the engine's lock, precision and
        inference mode, for callers that drive the model themselves (lm-evaluation-harness)."""
        return self._running(adapter)

    @contextlib.contextmanager
    def _running(self, adapter: str | None) -> Iterator[None]:
        device = next(self.model.parameters()).device
        autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if self.bf16_autocast
                    else contextlib.nullcontext())
        with self._lock, self._using(adapter), torch.inference_mode(), autocast:
            yield

    # ------------------------------------------------------------------ generation
    def encode(self, conversation: Messages) -> list[int]:
        """Prompt token ids, rendered exactly as training renders the prompt."""
        return encode_prompt(self.tokenizer, conversation, system=self.system,
                             fallback_template=self.fallback_template)

    def generate(
        self, conversations: list[Messages], cfg: GenerationConfig | None = None, *,
        adapter: str | None = None, on_token: OnToken | None = None, on_finish: OnFinish | None = None,
    ) -> list[Generation]:
        """Answer each conversation (in order). ``adapter=None`` uses the base model alone.

        ``on_finish(index, generation)`` is called on the decoding thread as each answer ends,
        before its row leaves the batch (the others wait): with :attr:`finished` keeping rows,
        the confidence scorer runs there on the answer's own keys/values
        (:func:`tunesmith.review.confidence.generate_scored`).

        ``on_token(index, token_ids)`` is called on the decoding thread after each new token of
        conversation ``index``, with its tokens so far (the engine's own list: read it, do not
        keep or change it). It must not raise. After an out-of-memory back-off an unfinished
        answer starts again from its first token (the list shrinks), and the same tokens come
        again: greedy, or the same seeded draws. The server streams answers with it.

        Raises:
            GenerationError: a conversation cannot be rendered, is longer than the model's
                context, or does not fit in memory even alone.
            AdapterError: ``adapter`` is not loaded.
        """
        return self._generate(self._encode_all(conversations), cfg or GenerationConfig(), adapter, self.stop_ids,
                              on_token, on_finish)

    def complete(
        self, texts: list[str], cfg: GenerationConfig | None = None, *, adapter: str | None = None,
    ) -> list[Generation]:
        """Continue each raw text (no chat template): plain language-model completion, e.g.
        for self-distilled general text. Ends at the tokenizer's end-of-text token, an
        end-of-turn token, a stop string or the token budget.

        Raises:
            GenerationError: a text is empty or longer than the model's context.
        """
        prompts = [self.tokenizer(text, add_special_tokens=True)["input_ids"] for text in texts]
        return self.complete_ids(prompts, cfg, adapter=adapter)

    def complete_ids(
        self, prompts: list[list[int]], cfg: GenerationConfig | None = None, *, adapter: str | None = None,
        on_token: OnToken | None = None,
    ) -> list[Generation]:
        """:meth:`complete` for prompts given as token ids (the server's ``/v1/completions``).

        Raises:
            GenerationError: a prompt is empty or longer than the model's context.
        """
        for i, ids in enumerate(prompts):
            if not ids:
                raise GenerationError(f"text {i}: empty prompt; give at least one token to continue")
        return self._generate(prompts, cfg or GenerationConfig(), adapter, self.raw_stop_ids, on_token)

    @property
    def raw_stop_ids(self) -> list[int]:
        """Where a raw-text continuation ends: an end-of-turn token or the end-of-text token."""
        eos = self.tokenizer.eos_token_id
        return [*self.stop_ids, *([eos] if eos is not None and eos not in self.stop_ids else [])]

    def _generate(self, prompts: list[list[int]], cfg: GenerationConfig, adapter: str | None,
                  stop_ids: list[int], on_token: OnToken | None = None,
                  on_finish: OnFinish | None = None) -> list[Generation]:
        device = next(self.model.parameters()).device
        requests = [Request(i, p, self._budget(i, p, cfg), row_generator(cfg, i, device))
                    for i, p in enumerate(prompts)]
        if cfg.grammar is not None:
            constrainer = self.constrainer()
            for r in requests:
                r.matcher = constrainer.matcher(cfg.grammar)
        checker = StopChecker(self.tokenizer, stop_ids, cfg.stop)

        def retry() -> None:
            for r in requests:
                if r.finish is None:
                    r.reset(row_generator(cfg, r.index, device))

        def attempt() -> None:
            self._decode([r for r in requests if r.finish is None], cfg, checker, on_token, on_finish)

        with self._running(adapter):
            self._with_backoff(attempt, retry, what="generation")
        return [self._result(r, checker) for r in requests]

    def constrainer(self) -> Constrainer:
        """The grammar engine for this tokenizer (built once; see :mod:`.constrain`)."""
        if self._constrainer is None:
            vocab = self.model.get_output_embeddings().weight.shape[0]
            self._constrainer = Constrainer(self.tokenizer, self.stop_ids, vocab)
        return self._constrainer

    def _encode_all(self, conversations: list[Messages]) -> list[list[int]]:
        prompts = []
        for i, conv in enumerate(conversations):
            try:
                prompts.append(self.encode(conv))
            except ChatTemplateError as exc:
                raise GenerationError(f"conversation {i}: {exc}") from exc
        return prompts

    def _budget(self, index: int, prompt: list[int], cfg: GenerationConfig) -> int:
        """New tokens allowed: ``max_new_tokens``, cut to what the context has left."""
        if self.context is None:
            return cfg.max_new_tokens
        if len(prompt) >= self.context:
            raise GenerationError(
                f"conversation {index}: the prompt has {len(prompt)} tokens, the model's context "
                f"is {self.context}; shorten it (fewer few-shot examples or retrieved passages)"
            )
        return min(cfg.max_new_tokens, self.context - len(prompt))

    def _result(self, r: Request, checker: StopChecker) -> Generation:
        assert r.finish is not None  # every request ends before _decode returns
        text, reason = checker.text(r.generated, r.finish)
        logprobs = list(r.logprobs) if r.logprobs else None
        return Generation(text, len(r.generated), len(r.prompt), reason, r.seconds, list(r.generated), logprobs)

    def _decode(self, requests: list[Request], cfg: GenerationConfig, checker: StopChecker,
                on_token: OnToken | None = None, on_finish: OnFinish | None = None) -> None:
        """Continuous batching: prefill newcomers while there is room (in passes of similar
        length), else decode one step for every row in flight."""
        pending = deque(sorted(requests, key=lambda r: len(r.prompt), reverse=True))
        prefix = None
        if self.share_prefix:  # the call's own common prefix, else the one consecutive calls share
            prompts = [r.prompt for r in requests]
            prefix = (SharedPrefix.build(self.model, prompts)
                      or self.prefix_memo.get((id(self.model), self._active, "generate"), self.model, prompts))
        skip = prefix.length if prefix else 0
        # drafts are checked against the greedy pick: sampling and per-token logprobs step one by one
        drafting = self.drafts is not None and cfg.greedy and cfg.logprobs is None
        batch: DecodeBatch | None = None
        while pending or batch is not None:
            fresh = self._admit(pending, batch, skip)
            for group in prefill_groups(fresh, skip):
                new, logits = DecodeBatch.prefill(self.model, group, self.pad_id, prefix)
                new.last = self._advance(group, logits, cfg, checker, self._constrainer, on_token)
                batch = new if batch is None else batch.merge(new)
            if not fresh:
                assert batch is not None
                drafts = self._propose(batch.requests) if drafting and batch.mergeable else None
                if drafts is not None and any(drafts):
                    logits = batch.step_drafts(self.model, drafts, self.pad_id)
                    batch.accept([len(d) for d in drafts],
                                 *self._advance_drafts(batch.requests, logits, drafts, cfg, checker, on_token))
                else:
                    logits = batch.step(self.model)
                    batch.last = self._advance(batch.requests, logits, cfg, checker, self._constrainer, on_token)
            if self.finished.capacity > 0 or on_finish is not None:
                self._finished(batch, checker, on_finish)
            if self.drafts is not None:
                for r in batch.requests:
                    if r.finish is not None:
                        self.drafts.learn(self._weights_key(), r.generated)
            batch = batch.retire()

    def _finished(self, batch: DecodeBatch, checker: StopChecker, on_finish: OnFinish | None) -> None:
        """Each row that has just finished (before it retires): its keys/values into
        :attr:`finished`, then ``on_finish``."""
        for i, r in enumerate(batch.requests):
            if r.finish is None:
                continue
            if self.finished.capacity > 0 and (cache := batch.row_cache(i)) is not None:
                self.finished.put(self._weights_key(), r.prompt + r.generated[:-1], cache)
            if on_finish is not None:
                on_finish(r.index, self._result(r, checker))

    def _weights_key(self) -> tuple[int, str | None]:
        """The model and adapter now running (what the memos that hold its outputs are keyed by)."""
        return id(self.model), self._active

    def _propose(self, requests: list[Request]) -> list[list[int]]:
        """Each row's draft: what followed its last tokens in recent answers, cut to its token
        budget and to what its grammar allows."""
        assert self.drafts is not None
        key, drafts = self._weights_key(), []
        room = max(0, DRAFT_STEP_TOKENS // len(requests) - 1)  # every row is fed 1 + the longest draft
        for r in requests:
            draft = self.drafts.propose(key, r.generated, min(room, r.budget - len(r.generated) - 1))
            if draft and r.matcher is not None:
                draft = draft[: r.matcher.validate_tokens(draft)]
            drafts.append(draft)
        return drafts

    def _advance_drafts(self, requests: list[Request], logits: torch.Tensor, drafts: list[list[int]],
                        cfg: GenerationConfig, checker: StopChecker,
                        on_token: OnToken | None) -> tuple[list[int], torch.Tensor]:
        """Keep each row's draft tokens while each is the model's greedy pick after the tokens
        before it (among what its grammar allows: the argmax over the whole vocabulary settles
        it at once, else the grammar's mask is applied to that position), then pick one more
        token as :meth:`_advance` does, from the logits after the last kept one. Returns the
        tokens each row gained and every row's newest token."""
        assert self.drafts is not None
        width = logits.shape[1]
        best = logits.argmax(-1).tolist()
        gained, open_rows, columns = [0] * len(requests), [], []
        now = time.perf_counter()
        for i, (r, draft) in enumerate(zip(requests, drafts, strict=True)):
            column = width - 1 - len(draft)
            for token in draft:
                if r.finish is not None or (best[i][column] != token
                                            and not self._allowed_best(r, logits[i, column], token)):
                    break
                self._record(r, token, checker, now, on_token)
                gained[i] += 1
                column += 1
            if r.finish is None:
                open_rows.append(i)
                columns.append(column)
        self.drafts.proposed += sum(len(d) for d in drafts)
        self.drafts.accepted += sum(gained)
        if open_rows:
            rows = torch.tensor(open_rows, device=logits.device)
            picked = logits[rows, torch.tensor(columns, device=logits.device)]
            self._advance([requests[i] for i in open_rows], picked, cfg, checker, self._constrainer, on_token)
            for i in open_rows:
                gained[i] += 1
        last = torch.tensor([r.generated[-1] for r in requests], device=logits.device)
        return gained, last

    def _allowed_best(self, r: Request, logits: torch.Tensor, token: int) -> bool:
        """Whether ``token`` is the greedy pick among what ``r``'s grammar allows now (the
        check for a draft token that is not the best over the whole vocabulary)."""
        if r.matcher is None or self._constrainer is None:
            return False
        row = logits[None].clone()
        self._constrainer.mask(row, [r.matcher])
        return int(row.argmax()) == token

    def _admit(self, pending: deque[Request], batch: DecodeBatch | None, skip: int) -> list[Request]:
        """Take prompts off the queue while rows, the token budget and the prefill size allow
        (``skip``: the shared prefix's length, which prefill does not recompute)."""
        if not pending or (batch is not None and not batch.mergeable):
            return []
        rows = len(batch) if batch is not None else 0
        longest = max((len(r.prompt) + r.budget for r in batch.requests), default=0) if batch else 0
        fresh: list[Request] = []
        while pending and rows + len(fresh) < self.max_batch_size:
            r = pending[0]
            span = max(longest, len(r.prompt) + r.budget)
            n = rows + len(fresh) + 1
            if n > 1 and self.max_batch_tokens is not None and n * span > self.max_batch_tokens:
                break
            if fresh and (len(fresh) + 1) * (len(fresh[0].prompt) - skip) > PREFILL_TOKENS:
                break  # the queue is sorted longest first: fresh[0] is the widest
            fresh.append(pending.popleft())
            longest = span
        self._peak = max(self._peak, rows + len(fresh))
        return fresh

    @staticmethod
    def _advance(requests: list[Request], logits: torch.Tensor, cfg: GenerationConfig,
                 checker: StopChecker, constrainer: Constrainer | None = None,
                 on_token: OnToken | None = None) -> torch.Tensor:
        """Pick each row's next token (among those its grammar allows, if it has one), record
        it, and mark rows that are done. Logprobs (``cfg.logprobs``) come from the raw logits,
        before the grammar's mask (see :mod:`.logprobs`)."""
        raw = logits.clone() if cfg.logprobs is not None and constrainer is not None else logits
        if constrainer is not None:
            constrainer.mask(logits, [r.matcher for r in requests])
        tokens = pick_tokens(logits, cfg, [r.generator for r in requests])
        if cfg.logprobs is not None:
            for r, record in zip(requests, pick_logprobs(raw, tokens, cfg.logprobs), strict=True):
                r.logprobs.append(record)
        now = time.perf_counter()
        for r, token in zip(requests, tokens.tolist(), strict=True):
            Engine._record(r, token, checker, now, on_token)
        return tokens

    @staticmethod
    def _record(r: Request, token: int, checker: StopChecker, now: float, on_token: OnToken | None) -> None:
        """Append ``token`` to ``r``'s answer: its grammar follows, and it may end the answer."""
        if r.matcher is not None:
            Constrainer.consume(r.matcher, token)
        r.generated.append(token)
        r.finish = checker.finished(r.generated, r.budget)
        if r.finish is not None:
            r.seconds = now - r.started
        if on_token is not None:
            on_token(r.index, r.generated)

    # ------------------------------------------------------------------ out of memory
    def _with_backoff(self, attempt: Callable[[], None], retry: Callable[[], None], what: str) -> None:
        """Run ``attempt``; on out-of-memory halve the batch limits, ``retry()`` and go again."""
        while True:
            self._peak = 0
            try:
                attempt()
                return
            except (RuntimeError, MemoryError) as exc:
                if not is_out_of_memory(exc):
                    raise
                failed_at, message = self._peak, str(exc).splitlines()[0][:200]
            # outside the except block: the traceback no longer pins the failed batch's tensors
            _free_memory()
            if failed_at <= 1:
                raise GenerationError(
                    f"{what}: out of memory with a single sequence in flight ({message}); use a "
                    "smaller model, shorter prompts or fewer max_new_tokens"
                )
            self.max_batch_size = max(1, failed_at // 2)
            if self.max_batch_tokens is not None:
                self.max_batch_tokens = max(1, self.max_batch_tokens // 2)
            self.oom_backoffs += 1
            log.warning("%s: out of memory at %d sequences in flight; retrying with at most %d",
                        what, failed_at, self.max_batch_size)
            retry()

    # ------------------------------------------------------------------ scoring
    def loglikelihood(self, texts: list[str], *, adapter: str | None = None) -> list[Score]:
        """NLL of each text's tokens (each token given the ones before it; the first token,
        having no context, is not scored unless the tokenizer adds a BOS token)."""
        requests = []
        for text in texts:
            ids = self.tokenizer(text, add_special_tokens=True)["input_ids"]
            requests.append(ScoreRequest(ids, [(1, len(ids))] if len(ids) > 1 else []))
        return self._score(requests, adapter)

    def perplexity(self, texts: list[str], *, adapter: str | None = None) -> float:
        """Corpus perplexity of ``texts``: exp(total NLL / total scored tokens)."""
        return corpus_perplexity(self.loglikelihood(texts, adapter=adapter))

    def score_conversations(self, conversations: list[Messages], *, adapter: str | None = None) -> list[Score]:
        """NLL of the assistant turns only (answer + end-of-turn token, as trained), given the
        rendered conversation before them: the test-split perplexity of a chat model."""
        requests = []
        for i, conv in enumerate(conversations):
            try:
                rendered = render_for_training(self.tokenizer, conv, system=self.system,
                                               fallback_template=self.fallback_template)
            except ChatTemplateError as exc:
                raise GenerationError(f"conversation {i}: {exc}") from exc
            spans = [(max(a, 1), b) for a, b in rendered.token_spans() if b > max(a, 1)]
            requests.append(ScoreRequest(rendered.input_ids, spans))
        return self._score(requests, adapter)

    def rank(self, conversations: list[Messages], choices: list[str], *,
             adapter: str | None = None) -> list[list[float]]:
        """Rank classification: for each conversation, the log-probability of each choice as
        the whole answer (its tokens and the end-of-turn token). Each conversation's prompt
        runs once; its keys/values are shared by the choices (the scorer's common prefix)."""
        out = []
        for conv in conversations:
            scores = self.score_conversations([[*conv, {"role": "assistant", "content": c}] for c in choices],
                                              adapter=adapter)
            out.append([-s.nll for s in scores])
        return out

    def score(self, requests: list[ScoreRequest], *, adapter: str | None = None) -> list[Score]:
        """NLL of given token spans of given token sequences, batched, the tokens every request
        starts with run once (answer confidence scores a field's allowed values with it).

        Raises:
            GenerationError: a sequence is longer than the model's context.
        """
        return self._score(requests, adapter)

    def prompt_logprobs(self, prompts: list[list[int]], *, top: int = 0,
                        adapter: str | None = None) -> list[list[TokenLogprob | None]]:
        """Every token's log-probability given the tokens before it (the first: None), with the
        ``top`` most likely alternatives: OpenAI's ``echo`` + ``logprobs`` for a raw prompt.

        Raises:
            GenerationError: a prompt is longer than the model's context.
        """
        for i, ids in enumerate(prompts):
            if self.context is not None and len(ids) > self.context:
                raise GenerationError(f"text {i}: {len(ids)} tokens exceed the model's context of {self.context}")
        results: list[list[TokenLogprob | None] | None] = [None if len(p) > 1 else [None] * len(p) for p in prompts]

        def attempt() -> None:
            todo = [i for i, r in enumerate(results) if r is None]
            tokens = min(SCORE_TOKENS, self.max_batch_tokens or SCORE_TOKENS)
            for batch in plan_batches([len(prompts[i]) for i in todo], max_rows=self.max_batch_size,
                                      max_tokens=tokens):
                idx = [todo[j] for j in batch]
                self._peak = max(self._peak, len(idx))
                for i, r in zip(idx, sequence_logprobs(self.model, [prompts[i] for i in idx], self.pad_id, top),
                                strict=True):
                    results[i] = r

        with self._running(adapter):
            self._with_backoff(attempt, lambda: None, what="scoring")
        return [r for r in results if r is not None]

    def _score(self, requests: list[ScoreRequest], adapter: str | None) -> list[Score]:
        for i, r in enumerate(requests):
            if self.context is not None and len(r.ids) > self.context:
                raise GenerationError(
                    f"text {i}: {len(r.ids)} tokens exceed the model's context of {self.context}"
                )
        results: list[Score | None] = [Score(0.0, 0) if not r.spans else None for r in requests]

        def attempt() -> None:
            todo = [i for i, s in enumerate(results) if s is None]
            prefix = scoring_prefix(self.model, [requests[i] for i in todo]) if self.share_prefix else None
            skip = prefix.length if prefix is not None else 0
            tokens = min(SCORE_TOKENS, self.max_batch_tokens or SCORE_TOKENS)
            for batch in plan_batches([len(requests[i].ids) - skip for i in todo],
                                      max_rows=self.max_batch_size, max_tokens=tokens):
                idx = [todo[j] for j in batch]
                self._peak = max(self._peak, len(idx))
                scores = score_batch(self.model, [requests[i] for i in idx], self.pad_id, prefix)
                for i, s in zip(idx, scores, strict=True):
                    results[i] = s

        with self._running(adapter):
            self._with_backoff(attempt, lambda: None, what="scoring")
        return [s for s in results if s is not None]
