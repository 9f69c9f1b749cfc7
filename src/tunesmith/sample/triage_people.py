"""Synthetic customers for the support-triage sample: names from many languages and the
personal data real tickets carry (emails, international phone numbers, street addresses,
card numbers, order ids).

Written here rather than with Faker: ``tunesmith init`` must write byte-identical files for a
seed on every install, and Faker's output changes between its releases. Every value is
invented; card numbers pass the Luhn check (as real ones do, so PII detectors that verify
the checksum find them) but use test-card prefixes.
"""

from __future__ import annotations

import random
import unicodedata
from dataclasses import dataclass

# locale -> (first names, last names, phone formats, street templates, cities, domains)
# Phone formats: "#" is a random digit. Street templates: "{n}" house number, "{s}" street.
_LOCALES: dict[str, dict[str, tuple[str, ...]]] = {
    "en_US": {
        "first": ("Emily", "Jamal", "Tyler", "Grace", "DeShawn", "Hannah", "Marcus", "Olivia"),
        "last": ("Johnson", "Washington", "O'Brien", "Miller", "Nguyen", "Carter", "Brooks"),
        "phone": ("+1 (###) 555-0###", "###-555-0###", "+1 ###.555.0###"),
        "street": ("{n} {s} Street", "{n} {s} Avenue", "{n} {s} Rd, Apt {a}"),
        "names": ("Maple", "Cedar", "Lincoln", "Sunset", "Harbor", "Lakeview"),
        "city": ("Portland, OR 97214", "Austin, TX 78704", "Columbus, OH 43215"),
        "domain": ("gmail.com", "outlook.com", "yahoo.com", "icloud.com"),
    },
    "en_GB": {
        "first": ("Oliver", "Siobhan", "Priya", "Callum", "Niamh", "Harriet", "Rhys"),
        "last": ("Thompson", "Okafor", "MacLeod", "Patel", "Davies", "Ó Briain"),
        "phone": ("+44 20 7946 0###", "07700 900###", "+44 161 496 0###"),
        "street": ("{n} {s} Road", "Flat {a}, {n} {s} Lane", "{n} {s} Close"),
        "names": ("Kingsley", "Abbey", "Mill", "Church", "Victoria", "Holloway"),
        "city": ("London N7 8QT", "Manchester M4 1HN", "Leeds LS6 2AB", "Cardiff CF10 3AT"),
        "domain": ("gmail.com", "btinternet.com", "hotmail.co.uk"),
    },
    "es_ES": {
        "first": ("María José", "Álvaro", "Lucía", "Íñigo", "Begoña", "Sergio"),
        "last": ("García Pérez", "Fernández", "Muñoz", "Ibáñez", "Martínez Ruiz"),
        "phone": ("+34 6## ### ###", "6## ## ## ##"),
        "street": ("Calle de {s} {n}, {a}º", "Avenida de {s} {n}"),
        "names": ("Alcalá", "la Paz", "Goya", "Sevilla", "San Vicente"),
        "city": ("28014 Madrid", "46002 Valencia", "41001 Sevilla"),
        "domain": ("gmail.com", "hotmail.es", "telefonica.net"),
    },
    "de_DE": {
        "first": ("Jürgen", "Anke", "Björn", "Sophie", "Lukas", "Dörte"),
        "last": ("Müller", "Schäfer", "Groß", "Weiß", "Krämer", "Özdemir"),
        "phone": ("+49 30 ########", "+49 (0)171 #######", "0151 ########"),
        "street": ("{s}straße {n}", "{s}weg {n}"),
        "names": ("Haupt", "Linden", "Garten", "Berg", "Schiller"),
        "city": ("10115 Berlin", "80331 München", "50667 Köln"),
        "domain": ("web.de", "gmx.de", "t-online.de"),
    },
    "fr_FR": {
        "first": ("Amélie", "Théo", "Hélène", "François", "Zoë", "Noël"),
        "last": ("Lefèvre", "Dubois", "Girard", "Bénard", "Rousseau"),
        "phone": ("+33 6 ## ## ## ##", "06 ## ## ## ##"),
        "street": ("{n} rue de {s}", "{n} avenue {s}"),
        "names": ("la République", "Vaugirard", "Molière", "la Gare"),
        "city": ("75015 Paris", "69002 Lyon", "33000 Bordeaux"),
        "domain": ("orange.fr", "free.fr", "gmail.com"),
    },
    "pt_BR": {
        "first": ("João", "Luíza", "Thiago", "Conceição", "Rafael"),
        "last": ("Gonçalves", "Araújo", "da Silva", "Lopes", "Magalhães"),
        "phone": ("+55 11 9####-####", "(21) 9####-####"),
        "street": ("Rua {s}, {n}", "Av. {s}, {n}, apto {a}"),
        "names": ("Augusta", "das Flores", "Paulista", "Sete de Setembro"),
        "city": ("São Paulo - SP, 01304-001", "Rio de Janeiro - RJ, 22041-001"),
        "domain": ("uol.com.br", "gmail.com", "bol.com.br"),
    },
    "ja_JP": {
        "first": ("Haruto", "Yui", "Sōta", "Aoi", "Kenji"),
        "last": ("Watanabe", "Takahashi", "Itō", "Yamamoto", "Saitō"),
        "phone": ("+81 3-####-####", "090-####-####"),
        "street": ("{n}-{a}-{a} {s}",),
        "names": ("Jingumae", "Shibuya", "Nishi-Shinjuku", "Umeda"),
        "city": ("Tokyo 150-0001", "Osaka 530-0001"),
        "domain": ("yahoo.co.jp", "gmail.com", "docomo.ne.jp"),
    },
    "zh_CN": {
        "first": ("Wei", "Xiaoling", "Jun", "Meiling", "Hao"),
        "last": ("Zhang", "Wang", "Li", "Chen", "Liu"),
        "phone": ("+86 138 #### ####", "+86 10 #### ####"),
        "street": ("No. {n} {s} Road", "Room {a}0{a}, {n} {s} Lu"),
        "names": ("Huaihai", "Nanjing", "Jianguo"),
        "city": ("Shanghai 200031", "Beijing 100022"),
        "domain": ("qq.com", "163.com", "gmail.com"),
    },
    "hi_IN": {
        "first": ("Aarav", "Ananya", "Rohan", "Kavya", "Siddharth", "Lakshmi"),
        "last": ("Sharma", "Iyer", "Reddy", "Banerjee", "Kulkarni"),
        "phone": ("+91 98### #####", "+91-80-####-####"),
        "street": ("{n}, {s} Road", "Flat {a}0{a}, {s} Nagar"),
        "names": ("MG", "Anna Salai", "Linking", "Koramangala"),
        "city": ("Bengaluru 560034", "Mumbai 400050", "Chennai 600002"),
        "domain": ("gmail.com", "rediffmail.com", "yahoo.in"),
    },
    "ar_EG": {
        "first": ("Youssef", "Fatma", "Omar", "Nour", "Karim"),
        "last": ("El-Sayed", "Abdelrahman", "Haddad", "Mansour"),
        "phone": ("+20 10 #### ####", "+971 50 ### ####"),
        "street": ("{n} {s} St.",),
        "names": ("Tahrir", "Al Wasl", "Corniche"),
        "city": ("Cairo 11511", "Dubai"),
        "domain": ("gmail.com", "hotmail.com"),
    },
    "pl_PL": {
        "first": ("Łukasz", "Małgorzata", "Wojciech", "Zofia"),
        "last": ("Wiśniewski", "Kowalczyk", "Dąbrowska", "Żak"),
        "phone": ("+48 6## ### ###",),
        "street": ("ul. {s} {n}/{a}",),
        "names": ("Marszałkowska", "Długa", "Piękna"),
        "city": ("00-001 Warszawa", "30-001 Kraków"),
        "domain": ("wp.pl", "onet.pl", "gmail.com"),
    },
    "vi_VN": {
        "first": ("Minh", "Thảo", "Quang", "Lan"),
        "last": ("Nguyễn", "Trần", "Phạm", "Lê"),
        "phone": ("+84 90 ### ####",),
        "street": ("{n} {s}",),
        "names": ("Lê Lợi", "Nguyễn Huệ", "Hai Bà Trưng"),
        "city": ("Quận 1, TP. Hồ Chí Minh", "Hà Nội"),
        "domain": ("gmail.com", "yahoo.com.vn"),
    },
    "tr_TR": {
        "first": ("Ayşe", "Mehmet", "Elif", "Çağlar"),
        "last": ("Yılmaz", "Şahin", "Öztürk", "Kılıç"),
        "phone": ("+90 532 ### ## ##",),
        "street": ("{s} Cad. No:{n} D:{a}",),
        "names": ("İstiklal", "Bağdat", "Atatürk"),
        "city": ("34430 İstanbul", "06420 Ankara"),
        "domain": ("gmail.com", "hotmail.com.tr"),
    },
    "sv_SE": {
        "first": ("Søren", "Åsa", "Linnéa", "Björn"),
        "last": ("Lindqvist", "Åkesson", "Nyström", "Sjöberg"),
        "phone": ("+46 70 ### ## ##",),
        "street": ("{s}gatan {n}",),
        "names": ("Drottning", "Kungs", "Sveavä"),
        "city": ("111 52 Stockholm", "411 19 Göteborg"),
        "domain": ("telia.com", "gmail.com"),
    },
    "yo_NG": {
        "first": ("Oluwaseun", "Chiamaka", "Emeka", "Adaeze", "Tunde"),
        "last": ("Adeyemi", "Okonkwo", "Balogun", "Eze"),
        "phone": ("+234 803 ### ####",),
        "street": ("{n} {s} Street",),
        "names": ("Awolowo", "Adeola Odeku", "Herbert Macaulay"),
        "city": ("Ikoyi, Lagos", "Wuse 2, Abuja"),
        "domain": ("gmail.com", "yahoo.com"),
    },
    "ko_KR": {
        "first": ("Ji-woo", "Min-jun", "Seo-yeon", "Hyun-woo"),
        "last": ("Kim", "Park", "Choi", "Jung"),
        "phone": ("+82 10-####-####",),
        "street": ("{n} {s}-ro",),
        "names": ("Teheran", "Sejong", "Olympic"),
        "city": ("Gangnam-gu, Seoul 06236", "Busan 48058"),
        "domain": ("naver.com", "gmail.com"),
    },
}
LOCALES = tuple(_LOCALES)
# Most customers write from English-speaking countries; the rest spread over the others.
_LOCALE_WEIGHTS = tuple(6 if loc.startswith("en_") else 1 for loc in LOCALES)
_COMPANY_WORDS = ("Northgate", "Bluefin", "Kestrel", "Ardent", "Polaris", "Sable", "Juniper")
_COMPANY_KINDS = ("Logistics", "Property Management", "Dental Group", "Hotels", "Facilities")
_COMPANY_SUFFIX = ("Ltd", "GmbH", "Inc.", "S.L.", "LLC", "Pty Ltd")
_CARD_PREFIXES = ("4111", "4012", "5555", "5105", "4242")  # test-card ranges


@dataclass(frozen=True, slots=True)
class Customer:
    id: str
    locale: str
    first: str
    last: str
    email: str
    phone: str
    address: str
    plan: str
    company: str | None

    @property
    def name(self) -> str:
        return f"{self.first} {self.last}"


def _digits(rng: random.Random, pattern: str) -> str:
    return "".join(str(rng.randrange(10)) if ch == "#" else ch for ch in pattern)


def _ascii(text: str) -> str:
    """Fold accents for email addresses (``Müller`` -> ``muller``, ``Łukasz`` -> ``lukasz``)."""
    text = text.replace("ł", "l").replace("Ł", "L").replace("ß", "ss").replace("ø", "o")
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in folded.lower() if ch.isalnum() or ch in " -").replace(" ", "")


def make_email(rng: random.Random, first: str, last: str, domain: str) -> str:
    f, surname = _ascii(first), _ascii(last.split()[-1])
    local = rng.choice((f"{f}.{surname}", f"{f[0]}{surname}", f"{f}{rng.randrange(10, 99)}",
                        f"{surname}.{f}{rng.randrange(1970, 2005)}"))
    return f"{local}@{domain}"


def make_address(rng: random.Random, locale: str) -> str:
    loc = _LOCALES[locale]
    street = rng.choice(loc["street"]).format(
        n=rng.randrange(1, 240), s=rng.choice(loc["names"]), a=rng.randrange(1, 9)
    )
    return f"{street}, {rng.choice(loc['city'])}"


def make_phone(rng: random.Random, locale: str) -> str:
    return _digits(rng, rng.choice(_LOCALES[locale]["phone"]))


def make_customer(rng: random.Random, number: int, plan: str) -> Customer:
    locale = rng.choices(LOCALES, weights=_LOCALE_WEIGHTS)[0]
    loc = _LOCALES[locale]
    first, last = rng.choice(loc["first"]), rng.choice(loc["last"])
    company = None
    if plan == "Enterprise":
        company = " ".join((rng.choice(_COMPANY_WORDS), rng.choice(_COMPANY_KINDS),
                            rng.choice(_COMPANY_SUFFIX)))
    domain = rng.choice(loc["domain"]) if company is None else (
        _ascii(company.split()[0]) + rng.choice((".com", ".co", ".io")))
    return Customer(
        id=f"CUS-{number:05d}", locale=locale, first=first, last=last,
        email=make_email(rng, first, last, domain), phone=make_phone(rng, locale),
        address=make_address(rng, locale), plan=plan, company=company,
    )


def luhn_complete(partial: str) -> str:
    """Append the Luhn check digit to a string of digits."""
    total = 0
    for i, ch in enumerate(reversed(partial)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return partial + str((10 - total % 10) % 10)


def make_card(rng: random.Random) -> str:
    """A Luhn-valid 16-digit number written the way customers type it."""
    prefix = rng.choice(_CARD_PREFIXES)
    number = luhn_complete(prefix + "".join(str(rng.randrange(10)) for _ in range(11)))
    style = rng.randrange(3)
    if style == 0:
        return " ".join(number[i:i + 4] for i in range(0, 16, 4))
    return "-".join(number[i:i + 4] for i in range(0, 16, 4)) if style == 1 else number


def make_order_id(rng: random.Random) -> str:
    return f"ORD-{rng.randrange(100000, 1000000)}"
