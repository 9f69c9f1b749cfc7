"""Few-shot demonstrations for the base-model rung: the train examples most similar to a
query, within a token budget.

Similar examples teach the label set and the answer format by showing cases close to the
one at hand; the budget keeps the prompt inside the model's context and the eval's time.
Only the user turns are indexed: every example shares the same system prompt, which would
add nothing to BM25 and dilute a sentence embedding.

Measured on the support-triage sample (``benchmarks/bench_fewshot.py``: a pool of 1,000
train tickets, 150 queries from customers not in the pool, k=4): the share of chosen
demonstrations whose label matches the query's, per field, and the 1-NN label accuracy.

    method     category  urgency  next_action  whole label  1-NN  index build  queries/s
    random     0.135     0.375    0.132        0.037        0.053  -            -
    bm25       0.533     0.552    0.462        0.263        0.260  0.1 s        ~850
    embedding  0.633     0.527    0.558        0.297        0.320  171 s        ~0.8 (*)

(*) one query at a time on the loaded 2-core dev machine. Embeddings pick more relevant
demonstrations (+0.10 category, +0.03 whole label) but embedding the pool costs minutes on
a CPU (~2,400 train tickets: ~7 min there), which the 15-minute demo cannot pay; so BM25 is
the default and ``method="embedding"`` is there for a GPU or a patient user.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from typing import Literal

from tunesmith.data.example import Example
from tunesmith.errors import TunesmithError
from tunesmith.evaluate.retrieval import Bm25Index, Embedder, EmbeddingIndex, rank

FewShotMethod = Literal["bm25", "embedding"]
FEWSHOT_METHODS: tuple[str, ...] = ("bm25", "embedding")
DEFAULT_METHOD: FewShotMethod = "bm25"
CHARS_PER_TOKEN = 4  # rough English BPE rate, used only when no tokenizer counter is given


def approx_tokens(text: str) -> int:
    """Token estimate (~4 characters a token); pass the model tokenizer's count for exactness."""
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


def user_text(example: Example) -> str:
    """The user turns of an example: what a query is compared with."""
    return "\n".join(m["content"] for m in example.messages if m["role"] == "user")


def demonstration_text(example: Example) -> str:
    """What one demonstration adds to a prompt (before chat-template tokens): its user turns
    and its answer. The budget is counted on this text."""
    return f"{user_text(example)}\n{example.answer_text()}"


class FewShotSelector:
    """Picks demonstrations from a pool of (train) examples by similarity to a query.

    Examples that cannot demonstrate anything (raw text, no user turn, no answer) are left
    out of the pool; ``skipped`` counts them.

    Example:
        >>> selector = FewShotSelector(train_examples)
        >>> shots = selector.select(case.prompt_text(), k=4, token_budget=1024,
        ...                         count_tokens=lambda t: len(tok(t).input_ids),
        ...                         exclude_ids={case.id})
    """

    def __init__(
        self, examples: Sequence[Example], *, method: FewShotMethod = DEFAULT_METHOD,
        embedder: Embedder | None = None,
    ):
        if method not in FEWSHOT_METHODS:
            raise ValueError(f"unknown few-shot method {method!r}; must be one of {FEWSHOT_METHODS}")
        self.examples = [e for e in examples if user_text(e).strip() and e.answer_text().strip()]
        self.skipped = len(examples) - len(self.examples)
        if not self.examples:
            raise TunesmithError(
                f"no example to show as a few-shot demonstration: {len(examples)} given, none "
                "with a user turn and an assistant answer (is the train split empty?)"
            )
        self.method = method
        texts = [user_text(e) for e in self.examples]
        self._keys = [t.strip() for t in texts]
        self._index = Bm25Index(texts) if method == "bm25" else EmbeddingIndex(texts, embedder)
        # Token cost of each example under the last counter used: fixed, so counted once.
        self._counter: Callable[[str], int] = approx_tokens
        self._costs: dict[int, int] = {}

    def select(
        self, query: str, k: int, *, token_budget: int | None = None,
        count_tokens: Callable[[str], int] | None = None, exclude_ids: Collection[str] = (),
    ) -> list[Example]:
        """Up to ``k`` examples, most similar first, never one in ``exclude_ids`` nor one whose
        user text is the query itself (a duplicate would hand over the answer).

        With ``token_budget``, the demonstrations' ``demonstration_text`` together cost at
        most that many tokens (``count_tokens``, default ``approx_tokens``): an example that
        does not fit is passed over for the next most similar one. Ties in similarity keep
        pool order, so the same query always gets the same examples.
        """
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        if token_budget is not None and token_budget < 0:
            raise ValueError(f"token_budget must be >= 0, got {token_budget}")
        if k == 0:
            return []
        excluded = set(exclude_ids)
        chosen: list[Example] = []
        used, key = 0, query.strip()
        for i, _ in rank(self._index.scores([query])[0]):
            example = self.examples[i]
            if example.id in excluded or self._keys[i] == key:
                continue
            if token_budget is not None:
                cost = self._cost(i, count_tokens or approx_tokens)
                if used + cost > token_budget:
                    continue
                used += cost
            chosen.append(example)
            if len(chosen) == k:
                break
        return chosen

    def _cost(self, index: int, counter: Callable[[str], int]) -> int:
        if counter is not self._counter:
            self._counter, self._costs = counter, {}
        if index not in self._costs:
            self._costs[index] = counter(demonstration_text(self.examples[index]))
        return self._costs[index]
