"""Letter classes for regexes, built once from Unicode, and word-list helpers.

The stdlib ``re`` has no ``\\p{Lu}``; names like "Łukasz", "Çelik" or "Ólafur" need more than
``[A-Z]``. Listing the Latin, Greek and Cyrillic letters that ``str.isupper``/``islower``
accept keeps us on the fast stdlib engine instead of the slower ``regex`` module.
"""

from __future__ import annotations

# Basic Latin through Cyrillic Supplement: every script the gazetteer uses.
_RANGE = range(0x41, 0x530)


def _chars(pred: str) -> str:
    return "".join(c for c in map(chr, _RANGE) if getattr(c, pred)() and c.isalpha())


UPPER = _chars("isupper")
LOWER = _chars("islower") + "ʼ"  # Hawaiian/Ukrainian apostrophe letter keeps names whole
LETTERS = UPPER + LOWER


def word_set(text: str) -> frozenset[str]:
    """``word_set("a b c")``: keeps long word lists readable in the source."""
    return frozenset(text.split())


def word_list(text: str) -> list[str]:
    return text.split()
