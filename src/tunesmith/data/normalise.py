"""Text normalisation: Unicode form, mojibake, control characters, whitespace, optional
domain normalisers (dates, currency, units). Pure functions of the text and the config."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

from tunesmith.config import NormaliseConfig

# Sequences that only appear when UTF-8 bytes were decoded as cp1252/latin-1 ("Ã©", "â€™").
# ftfy is exact but costs ~20 µs per clean text, so it only runs where these appear.
_MOJIBAKE_HINT = re.compile("[ÃÂâ][\u0080-\u00bf\u20ac\u201a-\u203a\u0152\u0160\u0178\u017d\u02c6\u02dc]")
# C0/C1 controls except \t and \n, plus zero-width and bidi marks that break tokenisation.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060\ufeff]")
_SPACES = re.compile(r"[^\S\n]+")
_BLANK_LINES = re.compile(r"\n\s*\n\s*\n+")

_MONTHS = {m: i for i, m in enumerate(
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], 1)}
_DATE_DMY = re.compile(r"\b(\d{1,2})[./](\d{1,2})[./](\d{4})\b")
_DATE_TEXT = re.compile(
    r"\b(\d{1,2})(?:st|nd|rd|th)?\s+(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?,?\s+(\d{4})\b"
    r"|\b(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?\s+(\d{1,2})(?:st|nd|rd|th)?,?\s+(\d{4})\b",
    re.IGNORECASE,
)
_CURRENCY_SYMBOL = {"$": "USD", "€": "EUR", "£": "GBP", "¥": "JPY"}
_CURRENCY_PREFIX = re.compile(r"([$€£¥])\s?(\d[\d,]*(?:\.\d+)?)")
_CURRENCY_SUFFIX = re.compile(r"\b(\d[\d,]*(?:\.\d+)?)\s?(usd|eur|gbp|dollars?|euros?|pounds?)\b", re.I)
_CURRENCY_WORD = {"dollar": "USD", "dollars": "USD", "euro": "EUR", "euros": "EUR",
                  "pound": "GBP", "pounds": "GBP"}
_UNITS = [
    (re.compile(r"\b(\d+(?:\.\d+)?)\s?(?:kgs|kilos?|kilograms?)\b", re.I), r"\1 kg"),
    (re.compile(r"\b(\d+(?:\.\d+)?)\s?(?:lbs?|pounds? weight)\b", re.I), r"\1 lb"),
    (re.compile(r"\b(\d+(?:\.\d+)?)\s?(?:cms|centimet(?:er|re)s?)\b", re.I), r"\1 cm"),
    (re.compile(r"\b(\d+(?:\.\d+)?)\s?(?:mms|millimet(?:er|re)s?)\b", re.I), r"\1 mm"),
    (re.compile(r"\b(\d+(?:\.\d+)?)\s?(?:kms|kilomet(?:er|re)s?)\b", re.I), r"\1 km"),
    (re.compile(r"\b(\d+(?:\.\d+)?)\s?(?:gbs|gigabytes?)\b", re.I), r"\1 GB"),
]


def _fix_mojibake(text: str) -> str:
    if not _MOJIBAKE_HINT.search(text):
        return text
    import ftfy  # lazy: only texts that look broken pay for it

    return ftfy.fix_text(text, normalization="NFC")


def _collapse_whitespace(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _SPACES.sub(" ", text)
    text = "\n".join(line.strip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", text).strip()


def _iso_dates(text: str) -> str:
    def dmy(m: re.Match) -> str:
        day, month, year = int(m[1]), int(m[2]), m[3]
        if not (1 <= day <= 31 and 1 <= month <= 12):
            return m[0]
        return f"{year}-{month:02d}-{day:02d}"

    def textual(m: re.Match) -> str:
        day, mon, year = (m[1], m[2], m[3]) if m[1] else (m[5], m[4], m[6])
        return f"{year}-{_MONTHS[mon[:3].lower()]:02d}-{int(day):02d}"

    # Day-first for numeric dates: the common form outside the US. Documented in the config.
    return _DATE_TEXT.sub(textual, _DATE_DMY.sub(dmy, text))


def _currency(text: str) -> str:
    def amount(raw: str) -> str:
        return f"{float(raw.replace(',', '')):.2f}"

    text = _CURRENCY_PREFIX.sub(lambda m: f"{amount(m[2])} {_CURRENCY_SYMBOL[m[1]]}", text)
    return _CURRENCY_SUFFIX.sub(
        lambda m: f"{amount(m[1])} {_CURRENCY_WORD.get(m[2].lower(), m[2].upper())}", text
    )


def _units(text: str) -> str:
    for pattern, repl in _UNITS:
        text = pattern.sub(repl, text)
    return text


def build_normaliser(cfg: NormaliseConfig) -> Callable[[str], str]:
    """Compose the configured steps into one ``str -> str`` function (order matters:
    mojibake repair needs the raw code points, NFKC before whitespace folding)."""
    steps: list[Callable[[str], str]] = []
    if cfg.fix_mojibake:
        steps.append(_fix_mojibake)
    if cfg.unicode_form != "none":
        form = cfg.unicode_form
        steps.append(lambda t: unicodedata.normalize(form, t))
    if cfg.strip_control:
        steps.append(lambda t: _CONTROL.sub("", t))
    if cfg.collapse_whitespace:
        steps.append(_collapse_whitespace)
    if cfg.lowercase:
        steps.append(str.lower)
    if cfg.dates:
        steps.append(_iso_dates)
    if cfg.currency:
        steps.append(_currency)
    if cfg.units:
        steps.append(_units)

    def normalise(text: str) -> str:
        for step in steps:
            text = step(text)
        return text

    return normalise
