"""PII detection and redaction: every entity, checksum negatives, name precision, actions."""

from __future__ import annotations

import importlib.util
import ipaddress
import itertools
import pickle
import re

import pytest

from tunesmith.config import PII_ENTITIES, PiiConfig
from tunesmith.data.pii import PiiScrubber, PiiSpan
from tunesmith.data.pii.checksums import iban_ok, luhn_ok


@pytest.fixture(scope="module")
def scrubber() -> PiiScrubber:
    return PiiScrubber(PiiConfig(), salt="test-salt")


def found(scrubber: PiiScrubber, text: str) -> list[tuple[str, str]]:
    return [(s.entity, s.text) for s in scrubber.detect(text)]


# --------------------------------------------------------------------------- every entity
POSITIVES = [
    ("EMAIL", "Write to anna.kowalski+shop@example.co.uk today.", "anna.kowalski+shop@example.co.uk"),
    ("PHONE", "Call me on +44 20 7946 0958 after six.", "+44 20 7946 0958"),
    ("PHONE", "My number is (415) 555-0132.", "(415) 555-0132"),
    ("PHONE", "Office: +49 30 901820, ask for the desk.", "+49 30 901820"),
    ("PHONE", "Mobiel 0612345678 graag.", "0612345678"),
    ("PHONE", "Ring 06 12 34 56 78 anytime.", "06 12 34 56 78"),
    ("PHONE", "It is 1-800-555-0199 ext. 42 for sales.", "1-800-555-0199 ext. 42"),
    ("PHONE", "call me on 4155550132 please", "4155550132"),
    ("CREDIT_CARD", "Card 4111 1111 1111 1111 was charged twice.", "4111 1111 1111 1111"),
    ("CREDIT_CARD", "Amex 3782-822463-10005 expired.", "3782-822463-10005"),
    ("IBAN", "Refund to DE89 3704 0044 0532 0130 00 please.", "DE89 3704 0044 0532 0130 00"),
    ("IBAN", "IBAN GB82WEST12345698765432.", "GB82WEST12345698765432"),
    ("US_SSN", "SSN 078-05-1120 on file.", "078-05-1120"),
    ("US_SSN", "my ssn: 219099999", "219099999"),
    ("IP_ADDRESS", "Blocked from 192.168.1.10 again.", "192.168.1.10"),
    ("IP_ADDRESS", "Server 2001:db8::8a2e:370:7334 is down.", "2001:db8::8a2e:370:7334"),
    ("URL_CREDENTIALS", "Use https://admin:s3cr3t@db.example.com:5432/app now.", "admin:s3cr3t"),
    ("DATE_OF_BIRTH", "DOB: 15.03.1987, member since 2020.", "15.03.1987"),
    ("DATE_OF_BIRTH", "I was born on March 5th, 1987 in Leeds.", "March 5th, 1987"),
    ("DATE_OF_BIRTH", "Geburtsdatum geb. 3. Mai 1990.", "3. Mai 1990"),
    ("DATE_OF_BIRTH", "My date of birth is 1987-03-15.", "1987-03-15"),
    ("PERSON", "Hi, my name is Priya Raman and I need help.", "Priya Raman"),
    ("PERSON", "Please ask Dr. Chen about it.", "Chen"),
    ("PERSON", "Thanks for the quick reply.\nRegards,\nJohn Smith", "John Smith"),
    ("PERSON", "I spoke with Łukasz Wiśniewski yesterday.", "Łukasz Wiśniewski"),
    ("PERSON", "Hi Zorbulon, your order shipped.", "Zorbulon"),
    ("PERSON", "my name is anna kowalski and i cant log in", "anna kowalski"),
    ("PERSON", "Nagy Levente will pick it up.", "Nagy Levente"),
    ("PERSON", "Send it to Jean-Pierre van der Berg.", "Jean-Pierre van der Berg"),
    ("STREET_ADDRESS", "Ship to 221B Baker Street, Apt 4 please.", "221B Baker Street, Apt 4"),
    ("STREET_ADDRESS", "Office at 1600 Pennsylvania Ave NW.", "1600 Pennsylvania Ave NW"),
    ("STREET_ADDRESS", "Wir wohnen in der Hauptstraße 5.", "Hauptstraße 5"),
    ("STREET_ADDRESS", "Adres: Keizersgracht 123, Amsterdam.", "Keizersgracht 123"),
    ("STREET_ADDRESS", "Envoyez à 12 rue de la Paix.", "12 rue de la Paix"),
    ("STREET_ADDRESS", "Vivo en Calle Mayor 12, Madrid.", "Calle Mayor 12"),
    ("STREET_ADDRESS", "Abito in Via Roma, 10 a Torino.", "Via Roma, 10"),
    ("STREET_ADDRESS", "Mieszkam przy ul. Długa 90.", "ul. Długa 90"),
]


@pytest.mark.parametrize(("entity", "text", "value"), POSITIVES)
def test_each_entity_is_detected_and_redacted(
    scrubber: PiiScrubber, entity: str, text: str, value: str
) -> None:
    assert (entity, value) in found(scrubber, text)
    redacted, counts = scrubber.scrub(text)
    assert value not in redacted
    assert f"<{entity}>" in redacted
    assert counts[entity] >= 1


def test_every_config_entity_has_a_positive_case() -> None:
    assert {e for e, _, _ in POSITIVES} == set(PII_ENTITIES)


def test_spans_are_sorted_non_overlapping_and_match_the_text(scrubber: PiiScrubber) -> None:
    text = " ".join(t for _, t, _ in POSITIVES)
    spans = scrubber.detect(text)
    assert len(spans) >= len(POSITIVES)
    for a, b in itertools.pairwise(spans):
        assert a.end <= b.start
    assert all(text[s.start : s.end] == s.text for s in spans)
    assert isinstance(spans[0], PiiSpan)


def test_credential_url_beats_the_email_inside_it(scrubber: PiiScrubber) -> None:
    text = "db at postgres://app:hunter22@db.internal.example.com/prod"
    assert found(scrubber, text) == [("URL_CREDENTIALS", "app:hunter22")]
    assert scrubber.scrub(text)[0] == "db at postgres://<URL_CREDENTIALS>@db.internal.example.com/prod"


# --------------------------------------------------------------------------- negatives
NEGATIVES = [
    "Card 4111 1111 1111 1112 was declined.",  # Luhn fails
    "Order 1234567890123456 is late.",  # 16 digits, Luhn fails
    "IBAN DE89 3704 0044 0532 0130 01 bounced.",  # mod-97 fails
    "IBAN GB00WEST12345698765432 bounced.",
    "SSN 666-12-3456 and 000-12-3456 and 912-34-5678 are not issued.",
    "Numbers 123-00-4567 and 123-45-0000 are invalid too.",
    "Order ORD-2024-001234 placed on 2024-03-15 for $1,234.56.",
    "Invoice INV-0009812, order #0612345678, order 0612345678.",
    "SKU-0042-XL costs €49,99 and ships on 15.03.2024 at 10:30.",
    "Tracking 1Z999AA10123456784, version 2.13.0, 3 items.",
    "Delivered 01.02.2024 10:00 to the locker.",
    "Meeting at 10:30:45 on 256.1.1.1 is not an address.",
    "See https://status.example.com/incidents/123 for details.",
]


@pytest.mark.parametrize("text", NEGATIVES)
def test_lookalikes_are_not_flagged(scrubber: PiiScrubber, text: str) -> None:
    assert found(scrubber, text) == []


def test_invalid_iban_digits_are_not_read_as_card_or_phone(scrubber: PiiScrubber) -> None:
    assert found(scrubber, "Pay to DE89 3704 0044 0532 0130 01 today") == []


def test_checksum_helpers() -> None:
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("DE89370400440532013000") and not iban_ok("DE89370400440532013001")
    assert not iban_ok("DE8937040044053201300")  # wrong length for DE


def test_dates_without_a_birth_cue_are_not_dobs(scrubber: PiiScrubber) -> None:
    text = "I was born in Leeds in 1990 and ordered on 2024-03-15, delivered 16.03.2024."
    assert [e for e, _ in found(scrubber, text)] == []


COMMON_WORD_SENTENCES = [
    "Will you mark it as resolved? May 5 works for me.",
    "Mark this ticket as urgent, please.",
    "Can you help me? Will do, thanks.",
    "Bill me later. Grant access to the team.",
    "The Apple Watch I ordered from Amazon arrived in Paris.",
    "Dear Valued Customer, thanks for contacting Customer Service.",
    "We shipped it to San Diego and New York via St. Louis.",
    "Hi, Can you check the Rose Gold version?",
    "Hello,\nWill the refund arrive before Friday?",
    "Täsche Schmidt AG sent the invoice.",
    "The parcel is stuck in Lake Samanthaview.",
]


@pytest.mark.parametrize("text", COMMON_WORD_SENTENCES)
def test_common_words_are_not_names(scrubber: PiiScrubber, text: str) -> None:
    assert [v for e, v in found(scrubber, text) if e == "PERSON"] == []


def test_name_like_words_count_with_a_cue(scrubber: PiiScrubber) -> None:
    assert ("PERSON", "Will") in found(scrubber, "Hi Will, your order shipped.")
    assert ("PERSON", "Will Turner") in found(scrubber, "I spoke with Will Turner today.")
    assert ("PERSON", "Fuzuli") in found(scrubber, "My husband Fuzuli placed the order.")
    assert ("PERSON", "Sefer Sezgin") in found(scrubber, "It was signed for by Sefer Sezgin.")


# --------------------------------------------------------------------------- actions, pseudonyms
TEXT = (
    "Hi, my name is Priya Raman. Email priya.raman@example.com, phone +44 20 7946 0958, "
    "card 4111 1111 1111 1111, IBAN DE89 3704 0044 0532 0130 00, SSN 078-05-1120, "
    "server 192.168.1.10, https://admin:s3cr3t@db.example.com/x, DOB: 15.03.1987, "
    "address 221B Baker Street. Thanks, Priya"
)


def test_counts_per_entity(scrubber: PiiScrubber) -> None:
    _, counts = scrubber.scrub(TEXT)
    assert counts == {
        "PERSON": 2, "EMAIL": 1, "PHONE": 1, "CREDIT_CARD": 1, "IBAN": 1, "US_SSN": 1,
        "IP_ADDRESS": 1, "URL_CREDENTIALS": 1, "DATE_OF_BIRTH": 1, "STREET_ADDRESS": 1,
    }


def test_keep_is_counted_but_not_replaced() -> None:
    cfg = PiiConfig(entities={"EMAIL": "keep", "PERSON": "keep"})
    redacted, counts = PiiScrubber(cfg, salt="s").scrub(TEXT)
    assert "priya.raman@example.com" in redacted and "Priya Raman" in redacted
    assert counts["EMAIL"] == 1 and counts["PERSON"] == 2
    assert "<PHONE>" in redacted


def test_per_entity_actions_mix() -> None:
    cfg = PiiConfig(action="keep", entities={"PHONE": "placeholder", "CREDIT_CARD": "pseudonym"})
    redacted, _ = PiiScrubber(cfg, salt="s").scrub(TEXT)
    assert "<PHONE>" in redacted
    assert "4111 1111 1111 1111" not in redacted and "<CREDIT_CARD>" not in redacted
    assert "priya.raman@example.com" in redacted  # default action: keep


def _pseudo(salt: str) -> PiiScrubber:
    return PiiScrubber(PiiConfig(action="pseudonym"), salt=salt)


def test_pseudonyms_are_consistent_across_scrubbers_and_differ_by_salt() -> None:
    a, b, c = _pseudo("snap-1"), _pseudo("snap-1"), _pseudo("snap-2")
    ra, rb, rc = a.scrub(TEXT)[0], b.scrub(TEXT)[0], c.scrub(TEXT)[0]
    assert ra == rb
    assert ra != rc
    # Same value twice in one text and in another text -> the same pseudonym.
    again = a.scrub("Email priya.raman@example.com or PRIYA.RAMAN@example.com")[0]
    emails = re.findall(r"user\d{6}@example\.com", again)
    assert len(emails) == 2 and emails[0] == emails[1] and emails[0] in ra


def test_pseudonyms_look_like_their_entity() -> None:
    s = _pseudo("look")
    out = {span.entity: span for span in s.detect(TEXT)}
    redacted = s.scrub(TEXT)[0]
    for span in out.values():
        assert span.text not in redacted, span
    card = re.search(r"card ([\d ]+),", redacted)[1]
    assert re.fullmatch(r"4\d{3} \d{4} \d{4} \d{4}", card) and luhn_ok(card.replace(" ", ""))
    iban = re.search(r"IBAN ([A-Z0-9 ]+),", redacted)[1]
    assert iban.startswith("DE") and iban_ok(iban.replace(" ", ""))
    assert re.search(r"user\d{6}@example\.com", redacted)
    ssn = re.search(r"SSN (\d{3}-\d{2}-\d{4})", redacted)[1]
    assert ssn[:3] not in ("000", "666") and ssn[0] != "9"
    ip = re.search(r"server ([\d.]+),", redacted)[1]
    assert ipaddress.IPv4Address(ip) in ipaddress.IPv4Network("10.0.0.0/8")
    assert re.search(r"phone \+44 \d{2} \d{4} \d{4},", redacted)
    assert re.search(r"DOB: \d{2}\.\d{2}\.\d{4},", redacted)
    assert re.search(r"https://user\d{4}:[0-9a-f]{16}@db\.example\.com/x", redacted)
    # The person's given name maps the same way on its own ("Thanks, Priya").
    first = re.search(r"my name is (\w+) (\w+)\.", redacted)
    assert redacted.rstrip().endswith(first[1])


@pytest.mark.parametrize("number", ["0612345678", "(415) 555-0132", "+44 (0)20 7946 0958"])
def test_phone_pseudonym_keeps_the_shape_not_the_number(number: str) -> None:
    out = _pseudo("p").scrub(f"Call me on {number} tonight.")[0]
    fake = out.removeprefix("Call me on ").removesuffix(" tonight.")
    assert fake != number
    assert re.sub(r"\d", "9", fake) == re.sub(r"\d", "9", number)
    assert re.sub(r"\D", "", fake)[-6:] != re.sub(r"\D", "", number)[-6:]


def test_scrubber_pickles_for_worker_processes() -> None:
    s = _pseudo("snap")
    clone = pickle.loads(pickle.dumps(s))
    assert clone.scrub(TEXT) == s.scrub(TEXT)


def test_spacy_without_the_model_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from tunesmith.data.pii import ner
    from tunesmith.errors import MissingDependencyError

    ner.load_ner.cache_clear()
    monkeypatch.setattr(ner, "_MODEL_PACKAGES", ("no_such_spacy_model_xyz",))
    with pytest.raises(MissingDependencyError, match=r"tunesmith\[ner\]"):
        PiiScrubber(PiiConfig(names="spacy"), salt="s")
    ner.load_ner.cache_clear()


def test_disabled_and_names_off() -> None:
    assert PiiScrubber(PiiConfig(enabled=False), salt="s").scrub(TEXT) == (TEXT, {})
    off = PiiScrubber(PiiConfig(names="off"), salt="s")
    assert "PERSON" not in {s.entity for s in off.detect(TEXT)}
    assert off.scrub("")[0] == ""


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("spacy") is None, reason="needs spaCy + en_core_web_sm ([ner])"
)
def test_spacy_names_add_to_the_rules() -> None:
    s = PiiScrubber(PiiConfig(names="spacy"), salt="s")
    text = "Then Ahanu Kekumu approved the refund yesterday. Call +44 20 7946 0958."
    rules = PiiScrubber(PiiConfig(), salt="s")
    assert "PERSON" not in {sp.entity for sp in rules.detect(text)}  # unknown to the gazetteer
    entities = {(sp.entity, sp.text) for sp in s.detect(text)}
    assert ("PERSON", "Ahanu Kekumu") in entities  # found by NER
    assert ("PHONE", "+44 20 7946 0958") in entities
    assert s.detect_many([text, "", "no names here"])[1:] == [[], []]
