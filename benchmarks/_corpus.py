"""Benchmark corpora: realistic ~90-word documents, optionally with planted near-duplicates.

Documents come from the Gutenberg books in ``../shared/data/gutenberg`` when that folder
exists (never copied into the repo), else from a seeded synthetic generator with a Zipf
vocabulary, so every benchmark also runs on a fresh checkout. Variants are made by word
edits at known rates, plus surface edits (case, punctuation, spacing) that a
``\\w+``/lowercase tokeniser must ignore.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
GUTENBERG_DIRS = (Path("/work/shared/data/gutenberg"), REPO.parent / "shared" / "data" / "gutenberg")
# Per-word edit rates of planted variants. 0.0 = surface edits only (an exact duplicate
# after tokenising); at ~90 words, 1% ≈ one edit ≈ Jaccard 0.89, 3% ≈ 0.7, 10% ≈ 0.4.
EDIT_RATES = (0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2)


@dataclass
class Corpus:
    """Texts plus the planted families (lists of indices that derive from one source)."""

    texts: list[str]
    families: list[list[int]] = field(default_factory=list)
    edit_rate: dict[int, float] = field(default_factory=dict)  # variant index -> its rate
    source: str = "synthetic"

    def planted_pairs(self) -> set[tuple[int, int]]:
        """Every pair ``(i < j)`` within a planted family."""
        pairs = set()
        for fam in self.families:
            s = sorted(fam)
            pairs.update((a, b) for k, a in enumerate(s) for b in s[k + 1 :])
        return pairs


def gutenberg_dir() -> Path | None:
    return next((d for d in GUTENBERG_DIRS if d.is_dir() and any(d.glob("*.txt"))), None)


def _paragraph_words(folder: Path) -> list[list[str]]:
    """Whitespace-split words of every paragraph (blank-line separated) of every book."""
    paras = []
    for path in sorted(folder.glob("*.txt")):
        text = path.read_text(encoding="utf-8", errors="replace")
        paras.extend(p.split() for p in re.split(r"\n\s*\n", text) if p.strip())
    return paras


def _docs_from_paragraphs(paras: list[list[str]], n: int, rng: np.random.Generator) -> list[str]:
    """Up to ``n`` documents of 40-160 words (mean ~90), drawn from all books: consecutive
    paragraphs merged and cut at a target length, so no two documents share text."""
    docs, buf = [], []
    target = _target_len(rng)
    for words in paras:
        buf.extend(words)
        while len(buf) >= target:
            docs.append(" ".join(buf[:target]))
            buf = buf[target:]
            target = _target_len(rng)
    if len(docs) <= n:
        return docs
    return [docs[k] for k in np.sort(rng.choice(len(docs), size=n, replace=False))]


def _target_len(rng: np.random.Generator) -> int:
    return int(np.clip(rng.normal(90, 25), 40, 160))


def _vocabulary(paras: list[list[str]] | None, rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    """Words and their sampling probabilities: Gutenberg's own counts, or a synthetic Zipf
    vocabulary of pronounceable made-up words."""
    if paras:
        words, counts = np.unique(
            [w for p in paras[:20000] for w in p], return_counts=True
        )
        return words.tolist(), counts / counts.sum()
    syl = ["ka", "lo", "mi", "ten", "ra", "su", "vel", "do", "pri", "an", "or", "es", "ti", "mu"]
    vocab = sorted({"".join(rng.choice(syl, size=rng.integers(1, 4))) for _ in range(30000)})
    ranks = np.arange(1, len(vocab) + 1, dtype=np.float64)
    p = 1.0 / ranks
    return vocab, p / p.sum()


def _synthetic_docs(n: int, vocab: list[str], p: np.ndarray, rng: np.random.Generator) -> list[str]:
    """``n`` documents of words drawn from ``vocab`` (unrelated to each other)."""
    lengths = [_target_len(rng) for _ in range(n)]
    flat = np.asarray(vocab, dtype=object)[rng.choice(len(vocab), size=sum(lengths), p=p)]
    docs, pos = [], 0
    for k in lengths:
        words = flat[pos : pos + k].tolist()
        pos += k
        for at in range(rng.integers(5, 12), k, rng.integers(8, 16)):
            words[at] += "."
        docs.append(" ".join(words).capitalize())
    return docs


def base_documents(n: int, seed: int = 0) -> tuple[list[str], list[str], str]:
    """``n`` unrelated documents, the vocabulary used for edits, and where they came from."""
    rng = np.random.default_rng(seed)
    folder = gutenberg_dir()
    paras = _paragraph_words(folder) if folder else None
    docs = _docs_from_paragraphs(paras, n, rng) if paras else []
    vocab, p = _vocabulary(paras, rng)
    origin = f"gutenberg paragraphs ({folder}): {len(docs)}" if paras else "synthetic"
    if paras and len(docs) < n:
        origin += f" + synthetic: {n - len(docs)}"
    if len(docs) < n:
        docs += _synthetic_docs(n - len(docs), vocab, p, rng)
    return docs, vocab, origin


def make_variant(text: str, rate: float, vocab: list[str], rng: np.random.Generator) -> str:
    """A copy of ``text`` with each word, at probability ``rate``, substituted, deleted or
    followed by an inserted word; plus surface edits that do not change the words."""
    out = []
    for word in text.split():
        if rng.random() < rate:
            op = rng.integers(3)
            if op == 0:
                word = vocab[rng.integers(len(vocab))]
            elif op == 1:
                continue
            else:
                out.append(word)
                word = vocab[rng.integers(len(vocab))]
        r = rng.random()
        if r < 0.05:
            word = word.upper()
        elif r < 0.10:
            word = word.lower() + ","
        out.append(word)
    sep = rng.choice([" ", "  ", "\n", " \t"])
    return sep.join(out) + rng.choice(["", ".", "!", " ..."])


def planted_corpus(n: int, dup_fraction: float = 0.25, seed: int = 0) -> Corpus:
    """``n`` texts of which ``dup_fraction`` are variants of other texts in the corpus,
    shuffled so that variants do not sit next to their sources."""
    rng = np.random.default_rng(seed)
    n_var = int(n * dup_fraction)
    docs, vocab, origin = base_documents(n - n_var, seed)
    texts, families, rates = list(docs), {}, {}
    for _ in range(n_var):
        src = int(rng.integers(len(docs)))
        rate = float(rng.choice(EDIT_RATES))
        families.setdefault(src, [src]).append(len(texts))
        rates[len(texts)] = rate
        texts.append(make_variant(docs[src], rate, vocab, rng))
    perm = rng.permutation(len(texts))  # perm[new] = old
    new_of = np.empty_like(perm)
    new_of[perm] = np.arange(len(perm))
    return Corpus(
        texts=[texts[k] for k in perm],
        families=[[int(new_of[k]) for k in fam] for fam in families.values()],
        edit_rate={int(new_of[k]): r for k, r in rates.items()},
        source=origin,
    )
