"""Heuristic quality filters (Gopher / C4 style). Each check returns a drop reason or None.

Text statistics are measured on what a person wrote: the user turns of a chat record (the
system prompt repeats across records and structured answers such as compact JSON are not prose)
or the whole text of a raw-text record. Answers get their own check: empty or placeholder.
"""

from __future__ import annotations

import re
from collections import Counter

from tunesmith.config import FilterConfig
from tunesmith.data.example import Example

_WORD = re.compile(r"\S+")
_HAS_ALPHA = re.compile(r"[^\W\d_]")
_SYMBOLS = ("#", "...", "…")


class QualityFilter:
    """``check(example) -> reason | None``; the reasons are stable strings used in reports."""

    def __init__(self, cfg: FilterConfig):
        self.cfg = cfg
        self._placeholders = {p.strip().lower() for p in cfg.placeholder_answers}
        self._boilerplate = [re.compile(p, re.MULTILINE) for p in cfg.boilerplate_patterns]

    def check(self, ex: Example) -> str | None:
        if ex.is_chat:
            reason = self._check_answer(ex.answer_text())
            if reason:
                return reason
            body = "\n".join(m["content"] for m in ex.messages if m["role"] == "user")
        else:
            body = ex.text or ""
        if any(p.search(body) for p in self._boilerplate):
            return "boilerplate"
        return self._check_text(body)

    def _check_answer(self, answer: str) -> str | None:
        if answer.strip().lower() in self._placeholders:
            return "empty_or_placeholder_answer"
        return None

    def _check_text(self, text: str) -> str | None:
        c = self.cfg
        n_chars = len(text)
        if c.min_chars is not None and n_chars < c.min_chars:
            return "too_short"
        if c.max_chars is not None and n_chars > c.max_chars:
            return "too_long"
        if c.max_replacement_chars is not None and text.count("\ufffd") > c.max_replacement_chars:
            return "undecodable_characters"
        words = _WORD.findall(text)
        n_words = len(words)
        if c.min_words is not None and n_words < c.min_words:
            return "too_few_words"
        if n_words == 0:
            return None
        if c.max_symbol_word_ratio is not None:
            symbols = sum(text.count(s) for s in _SYMBOLS)
            if symbols / n_words > c.max_symbol_word_ratio:
                return "symbol_word_ratio"
        mean_len = sum(map(len, words)) / n_words
        if c.min_mean_word_length is not None and mean_len < c.min_mean_word_length:
            return "mean_word_length"
        if c.max_mean_word_length is not None and mean_len > c.max_mean_word_length:
            return "mean_word_length"
        if c.min_alpha_ratio is not None:
            alpha = sum(1 for w in words if _HAS_ALPHA.search(w))
            if alpha / n_words < c.min_alpha_ratio:
                return "alpha_ratio"
        if c.max_duplicate_line_fraction is not None and _duplicate_line_fraction(text) > c.max_duplicate_line_fraction:
            return "duplicate_lines"
        if c.max_top_ngram_fraction is not None and _top_ngram_fraction(words, 3) > c.max_top_ngram_fraction:
            return "repeated_ngrams"
        return None


def _duplicate_line_fraction(text: str) -> float:
    lines = [line for line in text.split("\n") if line.strip()]
    if len(lines) < 3:
        return 0.0
    counts = Counter(lines)
    return sum(n - 1 for n in counts.values()) / len(lines)


def _top_ngram_fraction(words: list[str], n: int) -> float:
    """Share of characters covered by the most frequent word n-gram (Gopher's top_n_gram)."""
    if len(words) < n * 4:  # too short for repetition to mean anything
        return 0.0
    lowered = [w.lower() for w in words]
    grams = Counter(zip(*(lowered[i:] for i in range(n)), strict=False))
    gram, count = grams.most_common(1)[0]
    if count < 2:
        return 0.0
    total = sum(map(len, words))
    return count * sum(map(len, gram)) / total
