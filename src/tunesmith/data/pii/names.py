"""Person names by rules: a multilingual gazetteer plus context cues, no model.

NER runs at ~400 short messages/s on a CPU core; the prepare stage needs thousands. Rules get
there: find runs of capitalised words, trim words that are never names ("Thanks", "Monday",
"Support"), and accept a run when

* a cue precedes it: a title (Mr., Dr., Frau), a greeting (Hi, Dear), "my name is", a sign-off
  (Regards,\\n) -> any capitalised run is a name, even one the gazetteer lacks;
* it holds a known given name that is not also a common word (Anna, Priya, Łukasz), or two
  known name parts, or an unknown word followed by a known surname (Seracettin Yılmaz);
* a word that is also a name (Will, May, Mark, Paris) counts only with a cue or next to a
  known surname, so "Will you mark it" and "May 5" stay untouched.

The word lists are plain text beside this file (see their headers), looked up with case and
accents folded so "José", "Jose" and "JOSÉ" are one entry.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources

from tunesmith.data.pii.charsets import LETTERS, LOWER, UPPER, word_set

Hit = tuple[int, int, str]

PARTICLES = word_set(
    "van von de der den del della degli di da das dos do du des la le ter ten op zu bin binti "
    "ibn al el ben bat"
)
# A run after these is a place ("St. Louis", "San Diego", "Lake Victoria"), not a person.
_PLACE_HEADS = word_set(
    "st saint san santa sankt sao mount mt lake fort ft port cape bay isle glen new north "
    "south east west upper lower greater"
)

_TOKEN = (
    f"(?:[{UPPER}][{LOWER}]*(?:['’]?[{UPPER}][{LOWER}]+)*(?:-[{UPPER}]?[{LOWER}]+"
    f"(?:['’]?[{UPPER}][{LOWER}]+)*)*\\.?)"
)
_PART = "|".join(sorted(PARTICLES, key=len, reverse=True))
# Runs stay on one line: a sign-off name on its own line must not merge with the next line.
_RUN = re.compile(f"{_TOKEN}(?:[ \\t]+(?:(?:{_PART})[ \\t]+)*{_TOKEN}){{0,5}}(?![{LETTERS}])")
_WORD = re.compile(f"[{LETTERS}'’.\\-]+")
_BAD_BEFORE = frozenset("@#/\\_.$€£%&=+-'’" + LETTERS + "0123456789")

# Cue words right before a capitalised run. Strong: whatever run follows is a name (titles,
# greetings, sign-offs, "my name is"). Weak: the run must hold a known name part.
_TITLES = word_set(
    "mr mrs ms miss mx dr prof herr frau mme mlle monsieur madame sra srta señor señora "
    "signor signora dhr mevr pan pani sir madam dame lord lady"
)
_DOTTED_TITLES = word_set("m hr fr sr sig sig.ra dott")  # only with a full stop
# Greetings take the name right after them ("Hi Anna"); "Hi, Can you…" is no name.
_GREETINGS = word_set(
    "hi hello hey dear greetings hallo hola bonjour ciao olá ola cześć merhaba liebe lieber "
    "cher chère querido querida estimado estimada gentile caro cara beste geachte hej"
)
# Words that end a sign-off line ("Thanks again,\nAnna"); a greeting line ("Hi,\nCan you")
# is followed by the message, not by a name.
_SIGNOFF_WORDS = word_set(
    "regards thanks thank cheers best sincerely wishes truly respectfully again love care "
    "yours grüße gruß groeten saludos cordialement atenciosamente pozdrawiam saluti thx "
    "signed attn attention"
)
# "Sefer said …": a communication verb right after a capitalised run marks a person.
_SAID = re.compile(
    r"[ \t]+(?:said|says|told|tells|called|wrote|mentioned|promised|asked|confirmed|explained|"
    r"emailed|replied|agreed|insisted|suggested|answered|advised|informed|assured|claimed|"
    r"stated|messaged|texted|phoned)\b"
    r"|[ \t]+from[ \t]+(?:the|your|our)[ \t]+\w+[ \t]+(?:team|desk|department)\b"
    r"|[ \t]+from[ \t]+(?:billing|support|sales|returns|accounts|customer[ \t]+service|hr|it)\b"
)
# "Täsche Schmidt AG", "Wright Ltd": a company, however personal its name sounds.
_ORG_AFTER = re.compile(
    r",?[ \t]+(?:AG|GmbH|Inc|LLC|Ltd|Limited|plc|PLC|SA|S\.A\.|SAS|SARL|S\.p\.A\.|Srl|S\.r\.l\.|"
    r"BV|B\.V\.|NV|N\.V\.|Group|Holding|Holdings|KG|OHG|GbR|e\.V\.|AB|A/S|ApS|Oy|SL|S\.L\.|"
    r"Corp|Corporation|Company|Co\.|&|and[ \t]+Sons)(?![\w])"
)
_STRONG_PHRASES = frozenset(
    tuple(p.split())
    for p in (
        "my name is", "name is", "my name's", "thank you", "kind regards", "best regards",
        "warm regards", "best wishes", "yours sincerely", "yours truly", "many thanks",
        "je m'appelle", "me llamo", "mi chiamo", "ich heiße", "ich heisse", "sehr geehrte",
        "sehr geehrter", "full name", "distinti saluti", "name of",
    )
)
_FIELD_WORDS = word_set("from to cc name contact customer client agent holder signed")
_WEAK_WORDS = word_set(
    "with by named called cc contact customer client agent rep representative i'm im soy sono "
    "add added ask asked tell told thank email emailed call called text texted"
)
# Prepositions: places and companies follow them as often as people, so only a run holding
# a known name part counts ("to Anna Kowalski" yes, "to Voltago Agordino" no).
_PREPOSITIONS = word_set("to from for and or of at in on")
# "my husband Fuzuli": a relation word before a capitalised word is as good as a title.
_RELATIONS = word_set(
    "husband wife son daughter mother father mom mum dad brother sister friend partner "
    "colleague manager boss landlord landlady tenant neighbour neighbor girlfriend boyfriend "
    "fiancé fiancée fiance fiancee grandson granddaughter grandmother grandfather aunt uncle "
    "nephew niece cousin assistant supervisor"
)
_WEAK_PHRASES = frozenset(
    tuple(p.split())
    for p in ("i am", "this is", "it's", "spoke with", "spoke to", "talked to", "ask for",
              "ich bin", "je suis", "sono io")
)
_LOW_WORD = r"[^\W\d_][^\W\d_'\-]*"
_LOWER_NAME = re.compile(rf"(?i:\bmy\s+name\s+is|\bmy\s+name's)\s+({_LOW_WORD}(?:\s+{_LOW_WORD})?)")


def fold(word: str) -> str:
    """Case- and accent-insensitive key: "José" -> "jose", "Łukasz" -> "lukasz"."""
    word = word.replace("ł", "l").replace("Ł", "L").replace("ø", "o").replace("Ø", "O")
    decomposed = unicodedata.normalize("NFKD", word.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c)).replace("’", "'")


def _readword_set(name: str) -> frozenset[str]:
    text = resources.files("tunesmith.data.pii").joinpath(name).read_text(encoding="utf-8")
    words = set()
    for line in text.splitlines():
        for w in line.split("#", 1)[0].split():
            if w.lower() not in PARTICLES:
                words.add(fold(w))
    return frozenset(words)


@dataclass(frozen=True, slots=True)
class Gazetteer:
    """Folded word sets: given names, surnames, name-like common words, never-name words."""

    first: frozenset[str]
    last: frozenset[str]
    ambiguous: frozenset[str]
    common: frozenset[str]

    @staticmethod
    @cache
    def load() -> Gazetteer:
        return Gazetteer(
            _readword_set("first_names.txt"),
            _readword_set("surnames.txt"),
            _readword_set("ambiguous_names.txt"),
            _readword_set("common_words.txt"),
        )

    def first_names(self) -> list[str]:
        """Unambiguous given names, sorted (the pool pseudonyms are drawn from)."""
        return sorted(w for w in self.first - self.ambiguous - self.common if len(w) > 3)

    def surnames(self) -> list[str]:
        return sorted(w for w in self.last - self.ambiguous - self.common if len(w) > 3)


# Per-token classes, cached: a corpus repeats the same capitalised words endlessly.
_COMMON, _FIRST, _LAST, _AMBIG, _UNKNOWN, _INITIAL = range(6)


class NameFinder:
    """Find person-name spans with the gazetteer and context rules (see the module doc)."""

    def __init__(self, gazetteer: Gazetteer | None = None):
        self._g = gazetteer or Gazetteer.load()
        self.kind = lru_cache(maxsize=200_000)(self._kind)

    def __getstate__(self) -> dict:
        return {"_g": self._g}  # the cache is rebuilt: workers (Ray, spawn) receive pickles

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["_g"])  # type: ignore[misc]

    def _kind(self, token: str) -> int:
        """Gazetteer class of one token; common words win over names (see the lists)."""
        word = token.rstrip(".")
        if len(word) == 1:
            return _INITIAL if token.endswith(".") else _COMMON
        key = fold(word)
        g = self._g
        if key in g.common or (word.isupper() and len(word) > 1):
            return _COMMON
        if key in g.ambiguous:
            return _AMBIG
        if key in g.first:
            return _FIRST
        if key in g.last:
            return _LAST
        if "-" in key:  # "Jean-Luc", "Wieloch-Bolnbach": judge by the parts
            kinds = {self._kind(p) for p in word.split("-") if p}
            for k in (_FIRST, _LAST):
                if k in kinds:
                    return k
        return _UNKNOWN

    def find(self, text: str) -> list[Hit]:
        """PERSON hits in ``text`` (may overlap other detectors; the scrubber resolves)."""
        hits: list[Hit] = []
        kind = self.kind
        for m in _RUN.finditer(text):
            s = m.start()
            if s and text[s - 1] in _BAD_BEFORE:
                continue
            run = m[0]
            if " " not in run and kind(run) == _COMMON:
                continue  # "I", "The", "Thanks": most runs, settled by one cached lookup
            hits.extend(self._judge_run(text, m))
        if "name" in text:
            hits.extend(self._lowercase_names(text))
        return hits

    def unexplained(self, text: str, covered: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """Capitalised runs with a non-common word outside ``covered``: where an NER model
        could still find a person that the rules did not (``names: spacy`` runs it there)."""
        spots = []
        for m in _RUN.finditer(text):
            s, e = m.span()
            if any(s < ce and cs < e for cs, ce in covered):
                continue
            kinds = [k for w in _WORD.finditer(m[0]) if (k := self.kind(w[0])) != _COMMON]
            # A lone "Will"/"May"/"Mark" or an initial: the model's guess there is noise.
            if kinds and not (len(kinds) == 1 and kinds[0] in (_AMBIG, _INITIAL)):
                spots.append((s, e))
        return spots

    def _judge_run(self, text: str, m: re.Match[str]) -> list[Hit]:
        """Split a run at never-name words; judge each segment with the cue before it."""
        hits: list[Hit] = []
        seg: list[tuple[int, int, int]] = []  # (start, end, kind); kind -1 = particle
        place = False  # the segment follows "St."/"Lake"/"New": a place, not a person
        for w in _WORD.finditer(m[0]):
            s, e, tok = w.start() + m.start(), w.end() + m.start(), w[0]
            if tok in PARTICLES:
                if seg:
                    seg.append((s, e, -1))
                continue
            kind = self.kind(tok)
            if kind != _COMMON:
                if tok.endswith(".") and kind != _INITIAL:
                    # "… Baker Street. Edmond said": a full stop ends the segment
                    seg.append((s, e - 1, kind))
                    if not place:
                        hits.extend(self._judge_segment(text, seg, cut=False))
                    seg, place = [], False
                    continue
                seg.append((s, e, kind))
                continue
            if seg and not place:
                hits.extend(self._judge_segment(text, seg, cut=True))
            seg, place = [], tok.rstrip(".").lower() in _PLACE_HEADS
        if seg and not place:
            hits.extend(self._judge_segment(text, seg, cut=False))
        return hits

    def _judge_segment(self, text: str, seg: list[tuple[int, int, int]], *, cut: bool) -> list[Hit]:
        """``cut``: the run went on with a never-name word ("Dear Valued Customer")."""
        parts = [p for p in seg if p[2] != -1]
        if not parts or text[parts[0][0] : parts[0][1]].rstrip(".").lower() in _PLACE_HEADS:
            return []  # "Lake Samanthaview", "Santa Maria da Feira"
        cue = self._cue(text, parts[0][0])
        first = _accept([k for *_, k in parts], cue, cut)
        if first is None and not cut and len(parts) <= 3 and _SAID.match(text, parts[-1][1]):
            first = 0
        if first is None:
            return []
        if _ORG_AFTER.match(text, parts[-1][1]):
            return []
        start, end = parts[first][0], parts[-1][1]
        if text[end - 1] == "." and parts[-1][2] != _INITIAL:
            end -= 1  # a sentence's full stop, not part of the name
        return [(start, end, "PERSON")]

    @staticmethod
    def _cue(text: str, start: int) -> str:
        """"strong", "weak" or "": read the one to three words before ``start`` in Python
        (a ``$``-anchored regex would be tried at every position of the window)."""
        before = text[max(0, start - 40) : start].rstrip(" \t")
        newline = before.endswith("\n")
        before = before.rstrip(" \t\n")
        punct = before[-1:] if before[-1:] in ",:-." else ""
        if newline and before.endswith("--"):
            return "strong"  # signature separator
        words = before[: len(before) - len(punct)].lower().split()[-5:]
        while words and words[-1] in PARTICLES and not punct:
            words.pop()  # "Ms. da Cunha": the cue is before the particle
        words = words[-3:]
        if not words:
            return ""
        last = words[-1].rstrip(".")
        if punct == ".":
            return "strong" if last in _TITLES or last in _DOTTED_TITLES else ""
        if (punct == ":" and last in _FIELD_WORDS) or (last in _TITLES and not punct):
            return "strong"
        if newline:  # a name alone on the line after a sign-off
            return "strong" if last in _SIGNOFF_WORDS or tuple(words[-2:]) in _STRONG_PHRASES else ""
        if (last in _GREETINGS and not punct) or (last in _SIGNOFF_WORDS and punct in ",:"):
            return "strong"
        if (last in _SIGNOFF_WORDS and not punct) or (last in _RELATIONS and not punct):
            return "strong"
        if tuple(words[-2:]) in _STRONG_PHRASES or tuple(words) in _STRONG_PHRASES:
            return "strong"
        if last in _WEAK_WORDS or tuple(words[-2:]) in _WEAK_PHRASES:
            return "weak"
        if last in _PREPOSITIONS:
            return "prep"
        return ""

    def _lowercase_names(self, text: str) -> list[Hit]:
        """"my name is anna kowalski": chat users skip capitals; the cue is strong enough to
        take up to two following words that are not common words ("… is dan and i …")."""
        hits = []
        for m in _LOWER_NAME.finditer(text):
            words = m[1].split()
            keep = 0
            for w in words:
                if self.kind(w.capitalize()) == _COMMON:
                    break
                keep += 1
            if keep:
                end = m.start(1) + len(" ".join(words[:keep]))
                hits.append((m.start(1), end, "PERSON"))
        return hits


def _accept(kinds: list[int], cue: str, cut: bool) -> int | None:
    """The decision table from the module docstring: index of the name's first token or None."""
    if cue == "strong":
        # "Hi Zorbulon," is a name; "Dear Valued Customer" is not (the run went on).
        return None if cut and all(k == _UNKNOWN for k in kinds) else 0
    known = [i for i, k in enumerate(kinds) if k in (_FIRST, _LAST)]
    if cue == "prep" and known:
        return 0
    if cue == "weak" and (known or (len(kinds) >= 2 and not cut)):
        return 0  # "signed for by Sefer Sezgin": a capitalised pair after a verb/preposition
    if _FIRST in kinds:
        i = kinds.index(_FIRST)
        while i and kinds[i - 1] in (_LAST, _INITIAL):
            i -= 1  # "Nagy Levente" (family name first), "J. R. Anna"
        return i  # leading unknown words are sentence openers: "Called Anna Smith"
    if len(known) >= 2:
        return known[0]
    if len(kinds) >= 2 and kinds[-1] == _LAST and kinds[-2] in (_UNKNOWN, _AMBIG, _INITIAL):
        return len(kinds) - 2  # "Seracettin Yılmaz", "Will Kowalski", "J. Kowalski"
    return None
