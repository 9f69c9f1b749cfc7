"""Consistent pseudonyms: a keyed hash of (entity, normalised value) picks a look-alike.

The same value gets the same pseudonym in every process and batch of a snapshot (the salt is
the snapshot's secret), so "Anna" stays one person across a conversation and training data
keeps its co-references. Values are normalised first (``+44 20 7946 0958`` and
``+442079460958`` are one number; e-mails ignore case). The output keeps the input's shape
(grouping, separators, country code) but never its digits:

* CREDIT_CARD keeps the network digit, is Luhn-valid; IBAN keeps the country, passes mod-97;
* EMAIL -> ``user123456@example.com`` (a reserved domain); IP -> 10.0.0.0/8 or 2001:db8::/32;
* PERSON maps each name part on its own, so "Anna Kowalski" and a later "Anna" agree.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re

from tunesmith.data.pii.charsets import word_list
from tunesmith.data.pii.checksums import iban_check_digits, luhn_digit
from tunesmith.data.pii.names import fold
from tunesmith.data.pii.patterns import STREET_WORDS

_STREETS = word_list(
    "Oak Maple Cedar Birch Elm Linden Willow Chestnut Aspen Juniper Laurel Alder Rowan Poplar "
    "Spruce Cypress Magnolia Acacia Sycamore Hawthorn Heather Meadow Orchard Brook Harbor"
)
_EN_MONTHS = word_list("January February March April May June July August September October November December")


class Pseudonymizer:
    """``pseudonym(entity, value)``: a deterministic fake of the same kind and shape."""

    def __init__(
        self,
        salt: str,
        first_names: list[str],
        surnames: list[str],
        given_names: frozenset[str] = frozenset(),
    ):
        """Name pools come from the gazetteer; ``given_names`` (folded) tells a lone "Anna"
        (given-name pool) from a lone "Kowalski" (surname pool)."""
        self._key = hashlib.blake2b(salt.encode("utf-8"), digest_size=32).digest()
        self._first = [n.title() for n in first_names]
        self._last = [n.title() for n in surnames]
        self._given = given_names
        self._makers = {
            "EMAIL": self._email, "PHONE": self._phone, "CREDIT_CARD": self._card,
            "IBAN": self._iban, "US_SSN": self._ssn, "IP_ADDRESS": self._ip,
            "URL_CREDENTIALS": self._creds, "DATE_OF_BIRTH": self._date,
            "PERSON": self._person, "STREET_ADDRESS": self._address,
        }

    def pseudonym(self, entity: str, value: str) -> str:
        return self._makers[entity](value)

    def _int(self, kind: str, norm: str) -> int:
        """128 bits of keyed hash of (kind, normalised value)."""
        h = hashlib.blake2b(f"{kind}\0{norm}".encode(), key=self._key, digest_size=16)
        return int.from_bytes(h.digest(), "big")

    def _digits(self, kind: str, norm: str, n: int) -> str:
        return f"{self._int(kind, norm) % 10**n:0{n}d}"[-n:] if n else ""

    def _email(self, value: str) -> str:
        return f"user{self._int('EMAIL', value.lower()) % 10**6:06d}@example.com"

    def _phone(self, value: str) -> str:
        """Keep the first digit group (country/area code), a "(0)" trunk and the layout;
        replace the other digits."""
        digits = re.sub(r"\D", "", value.replace("(0)", ""))  # one number, however written
        m = re.match(r"(\D*)(\d+)", value)
        # A short first group is a country/area code and stays; an unseparated number
        # ("0612345678") keeps only its first two digits.
        head = (m.end() if len(m[2]) <= 4 else m.end(1) + 2) if m else 0
        trunk = {i + 1 for i in range(len(value)) if value.startswith("(0)", i)}
        fresh = iter(self._digits("PHONE", digits, 20))
        keep = lambda i, c: i < head or i in trunk or not c.isdigit()  # noqa: E731
        return "".join(c if keep(i, c) else next(fresh) for i, c in enumerate(value))

    def _card(self, value: str) -> str:
        digits = re.sub(r"\D", "", value)
        body = digits[0] + self._digits("CREDIT_CARD", digits, len(digits) - 2)
        fresh = iter(body + luhn_digit(body))
        return "".join(next(fresh) if c.isdigit() else c for c in value)

    def _iban(self, value: str) -> str:
        """Same country and letter/digit layout, fresh BBAN, recomputed check digits."""
        compact = value.replace(" ", "").upper()
        n = self._int("IBAN", compact)
        bban = []
        for c in compact[4:]:
            n, r = divmod(n, 26) if c.isalpha() else divmod(n, 10)
            bban.append(chr(65 + r) if c.isalpha() else str(r))
            n = n or self._int("IBAN", compact + str(len(bban)))  # refill when bits run out
        new = compact[:2] + iban_check_digits(compact[:2], "".join(bban)) + "".join(bban)
        if " " in value:
            return " ".join(new[i : i + 4] for i in range(0, len(new), 4))
        return new

    def _ssn(self, value: str) -> str:
        digits = re.sub(r"\D", "", value)
        n = self._int("US_SSN", digits)
        area = 1 + n % 899
        area = 667 if area == 666 else area
        group, serial = 1 + (n >> 16) % 99, 1 + (n >> 32) % 9999
        sep = next((c for c in value if not c.isdigit()), "")
        return f"{area:03d}{sep}{group:02d}{sep}{serial:04d}"

    def _ip(self, value: str) -> str:
        n = self._int("IP_ADDRESS", value.lower())
        if ":" in value:
            return str(ipaddress.IPv6Address((0x20010DB8 << 96) | (n & ((1 << 96) - 1))))
        return str(ipaddress.IPv4Address((10 << 24) | (n & 0xFFFFFF)))

    def _creds(self, value: str) -> str:
        n = self._int("URL_CREDENTIALS", value)
        return f"user{n % 10**4:04d}:{(n >> 20) & (16**16 - 1):016x}"

    def _date(self, value: str) -> str:
        """A date in the same written form; numeric day/month both <= 12 so either order reads."""
        n = self._int("DATE_OF_BIRTH", value)
        year, dm = 1940 + n % 66, [1 + (n >> 8) % 12, 1 + (n >> 16) % 12]
        out = re.sub(r"\b(?:19|20)\d{2}\b", str(year), value, count=1)
        if out == value:  # two-digit year: 15.03.87
            out = re.sub(r"\d{2}$", f"{year % 100:02d}", value)
        for word in _EN_MONTHS:  # English month names move too; other languages keep theirs
            if word in out or word[:3] in out:
                full = word in out
                new = _EN_MONTHS[(n >> 24) % 12]
                out = out.replace(word if full else word[:3], new if full else new[:3], 1)
                break
        parts = iter(dm)
        day_month = r"(?<!\d)\d{1,2}(?!\d)"  # count=2 leaves a two-digit year alone
        return re.sub(day_month, lambda m: f"{next(parts):0{len(m[0])}d}", out, count=2)

    def _person(self, value: str) -> str:
        """Each name part maps on its own, so "Anna Kowalski" and "Anna" stay consistent."""
        words = value.split()
        out = []
        for i, w in enumerate(words):
            if w.islower() and i and i < len(words) - 1:
                out.append(w)  # particles: "van", "de"
                continue
            # A lone word is a given name only if the gazetteer says so ("Mr. Kowalski").
            given = i == 0 and (len(words) > 1 or fold(w) in self._given)
            pool = self._first if given else self._last
            pick = pool[self._int("PERSON", w.casefold()) % len(pool)]
            out.append(pick.lower() if w.islower() else pick)
        return " ".join(out)

    def _address(self, value: str) -> str:
        """Digits replaced; the first capitalised name word becomes a tree name; types stay."""
        n = self._int("STREET_ADDRESS", value.lower())
        fresh = iter(self._digits("STREET_ADDRESS", value.lower(), 16))
        # House numbers keep their length but never start with 0 ("Hauptstraße 07").
        out = re.sub(
            r"\d+", lambda m: str(1 + int(next(fresh)) % 9) + "".join(next(fresh) for _ in m[0][1:]), value
        )
        tree = _STREETS[n % len(_STREETS)]
        names = re.finditer(r"(?<![\w.])[A-ZÀ-ÞŁŚŻŹĆŃ][\w'’\-]*\.?", out)
        name = next((m for m in names if m[0].rstrip(".").lower() not in STREET_WORDS), None)
        if not name:
            return out
        word = name[0]
        stem = re.match(r"(.+?)(straße|strasse|str\.|weg|gasse|platz|allee|straat|laan|"
                        r"gracht|gatan|vägen|vej|gade)$", word, re.I)
        replacement = tree + stem[2] if stem else tree
        return out[: name.start()] + replacement + out[name.end() :]
