"""Drafts for speculative greedy decoding: what earlier answers wrote after the same tokens.

A decode step reads every weight of the model to produce one token per row, so on a CPU it
costs several times what the same token costs inside a prefill. The answers a deployment gives
repeat themselves: a triage answer is ``{"category": "…", "urgency": "…", "next_action": "…"}``
with a handful of values, and about three in four of its tokens are the same keys, quotes and
value endings every time. :class:`DraftBook` remembers, for each run of ``n`` tokens in recent
answers, the tokens that followed it; the engine feeds that guess together with the row's last
token in one step, and keeps the guessed tokens the model itself would have picked
(:meth:`tunesmith.generate.engine.Engine.generate`): the answers are the greedy ones, and a
right guess of k tokens saves k decode steps. This is prompt-lookup / n-gram speculative
decoding with the model's own recent answers as the corpus, no draft model needed.
"""

from __future__ import annotations

from collections.abc import Hashable

START = -1  # stands for "before the answer's first token" in an answer's first n-grams


class DraftBook:
    """Continuations of recent answers, by the ``n`` tokens before them.

    A guess is what the last two answers that passed through the same ``n`` tokens both wrote
    next (their common beginning): the schema's keys and quotes, the end of a value once its
    first token is chosen. Where they parted (the choice of a value, free text), nothing is
    guessed, so a step is not widened for a guess that is likely wrong.

    Args:
        n: tokens of context a guess is looked up by (longer: fewer, surer guesses).
        length: tokens guessed at most.
        entries: n-grams remembered per key before the oldest half is forgotten.
    """

    def __init__(self, n: int = 3, length: int = 8, entries: int = 50_000):
        self.n, self.length, self.entries = n, length, entries
        self._books: dict[Hashable, dict[tuple[int, ...], tuple[list[int], int]]] = {}
        self.proposed = 0  # tokens guessed
        self.accepted = 0  # guessed tokens the model agreed with

    def _context(self, tokens: list[int]) -> tuple[int, ...]:
        head = tokens[-self.n:]
        return (START,) * (self.n - len(head)) + tuple(head)

    def learn(self, key: Hashable, answer: list[int]) -> None:
        """Remember what followed each ``n`` tokens of ``answer`` (under ``key``: the weights
        that wrote it), and how much of it the previous answer there wrote too."""
        book = self._books.setdefault(key, {})
        padded = [START] * self.n + list(answer)
        for i in range(len(answer)):
            context = tuple(padded[i:i + self.n])
            after = answer[i:i + self.length]
            before = book.pop(context, None)  # re-inserted: the dict's order is the forgetting order
            agreed = 0
            if before is not None:
                agreed = next((j for j, (a, b) in enumerate(zip(before[0], after, strict=False)) if a != b),
                              min(len(before[0]), len(after)))
            book[context] = (after, agreed)
        if len(book) > self.entries:
            for context in list(book)[: len(book) // 2]:
                del book[context]

    def propose(self, key: Hashable, answer: list[int], limit: int) -> list[int]:
        """The tokens the last two answers wrote after ``answer``'s last ``n`` tokens (at most
        ``limit``), or []."""
        book = self._books.get(key)
        if limit <= 0 or not book:
            return []
        after, agreed = book.get(self._context(answer), ([], 0))
        return after[: min(agreed, limit)]

    def clear(self) -> None:
        self._books.clear()
