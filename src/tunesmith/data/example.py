"""The canonical record. Every input format is converted into it once, at the edge (ingest)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ROLES = ("system", "user", "assistant")


@dataclass(slots=True)
class Example:
    """One training/eval record.

    Args:
        id: stable id, derived from the source file and line/row (see ``ingest``).
        messages: chat turns ``{"role": "system"|"user"|"assistant", "content": str}``.
            Empty for raw-text records.
        text: raw text for continued pre-training; ``None`` for chat records.
        meta: source, line, group key, tags, and anything the stages add
            (``cluster_id``, ``split``, PII counts).
    """

    id: str
    messages: list[dict[str, str]] = field(default_factory=list)
    text: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def is_chat(self) -> bool:
        return self.text is None

    def contents(self) -> list[str]:
        """Every piece of text in the record, in order (what the stages read and rewrite)."""
        if self.text is not None:
            return [self.text]
        return [m["content"] for m in self.messages]

    def with_contents(self, contents: list[str]) -> Example:
        """A copy with its texts replaced, in the order ``contents()`` returned them."""
        if self.text is not None:
            (text,) = contents
            return Example(self.id, [], text, dict(self.meta))
        msgs = [{"role": m["role"], "content": c} for m, c in zip(self.messages, contents, strict=True)]
        return Example(self.id, msgs, None, dict(self.meta))

    def joined(self) -> str:
        """All text joined with newlines: the string dedup and contamination checks compare."""
        return "\n".join(self.contents())

    def prompt_text(self) -> str:
        """The non-assistant text (what a model sees), for leak checks against test prompts."""
        if self.text is not None:
            return self.text
        return "\n".join(m["content"] for m in self.messages if m["role"] != "assistant")

    def answer_text(self) -> str:
        """The last assistant turn, or '' when there is none."""
        for m in reversed(self.messages):
            if m["role"] == "assistant":
                return m["content"]
        return ""

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "messages": self.messages, "text": self.text, "meta": self.meta}
