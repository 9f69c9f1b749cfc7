"""Render a conversation to text and tokens: ONE function for training, eval and serving.

The most common silent fine-tuning failure is a model trained on one prompt format and
queried with another (a missing generation header, a different system prompt, no EOS after
the answer: the model then never stops, or scores far below what it learned). So every stage
renders through :func:`render` and tokenises through :func:`encode`, and the training render
is *derived from* the generation render: for each assistant turn, the generation prompt is
rendered exactly as generation will render it, and the trained span is what the template
adds after it (the answer plus the end-of-turn marker).

Tokenisation is done once on the whole conversation, and assistant spans are mapped to
tokens through the offsets mapping (not by tokenising pieces separately, which breaks
SentencePiece tokenizers that add a prefix space to every piece). A token that straddles the
prompt/answer boundary (e.g. ``"[/INST]" + " Hello"`` merged into ``"ĠHello"``) is trained,
and the turn is flagged as inconsistent with generation: see :func:`check_prompt_consistency`.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tunesmith.data.example import ROLES
from tunesmith.errors import TunesmithError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

Messages = list[dict[str, str]]

FALLBACK_TEMPLATES = ("chatml", "alpaca", "plain")
_ALPACA_PREAMBLE = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request."
)


class ChatTemplateError(TunesmithError):
    """No usable chat template, or a conversation the template cannot render."""


class PromptMismatchError(TunesmithError):
    """The tokens trained as a prompt differ from the tokens generation will feed."""


# --------------------------------------------------------------------------- templates
def _single_token(tokenizer: PreTrainedTokenizerBase, text: str) -> bool:
    return text in tokenizer.get_added_vocab()


def fallback_chat_template(name: str, tokenizer: PreTrainedTokenizerBase) -> str:
    """A named Jinja chat template for base models that ship none.

    Every template ends an assistant turn with a single stop token: ``<|im_end|>`` when the
    tokenizer has it as a token (ChatML models), else the tokenizer's EOS token; without it
    a trained model would not learn to stop.
    """
    if name not in FALLBACK_TEMPLATES:
        raise ChatTemplateError(
            f"fallback_template: unknown template {name!r}; choose one of {', '.join(FALLBACK_TEMPLATES)}"
        )
    if tokenizer.eos_token is None and not _single_token(tokenizer, "<|im_end|>"):
        raise ChatTemplateError(
            f"fallback_template {name!r} needs an end-of-turn token, but the tokenizer has no "
            "EOS token; add one (tokenizer.eos_token) or use a model with a chat template"
        )
    end = "<|im_end|>" if _single_token(tokenizer, "<|im_end|>") else tokenizer.eos_token
    return _TEMPLATE_BUILDERS[name](end)


def _chatml(end: str) -> str:
    return (
        "{% for m in messages %}"
        "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '" + end + "' + '\\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )


def _alpaca(end: str) -> str:
    # Answers start after a newline, never after a space, so no BPE merge crosses the boundary.
    return (
        "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] + '\\n\\n' }}"
        "{% else %}{{ '" + _ALPACA_PREAMBLE + "\\n\\n' }}{% endif %}"
        "{% for m in messages if m['role'] != 'system' %}"
        "{% if m['role'] == 'user' %}{{ '### Instruction:\\n' + m['content'] + '\\n\\n' }}"
        "{% else %}{{ '### Response:\\n' + m['content'] + '" + end + "' + '\\n\\n' }}{% endif %}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '### Response:\\n' }}{% endif %}"
    )


def _plain(end: str) -> str:
    return (
        "{% for m in messages %}"
        "{% if m['role'] == 'system' %}{{ m['content'] + '\\n\\n' }}"
        "{% elif m['role'] == 'user' %}{{ 'User:\\n' + m['content'] + '\\n\\n' }}"
        "{% else %}{{ 'Assistant:\\n' + m['content'] + '" + end + "' + '\\n\\n' }}{% endif %}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ 'Assistant:\\n' }}{% endif %}"
    )


_TEMPLATE_BUILDERS = {"chatml": _chatml, "alpaca": _alpaca, "plain": _plain}


def resolve_template(
    tokenizer: PreTrainedTokenizerBase, fallback_template: str | None = None
) -> str | None:
    """The template to render with: ``None`` = the tokenizer's own, else a fallback's text.

    Raises:
        ChatTemplateError: the tokenizer has no template and no fallback is named.
    """
    if getattr(tokenizer, "chat_template", None):
        return None
    if fallback_template is None:
        name = getattr(tokenizer, "name_or_path", "") or "this model"
        raise ChatTemplateError(
            f"the tokenizer of {name} has no chat template (a base model?). Set "
            f"`fallback_template` to one of {', '.join(FALLBACK_TEMPLATES)} to choose a prompt "
            "format, or use an instruct model that ships a template."
        )
    return fallback_chat_template(fallback_template, tokenizer)


# --------------------------------------------------------------------------- rendering
def with_system(messages: Messages, system: str | None) -> Messages:
    """Prepend the configured system prompt unless the conversation brings its own."""
    if system is None or (messages and messages[0]["role"] == "system"):
        return list(messages)
    return [{"role": "system", "content": system}, *messages]


def _check_messages(messages: Messages) -> None:
    for i, m in enumerate(messages):
        if m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise ChatTemplateError(
                f"message {i}: expected {{'role': one of {ROLES}, 'content': str}}, got {m!r:.120}"
            )
    turns = [m["role"] for m in messages if m["role"] != "system"]
    if not turns or turns[0] != "user":
        raise ChatTemplateError(
            f"a conversation needs a user turn before any assistant turn; roles were {turns}"
        )


def render(
    tokenizer: PreTrainedTokenizerBase,
    messages: Messages,
    *,
    add_generation_prompt: bool,
    system: str | None = None,
    fallback_template: str | None = None,
) -> str:
    """THE rendering function: conversation -> text, for training, eval and serving alike.

    Args:
        tokenizer: supplies the chat template (and the special tokens the template uses).
        messages: ``{"role", "content"}`` turns; must contain a user turn before any answer.
        add_generation_prompt: append the assistant header (True when generating).
        system: default system prompt, used when the conversation has none.
        fallback_template: named template (``chatml``, ``alpaca``, ``plain``) used only when
            the tokenizer has no chat template.

    Raises:
        ChatTemplateError: no template, or malformed messages.
    """
    from jinja2.exceptions import TemplateError

    template = resolve_template(tokenizer, fallback_template)
    msgs = with_system(messages, system)
    _check_messages(msgs)
    try:
        return tokenizer.apply_chat_template(
            msgs,
            chat_template=template,
            add_generation_prompt=add_generation_prompt,
            tokenize=False,
        )
    except TemplateError as exc:  # e.g. "roles must alternate user/assistant"
        roles = [m["role"] for m in msgs]
        raise ChatTemplateError(f"the chat template rejected roles {roles}: {exc}") from exc


def encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Tokenise rendered text. No special tokens are added: the template wrote them."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def encode_prompt(
    tokenizer: PreTrainedTokenizerBase,
    messages: Messages,
    *,
    system: str | None = None,
    fallback_template: str | None = None,
) -> list[int]:
    """The token ids generation feeds the model for ``messages`` (ending with the header)."""
    text = render(
        tokenizer,
        messages,
        add_generation_prompt=True,
        system=system,
        fallback_template=fallback_template,
    )
    return encode(tokenizer, text)


# --------------------------------------------------------------------------- training render
@dataclass(slots=True)
class AssistantTurn:
    """One assistant turn inside a training render.

    ``char_*`` delimit the trained text (answer + end-of-turn marker, trailing whitespace
    excluded); ``token_*`` the tokens overlapping it. ``consistent`` is True when the tokens
    before ``token_start`` are exactly what generation feeds for this turn.
    """

    char_start: int
    char_end: int
    token_start: int
    token_end: int
    consistent: bool


@dataclass(slots=True)
class TrainingRender:
    text: str
    input_ids: list[int]
    turns: list[AssistantTurn]

    def token_spans(self) -> list[tuple[int, int]]:
        return [(t.token_start, t.token_end) for t in self.turns]


def _shared_prefix(a: str, b: str) -> int:
    """Length of the common prefix of two strings."""
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)


def _turn_text(prompt: str, after: str, content: str) -> tuple[int, str] | None:
    """Where, in ``after`` (the conversation rendered up to this turn), the trained text starts.

    Normally the template renders the turn as ``prompt + answer + end-of-turn``; when it
    renders it some other way, fall back to finding the answer itself.
    """
    if after.startswith(prompt):
        return len(prompt), after[len(prompt) :].rstrip()
    # Search only past the point where the two renders part ways, not in earlier turns.
    shared = _shared_prefix(prompt, after)
    idx = after.find(content.strip(), shared) if content.strip() else -1
    return (idx, after[idx:].rstrip()) if idx >= 0 else None


def _char_spans(
    tokenizer: PreTrainedTokenizerBase, messages: Messages, full: str, **kw: str | None
) -> list[tuple[int, int, bool]]:
    """Char span of each assistant turn's trained text in ``full``, and whether it sits
    exactly where generation's prompt for that turn ends."""
    spans, cursor = [], 0
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prompt = render(tokenizer, messages[:i], add_generation_prompt=True, **kw)
        after = render(tokenizer, messages[: i + 1], add_generation_prompt=False, **kw)
        found = _turn_text(prompt, after, m["content"])
        if found is None:
            raise ChatTemplateError(f"assistant turn {i}: the chat template drops its content")
        start, trained = found
        if full.startswith(after):
            pos = start
        else:  # the template renders earlier turns differently once later turns exist
            cursor = max(cursor, _shared_prefix(full, prompt))
            pos = full.find(trained, cursor) if trained else cursor
            if pos < 0 and m["content"].strip():  # then train the answer alone
                trained = m["content"].strip()
                pos = full.find(trained, cursor)
            if pos < 0:
                raise ChatTemplateError(
                    f"assistant turn {i}: its rendered text is not found in the full "
                    "conversation; the chat template rewrites earlier turns"
                )
        consistent = pos == len(prompt) and full.startswith(prompt)
        spans.append((pos, pos + len(trained), consistent))
        cursor = pos + len(trained)
    return spans


def _token_range(starts: list[int], ends: list[int], lo: int, hi: int) -> tuple[int, int]:
    """Indices [a, b) of the tokens overlapping chars [lo, hi) (offsets are sorted)."""
    if hi <= lo:
        a = bisect.bisect_left(starts, lo)
        return a, a
    return bisect.bisect_right(ends, lo), bisect.bisect_left(starts, hi)


def render_for_training(
    tokenizer: PreTrainedTokenizerBase,
    messages: Messages,
    *,
    system: str | None = None,
    fallback_template: str | None = None,
) -> TrainingRender:
    """Render a conversation for training: token ids plus each assistant turn's token span.

    Uses :func:`render` (the generation function) for the whole conversation and for each
    turn's generation prompt, so the trained prompt is what generation will see.
    """
    kw = {"system": system, "fallback_template": fallback_template}
    full = render(tokenizer, messages, add_generation_prompt=False, **kw)
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    starts, ends = [s for s, _ in offsets], [e for _, e in offsets]
    msgs = with_system(messages, system)
    turns = []
    for lo, hi, consistent in _char_spans(tokenizer, msgs, full, **kw):
        a, b = _token_range(starts, ends, lo, hi)
        prompt_ids = encode(tokenizer, full[:lo]) if consistent else None
        turns.append(AssistantTurn(lo, hi, a, b, consistent and prompt_ids == ids[:a]))
    return TrainingRender(full, ids, turns)


def render_text_for_training(tokenizer: PreTrainedTokenizerBase, text: str) -> TrainingRender:
    """Raw text (continued pre-training): the tokenizer's usual specials, then EOS, all trained.

    EOS is appended so packed documents end the way generation should.
    """
    ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    if tokenizer.eos_token_id is not None and (not ids or ids[-1] != tokenizer.eos_token_id):
        ids = [*ids, tokenizer.eos_token_id]
    return TrainingRender(text, ids, [AssistantTurn(0, len(text), 0, len(ids), True)])


# --------------------------------------------------------------------------- checks
_PROBE: Messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "OK"}]


def end_of_turn_ids(
    tokenizer: PreTrainedTokenizerBase, *, fallback_template: str | None = None
) -> list[int]:
    """Token ids that end an assistant turn: generation stops on them, and every trained
    answer must end with one (else the model never learns to stop).

    The EOS token, plus the special token the template writes right after an answer
    (``<|im_end|>``, ``<|eot_id|>``, ``<end_of_turn>``...).
    """
    stop = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
    rendered = render_for_training(tokenizer, _PROBE, fallback_template=fallback_template)
    turn = rendered.turns[-1]
    added = set(tokenizer.get_added_vocab().values())
    for tid in rendered.input_ids[turn.token_start : turn.token_end]:
        if tid in added and tid not in stop:
            stop.append(tid)
    return stop


def check_prompt_consistency(
    tokenizer: PreTrainedTokenizerBase,
    messages: Messages,
    *,
    system: str | None = None,
    fallback_template: str | None = None,
) -> None:
    """Assert that, for every assistant turn, the training tokens before the answer equal
    the tokens generation feeds (:func:`encode_prompt` of the turns before it).

    Raises:
        PromptMismatchError: naming the turn and showing both token sequences' tails.
    """
    kw = {"system": system, "fallback_template": fallback_template}
    rendered = render_for_training(tokenizer, messages, **kw)
    msgs = with_system(messages, system)
    positions = [i for i, m in enumerate(msgs) if m["role"] == "assistant"]
    for turn, i in zip(rendered.turns, positions, strict=True):
        gen = encode_prompt(tokenizer, msgs[:i], **kw)
        train = rendered.input_ids[: turn.token_start]
        if gen != train:
            raise PromptMismatchError(
                f"assistant turn {i}: generation feeds {len(gen)} prompt tokens ending "
                f"{tokenizer.convert_ids_to_tokens(gen[-4:])}, training has {len(train)} ending "
                f"{tokenizer.convert_ids_to_tokens(train[-4:])}. The chat template joins the "
                "answer to the prompt so that a token crosses the boundary (a space before the "
                "answer?); fix the template or use a fallback_template."
            )
