"""Regex + checksum detectors for the structured entities (everything but person names).

Each ``find_*`` returns ``(start, end, entity)`` hits. They are cheap because each regex starts
with a literal or a small character class (the engine skips ahead in C), and the expensive
checks (Luhn, mod-97, ``ipaddress``, context look-backs) run only on the few candidates.
Look-behinds keep a pattern from starting inside a longer token (``ORD-2024-001234`` holds no
phone number); look-aheads keep it from ending inside one.
"""

from __future__ import annotations

import ipaddress
import re

from tunesmith.data.pii.charsets import LETTERS, UPPER
from tunesmith.data.pii.checksums import IBAN_LENGTHS, iban_ok, luhn_ok, ssn_ok

Hit = tuple[int, int, str]
# Pseudo-entity for a span that is known NOT to be PII but must not be read as anything else.
BLOCK = "_BLOCK"

# --------------------------------------------------------------------------- email, URL creds
_EMAIL = re.compile(
    r"(?<![\w.%+\-])[\w%+\-][\w.%+\-]{0,63}@\w(?:[\w\-]{0,62}\.)+[^\W\d_]{2,24}(?![\w\-])"
)
# user:password@ or a long bare token@ (GitHub/GitLab tokens) in a URL's authority.
_URL_CREDS = re.compile(
    r"\b[A-Za-z][A-Za-z0-9+.\-]{1,20}://"
    r"(?P<ui>[^\s/?#@:]*:[^\s/?#@]+|[A-Za-z0-9_\-]{20,})@[^\s/?#@:]"
)


def find_emails(text: str) -> list[Hit]:
    return [(m.start(), m.end(), "EMAIL") for m in _EMAIL.finditer(text)]


def find_url_credentials(text: str) -> list[Hit]:
    """The ``user:password`` part only: the host and path stay readable in the redacted text."""
    return [(m.start("ui"), m.end("ui"), "URL_CREDENTIALS") for m in _URL_CREDS.finditer(text)]


# --------------------------------------------------------------------------- cards, IBAN, SSN
_CARD = re.compile(r"(?<![\w\-.,])\d(?:[ \-]?\d){12,18}(?![\w\-]|[.,]\d)")
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}(?![a-z0-9])")
_SSN = re.compile(r"(?<![\w\-/.])(\d{3})([\- ])(\d{2})\2(\d{4})(?![\w\-/]|[.,]\d)")
_SSN_CUE = re.compile(
    r"(?i:\b(?:ssn|ss#|social\s+security(?:\s+(?:number|no\.?|#))?))[\s:#.\-]*(\d{9})(?!\d)"
)


def _card_ok(raw: str) -> bool:
    """Luhn + a payment-network first digit + one consistent separator in 4-ish groups."""
    digits = raw.replace(" ", "").replace("-", "")
    if not 13 <= len(digits) <= 19 or digits[0] not in "23456" or not luhn_ok(digits):
        return False
    seps = {c for c in raw if not c.isdigit()}
    if not seps:
        return True
    if len(seps) > 1:
        return False
    groups = raw.split(seps.pop())
    return len(groups[0]) == 4 and all(2 <= len(g) <= 6 for g in groups)


def find_cards(text: str) -> list[Hit]:
    return [(m.start(), m.end(), "CREDIT_CARD") for m in _CARD.finditer(text) if _card_ok(m[0])]


def _iban_end(text: str, start: int, end: int) -> int | None:
    """End offset of the valid IBAN starting at ``start``, cut to its country's length."""
    length = IBAN_LENGTHS.get(text[start : start + 2])
    if length is None:
        return None
    seen, i = 0, start
    while i < end and seen < length:
        seen += text[i] != " "
        i += 1
    if seen < length:
        return None
    return i if iban_ok(text[start:i].replace(" ", "")) else None


def find_ibans(text: str) -> list[Hit]:
    """Valid IBANs; an IBAN-shaped run that fails the checksum is returned as ``BLOCK`` so
    that no card or phone number is read out of its digits."""
    hits = []
    for m in _IBAN.finditer(text):
        end = _iban_end(text, m.start(), m.end())
        hits.append((m.start(), end, "IBAN") if end else (m.start(), m.end(), BLOCK))
    return hits


def find_ssns(text: str) -> list[Hit]:
    hits = [
        (m.start(), m.end(), "US_SSN") for m in _SSN.finditer(text) if ssn_ok(m[1], m[3], m[4])
    ]
    for m in _SSN_CUE.finditer(text):
        d = m[1]
        if ssn_ok(d[:3], d[3:5], d[5:]):
            hits.append((m.start(1), m.end(1), "US_SSN"))
    return hits


# --------------------------------------------------------------------------- IP addresses
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"(?<![\w.\-]){_OCTET}(?:\.{_OCTET}){{3}}(?![\w\-]|\.\d)")
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|\d{1,3}(?:\.\d{1,3}){3})?(?![\w:])")


def find_ips(text: str) -> list[Hit]:
    hits = [(m.start(), m.end(), "IP_ADDRESS") for m in _IPV4.finditer(text)]
    if text.count(":") >= 2:
        for m in _IPV6.finditer(text):
            cand = m[0]
            # Times ("10:30:00") and MAC-less junk fail the parser; "::" alone is no address.
            if sum(c.isalnum() for c in cand) < 3:
                continue
            try:
                ipaddress.IPv6Address(cand)
            except ValueError:
                continue
            hits.append((m.start(), m.end(), "IP_ADDRESS"))
    return hits


# --------------------------------------------------------------------------- dates of birth
_MONTHS = (
    "jan(?:uary|uari|vier|eiro)?|feb(?:ruary|ruar|ruari|braio)?|f[ée]v(?:rier|ereiro)?|"
    "mar(?:ch|s|zo|ço|co)?|m[äa]rz|maart|apr(?:il|ile)?|avr(?:il)?|abr(?:il)?|may(?:o)?|mai(?:o)?|"
    "mei|maggio|jun(?:e|i|io|ho)?|juin|giugno|jul(?:y|i|io|ho)?|juil(?:let)?|luglio|"
    "aug(?:ust|ustus)?|ao[ûu]t|ago(?:sto)?|sep(?:t|tember|tembre|tiembre|tembro)?|set(?:tembre|iembre|embro)?|"
    "oct(?:ober|obre|ubre)?|okt(?:ober)?|ott(?:obre)?|out(?:ubro)?|nov(?:ember|embre|iembre|embro)?|"
    "dec(?:ember)?|d[ée]c(?:embre)?|dez(?:ember|embro)?|dic(?:iembre|embre)?|"
    "enero|febrero|gennaio|janvier|janeiro|januar|juni|juli"
)
_ORD = r"(?:st|nd|rd|th|er|º|°)?"
_YEAR = r"(?:19|20)\d{2}"
_DATE = re.compile(
    rf"(?<![\w/.\-])(?:"
    rf"\d{{1,2}}[./\-]\d{{1,2}}[./\-](?:{_YEAR}|\d{{2}})"  # 15.03.1987, 03/15/87
    rf"|{_YEAR}[./\-]\d{{1,2}}[./\-]\d{{1,2}}"  # 1987-03-15
    rf"|\d{{1,2}}{_ORD}\.?\s+(?:de\s+|of\s+)?(?i:{_MONTHS})\.?,?\s+(?:de\s+)?{_YEAR}"  # 5 March 1987
    rf"|(?i:{_MONTHS})\.?\s+\d{{1,2}}{_ORD},?\s+{_YEAR}"  # March 5th, 1987
    rf"|(?i:{_MONTHS})\.?\s+\d{{1,2}}{_ORD}"  # March 5th (birthday without a year)
    rf")(?![\w/\-]|\.\d)"
)
# A birth cue no more than ~30 characters before the date, on the same line.
_DOB_CUE = re.compile(
    r"(?i:\bd\.?o\.?b\b\.?|date\s+of\s+birth|birth\s*-?date|\bbirthday|\bborn\b|\bgeb\.|"
    r"\bgeboren|geburtsdatum|geburtstag|\bn[ée]e?\s+le|date\s+de\s+naissance|fecha\s+de\s+nacimiento|"
    r"\bnacid[oa]|data\s+di\s+nascita|\bnat[oa]\s+il|data\s+de\s+nascimento|\bnascid[oa]|"
    r"geboortedatum|f[öø]dd|f[øo]dt|urodzon[ya]|data\s+urodzenia|doğum\s+tarihi)"
    r"[^\n;!?\d]{0,30}$"  # no digits in between: the cue belongs to the nearest date
)


def find_dobs(text: str) -> list[Hit]:
    """Dates preceded by a birth cue; other dates (orders, deliveries) are left alone."""
    hits = []
    for m in _DATE.finditer(text):
        if _DOB_CUE.search(text, max(0, m.start() - 60), m.start()):
            hits.append((m.start(), m.end(), "DATE_OF_BIRTH"))
    return hits


# --------------------------------------------------------------------------- phone numbers
_TAIL = r"(?![\w\-/]|[.,]\d)"
# +44 20 7946 0958, +1 (415) 555-0132, +44 (0)20 7946 0958, 0049 30 901820
_PHONE_INTL = re.compile(
    rf"(?<![\w+\-/#.])(?:\+|00)[1-9]\d{{0,2}}(?:[ .\-]?\(0\))?(?:[ .\-]?\(?\d{{1,5}}\)?){{1,6}}{_TAIL}"
)
# North American: (415) 555-0132, 415-555-0132, 415.555.0132, 1-800-555-0199
_PHONE_NANP = re.compile(
    rf"(?<![\w+\-/#.])(?:1[ .\-])?(?:\([2-9]\d{{2}}\)[ .\-]?|[2-9]\d{{2}}[ .\-])[2-9]\d{{2}}[ .\-]\d{{4}}{_TAIL}"
)
# National numbers with a trunk 0: 020 7946 0958, 0612345678, 06 12 34 56 78, 030 901820
_PHONE_TRUNK = re.compile(
    rf"(?<![\w+\-/#.,])(?:\(0\d{{1,4}}\)[ .\-]?|0\d{{1,4}}[ .\-/]?)\d{{1,4}}(?:[ .\-]?\d{{1,4}}){{0,4}}{_TAIL}"
)
# Any digit run after a phone cue ("call me on 4155550132", "Tel.: 612 345 678").
_PHONE_LOOSE = re.compile(rf"(?<![\w+\-/#.])\+?\(?\d[\d .()\-]{{5,17}}\d{_TAIL}")
_PHONE_CUE = re.compile(
    r"(?i:\b(?:phone|tel|telephone|mobile|cell|cellphone|call|text|sms|whats\s?app|fax|"
    r"number|reach\s+me|ring|telefon|handy|t[ée]l[ée]phone|portable|tel[ée]fono|m[óo]vil|"
    r"celular|cellulare|telefoon|mobiel|telem[óo]vel|telefone))\b[^\d\n+]{0,20}$"
)
_NOT_PHONE_CUE = re.compile(
    r"(?i:\b(?:order|invoice|ticket|ref|reference|tracking|account|acct|case|sku|po|item|id|"
    r"serial|confirmation|booking|receipt|transaction|policy|member|customer|article|part|"
    r"model|iban|card|bestell\w*|rechnung|commande|facture|pedido|factura|ordine|fattura))"
    r"\b[\s:#.\-]*(?:no\.?|nr\.?|number|num|#)?[\s:#.\-]*$"
)
_DATE_LIKE = re.compile(r"\d{1,4}[./\-]\d{1,2}[./\-]\d{1,4}|\d{1,2}[:h]\d{2}")


def _phone_ok(text: str, start: int, cand: str, lo: int, hi: int) -> bool:
    """Digit count in range, not a date, and not right after "order #"/"invoice no."."""
    n = sum(c.isdigit() for c in cand) - cand.count("(0)")
    if not lo <= n <= hi or _DATE_LIKE.match(cand):
        return False
    return not _NOT_PHONE_CUE.search(text, max(0, start - 30), start)


def find_phones(text: str) -> list[Hit]:
    hits = []
    for rx, lo, hi in ((_PHONE_INTL, 8, 15), (_PHONE_NANP, 10, 11), (_PHONE_TRUNK, 9, 12)):
        for m in rx.finditer(text):
            if _phone_ok(text, m.start(), m[0], lo, hi):
                hits.append((m.start(), m.end(), "PHONE"))
    for m in _PHONE_LOOSE.finditer(text):
        s = m.start()
        if _PHONE_CUE.search(text, max(0, s - 40), s) and _phone_ok(text, s, m[0], 7, 15):
            hits.append((s, m.end(), "PHONE"))
    return hits


# --------------------------------------------------------------------------- street addresses
_U = f"[{UPPER}]"
_W = f"[{LETTERS}'’.\\-]"  # letters inside a street-name word
_NAMEWORD = f"(?:{_U}{_W}*|\\d{{1,3}}(?:st|nd|rd|th))"
_EN_SUFFIX = (
    "Street|St|Avenue|Ave|Av|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Place|Pl|Terrace|"
    "Ter|Way|Close|Crescent|Cres|Square|Sq|Parkway|Pkwy|Highway|Hwy|Circle|Cir|Circles|Trail|"
    "Trl|Row|Mews|Gardens|Gdns|Grove|Hill|Hills|Walk|Parade|Esplanade|Alley|Plaza|Loop|Path|"
    "Point|Ridge|Heights|View|Vista|Green|Park|Passage|Quay|Quays|Wharf|Causeway|Circus|Common|"
    "Commons|Crossing|Creek|Dale|Estate|Estates|Field|Fields|Gate|Glen|Harbor|Harbour|Hollow|"
    "Island|Junction|Knoll|Landing|Manor|Meadow|Meadows|Mill|Mills|Mount|Orchard|Pass|Pike|"
    "Pines|Port|Ports|Ranch|Rapids|Run|Shore|Shores|Spring|Springs|Station|Summit|Trace|Track|"
    "Tunnel|Turnpike|Valley|Village|Ville|Wells|Skyway|Expressway|Freeway|Brook|Burg|Burgs|"
    "Bypass|Cape|Center|Centre|Cliff|Cliffs|Club|Corner|Corners|Course|Cove|Curve|Dam|Divide|"
    "Extension|Falls|Ferry|Flat|Flats|Ford|Forest|Forge|Fork|Forks|Fort|Garden|Gateway|Haven|"
    "Inlet|Isle|Key|Keys|Lake|Lakes|Light|Lights|Lock|Locks|Lodge|Mall|Motorway|Neck|Oval|"
    "Overpass|Pine|Plain|Plains|Prairie|Radial|Ramp|Rest|Route|Shoal|Shoals|Spur|Stream|"
    "Stravenue|Underpass|Union|Unions|Via|Viaduct|Ville|Well|Wynd|Broadway|Rise|Chase|Drove|End|"
    "Fold|Gardens|Gate|Grange|Lawn|Lea|Leys|Mead|Reach|Side|Wood|Yard|Ronde|Line|Lower|Break|Firetrail"
)
_UNIT = r"(?:,?\s+(?:Apt\.?|Apartment|Suite|Ste\.?|Unit|Flat|Fl\.?|Floor|Room|Rm\.?|#)\s*[\w\-]{1,6})?"
_DIRECTION = r"(?:N|S|E|W|NE|NW|SE|SW|North|South|East|West)\.?"
_ADDR_EN = re.compile(
    rf"(?<![\w/.\-,])\d{{1,5}}[A-Za-z]?(?:[\-/]\d{{1,5}}[A-Za-z]?)?,?\s+(?:{_DIRECTION}\s+)?"
    rf"(?:{_NAMEWORD}\s+){{1,4}}(?:{_EN_SUFFIX})\b\.?(?:\s+{_DIRECTION}(?!\w))?{_UNIT}"
)
# German/Dutch/Nordic compounds: Hauptstraße 5, Musterstr. 12a, Keizersgracht 123, Skolgatan 7
_COMPOUND = (
    "straße|strasse|str\\.|weg|gasse|platz|allee|ring|damm|ufer|chaussee|steig|pfad|markt|"
    "promenade|stieg|twiete|kamp|straat|laan|gracht|plein|kade|singel|dijk|dreef|baan|hof|"
    "steeg|wal|vej|gade|allé|stræde|torv|gatan|vägen|väg|gata|gränd|torget|stigen|backe|"
    "veien|gate|vegen|tie|katu|kuja|utca|út|tér|ulice|náměstí|cesta"
)
_NUM_TAIL = r"\d{1,5}[a-zA-Z]?(?:\s?[\-/]\s?\d{1,5}[a-zA-Z]?)?"
_ADDR_COMPOUND = re.compile(
    rf"(?<![\w\-])(?:{_U}{_W}*?(?i:{_COMPOUND})|{_U}{_W}+\s+(?i:Allé|Alle|Straße|Strasse|Weg|Platz|Gade|Vej))"
    rf",?\s+{_NUM_TAIL}(?![\w\-])"
)
# Type first: Rue de Rivoli 42 (rare), Calle Mayor 12, Via Roma, 10, Rua Augusta 100, ul. Długa 9
_PREFIX_TYPES = (
    "Rue|Avenue|Boulevard|Bd|Chemin|Allée|Impasse|Quai|Place|Route|Calle|C/|Camino|Paseo|Plaza|"
    "Avenida|Avda\\.?|Av\\.|Carrer|Avinguda|Ronda|Travesía|Callejón|Cañada|Glorieta|Alameda|"
    "Acceso|Vial|Pasaje|Rambla|Carretera|Urbanización|Vía|Via|Viale|Piazza|Piazzale|Corso|Largo|"
    "Vicolo|Strada|Contrada|Borgo|Rotonda|Stretto|Incrocio|Canale|Lungomare|Salita|Galleria|"
    "Rua|R\\.|Travessa|Praça|Estrada|Rodovia|Beco|ul\\.|ulica|al\\.|aleja|pl\\.|plac|os\\.|"
    "osiedle|Bulevardul|Calea|Strada|Aleea|Jalan|Jl\\.|Odos|Leoforos|Sokak|Sokağı|Caddesi|Cd\\."
)
_PARTICLE = r"(?:de|del|de\s+la|dos|das|da|do|di|della|delle|dei|des|du|la|le|l'|d'|i|y|e)"
_ADDR_PREFIX = re.compile(
    rf"(?<![\w\-])(?:{_PREFIX_TYPES})\s+(?:{_PARTICLE}\s*)*{_NAMEWORD}"
    rf"(?:\s+(?:{_PARTICLE}\s+)*{_NAMEWORD}){{0,3}},?\s+(?:n[º°o.]\s*)?{_NUM_TAIL}(?![\w\-])"
)
# French number first: 12 rue de la Paix, 682, avenue de Toussaint, 7 bis boulevard Haussmann
_ADDR_FR = re.compile(
    rf"(?<![\w/.\-,])\d{{1,4}}(?:\s?(?:bis|ter))?,?\s+(?i:rue|avenue|av\.|boulevard|bd|chemin|allée|"
    rf"impasse|quai|place|route|square|cours|passage|voie|sentier)\s+(?:{_PARTICLE}\s*)*{_NAMEWORD}"
    rf"(?:\s+(?:{_PARTICLE}\s+)*{_NAMEWORD}){{0,3}}"
)


# Street-type words (lower case): pseudonyms keep them and replace the name beside them.
STREET_WORDS = frozenset(
    w.replace("\\", "").replace(".?", "").rstrip(".").lower()
    for w in f"{_EN_SUFFIX}|{_PREFIX_TYPES}|{_COMPOUND}".split("|")
) | {"n", "s", "e", "w", "ne", "nw", "se", "sw", "north", "south", "east", "west", "apt", "suite"}


def find_addresses(text: str) -> list[Hit]:
    hits = []
    for rx in (_ADDR_EN, _ADDR_COMPOUND, _ADDR_PREFIX, _ADDR_FR):
        hits.extend((m.start(), m.end(), "STREET_ADDRESS") for m in rx.finditer(text))
    return hits
