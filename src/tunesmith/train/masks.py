"""Loss masks: which tokens are trained, and the pre-flight check that catches bad masks.

Labels follow the transformers convention: ``labels[i]`` is the token at position ``i`` (the
model shifts internally), and ``-100`` marks a token that is not trained. A trained span is
an assistant answer PLUS the end-of-turn token after it, so the model learns to stop.

Masks fail silently: a template change can leave zero trained tokens, ``max_length`` can cut
every answer off, a template can omit the EOS. :func:`preflight` counts each of these before
any training step, and :func:`enforce_preflight` fails the run (or drops the examples) with
the counts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from tunesmith.data.example import Example
from tunesmith.errors import TunesmithError
from tunesmith.models.chat import (
    TrainingRender,
    end_of_turn_ids,
    render_for_training,
    render_text_for_training,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100
MaskMode = Literal["assistant", "last_turn", "all"]
MASK_MODES: tuple[str, ...] = ("assistant", "last_turn", "all")


class PreflightError(TunesmithError):
    """Training data that would train badly (or not at all); the message has the counts."""


@dataclass(slots=True)
class TokenizedExample:
    """One example ready for batching: full (untruncated) ids and labels.

    Args:
        id: the Example id (reports name the examples they count).
        input_ids: token ids of the whole rendered example.
        labels: ``input_ids`` where trained, ``IGNORE_INDEX`` elsewhere.
        spans: token spans ``[start, end)`` that are trained.
        missing_eos: a trained span does not end with an end-of-turn token.
        prompt_consistent: every turn's prompt tokens equal what generation feeds.
        control_tokens: a message's content contains a special-token string (e.g. a
            literal ``<|im_end|>``), which would fake a turn boundary.
        is_text: a raw-text example (continued pre-training): cutting it is not an error.
    """

    id: str
    input_ids: list[int]
    labels: list[int]
    spans: list[tuple[int, int]]
    missing_eos: bool = False
    prompt_consistent: bool = True
    control_tokens: bool = False
    is_text: bool = False

    def __len__(self) -> int:
        return len(self.input_ids)

    def trainable(self, max_length: int | None = None) -> int:
        """Tokens that contribute to the loss within ``max_length``. Position 0 never does:
        nothing precedes it to predict it from."""
        return sum(1 for t in self.labels[1:max_length] if t != IGNORE_INDEX)


def build_labels(input_ids: Sequence[int], spans: Iterable[tuple[int, int]]) -> list[int]:
    """Labels that train exactly the tokens inside ``spans``."""
    labels = [IGNORE_INDEX] * len(input_ids)
    for start, end in spans:
        labels[start:end] = input_ids[start:end]
    return labels


def select_spans(rendered: TrainingRender, mode: MaskMode) -> list[tuple[int, int]]:
    """The trained token spans for a mask mode."""
    if mode == "all":
        return [(0, len(rendered.input_ids))]
    spans = rendered.token_spans()
    if mode == "last_turn":
        return spans[-1:]
    if mode == "assistant":
        return spans
    raise ValueError(f"mask mode {mode!r} is not one of {MASK_MODES}")


def _has_control_tokens(tokenizer: PreTrainedTokenizerBase, example: Example) -> bool:
    specials = [t for t in tokenizer.all_special_tokens if t]
    return any(s in text for text in example.contents() for s in specials)


def tokenize_example(
    tokenizer: PreTrainedTokenizerBase,
    example: Example,
    *,
    mode: MaskMode = "assistant",
    system: str | None = None,
    fallback_template: str | None = None,
    stop_ids: Sequence[int] | None = None,
) -> TokenizedExample:
    """Render, tokenise and label one Example (chat or raw text).

    Raw-text examples are trained on every token whatever ``mode`` says. ``stop_ids``
    defaults to :func:`end_of_turn_ids`; pass it when tokenising many examples.
    """
    if example.is_chat:
        rendered = render_for_training(
            tokenizer, example.messages, system=system, fallback_template=fallback_template
        )
        spans = select_spans(rendered, mode)
        if stop_ids is None:
            stop_ids = end_of_turn_ids(tokenizer, fallback_template=fallback_template)
    else:  # raw text needs no chat template; it ends with EOS
        rendered = render_text_for_training(tokenizer, example.text or "")
        spans = select_spans(rendered, "all")
        stop_ids = [tokenizer.eos_token_id]
    ids = rendered.input_ids
    stops = set(stop_ids)
    return TokenizedExample(
        id=example.id,
        input_ids=ids,
        labels=build_labels(ids, spans),
        spans=spans,
        missing_eos=any(end <= start or ids[end - 1] not in stops for start, end in spans),
        prompt_consistent=all(t.consistent for t in rendered.turns),
        control_tokens=_has_control_tokens(tokenizer, example),
        is_text=not example.is_chat,
    )


def tokenize_examples(
    tokenizer: PreTrainedTokenizerBase,
    examples: Iterable[Example],
    *,
    mode: MaskMode = "assistant",
    system: str | None = None,
    fallback_template: str | None = None,
) -> list[TokenizedExample]:
    """:func:`tokenize_example` over many examples, resolving the stop ids once."""
    stop_ids: list[int] | None = None
    out = []
    for ex in examples:
        if ex.is_chat and stop_ids is None:  # raw-text-only data needs no chat template
            stop_ids = end_of_turn_ids(tokenizer, fallback_template=fallback_template)
        out.append(
            tokenize_example(
                tokenizer,
                ex,
                mode=mode,
                system=system,
                fallback_template=fallback_template,
                stop_ids=stop_ids,
            )
        )
    return out


# --------------------------------------------------------------------------- pre-flight
PROBLEMS = {
    "no_trainable": "have no trained token within max_length",
    "truncated_answer": "have a trained answer cut by max_length",
    "missing_eos": "have an answer that does not end with an end-of-turn/EOS token",
    "prompt_mismatch": "render a prompt whose tokens differ from what generation feeds",
    "control_tokens": "contain a special-token string (e.g. <|im_end|>) inside a message",
}


@dataclass(slots=True)
class PreflightReport:
    """Counts (with example ids) of every way the data would train badly.

    ``too_long`` is informational: an over-long example whose answers survive truncation
    still trains correctly.
    """

    max_length: int
    examples: int = 0
    tokens: int = 0
    trainable_tokens: int = 0
    longest: int = 0
    too_long: list[str] = field(default_factory=list)
    problems: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in PROBLEMS})

    @property
    def ok(self) -> bool:
        return not any(self.problems.values())

    def bad_ids(self) -> set[str]:
        return {i for ids in self.problems.values() for i in ids}

    def summary(self) -> str:
        """One line per problem, with counts and the first few example ids."""
        lines = [
            f"{self.examples} examples, {self.tokens} tokens, {self.trainable_tokens} trained "
            f"(max_length {self.max_length}, longest {self.longest}, {len(self.too_long)} longer)"
        ]
        for key, ids in self.problems.items():
            if ids:
                shown = ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")
                lines.append(f"{len(ids)} examples {PROBLEMS[key]} [{key}]: {shown}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        counts = {k: len(v) for k, v in self.problems.items()}
        return {
            "max_length": self.max_length,
            "examples": self.examples,
            "tokens": self.tokens,
            "trainable_tokens": self.trainable_tokens,
            "longest": self.longest,
            "too_long": len(self.too_long),
            "problems": counts,
        }


def _problems_of(ex: TokenizedExample, max_length: int) -> list[str]:
    found = []
    if ex.trainable(max_length) == 0:
        found.append("no_trainable")
    if not ex.is_text and any(end > max_length for start, end in ex.spans if end > start):
        found.append("truncated_answer")
    if ex.missing_eos:
        found.append("missing_eos")
    if not ex.prompt_consistent:
        found.append("prompt_mismatch")
    if ex.control_tokens:
        found.append("control_tokens")
    return found


def preflight(examples: Iterable[TokenizedExample], max_length: int) -> PreflightReport:
    """Count the examples that would train badly under ``max_length`` (nothing is changed)."""
    report = PreflightReport(max_length=max_length)
    for ex in examples:
        report.examples += 1
        report.tokens += len(ex)
        report.trainable_tokens += ex.trainable(max_length)
        report.longest = max(report.longest, len(ex))
        if len(ex) > max_length:
            report.too_long.append(ex.id)
        for key in _problems_of(ex, max_length):
            report.problems[key].append(ex.id)
    return report


def enforce_preflight(
    examples: Sequence[TokenizedExample],
    report: PreflightReport,
    *,
    on_problem: Literal["fail", "drop"] = "fail",
    allow: Iterable[str] = (),
) -> list[TokenizedExample]:
    """Fail with the counts, or drop the flagged examples; ``allow`` names problems to accept.

    Raises:
        PreflightError: ``on_problem="fail"`` and a problem not in ``allow`` was found, or
            dropping would leave no example.
    """
    unknown = set(allow) - set(PROBLEMS)
    if unknown:
        raise ValueError(f"unknown preflight problems {sorted(unknown)}; known: {list(PROBLEMS)}")
    bad = {i for key, ids in report.problems.items() if key not in set(allow) for i in ids}
    if not bad:
        return list(examples)
    if on_problem == "fail":
        raise PreflightError(
            f"pre-flight check failed:\n{report.summary()}\nFix the data or template, raise "
            "train.max_length, or drop these examples (train.on_bad_examples: drop)."
        )
    kept = [ex for ex in examples if ex.id not in bad]
    if not kept:
        raise PreflightError(f"pre-flight dropped every example:\n{report.summary()}")
    return kept
