"""Checksums that separate real identifiers from look-alike digit runs (order ids, amounts).

A regex alone cannot tell a card number from a 16-digit order id; the Luhn digit, the IBAN
mod-97 check and the SSA's rules for social security numbers can, and cost microseconds.
"""

from __future__ import annotations

# ISO 13616 registry: IBAN length per country. A candidate is cut to this length, so an IBAN
# followed by another short word ("... 0130 00 AB") is not over-read.
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30,
    "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22,
    "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}


def luhn_ok(digits: str) -> bool:
    """True when the last digit is the Luhn check digit of the others (every payment card)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def luhn_digit(payload: str) -> str:
    """The check digit that makes ``payload + digit`` pass :func:`luhn_ok`."""
    for d in "0123456789":
        if luhn_ok(payload + d):
            return d
    raise AssertionError("unreachable: one of ten digits always satisfies Luhn")


def _iban_number(iban: str) -> int:
    """The integer ISO 13616 checks: country + check digits moved to the end, A=10 … Z=35."""
    moved = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in moved))


def iban_ok(iban: str) -> bool:
    """True for a compact upper-case IBAN of its country's length whose mod-97 remainder is 1."""
    if IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban.isalnum():
        return False
    return _iban_number(iban) % 97 == 1


def iban_check_digits(country: str, bban: str) -> str:
    """The two check digits for ``country + ?? + bban`` (used to build valid pseudonyms)."""
    return f"{98 - _iban_number(country + '00' + bban) % 97:02d}"


def ssn_ok(area: str, group: str, serial: str) -> bool:
    """SSA rules: area not 000, 666 or 9xx; group not 00; serial not 0000."""
    return (
        area not in ("000", "666")
        and area[0] != "9"
        and group != "00"
        and serial != "0000"
    )
