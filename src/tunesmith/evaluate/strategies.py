"""Strategies: the rungs of the baseline ladder. Each turns a test case into the conversation a
model sees; all of them then go through the one generation engine and the one rendering
function, so the only thing that differs between rungs is what the strategy adds.

    zero_shot      base model, system instructions + the case's input
    few_shot       base model, + k similar solved examples from the train split (as chat turns)
    rag            base model, + knowledge-base passages retrieved for the input
    finetuned      the fine-tuned model, the case exactly as training rendered it
    finetuned_rag  the fine-tuned model, + the same retrieved passages
    finetuned_fewshot  the fine-tuned model, + k similar solved examples (as few_shot); best when
                   it was trained that way too (``train.fewshot_k``: each training example
                   preceded by its own k neighbours, itself excluded)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tunesmith.data.example import Example

Messages = list[dict[str, str]]
BASE_RUNGS = ("zero_shot", "few_shot", "rag")
CONTEXT_HEADER = "Reference passages from the knowledge base (use them if they apply):"


@dataclass(frozen=True)
class Strategy:
    name: str
    adapter: str | None  # None = base model
    uses_fewshot: bool = False
    uses_retrieval: bool = False


STRATEGIES = {
    "zero_shot": Strategy("zero_shot", None),
    "few_shot": Strategy("few_shot", None, uses_fewshot=True),
    "rag": Strategy("rag", None, uses_retrieval=True),
    "finetuned": Strategy("finetuned", "finetuned"),
    "finetuned_rag": Strategy("finetuned_rag", "finetuned", uses_retrieval=True),
    "finetuned_fewshot": Strategy("finetuned_fewshot", "finetuned", uses_fewshot=True),
}


def prompt_messages(case: Example) -> Messages:
    """The case without its reference answer (everything up to the last assistant turn)."""
    msgs = [dict(m) for m in case.messages]
    while msgs and msgs[-1]["role"] == "assistant":
        msgs.pop()
    return msgs


def query_text(case: Example) -> str:
    """What retrieval and example selection search with: the case's user turns."""
    return "\n".join(m["content"] for m in case.messages if m["role"] == "user")


def _with_system(msgs: Messages, system: str | None) -> Messages:
    if system is None:
        return msgs
    rest = [m for m in msgs if m["role"] != "system"]
    return [{"role": "system", "content": system}, *rest]


def _add_context(msgs: Messages, context: str) -> Messages:
    if not context:
        return msgs
    block = f"{CONTEXT_HEADER}\n{context}"
    if msgs and msgs[0]["role"] == "system":
        return [{"role": "system", "content": msgs[0]["content"] + "\n\n" + block}, *msgs[1:]]
    return [{"role": "system", "content": block}, *msgs]


def _shots(examples: list[Example]) -> Messages:
    turns: Messages = []
    for ex in examples:
        turns += [m for m in prompt_messages(ex) if m["role"] == "user"]
        turns.append({"role": "assistant", "content": ex.answer_text()})
    return turns


def with_shots(msgs: Messages, shots: list[Example]) -> Messages:
    """``msgs`` with the solved examples ``shots`` as chat turns after the system prompt."""
    system = [m for m in msgs if m["role"] == "system"]
    return system + _shots(shots) + [m for m in msgs if m["role"] != "system"]


def build_conversation(
    strategy: Strategy, case: Example, *, instructions: str | None,
    fewshot: Callable[[Example], list[Example]] | None = None,
    context: Callable[[Example], str] | None = None,
) -> Messages:
    """The conversation ``strategy`` sends for ``case``."""
    msgs = prompt_messages(case)
    if strategy.adapter is None:
        msgs = _with_system(msgs, instructions)
    if strategy.uses_fewshot and fewshot is not None:
        msgs = with_shots(msgs, fewshot(case))
    if strategy.uses_retrieval and context is not None:
        msgs = _add_context(msgs, context(case))
    return msgs


def describe(strategy: Strategy) -> dict[str, Any]:
    return {"name": strategy.name, "model": "fine-tuned" if strategy.adapter else "base",
            "few_shot": strategy.uses_fewshot, "retrieval": strategy.uses_retrieval}
