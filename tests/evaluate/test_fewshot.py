"""Few-shot demonstration selection: similarity order, exclusions, k, token budget, ties."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from tunesmith.data.example import Example
from tunesmith.errors import TunesmithError
from tunesmith.evaluate.fewshot import (
    FewShotSelector,
    approx_tokens,
    demonstration_text,
    user_text,
)

SYSTEM = {"role": "system", "content": "You triage tickets. Reply with JSON."}


def ex(id_: str, user: str, answer: str = '{"category":"billing"}') -> Example:
    return Example(id_, [SYSTEM, {"role": "user", "content": user},
                         {"role": "assistant", "content": answer}])


POOL = [
    ex("refund-1", "I want a refund for my camera, it arrived 10 days ago."),
    ex("ship-1", "Where is my parcel? Ordered with express shipping 5 days ago."),
    ex("refund-2", "Refund please: the thermostat arrived 40 days ago and I changed my mind."),
    ex("login-1", "I cannot log in, the password reset email never arrives."),
    ex("ship-2", "My order has not arrived, standard shipping, 9 days now."),
]


def words(text: str) -> int:
    return len(text.split())


def test_most_similar_first_and_k():
    selector = FewShotSelector(POOL)
    shots = selector.select("refund for my camera that arrived days ago", k=2)
    assert [s.id for s in shots] == ["refund-1", "refund-2"]
    assert [s.id for s in selector.select("parcel shipping order", k=1)] == ["ship-1"]
    assert len(selector.select("anything at all", k=4)) == 4  # no overlap: still k examples
    assert len(selector.select("refund", k=50)) == len(POOL)
    assert selector.select("refund", k=0) == []


def test_never_the_query_itself():
    selector = FewShotSelector(POOL)
    query = POOL[0].messages[1]["content"]
    shots = selector.select(query, k=2, exclude_ids={"refund-1"})
    assert "refund-1" not in {s.id for s in shots}
    assert shots[0].id == "refund-2"
    # A copy of the query under another id would hand over the answer: left out too.
    dup = FewShotSelector([ex("copy", query), *POOL[1:]])
    assert "copy" not in {s.id for s in dup.select(query, k=4)}
    assert len(dup.select(query, k=4)) == 4


def test_token_budget_skips_what_does_not_fit():
    long_refund = ex("refund-long", "My refund: the camera arrived days ago. " * 30)
    selector = FewShotSelector([long_refund, *POOL])
    budget = 40
    shots = selector.select("refund camera arrived days ago", k=3, token_budget=budget,
                            count_tokens=words)
    ids = [s.id for s in shots]
    assert "refund-long" not in ids  # most similar, but alone over budget
    assert ids[0] == "refund-1"
    assert sum(words(demonstration_text(s)) for s in shots) <= budget
    unbounded = selector.select("refund camera arrived days ago", k=3)
    assert unbounded[0].id == "refund-long"
    assert selector.select("refund", k=3, token_budget=1, count_tokens=words) == []


def test_default_token_counter_is_the_estimate():
    selector = FewShotSelector(POOL)
    cost = approx_tokens(demonstration_text(POOL[0]))
    shots = selector.select("refund camera", k=5, token_budget=cost)
    assert [s.id for s in shots] == ["refund-1"]
    assert approx_tokens("abcdefgh") == 2 and approx_tokens("") == 1


def test_token_counts_are_cached_per_counter():
    calls: list[str] = []

    def counter(text: str) -> int:
        calls.append(text)
        return words(text)

    selector = FewShotSelector(POOL)
    for _ in range(3):
        selector.select("refund camera", k=2, token_budget=500, count_tokens=counter)
    assert len(calls) == 2


def test_ties_are_broken_by_pool_order():
    pool = [ex(f"same-{i}", "identical ticket text about a refund") for i in range(5)]
    selector = FewShotSelector(pool)
    for _ in range(3):
        assert [s.id for s in selector.select("refund", k=3)] == ["same-0", "same-1", "same-2"]
    assert [s.id for s in selector.select("refund", k=2, exclude_ids={"same-0"})] == [
        "same-1", "same-2"]


def test_pool_keeps_only_examples_that_can_demonstrate():
    raw = Example("raw", text="continued pre-training text")
    no_answer = Example("q", [{"role": "user", "content": "a question"}])
    selector = FewShotSelector([raw, no_answer, *POOL])
    assert selector.skipped == 2
    assert {s.id for s in selector.select("question", k=10)} == {e.id for e in POOL}
    with pytest.raises(TunesmithError, match="none with a user turn and an assistant answer"):
        FewShotSelector([raw, no_answer])


def test_only_user_turns_are_compared():
    assert user_text(POOL[0]) == POOL[0].messages[1]["content"]
    # The shared system prompt's words must not make every example look similar.
    selector = FewShotSelector(POOL)
    assert selector.select("triage tickets reply json", k=1)[0].id == "refund-1"  # tie: pool order


class FakeEmbedder:
    def __init__(self, vectors: dict[str, Sequence[float]]):
        self.vectors = vectors

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return np.array([self.vectors[t] for t in texts], dtype=np.float32)


def test_embedding_method_ranks_by_cosine():
    vectors = {user_text(e): [1.0, 0.0] if e.id.startswith("ship") else [0.0, 1.0] for e in POOL}
    vectors["lost package"] = [1.0, 0.1]
    selector = FewShotSelector(POOL, method="embedding", embedder=FakeEmbedder(vectors))
    assert [s.id for s in selector.select("lost package", k=2)] == ["ship-1", "ship-2"]


def test_bad_arguments():
    with pytest.raises(ValueError, match="must be one of"):
        FewShotSelector(POOL, method="hybrid")  # type: ignore[arg-type]
    selector = FewShotSelector(POOL)
    with pytest.raises(ValueError, match="k must be"):
        selector.select("x", k=-1)
    with pytest.raises(ValueError, match="token_budget"):
        selector.select("x", k=1, token_budget=-5)
