"""``PiiScrubber``: detect PII spans in a text and replace them per the config.

Detectors propose ``(start, end, entity)`` hits; overlaps are settled by a fixed priority
(a credential URL beats the e-mail-looking ``pass@host`` inside it, an IBAN beats the card-
or phone-looking digits inside it, an address beats the person its street is named after),
then the longer hit. Each detector runs only when the text can hold its entity (no ``@``, no
e-mail), which is most of why this is fast.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from tunesmith.config import PiiConfig
from tunesmith.data.pii import patterns
from tunesmith.data.pii.names import Gazetteer, NameFinder
from tunesmith.data.pii.patterns import BLOCK, Hit
from tunesmith.data.pii.pseudonyms import Pseudonymizer

# Lower wins an overlap.
PRIORITY = {
    BLOCK: 0, "URL_CREDENTIALS": 1, "EMAIL": 2, "IBAN": 3, "CREDIT_CARD": 4, "US_SSN": 5,
    "IP_ADDRESS": 6, "DATE_OF_BIRTH": 7, "PHONE": 8, "STREET_ADDRESS": 9, "PERSON": 10,
}
_DIGIT = re.compile(r"[0-9]")


@dataclass(frozen=True, slots=True)
class PiiSpan:
    """One detected entity: ``text[start:end] == self.text``."""

    start: int
    end: int
    entity: str
    text: str


def resolve_hits(hits: Iterable[Hit]) -> list[Hit]:
    """Non-overlapping hits, sorted by start: priority first, then the longer hit."""
    taken: list[Hit] = []
    for s, e, ent in sorted(set(hits), key=lambda h: (PRIORITY[h[2]], h[0] - h[1], h[0])):
        if all(e <= ts or s >= te for ts, te, _ in taken):
            taken.append((s, e, ent))
    taken.sort()
    return taken


def resolve(text: str, hits: Iterable[Hit]) -> list[PiiSpan]:
    """``resolve_hits`` as ``PiiSpan``s, without the ``BLOCK`` pseudo-spans."""
    return [PiiSpan(s, e, ent, text[s:e]) for s, e, ent in resolve_hits(hits) if ent != BLOCK]


def structured_hits(text: str) -> list[Hit]:
    """Every detector except person names, each gated on a cheap test of the text."""
    hits: list[Hit] = []
    if "@" in text:
        hits += patterns.find_emails(text)
        if "://" in text:
            hits += patterns.find_url_credentials(text)
    if _DIGIT.search(text):
        lower = patterns.lower_same_length(text)
        hits += patterns.find_ibans(text)
        hits += patterns.find_cards(text)
        hits += patterns.find_ssns(text, lower)
        hits += patterns.find_ips(text)
        hits += patterns.find_dobs(text, lower)
        hits += patterns.find_phones(text, lower)
        hits += patterns.find_addresses(text)
    return hits


class PiiScrubber:
    """Detect and redact PII per ``PiiConfig``.

    Args:
        cfg: entity actions (``placeholder`` -> ``<EMAIL>``, ``pseudonym``, ``keep``) and the
            person-name detector (``rules``, ``spacy``, ``off``).
        salt: snapshot-level secret; pseudonyms are a pure function of (salt, entity, value),
            so every worker and batch of a snapshot agrees, and another snapshot differs.
    """

    def __init__(self, cfg: PiiConfig, *, salt: str):
        """Loads the word lists once (cached per process) and, for ``spacy``, the model."""
        self.cfg = cfg
        gazetteer = Gazetteer.load()
        self._names = NameFinder(gazetteer) if cfg.names != "off" else None
        self._spacy = cfg.names == "spacy"
        if self._spacy:
            from tunesmith.data.pii.ner import load_ner

            load_ner()  # fail at construction, with the install hint, not mid-run
        self._actions = {e: cfg.action_for(e) for e in PRIORITY if e != BLOCK}
        self._pseudo = Pseudonymizer(
            salt, gazetteer.first_names(), gazetteer.surnames(), gazetteer.first - gazetteer.ambiguous
        )

    def _hits(self, text: str) -> list[Hit]:
        hits = structured_hits(text)
        if self._names is not None:
            hits += self._names.find(text)
        return hits

    def detect(self, text: str) -> list[PiiSpan]:
        """PII spans in ``text``: non-overlapping, sorted by start."""
        return self.detect_many([text])[0]

    def detect_many(self, texts: list[str]) -> list[list[PiiSpan]]:
        """``detect`` for many texts; with ``names: spacy`` the NER runs batched, and only
        where the rules left a capitalised word unexplained (see ``ner``)."""
        if not self.cfg.enabled:
            return [[] for _ in texts]
        hits = [self._hits(t) if t else [] for t in texts]
        if self._spacy:
            hits = self._add_ner(texts, hits)
        return [resolve(t, h) for t, h in zip(texts, hits, strict=True)]

    def _add_ner(self, texts: list[str], hits: list[list[Hit]]) -> list[list[Hit]]:
        """Rule hits plus NER PERSON hits from windows the rules left unexplained."""
        from tunesmith.data.pii.ner import ner_persons_in_windows

        assert self._names is not None  # names == "spacy" builds the rule finder too
        spots = [
            self._names.unexplained(t, [(s, e) for s, e, _ in resolve_hits(h)])
            for t, h in zip(texts, hits, strict=True)
        ]
        ner = ner_persons_in_windows(texts, spots)
        return [h + n for h, n in zip(hits, ner, strict=True)]

    def scrub(self, text: str) -> tuple[str, Counter[str]]:
        """Redacted text and per-entity counts (``keep`` entities are counted, not replaced)."""
        return self.redact(text, self.detect(text))

    def scrub_many(self, texts: list[str]) -> list[tuple[str, Counter[str]]]:
        return [self.redact(t, spans) for t, spans in zip(texts, self.detect_many(texts), strict=True)]

    def redact(self, text: str, spans: list[PiiSpan]) -> tuple[str, Counter[str]]:
        """Apply each entity's action to ``spans`` (from ``detect``); count every span."""
        counts: Counter[str] = Counter(s.entity for s in spans)
        out, pos = [], 0
        for span in spans:
            action = self._actions[span.entity]
            if action == "keep":
                continue
            out.append(text[pos : span.start])
            if action == "pseudonym":
                out.append(self._pseudo.pseudonym(span.entity, span.text))
            else:
                out.append(f"<{span.entity}>")
            pos = span.end
        out.append(text[pos:])
        return "".join(out), counts
