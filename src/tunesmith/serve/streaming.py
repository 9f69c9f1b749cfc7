"""Streaming an answer as text deltas that never need taking back.

Each new token, the whole answer so far is decoded and the part not sent yet goes out, minus a
held-back tail that the next tokens could still change:

- an incomplete UTF-8 character (a token may carry half of "é" or of an emoji: it decodes to
  U+FFFD until the rest arrives);
- the start of a stop string ("\\n\\nUs" while ``stop=["\\n\\nUser:"]``): the answer is cut
  before a stop string, so its first characters must not have gone out;
- trailing whitespace (a tokenizer that cleans up spaces joins " ," into "," once the comma
  arrives).

The end of the answer is decided exactly as the engine decides it (the same
:class:`~tunesmith.generate.sampling.StopChecker`), and the last delta completes the engine's
own text, so the streamed text equals the non-streamed answer.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from tunesmith.generate.sampling import FinishReason, StopChecker

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)


def unsafe_tail(text: str, stops: list[str]) -> int:
    """How many trailing characters of ``text`` may still change or be cut."""
    held = len(text) - len(text.rstrip("\ufffd \t\r\n"))
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), 0, -1):  # longest suffix that starts a stop
            if text.endswith(stop[:k]):
                held = max(held, k)
                break
    return held


class TextStream:
    """One answer's text, fed its growing token list (``update``) on the decoding thread.

    Args:
        tokenizer: decodes the tokens.
        checker: the engine's end-of-answer rules (end-of-turn ids, stop strings).
        budget: the answer's token budget (max tokens, cut to the context left).
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, checker: StopChecker, budget: int):
        self.tokenizer, self.checker, self.budget = tokenizer, checker, budget
        self.sent = ""  # text delivered so far: always a prefix of the final answer
        self.finish: FinishReason | None = None

    def update(self, token_ids: list[int]) -> tuple[str, FinishReason | None]:
        """The new text to send, and the finish reason once the answer is complete."""
        if self.finish is not None or not token_ids:
            return "", self.finish
        finish = self.checker.finished(token_ids, self.budget)
        if finish is not None:
            text, finish = self.checker.text(token_ids, finish)
            return self._complete(text), self._done(finish)
        text = self.tokenizer.decode(token_ids, skip_special_tokens=True)
        safe = text[: len(text) - unsafe_tail(text, self.checker.stop)]
        if len(safe) <= len(self.sent) or not safe.startswith(self.sent):
            return "", None  # nothing new (or a replay after an out-of-memory back-off)
        delta, self.sent = safe[len(self.sent) :], safe
        return delta, None

    def finish_with(self, text: str, finish: FinishReason) -> str:
        """Complete from the engine's final answer (if the token stream did not end it)."""
        if self.finish is not None:
            return ""
        return self._complete(text) if self._done(finish) else ""

    def _complete(self, text: str) -> str:
        if not text.startswith(self.sent):  # cannot happen with the hold-backs above; say so if it does
            log.warning("streamed text diverged from the final answer; the stream keeps what it sent")
            return ""
        delta, self.sent = text[len(self.sent) :], text
        return delta

    def _done(self, finish: FinishReason) -> FinishReason:
        self.finish = finish
        return finish
