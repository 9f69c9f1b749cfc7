"""PII detection and redaction (prepare stage, and anything written to logs).

Entities (``PII_ENTITIES`` in config.py): EMAIL, PHONE (international formats), CREDIT_CARD
(Luhn), IBAN (ISO 13616 mod-97), US_SSN (SSA rules), IP_ADDRESS (v4/v6), URL_CREDENTIALS
(``scheme://user:pass@``), DATE_OF_BIRTH (a date with a birth cue), PERSON (gazetteer + cues,
optionally spaCy NER), STREET_ADDRESS (English and common European forms).

Layout: ``patterns`` (regex + checksum detectors), ``names`` (rule-based person names and the
word lists beside it), ``ner`` (optional spaCy), ``pseudonyms`` (consistent fakes),
``scrubber`` (``PiiScrubber``: overlap resolution and replacement).
``benchmarks/bench_pii.py`` compares recall/precision/speed with Presidio.
"""

from tunesmith.data.pii.scrubber import PiiScrubber, PiiSpan

__all__ = ["PiiScrubber", "PiiSpan"]
