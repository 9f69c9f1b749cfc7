"""Regex + checksum detectors for the structured entities (everything but person names).

Each ``find_*`` returns ``(start, end, entity)`` hits. Speed comes from three habits:

* every pattern starts with a literal or a small class such as ``[0-9]`` (not ``\\d``, which
  tests Unicode categories), so the regex engine skips non-candidates in C; a leading
  look-behind would disable that, so "not inside a longer token" is checked *after* the first
  character (``[0-9](?<![\\w.]\\d)``) or in Python;
* e-mails and credential URLs are anchored on ``@`` / ``://`` found with ``str.find``;
* expensive checks (Luhn, mod-97, ``ipaddress``, context look-backs, the date regex) run only
  on the few candidates, and dates only when a birth cue occurs in the text at all.

Look-aheads keep a match from ending inside a longer token (``ORD-2024-001234`` holds no
phone number).
"""

from __future__ import annotations

import ipaddress
import re

from tunesmith.data.pii.charsets import LETTERS, UPPER, word_list, word_set
from tunesmith.data.pii.checksums import IBAN_LENGTHS, iban_ok, luhn_ok, ssn_ok

Hit = tuple[int, int, str]
# Pseudo-entity for a span that is known NOT to be PII but must not be read as anything else.
BLOCK = "_BLOCK"

_TAIL = r"(?![\w\-/]|[.,][0-9])"  # the match does not continue into a longer token


def _word_char(c: str) -> bool:
    return c.isalnum() or c == "_"


# --------------------------------------------------------------------------- email, URL creds
_LOCAL_CHARS = frozenset("._%+-")
_DOMAIN = re.compile(r"\w(?:[\w\-]{0,62}\.)+[^\W\d_]{2,24}(?![\w\-])")
_USERINFO = re.compile(r"([^\s/?#@:]*:[^\s/?#@]+|[A-Za-z0-9_\-]{20,})@[^\s/?#@:]")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]{1,20}")


def find_emails(text: str) -> list[Hit]:
    """Anchored on each ``@``: walk left over the local part, match the domain to the right."""
    hits = []
    at = text.find("@")
    while at != -1:
        s = at
        while s > 0 and s > at - 64 and (_word_char(text[s - 1]) or text[s - 1] in _LOCAL_CHARS):
            s -= 1
        m = _DOMAIN.match(text, at + 1)
        if m and s < at and text[s] != ".":
            hits.append((s, m.end(), "EMAIL"))
        at = text.find("@", at + 1)
    return hits


def find_url_credentials(text: str) -> list[Hit]:
    """The ``user:password`` part only: host and path stay readable in the redacted text."""
    hits = []
    sep = text.find("://")
    while sep != -1:
        s = sep
        while s > 0 and (text[s - 1].isalnum() or text[s - 1] in "+.-"):
            s -= 1
        m = _USERINFO.match(text, sep + 3)
        if m and _SCHEME.fullmatch(text, s, sep):
            hits.append((m.start(1), m.end(1), "URL_CREDENTIALS"))
        sep = text.find("://", sep + 3)
    return hits


# --------------------------------------------------------------------------- cards, IBAN, SSN
_CARD = re.compile(rf"[0-9](?<![\w\-.,][0-9])(?:[ \-]?[0-9]){{12,18}}{_TAIL}")
_IBAN = re.compile(r"[A-Z](?<![A-Za-z0-9][A-Z])[A-Z][0-9]{2}(?: ?[A-Z0-9]){11,30}(?![a-z0-9])")
_SSN = re.compile(rf"[0-9](?<![\w\-/.][0-9])([0-9]{{2}})([\- ])([0-9]{{2}})\2([0-9]{{4}}){_TAIL}")
_SSN_CUE = re.compile(
    r"(?:ssn|ss#|social\s+security(?:\s+(?:number|no\.?|#))?)[\s:#.\-]*([0-9]{9})(?![0-9])"
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


def find_ssns(text: str, lower: str | None = None) -> list[Hit]:
    """``123-45-6789`` / ``123 45 6789`` by SSA rules; 9 bare digits only after "SSN"."""
    hits = []
    for m in _SSN.finditer(text):
        if ssn_ok(text[m.start() : m.start() + 3], m[3], m[4]):
            hits.append((m.start(), m.end(), "US_SSN"))
    lower = text.lower() if lower is None else lower
    if "ss" in lower:
        for m in _SSN_CUE.finditer(lower):
            d = m[1]
            if ssn_ok(d[:3], d[3:5], d[5:]):
                hits.append((m.start(1), m.end(1), "US_SSN"))
    return hits


# --------------------------------------------------------------------------- IP addresses
_IPV4 = re.compile(r"[0-9](?<![\w.\-][0-9])[0-9]{0,2}(?:\.[0-9]{1,3}){3}(?![\w\-]|\.[0-9])")
_IPV6 = re.compile(r"[0-9A-Fa-f:](?:[0-9A-Fa-f]{0,4}:){1,7}(?:[0-9A-Fa-f]{1,4}|[0-9]{1,3}(?:\.[0-9]{1,3}){3})?(?![\w:])")


def _ipv4_ok(cand: str) -> bool:
    return all(len(o) == 1 or (o[0] != "0" and int(o) < 256) for o in cand.split("."))


def find_ips(text: str) -> list[Hit]:
    """IPv4 with octets <= 255; IPv6 (full or compressed) checked by ``ipaddress``."""
    hits = [(m.start(), m.end(), "IP_ADDRESS") for m in _IPV4.finditer(text) if _ipv4_ok(m[0])]
    if "::" not in text and text.count(":") < 5:  # compressed or full form; not "10:30:00"
        return hits
    for m in _IPV6.finditer(text):
        s, cand = m.start(), m[0]
        if (s and (_word_char(text[s - 1]) or text[s - 1] in ":.")) or sum(c != ":" for c in cand) < 3:
            continue
        try:
            ipaddress.IPv6Address(cand)  # rejects times ("10:30:00") and other colon runs
        except ValueError:
            continue
        hits.append((s, m.end(), "IP_ADDRESS"))
    return hits


# --------------------------------------------------------------------------- dates of birth
_MONTHS = (
    "jan(?:uary|uari|vier|eiro)?|feb(?:ruary|ruar|ruari|braio)?|f[ée]v(?:rier|ereiro)?|"
    "mar(?:ch|s|zo|ço|co)?|m[äa]rz|maart|apr(?:il|ile)?|avr(?:il)?|abr(?:il)?|may(?:o)?|mai(?:o)?|"
    "mei|maggio|jun(?:e|i|io|ho)?|juin|giugno|jul(?:y|i|io|ho)?|juil(?:let)?|luglio|"
    "aug(?:ust|ustus)?|ao[ûu]t|ago(?:sto)?|sep(?:t|tember|tembre|tiembre|tembro)?|"
    "set(?:tembre|iembre|embro)?|oct(?:ober|obre|ubre)?|okt(?:ober)?|ott(?:obre)?|out(?:ubro)?|"
    "nov(?:ember|embre|iembre|embro)?|dec(?:ember)?|d[ée]c(?:embre)?|dez(?:ember|embro)?|"
    "dic(?:iembre|embre)?|enero|febrero|gennaio|janvier|janeiro|januar|juni|juli"
)
_ORD = r"(?:st|nd|rd|th|er|º|°)?"
_YEAR = r"(?:19|20)[0-9]{2}"
_DATE = re.compile(
    rf"(?<![\w/.\-])(?:"
    rf"[0-9]{{1,2}}[./\-][0-9]{{1,2}}[./\-](?:{_YEAR}|[0-9]{{2}})"  # 15.03.1987, 03/15/87
    rf"|{_YEAR}[./\-][0-9]{{1,2}}[./\-][0-9]{{1,2}}"  # 1987-03-15
    rf"|[0-9]{{1,2}}{_ORD}\.?\s+(?:de\s+|of\s+)?(?i:{_MONTHS})\.?,?\s+(?:de\s+)?{_YEAR}"  # 5 March 1987
    rf"|(?i:{_MONTHS})\.?\s+[0-9]{{1,2}}{_ORD},?\s+{_YEAR}"  # March 5th, 1987
    rf"|(?i:{_MONTHS})\.?\s+[0-9]{{1,2}}{_ORD}"  # March 5th (a birthday without the year)
    rf"|[0-9]{{1,2}}{_ORD}\.?\s+(?:of\s+)?(?i:{_MONTHS})\b\.?"  # 3rd of June
    rf")(?![\w/\-]|\.[0-9])"
)
# Substrings of every cue below: the date regex runs only on texts that contain one.
_DOB_KEYS = (
    "dob", "d.o.b", "birth", "born", "geb", "naissance", "née", "ne le", "né le", "nacimiento",
    "nacid", "nascita", "nato", "nata", "nascid", "geboorte", "född", "født", "fodt", "urodz",
    "doğum",
)
# A birth cue; the date must follow within ~30 characters on the same line with no digits
# between (so "born in 1990, ordered 2024-03-15" leaves the order date alone).
_DOB_CUE = re.compile(
    r"\bd\.?o\.?b\b\.?|date\s+of\s+birth|birth\s*-?date|\bbirthday|\bborn\b|\bgeb\.|"
    r"\bgeboren|geburtsdatum|geburtstag|\bn[ée]e?\s+le|date\s+de\s+naissance|fecha\s+de\s+nacimiento|"
    r"\bnacid[oa]|data\s+di\s+nascita|\bnat[oa]\s+il|data\s+de\s+nascimento|\bnascid[oa]|"
    r"geboortedatum|f[öø]dd|f[øo]dt|urodzon[ya]|data\s+urodzenia|doğum\s+tarihi"
)
_DOB_GAP = re.compile(r"[^\n;!?0-9]{0,30}")


def find_dobs(text: str, lower: str | None = None) -> list[Hit]:
    """Dates right after a birth cue; other dates (orders, deliveries) are left alone."""
    lower = text.lower() if lower is None else lower
    if not any(k in lower for k in _DOB_KEYS):
        return []
    hits = []
    for cue in _DOB_CUE.finditer(lower):
        gap_end = _DOB_GAP.match(lower, cue.end()).end()
        m = _DATE.search(text, cue.end(), gap_end + 20)  # starts inside the gap (no digits)
        if m and m.start() <= gap_end:
            hits.append((m.start(), m.end(), "DATE_OF_BIRTH"))
    return hits


# --------------------------------------------------------------------------- phone numbers
_BAD_BEFORE_PHONE = frozenset("+-/#.")
_EXT = r"(?:[ ]?(?:x|ext\.?|extension)[ ]?[0-9]{1,5})?"  # 555-0132x204, ... ext. 12
# +44 20 7946 0958, +1 (415) 555-0132, +44 (0)20 7946 0958, 0049 30 901820
_PHONE_INTL = re.compile(
    rf"(?:\+|00)[1-9][0-9]{{0,2}}(?:[ .\-]?\(0\))?(?:[ .\-]?\(?[0-9]{{1,5}}\)?){{1,6}}{_EXT}{_TAIL}"
)
# North American: (415) 555-0132, 415-555-0132, 415.555.0132 (a leading "1-" is added after)
_PHONE_NANP = re.compile(
    r"[(2-9](?:(?<=\()[2-9][0-9]{2}\)[ .\-]?|(?<=[2-9])[0-9]{2}[ .\-])[2-9][0-9]{2}[ .\-][0-9]{4}"
    + _EXT
    + _TAIL
)
# National numbers with a trunk 0: 020 7946 0958, 0612345678, 06 12 34 56 78, 030 901820
_PHONE_TRUNK = re.compile(
    rf"(?:\(0[0-9]{{1,4}}\)[ .\-]?|0[0-9]{{1,4}}[ .\-/]?)[0-9]{{1,4}}(?:[ .\-]?[0-9]{{1,4}}){{0,4}}{_EXT}{_TAIL}"
)
# Any digit run after a phone cue ("call me on 4155550132", "Tel.: 612 345 678").
_PHONE_LOOSE = re.compile(rf"[+(0-9][0-9 .()\-]{{5,18}}[0-9]{_TAIL}")
_PHONE_CUE = re.compile(
    r"(?:\b(?:phone|tel|telephone|mobile|cell|cellphone|call|text|sms|whats\s?app|fax|"
    r"number|reach\s+me|ring|telefon|handy|t[ée]l[ée]phone|portable|tel[ée]fono|m[óo]vil|"
    r"celular|cellulare|telefoon|mobiel|telem[óo]vel|telefone))\b[^0-9\n+]{0,35}$"
)
# "… 612 345 678 is the best number to reach me", "… 0612345678 (mobile)"
_PHONE_CUE_AFTER = re.compile(
    r"[^0-9\n]{0,25}?\b(?:number|phone|mobile|cell|whats\s?app|tel|landline)\b"
)
# Words that make the number after them an identifier, not a phone ("order 0612345678").
_ID_WORDS = word_set(
    "order invoice ticket ref reference tracking account acct case sku po item id serial "
    "confirmation booking receipt transaction policy member customer article part model iban "
    "card rechnung commande facture pedido factura ordine fattura bestellung bestellnummer "
    "kundennummer"
)
_ID_FILLERS = word_set("no no. nr nr. number num # : - n° nº")


def _after_id_word(lower: str, s: int) -> bool:
    """True for "order #", "invoice no.", "Account number:" right before ``s``."""
    words = lower[max(0, s - 30) : s].replace("#", " # ").replace(":", " : ").split()
    while words and words[-1] in _ID_FILLERS:
        words.pop()
    return bool(words) and words[-1] in _ID_WORDS


_EXT_TAIL = re.compile(r"[ ]?(?:x|ext\.?|extension)[ ]?[0-9]{1,5}$")
_DATE_LIKE = re.compile(r"[0-9]{1,4}[./\-][0-9]{1,2}[./\-][0-9]{1,4}|[0-9]{1,2}[:h][0-9]{2}")


def _phone_ok(text: str, lower: str, s: int, cand: str, lo: int, hi: int) -> bool:
    """Isolated, digit count in range, not a date, not right after "order #"/"invoice no."."""
    if s and (_word_char(text[s - 1]) or text[s - 1] in _BAD_BEFORE_PHONE):
        return False
    n = sum(c.isdigit() for c in _EXT_TAIL.sub("", cand)) - cand.count("(0)")
    if not lo <= n <= hi or _DATE_LIKE.match(cand):
        return False
    return not _after_id_word(lower, s)


def find_phones(text: str, lower: str | None = None) -> list[Hit]:
    """International, North American and trunk-0 national formats anywhere; any other digit
    run only next to a phone cue ("call me on …", "… is my mobile")."""
    lower = text.lower() if lower is None else lower
    hits = []
    for rx, lo, hi in ((_PHONE_INTL, 8, 15), (_PHONE_NANP, 10, 10), (_PHONE_TRUNK, 9, 12)):
        for m in rx.finditer(text):
            s = m.start()
            if rx is _PHONE_NANP and s >= 2 and text[s - 2] == "1" and text[s - 1] in " .-":
                s -= 2  # 1-800-555-0199
            if _phone_ok(text, lower, s, text[s : m.end()], lo, hi + (s < m.start())):
                hits.append((s, m.end(), "PHONE"))
    strict = {(s, e) for s, e, _ in hits}
    for m in _PHONE_LOOSE.finditer(text):
        s = m.start()
        if any(s < e2 and s2 < m.end() for s2, e2 in strict):
            continue  # already found by a stricter pattern
        cue = _PHONE_CUE.search(lower, max(0, s - 50), s) or _PHONE_CUE_AFTER.match(lower, m.end())
        if cue and _phone_ok(text, lower, s, m[0], 7, 15):
            hits.append((s, m.end(), "PHONE"))
    return hits


def lower_same_length(text: str) -> str:
    """``text.lower()`` with offsets intact ("İ".lower() is two characters; keep it as is)."""
    lower = text.lower()
    if len(lower) == len(text):
        return lower
    return "".join(c if len(c.lower()) != 1 else c.lower() for c in text)


# --------------------------------------------------------------------------- street addresses
_U = f"[{UPPER}]"
_W = f"[{LETTERS}'’.\\-]"  # letters inside a street-name word
_NAMEWORD = f"(?:{_U}{_W}*|[0-9]{{1,3}}(?:st|nd|rd|th))"
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
    "Stravenue|Underpass|Union|Unions|Via|Viaduct|Well|Wynd|Broadway|Rise|Chase|Drove|End|"
    "Fold|Grange|Lawn|Lea|Leys|Mead|Reach|Side|Wood|Yard|Ronde|Line|Lower|Break|Firetrail|"
    "Mountain|Mission|Crest|Bluff|Bend|Canyon|Glade|Heath|Knolls|Loaf|Mall|Orchard|Pointe|"
    "Ridge|Row|Square|Terrace|Throughway|Trafficway|Walk|Ways|Alley|Annex|Arcade|Bottom|"
    "Camp|Dale|Drive|Fall|Greens|River|Rivers|Bridge|Quarter|Row|Grove|Harbor|Hills|Lane|Manors|Park|Parks|Plaza|Route|Track"
)
_UNIT = r"(?:,?\s+(?:Apt\.?|Apartment|Suite|Ste\.?|Unit|Flat|Fl\.?|Floor|Room|Rm\.?|#)\s*[\w\-]{1,6})?"
_DIRECTION = r"(?:N|S|E|W|NE|NW|SE|SW|North|South|East|West)\.?"
_HOUSE = r"[0-9](?<![\w/.\-,][0-9])[0-9]{0,4}"  # a house number that starts a token
_ADDR_EN = re.compile(
    rf"{_HOUSE}[A-Za-z]?(?:[\-/][0-9]{{1,5}}[A-Za-z]?)?,?\s+(?:{_DIRECTION}\s+)?"
    rf"(?:{_NAMEWORD}\s+){{1,4}}(?:{_EN_SUFFIX})s?\b\.?(?:\s+{_DIRECTION}(?!\w))?{_UNIT}"
)
_PARTICLE = r"(?:de|del|de\s+la|dos|das|da|do|di|della|delle|dei|des|du|la|le|l'|d'|i|y|e)"
# French, number first: 12 rue de la Paix, 682, avenue de Toussaint, 7 bis boulevard Haussmann
_ADDR_FR = re.compile(
    rf"{_HOUSE}(?:\s?(?:bis|ter))?,?\s+(?i:rue|avenue|av\.|boulevard|bd|chemin|allée|"
    rf"impasse|quai|place|route|square|cours|passage|voie|sentier)\s+(?:{_PARTICLE}\s*)*{_NAMEWORD}"
    rf"(?:\s+(?:{_PARTICLE}\s+)*{_NAMEWORD}){{0,3}}"
)
# Number last: Hauptstraße 5, Keizersgracht 123, Calle Mayor 12, Via Roma, 10, ul. Długa 9/2.
# Anchored on the number (a house number after a space), then the words before it are read.
_HOUSE_AFTER = re.compile(
    r"[0-9](?<=[ \t][0-9])[0-9]{0,4}[a-zA-Z]?(?:[ \t]?[\-/][ \t]?[0-9]{1,5}[a-zA-Z]?)?(?![\w\-])"
)
_COMPOUND = (
    "straße", "strasse", "str.", "weg", "gasse", "platz", "allee", "ring", "damm", "ufer",
    "chaussee", "steig", "pfad", "markt", "promenade", "stieg", "twiete", "kamp", "straat",
    "laan", "gracht", "plein", "kade", "singel", "dijk", "dreef", "baan", "hof", "steeg", "wal",
    "vej", "gade", "allé", "stræde", "torv", "gatan", "vägen", "väg", "gata", "gränd", "torget",
    "stigen", "backe", "veien", "gate", "vegen", "tie", "katu", "kuja", "utca", "út", "tér",
    "ulice", "náměstí", "cesta", "boulevard", "pad", "erf", "burg", "park", "lei", "veld", "hoven",
)
# French, Spanish, Catalan, Italian, Portuguese, Polish, Romanian, Indonesian, Greek, Turkish
_TYPE_WORD = word_set(
    "C. Av Rue Avenue Boulevard Bd Chemin Allée Impasse Quai Place Route Calle C/ Camino "
    "Paseo Plaza Avenida Avda Avda. Av. Carrer Avinguda Ronda Travesía Callejón Cañada "
    "Glorieta Alameda Acceso Vial Pasaje Rambla Carretera Urbanización Vía Via Viale Piazza "
    "Piazzale Corso Largo Vicolo Cuesta Pasadizo Costanilla Explanada Plazuela Polígono "
    "Prolongación Subida Vereda Bajada Barrio Bulevar Calzada Carrera Sector Senda Partida "
    "Camí Passeig Travessera Strada Contrada Borgo Rotonda Stretto Incrocio Canale Lungomare "
    "Salita Galleria Quartiere Rione Traversa Vico Viottolo Piazzetta Rua R. Travessa Praça "
    "Estrada Rodovia Beco Calçada Caminho Quinta Rotunda Vila Viela Bairro Parque Setor "
    "Vereda Ladeira Loteamento Conjunto ul. ulica al. aleja pl. plac os. osiedle Bulevardul "
    "Calea Aleea Jalan Jl. Gang Odos Leoforos Sokak Sokağı Caddesi Cd. Sk. Mahallesi"
)
_PARTICLES = word_set("de del la dos das da do di della delle dei des du le l' d' i y e")
_WORDS_BEFORE = re.compile(r"\S+")


def _number_last_start(text: str, s: int) -> int | None:
    """Start of a "<street words> <house number>" address ending at the number at ``s``."""
    prev = text[text.rfind(" ", 0, s - 1) + 1 : s - 1].rstrip(",")
    if not (prev[:1].isupper() or prev in _TYPE_WORD):
        return None  # "for 2 items": the word before the number is not part of a street name
    words = [(m.start(), m[0].rstrip(",")) for m in _WORDS_BEFORE.finditer(text, max(0, s - 70), s)]
    start, last = words[-1]
    low = last.lower()
    if low.endswith(_COMPOUND) and last[0].isupper() and len(last) > 4:
        return start  # Hauptstraße 5, Keizersgracht 123
    if low in _COMPOUND and len(words) > 1 and words[-2][1][:1].isupper():
        return words[-2][0]  # Sorø Allé 932
    for i in range(len(words) - 1, max(-1, len(words) - 7), -1):
        pos, word = words[i]
        if (word in _TYPE_WORD and i < len(words) - 1) or (word in _TYPE_WORD and word.endswith("/")):
            return pos  # Calle Mayor 12, Via Roma, 10, ul. Długa 9
        if not (word[:1].isupper() or word in _PARTICLES):
            return None
    return None


_NO_NUMBER = re.compile(r"[Ss]/[Nn](?![\w/])")  # "Calle Mayor, s/n": sin número / sem número


def _strip_full_stop(text: str, end: int) -> int:
    """Keep the dot of "St."/"Ave." but not a sentence's full stop after "Street"/"NW"."""
    if text[end - 1] != "." or (end < len(text) and not text[end].isspace()):
        return end
    word = text[text.rfind(" ", 0, end - 1) + 1 : end - 1]
    return end - 1 if len(word) > 3 or word.isupper() else end


def find_addresses(text: str) -> list[Hit]:
    """English "221B Baker Street", French "12 rue de la Paix", and number-last forms."""
    hits = [(m.start(), _strip_full_stop(text, m.end()), "STREET_ADDRESS") for m in _ADDR_EN.finditer(text)]
    hits += [(m.start(), _strip_full_stop(text, m.end()), "STREET_ADDRESS") for m in _ADDR_FR.finditer(text)]
    numbers = list(_HOUSE_AFTER.finditer(text))
    if "/n" in text or "/N" in text:
        numbers += [m for m in _NO_NUMBER.finditer(text) if m.start() and text[m.start() - 1] == " "]
    for m in numbers:
        start = _number_last_start(text, m.start())
        if start is not None:
            hits.append((start, m.end(), "STREET_ADDRESS"))
    return hits


# Street-type words (lower case): pseudonyms keep them and replace the name beside them.
STREET_WORDS = frozenset(
    [w.lower() for w in _EN_SUFFIX.split("|")]
    + [w.rstrip(".").lower() for w in _TYPE_WORD]
    + [w.rstrip(".") for w in _COMPOUND]
    + word_list("n s e w ne nw se sw north south east west apt suite")
)
