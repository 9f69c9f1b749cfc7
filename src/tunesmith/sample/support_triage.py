"""The support-ticket triage sample project: a seeded generator of realistic, dirty data.

``generate_support_triage(out_dir)`` writes a complete tunesmith project: ~3,000 helpdesk
tickets spread over three input files in three formats, the policy knowledge base their
labels depend on, a README and a ``tunesmith.yaml`` that drives it. Tickets are built from
facts (``triage_facts``), labelled by the written rules (``triage_policy``), written out in
varied, ambiguous wording (``triage_render``), then dirtied in counted ways
(``triage_noise``). The same seed gives byte-identical files.

Example:
    >>> summary = generate_support_triage(Path("triage-demo"), seed=7)
    >>> summary["exact_duplicates"], summary["files"][0]
    (90, 'tunesmith.yaml')
"""

from __future__ import annotations

import csv
import json
import random
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from statistics import median
from typing import Any

from tunesmith.errors import TunesmithError
from tunesmith.sample.triage_docs import KB_PAGES, SYSTEM_PROMPT, config_yaml, readme
from tunesmith.sample.triage_facts import sample_facts
from tunesmith.sample.triage_noise import (
    JUNK_KINDS,
    MALFORMED_KINDS,
    edit_body,
    jaccard,
    junk_answer,
    junk_text,
    malformed_line,
    mojibake,
    retype_body,
    slip_label,
    swap_values,
)
from tunesmith.sample.triage_people import (
    Customer,
    make_address,
    make_card,
    make_customer,
    make_email,
    make_order_id,
)
from tunesmith.sample.triage_phrases import Ctx
from tunesmith.sample.triage_policy import PLANS, TicketFacts, Triage, label_ticket
from tunesmith.sample.triage_render import protected_words, render_ticket, ticket_text

TEMPLATE_NAME = "support-triage"
CHAT_FILE = "data/tickets_chat.jsonl"
ALPACA_FILE = "data/tickets_alpaca.json"
CSV_FILE = "data/tickets_export.csv"
FILE_WEIGHTS = {CHAT_FILE: 45, ALPACA_FILE: 25, CSV_FILE: 30}
CSV_COLUMNS = ("ticket_id", "customer_id", "created_at", "channel", "plan", "subject",
               "ticket_text", "triage_json")
PLAN_WEIGHTS = dict(zip(PLANS, (50, 30, 20), strict=True))  # Starter, Business, Enterprise
EXACT_DUP_SHARE = 0.03
NEAR_DUP_SHARE = 0.04
JUNK_SHARE = 0.02
LABEL_SLIP_SHARE = 0.03
MOJIBAKE_SHARE = 0.01
TICKETS_PER_CUSTOMER = 2.5
MALFORMED_ALPACA = ("missing_output", "null_output")
BLANK_LINES = 2
NEAR_DUP_KINDS = {"typo": 40, "edit": 35, "templated": 25}
_START = datetime(2024, 1, 1, 7, 0)
GENERIC_ANSWER = json.dumps(
    Triage("general_inquiry", "low", "answer_question").as_dict(), separators=(",", ":"))


@dataclass(slots=True)
class TicketRecord:
    """One written record, with the facts behind it and the noise planted in it."""

    customer: Customer
    created: datetime
    channel: str
    subject: str
    text: str  # the user turn: header + message
    answer: str  # the assistant turn as written (may be a placeholder for junk)
    facts: TicketFacts | None = None  # None for junk rows
    label: Triage | None = None  # the label as written (after any labelling slip)
    noise: str = ""  # "", "exact_duplicate:<kind>", "near_duplicate:<kind>", "junk:<kind>"
    source: TicketRecord | None = None  # the ticket a duplicate copies
    slipped: bool = False  # label deliberately breaks the rules
    mojibake: bool = False
    malformed: str = ""  # how the record is broken in its file ("" = written validly)
    pii: dict[str, int] = field(default_factory=dict)
    planted: list[tuple[str, str]] = field(default_factory=list)
    ticket_id: str = ""
    file: str = ""

    @property
    def body(self) -> str:
        return self.text.partition("\n\n")[2]

    @property
    def head(self) -> str:
        return self.text.partition("\n\n")[0]


def _answer(label: Triage) -> str:
    return json.dumps(label.as_dict(), separators=(",", ":"))


# --------------------------------------------------------------------------- clean tickets
def _customers(rng: random.Random, count: int) -> list[Customer]:
    plans = rng.choices(list(PLAN_WEIGHTS), weights=list(PLAN_WEIGHTS.values()), k=count)
    return [make_customer(rng, 10001 + i, plan) for i, plan in enumerate(plans)]


def _timestamp(rng: random.Random) -> datetime:
    return _START + timedelta(days=rng.randrange(366), seconds=rng.randrange(15 * 3600))


def _ticket(rng: random.Random, customer: Customer, created: datetime) -> TicketRecord:
    facts = sample_facts(rng, customer.plan)
    ctx = Ctx(rng, customer, created.date())
    out = render_ticket(ctx, facts)
    label = label_ticket(facts)
    return TicketRecord(
        customer=customer, created=created, channel=out.channel, subject=out.subject,
        text=ticket_text(out.subject, customer.plan, created.date(), out.body),
        answer=_answer(label), facts=facts, label=label, pii=out.pii, planted=out.planted,
    )


def _base_tickets(rng: random.Random, count: int, customers: list[Customer]) -> list[TicketRecord]:
    # A few customers write often, most write once or twice (skewed pick).
    return [
        _ticket(rng, customers[int(len(customers) * rng.random() ** 1.6)], _timestamp(rng))
        for _ in range(count)
    ]


def _plant_slips(rng: random.Random, tickets: list[TicketRecord], count: int) -> None:
    for record in rng.sample(tickets, count):
        assert record.label is not None
        record.label = slip_label(rng, record.label)
        record.answer, record.slipped = _answer(record.label), True


def _plant_mojibake(rng: random.Random, tickets: list[TicketRecord], count: int) -> None:
    candidates = [r for r in tickets if not r.text.isascii()]
    for record in rng.sample(candidates, min(count, len(candidates))):
        record.text, record.subject = mojibake(record.text), mojibake(record.subject)
        record.mojibake = True


# --------------------------------------------------------------------------- duplicates
def _later(rng: random.Random, when: datetime) -> datetime:
    """A moment later on the same day (the header's date must not change)."""
    end_of_day = when.replace(hour=23, minute=59, second=59)
    return min(when + timedelta(seconds=rng.randint(180, 18000)), end_of_day)


def _exact_duplicates(rng: random.Random, tickets: list[TicketRecord], count: int) -> list[TicketRecord]:
    """Half repeat a record from an overlapping export page (same id), half are the same
    ticket sent again (new id, minutes later)."""
    dups = []
    for i, src in enumerate(rng.sample(tickets, count)):
        same_id = i % 2 == 0
        dups.append(replace(src, noise="exact_duplicate:" + ("same_id" if same_id else "resubmitted"),
                            source=src, created=src.created if same_id else _later(rng, src.created),
                            pii=dict(src.pii), planted=list(src.planted)))
    return dups


def _swap_for(rng: random.Random, kind: str, value: str, old: Customer, new: Customer) -> str:
    """The value another customer would have put where `old` put `value`."""
    own = {old.name: new.name, old.first: new.first, f"{old.first} {old.last[0]}.":
           f"{new.first} {new.last[0]}.", old.email: new.email, old.phone: new.phone,
           old.address: new.address}
    if value in own:
        return own[value]
    return {"ORDER_ID": lambda: make_order_id(rng), "CREDIT_CARD": lambda: make_card(rng),
            "STREET_ADDRESS": lambda: make_address(rng, new.locale),
            "EMAIL": lambda: make_email(rng, new.first, new.last, "proton.me"),
            }.get(kind, lambda: value)()


def _templated(rng: random.Random, src: TicketRecord, customers: list[Customer]) -> TicketRecord:
    """The same form letter from another customer on the same plan (same facts, same label)."""
    peers = [c for c in customers if c.plan == src.customer.plan and c.id != src.customer.id]
    new = rng.choice(peers)
    swaps = [(v, _swap_for(rng, k, v, src.customer, new)) for k, v in src.planted]
    if src.customer.company and new.company:
        swaps.append((src.customer.company, new.company))
    # zip stops before the company swap, which is not counted as personal data.
    planted = [(k, new_v) for (k, _), (_, new_v) in zip(src.planted, swaps, strict=False)]
    body = swap_values(src.body, swaps)
    return replace(src, customer=new, created=_later(rng, src.created),
                   text=f"{src.head}\n\n{body}", planted=planted, pii=dict(src.pii))


def _near_duplicate(rng: random.Random, src: TicketRecord, kind: str,
                    customers: list[Customer]) -> TicketRecord:
    if kind == "templated":
        dup = _templated(rng, src, customers)
    else:
        body = (retype_body(rng, src.body, protected_words(src.planted)) if kind == "typo"
                else edit_body(rng, src.body))
        dup = replace(src, text=f"{src.head}\n\n{body}", created=_later(rng, src.created),
                      pii=dict(src.pii), planted=list(src.planted))
    dup.noise, dup.source = f"near_duplicate:{kind}", src
    dup.mojibake = src.mojibake and not dup.text.isascii()  # an edit may drop the damaged line
    _recount_pii(dup)
    return dup


def _recount_pii(record: TicketRecord) -> None:
    """Keep the planted values an edit left in the text (dropping a signature drops a name)."""
    text = record.text.lower().replace("’", "'")
    left = Counter({v.lower(): text.count(v.lower()) for _, v in record.planted})
    kept = []
    for kind, value in record.planted:
        if left[value.lower()] > 0:
            left[value.lower()] -= 1
            kept.append((kind, value))
    record.planted = kept
    record.pii = dict(Counter(kind for kind, _ in kept))


def _near_duplicates(rng: random.Random, tickets: list[TicketRecord], count: int,
                     customers: list[Customer]) -> list[TicketRecord]:
    kinds = rng.choices(list(NEAR_DUP_KINDS), weights=list(NEAR_DUP_KINDS.values()), k=count)
    # A form letter differs only in its personal data: it needs some to differ at all.
    with_pii = [t for t in tickets if t.planted and not t.mojibake]
    return [_near_duplicate(rng, rng.choice(with_pii if kind == "templated" else tickets),
                            kind, customers) for kind in kinds]


# --------------------------------------------------------------------------- junk
def _junk_rows(rng: random.Random, count: int, customers: list[Customer]) -> list[TicketRecord]:
    rows = []
    for i in range(count):
        kind = JUNK_KINDS[i % len(JUNK_KINDS)]
        real = _ticket(rng, rng.choice(customers), _timestamp(rng))
        text = junk_text(rng, kind, real.text)
        keeps_pii = kind == "placeholder_answer"
        rows.append(TicketRecord(
            customer=real.customer, created=real.created, channel=real.channel,
            subject=real.subject if keeps_pii or kind == "garbled" else "", text=text,
            answer=junk_answer(rng, kind, GENERIC_ANSWER), noise=f"junk:{kind}",
            pii=real.pii if keeps_pii else {}, planted=real.planted if keeps_pii else [],
        ))
    return rows


# --------------------------------------------------------------------------- ids and files
def _assign_files(rng: random.Random, records: list[TicketRecord]) -> None:
    names, weights = list(FILE_WEIGHTS), list(FILE_WEIGHTS.values())
    for record in records:  # sources come before their duplicates in `records`
        if record.noise == "exact_duplicate:same_id" and record.source is not None:
            record.file = record.source.file  # an overlapping page of the same export
        elif record.mojibake and not record.noise:
            record.file = CSV_FILE  # the CSV went through a spreadsheet's Windows-1252 round trip
        else:
            record.file = rng.choices(names, weights=weights)[0]


def _assign_ids(records: list[TicketRecord]) -> None:
    """Ticket ids increase with time, as a helpdesk numbers them."""
    fresh = [r for r in records if r.noise != "exact_duplicate:same_id"]
    fresh.sort(key=lambda r: r.created)  # stable: ties keep generation order
    for number, record in enumerate(fresh, start=300001):
        record.ticket_id = f"TCK-{number}"
    for record in records:
        if record.noise == "exact_duplicate:same_id" and record.source is not None:
            record.ticket_id = record.source.ticket_id


def _plant_malformed(rng: random.Random, records: list[TicketRecord], n_tickets: int) -> None:
    """Break a few records that nothing else copies: ~10 JSONL lines, 2 alpaca records."""
    sources = {id(r.source) for r in records if r.source is not None}
    scale = n_tickets / 3000
    plan = {CHAT_FILE: MALFORMED_KINDS[: max(1, round(len(MALFORMED_KINDS) * scale))],
            ALPACA_FILE: MALFORMED_ALPACA[: max(1, round(len(MALFORMED_ALPACA) * scale))]}
    for path, kinds in plan.items():
        pool = [r for r in records if r.file == path and not r.noise and not r.slipped
                and id(r) not in sources]
        for record, kind in zip(rng.sample(pool, len(kinds)), kinds, strict=True):
            record.malformed = kind


def build_tickets(*, seed: int = 7, n_tickets: int = 3000) -> list[TicketRecord]:
    """Every record of the sample (clean, duplicated, junk, malformed), with its facts.

    The writers turn these into files; the tests read the facts back to check the labels.
    """
    if n_tickets < 100:
        raise TunesmithError(f"n_tickets must be at least 100 (got {n_tickets}): the noise "
                             "shares (3% duplicates, 2% junk, ...) need room")
    rng = random.Random(seed)
    n_exact, n_near = round(EXACT_DUP_SHARE * n_tickets), round(NEAR_DUP_SHARE * n_tickets)
    n_junk = round(JUNK_SHARE * n_tickets)
    n_base = n_tickets - n_exact - n_near - n_junk
    customers = _customers(rng, max(2, round(n_base / TICKETS_PER_CUSTOMER)))
    base = _base_tickets(rng, n_base, customers)
    _plant_slips(rng, base, round(LABEL_SLIP_SHARE * n_base))
    _plant_mojibake(rng, base, round(MOJIBAKE_SHARE * n_base))
    records = (base + _exact_duplicates(rng, base, n_exact)
               + _near_duplicates(rng, base, n_near, customers) + _junk_rows(rng, n_junk, customers))
    _assign_files(rng, records)
    _assign_ids(records)
    _plant_malformed(rng, records, n_tickets)
    return records


# --------------------------------------------------------------------------- writers
def _stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S")


def chat_record(record: TicketRecord) -> dict[str, Any]:
    return {
        "ticket_id": record.ticket_id, "customer_id": record.customer.id,
        "created_at": _stamp(record.created),
        "messages": [{"role": "system", "content": SYSTEM_PROMPT},
                     {"role": "user", "content": record.text},
                     {"role": "assistant", "content": record.answer}],
    }


def alpaca_record(record: TicketRecord) -> dict[str, Any]:
    out: dict[str, Any] = {"ticket_id": record.ticket_id, "customer_id": record.customer.id,
                           "instruction": SYSTEM_PROMPT, "input": record.text,
                           "output": record.answer}
    if record.malformed == "missing_output":
        del out["output"]
    elif record.malformed == "null_output":
        out["output"] = None
    return out


def _write_chat(path: Path, rng: random.Random, records: list[TicketRecord]) -> None:
    lines = [malformed_line(rng, r.malformed, chat_record(r)) if r.malformed
             else json.dumps(chat_record(r), ensure_ascii=False) for r in records]
    for _ in range(BLANK_LINES):  # stray empty lines, as hand-edited files have
        lines.insert(rng.randrange(1, len(lines)), "")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8", newline="\n")


def _write_alpaca(path: Path, records: list[TicketRecord]) -> None:
    items = [alpaca_record(r) for r in records]
    path.write_text(json.dumps(items, ensure_ascii=False, indent=2) + "\n", encoding="utf-8",
                    newline="\n")


def _write_csv(path: Path, records: list[TicketRecord]) -> None:
    # Excel-style export: a UTF-8 BOM, CRLF row ends, quoted fields with raw newlines inside.
    with path.open("w", encoding="utf-8-sig", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\r\n")
        writer.writerow(CSV_COLUMNS)
        for r in records:
            writer.writerow((r.ticket_id, r.customer.id, _stamp(r.created), r.channel,
                             r.customer.plan, r.subject, r.text, r.answer))


def _write_data(out_dir: Path, records: list[TicketRecord], seed: int) -> None:
    rng = random.Random(f"support-triage-files:{seed}")
    by_file = {name: sorted((r for r in records if r.file == name),
                            key=lambda r: (r.created, r.ticket_id)) for name in FILE_WEIGHTS}
    (out_dir / "data").mkdir(parents=True, exist_ok=True)
    _write_chat(out_dir / CHAT_FILE, rng, by_file[CHAT_FILE])
    _write_alpaca(out_dir / ALPACA_FILE, by_file[ALPACA_FILE])
    _write_csv(out_dir / CSV_FILE, by_file[CSV_FILE])


# --------------------------------------------------------------------------- summary
def _kinds(records: list[TicketRecord], prefix: str) -> dict[str, int]:
    counts = Counter(r.noise.split(":", 1)[1] for r in records if r.noise.startswith(prefix))
    return dict(sorted(counts.items()))


def _label_counts(records: list[TicketRecord]) -> dict[str, dict[str, int]]:
    labels = [r.label for r in records if r.label is not None and not r.malformed]
    return {key: dict(Counter(getattr(lab, key) for lab in labels).most_common())
            for key in ("category", "urgency", "next_action")}


def _near_dup_similarity(records: list[TicketRecord]) -> dict[str, float]:
    scores = [jaccard(r.source.text, r.text) for r in records
              if r.noise.startswith("near_duplicate") and r.source is not None]
    return {"min": round(min(scores), 3), "median": round(median(scores), 3),
            "share_at_least_0.8": round(sum(s >= 0.8 for s in scores) / len(scores), 3)}


def summarize(records: list[TicketRecord], *, seed: int, files: list[str]) -> dict[str, Any]:
    """What was written and planted: the numbers a data-preparation run should find."""
    valid = [r for r in records if not r.malformed]
    pii: Counter[str] = Counter()
    for r in valid:
        pii.update(r.pii)
    malformed = Counter(r.malformed for r in records if r.malformed)
    return {
        "template": TEMPLATE_NAME, "seed": seed, "files": files,
        "records": {name: sum(r.file == name for r in records) for name in FILE_WEIGHTS},
        "tickets": len(records),
        "unique_tickets": sum(not r.noise for r in records),
        "customers": len({r.customer.id for r in records}),
        "multi_issue_tickets": sum(len(r.facts.issues) > 1 for r in records
                                   if r.facts is not None and not r.noise),
        "exact_duplicates": sum(r.noise.startswith("exact") for r in records),
        "exact_duplicates_by_kind": _kinds(records, "exact_duplicate"),
        "near_duplicates": sum(r.noise.startswith("near") for r in records),
        "near_duplicates_by_kind": _kinds(records, "near_duplicate"),
        "near_duplicate_jaccard_5gram": _near_dup_similarity(records),
        "junk_rows": sum(r.noise.startswith("junk") for r in records),
        "junk_by_kind": _kinds(records, "junk"),
        "mojibake": sum(r.mojibake for r in records),
        "malformed_lines": sum(malformed.values()),
        "malformed_by_kind": dict(sorted(malformed.items())),
        "blank_lines": BLANK_LINES,
        "noisy_labels": sum(r.slipped for r in valid),
        "pii": dict(pii.most_common()),
        "labels": _label_counts(records),
    }


# --------------------------------------------------------------------------- entry point
def _planned_files() -> list[str]:
    return ["tunesmith.yaml", "README.md", *FILE_WEIGHTS, *(f"kb/{name}" for name in KB_PAGES)]


def generate_support_triage(out_dir: Path, *, seed: int = 7, n_tickets: int = 3000,
                            overwrite: bool = False) -> dict[str, Any]:
    """Write the support-triage sample project into `out_dir` and return its summary.

    Args:
        out_dir: the project folder (created if missing).
        seed: the same seed writes byte-identical files.
        n_tickets: records across the three data files, noise included (at least 100).
        overwrite: replace files a previous run wrote; without it, existing files are an error.

    Returns:
        A summary: files written, records per file, planted exact/near duplicates, junk rows,
        mojibake, malformed records, personal data by type, label slips and distributions.

    Raises:
        TunesmithError: a target file exists (and `overwrite` is false), or n_tickets < 100.
    """
    out_dir = Path(out_dir)
    files = _planned_files()
    existing = [f for f in files if (out_dir / f).exists()]
    if existing and not overwrite:
        raise TunesmithError(f"{out_dir} already has {', '.join(existing)}; choose an empty "
                             "folder or pass overwrite=True (`--force`)")
    records = build_tickets(seed=seed, n_tickets=n_tickets)
    _write_data(out_dir, records, seed)
    (out_dir / "kb").mkdir(exist_ok=True)
    for name, page in KB_PAGES.items():
        (out_dir / "kb" / name).write_text(page(), encoding="utf-8", newline="\n")
    (out_dir / "tunesmith.yaml").write_text(config_yaml(), encoding="utf-8", newline="\n")
    summary = summarize(records, seed=seed, files=files)
    (out_dir / "README.md").write_text(readme(summary), encoding="utf-8", newline="\n")
    return summary
