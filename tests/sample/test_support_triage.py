"""The support-triage sample: seeded, parseable as planted, labelled by its written rules."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import date, timedelta
from pathlib import Path

import pytest

from tunesmith.config import load_config
from tunesmith.errors import TunesmithError
from tunesmith.sample import TEMPLATES
from tunesmith.sample.support_triage import (
    ALPACA_FILE,
    CHAT_FILE,
    CSV_COLUMNS,
    CSV_FILE,
    TicketRecord,
    build_tickets,
    generate_support_triage,
)
from tunesmith.sample.triage_facts import VERSIONS_INSIDE, VERSIONS_OUTSIDE
from tunesmith.sample.triage_noise import PLACEHOLDER_ANSWERS
from tunesmith.sample.triage_people import luhn_complete
from tunesmith.sample.triage_policy import ACTIONS, CATEGORIES, URGENCIES, version_affected

N = 3000
KEYS = ("category", "urgency", "next_action")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("triage") / "project"
    return out, generate_support_triage(out, seed=7, n_tickets=N)


@pytest.fixture(scope="module")
def records() -> list[TicketRecord]:
    return build_tickets(seed=7, n_tickets=N)


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


# --------------------------------------------------------------------------- determinism
def test_same_seed_writes_identical_bytes(project, tmp_path):
    out, _ = project
    again = tmp_path / "again"
    TEMPLATES["support-triage"](again, seed=7, n_tickets=N)
    assert _tree(again) == _tree(out)


def test_other_seed_writes_other_tickets(project, tmp_path):
    out, _ = project
    other = tmp_path / "other"
    generate_support_triage(other, seed=8, n_tickets=N)
    for name in (CHAT_FILE, ALPACA_FILE, CSV_FILE):
        assert (other / name).read_bytes() != (out / name).read_bytes(), name


def test_refuses_to_overwrite_without_permission(project):
    out, _ = project
    with pytest.raises(TunesmithError, match=r"tunesmith\.yaml"):
        generate_support_triage(out, seed=7, n_tickets=N)


def test_overwrite_replaces_a_previous_run(tmp_path):
    generate_support_triage(tmp_path, seed=1, n_tickets=200)
    summary = generate_support_triage(tmp_path, seed=2, n_tickets=200, overwrite=True)
    assert summary["seed"] == 2


def test_too_few_tickets_is_a_clear_error(tmp_path):
    with pytest.raises(TunesmithError, match="at least 100"):
        generate_support_triage(tmp_path, n_tickets=10)


# --------------------------------------------------------------------------- config and KB
def test_written_config_validates_and_points_at_the_files(project):
    out, _ = project
    cfg = load_config(out)
    paths = [s.path for s in cfg.data.sources]
    assert paths == [CHAT_FILE, ALPACA_FILE, CSV_FILE]
    assert [s.format for s in cfg.data.sources] == ["chat", "alpaca", "table"]
    assert all(s.group_field == "customer_id" for s in cfg.data.sources)
    assert all(cfg.resolve(p).is_file() for p in paths)
    table = cfg.data.sources[2]
    assert table.columns is not None and table.system
    header = next(csv.reader(io.StringIO((out / CSV_FILE).read_text("utf-8-sig"))))
    mapped = [table.columns.prompt, table.columns.completion, table.columns.id,
              *table.columns.meta, table.group_field]
    assert set(mapped) <= set(header)
    assert cfg.data.knowledge_base and cfg.resolve(cfg.data.knowledge_base).is_dir()


def test_kb_pages_exist_link_to_each_other_and_state_the_policy(project):
    out, _ = project
    kb = out / "kb"
    pages = {p.name: p.read_text("utf-8") for p in kb.glob("*.md")}
    assert 5 <= len(pages) <= 8 and "labelling-guide.md" in pages
    for name, text in pages.items():
        for link in re.findall(r"\]\(([\w.-]+\.md)\)", text):
            assert link in pages, f"{name} links to missing {link}"
    guide = pages["labelling-guide.md"]
    linked = set(re.findall(r"\]\(([\w.-]+\.md)\)", guide))
    assert linked >= set(pages) - {"labelling-guide.md", "billing.md"}
    assert "kb/labelling-guide.md" in (out / "README.md").read_text("utf-8")
    # The numbers the oracle below uses are the ones the pages state.
    assert "| 0 to 30 |" in pages["refunds-and-returns.md"]
    assert "| 31 to 90 |" in pages["refunds-and-returns.md"]
    assert "Within 14 days" in pages["refunds-and-returns.md"]
    for method, days in ORACLE_DELIVERY.items():
        assert f"| {method} | {days} days |" in pages["shipping.md"]
    for ki, (_, first, last) in ORACLE_KNOWN.items():
        assert ki in pages["known-issues.md"]
        assert f"{first} to {last}" in pages["known-issues.md"]


def test_version_tables_sit_on_the_right_side_of_each_range():
    for ki, versions in VERSIONS_INSIDE.items():
        assert all(version_affected(ki, v) for v in versions), ki
    for ki, versions in VERSIONS_OUTSIDE.items():
        assert not any(version_affected(ki, v) for v in versions), ki


# --------------------------------------------------------------------------- the files as planted
def _chat_lines(out: Path) -> list[str]:
    return (out / CHAT_FILE).read_text("utf-8").split("\n")[:-1]


def test_chat_jsonl_has_the_planted_malformed_and_blank_lines(project):
    out, summary = project
    good, bad, blank = [], [], 0
    for line in _chat_lines(out):
        if not line:
            blank += 1
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            bad.append(line)
            continue
        ok = (isinstance(rec, dict) and isinstance(rec.get("messages"), list)
              and all(isinstance(m, dict) and "content" in m for m in rec["messages"]))
        (good if ok else bad).append(rec)
    assert blank == summary["blank_lines"] == 2
    assert len(bad) == 10
    assert len(good) + len(bad) == summary["records"][CHAT_FILE]
    assert all([m["role"] for m in r["messages"]] == ["system", "user", "assistant"] for r in good)


def test_all_three_exports_read_as_one_prompt_shape(project):
    """Chat, alpaca (instruction_as: system) and CSV (source system prompt) records all read as
    [system prompt, ticket, answer]: the model learns one prompt shape, eval prompts share it."""
    from tunesmith.data.example import Example
    from tunesmith.data.ingest import read_source
    from tunesmith.sample.triage_docs import SYSTEM_PROMPT

    out, _ = project
    cfg = load_config(out)
    for src in cfg.data.sources:
        good = [x for x in read_source(src, cfg.resolve(src.path), base_dir=out, max_line_bytes=1 << 20) if isinstance(x, Example)]
        assert good and all([m["role"] for m in ex.messages] == ["system", "user", "assistant"] for ex in good)
        assert {ex.messages[0]["content"] for ex in good} == {SYSTEM_PROMPT}, src.path
        assert sum(ex.messages[1]["content"].startswith("Subject:") for ex in good) > 0.9 * len(good), src.path


def test_alpaca_json_is_an_array_with_two_broken_records(project):
    out, summary = project
    items = json.loads((out / ALPACA_FILE).read_text("utf-8"))
    assert isinstance(items, list) and len(items) == summary["records"][ALPACA_FILE]
    broken = [r for r in items if not isinstance(r.get("output"), str)]
    assert len(broken) == 2
    assert all({"instruction", "input", "customer_id"} <= set(r) for r in items)


def test_csv_is_an_excel_export_with_bom_crlf_and_embedded_newlines(project):
    out, summary = project
    raw = (out / CSV_FILE).read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    assert raw.count(b"\r\n") > summary["records"][CSV_FILE]  # CRLF after every row
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"), newline="")))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) - 1 == summary["records"][CSV_FILE]
    texts = [r[CSV_COLUMNS.index("ticket_text")] for r in rows[1:]]
    assert sum("\n" in t for t in texts) > len(texts) / 2
    assert any('"' in t or "," in t for t in texts)


def _answers(out: Path) -> list[str]:
    answers = []
    for line in _chat_lines(out):
        try:
            rec = json.loads(line)
            answers.append(rec["messages"][-1]["content"])
        except (json.JSONDecodeError, KeyError, TypeError, IndexError):
            continue
    items = json.loads((out / ALPACA_FILE).read_text("utf-8"))
    answers += [r["output"] for r in items if isinstance(r.get("output"), str)]
    rows = list(csv.DictReader(io.StringIO((out / CSV_FILE).read_text("utf-8-sig"), newline="")))
    return answers + [r["triage_json"] for r in rows]


def test_every_answer_is_compact_json_with_allowed_values_or_a_placeholder(project):
    out, summary = project
    parsed = 0
    for answer in _answers(out):
        if answer in PLACEHOLDER_ANSWERS:
            continue
        label = json.loads(answer)
        assert tuple(label) == KEYS and answer == json.dumps(label, separators=(",", ":"))
        assert label["category"] in CATEGORIES and label["urgency"] in URGENCIES
        assert label["next_action"] in ACTIONS
        parsed += 1
    labelled = N - summary["junk_rows"] - summary["malformed_lines"]
    assert labelled <= parsed <= labelled + summary["junk_rows"]


# --------------------------------------------------------------------------- planted counts
def test_counts_are_as_requested(project):
    _, s = project
    assert s["tickets"] == N == sum(s["records"].values())
    assert s["exact_duplicates"] == round(0.03 * N) and s["near_duplicates"] == round(0.04 * N)
    assert s["junk_rows"] == round(0.02 * N)
    assert set(s["junk_by_kind"]) == {"empty", "test", "boilerplate", "auto_reply", "garbled",
                                      "placeholder_answer"}
    assert s["malformed_lines"] == 12  # 10 JSONL lines + 2 alpaca records
    assert 0.005 * N <= s["mojibake"] <= 0.015 * N
    assert 0.025 * N <= s["noisy_labels"] <= 0.04 * N
    assert set(s["pii"]) == {"PERSON", "EMAIL", "PHONE", "CREDIT_CARD", "STREET_ADDRESS",
                             "ORDER_ID"}
    assert min(s["pii"].values()) >= 50
    assert set(s["labels"]["category"]) == set(CATEGORIES)
    assert set(s["labels"]["next_action"]) == set(ACTIONS)
    assert set(s["labels"]["urgency"]) == set(URGENCIES)


def test_duplicates_really_duplicate(records):
    for r in records:
        if r.noise.startswith("exact_duplicate"):
            assert r.source and (r.text, r.answer, r.customer.id) == (
                r.source.text, r.source.answer, r.source.customer.id)
        elif r.noise.startswith("near_duplicate"):
            assert r.source and r.text != r.source.text and r.answer == r.source.answer
            if r.noise.endswith("templated"):
                assert r.customer.id != r.source.customer.id
                assert r.customer.plan == r.source.customer.plan  # the plan decides urgency


def test_planted_personal_data_is_in_the_text(records):
    for r in records:
        if r.malformed or r.mojibake or not r.planted:
            continue
        text = r.text.lower().replace("’", "'")
        for kind, value in r.planted:
            assert value.lower() in text, (r.ticket_id, kind, value)
        assert sum(r.pii.values()) == len(r.planted)


def _undo_cp1252(text: str) -> str:
    raw = bytes(ord(ch) if ord(ch) < 256 and ch.encode("cp1252", "ignore") in (b"", bytes([ord(ch)]))
                else ch.encode("cp1252")[0] for ch in text)
    return raw.decode("utf-8")


def test_mojibake_is_a_repairable_round_trip_in_the_csv(records):
    damaged = [r for r in records if r.mojibake]
    assert damaged and all(r.file == CSV_FILE for r in damaged if not r.noise)
    for r in damaged:
        repaired = _undo_cp1252(r.text)
        assert repaired != r.text and not repaired.isascii()
        assert any(0xC2 <= ord(ch) <= 0xF4 for ch in r.text)  # UTF-8 lead bytes read as cp1252


def test_full_card_numbers_pass_the_luhn_check(records):
    cards = [re.sub(r"\D", "", v) for r in records for k, v in r.planted if k == "CREDIT_CARD"]
    assert cards and all(luhn_complete(c[:-1]) == c for c in cards)


# --------------------------------------------------------------------------- labelling rules
# A second, independent reading of kb/labelling-guide.md and the policy pages.
ORACLE_PRIORITY = ("security", "billing", "refund", "account_access", "shipping",
                   "technical_issue", "known_issue", "general_inquiry")
ORACLE_DELIVERY = {"standard": 7, "express": 3, "international": 14}
ORACLE_KNOWN = {  # known issue -> (current version of its product, first, last affected)
    "KI-101": ("4.2.5", "4.2.0", "4.2.3"), "KI-102": ("2.8.4", "2.8.0", "2.8.x"),
    "KI-103": ("1.14.2", "1.0.0", "1.14.x"), "KI-104": ("7.3.4", "7.3.0", "7.3.2"),
    "KI-105": ("3.1.2", "3.0.0", "3.0.x"), "KI-106": ("1.9.3", "1.0.0", "1.9.x"),
}
ORACLE_SYMPTOM_KI = {"hub_offline_nightly": "KI-101", "cam_pink_night": "KI-102",
                     "thermo_schedule_reset": "KI-103", "app_crash_android": "KI-104",
                     "bell_chime_5ghz": "KI-105", "plug_zero_watts": "KI-106"}
ORACLE_HAZARD = {"hub_hot", "cam_battery_swell", "thermo_sparks", "plug_scorch"}
ORACLE_DEAD = {"hub_dead", "cam_no_wifi", "thermo_blank", "bell_dead"}
ORACLE_FIXED = {
    "account_compromised": ("security", 3, "escalate_security"),
    "unrecognised_charge": ("security", 2, "escalate_security"),
    "phishing_report": ("security", 1, "escalate_security"),
    "duplicate_charge": ("billing", 1, "issue_refund"),
    "wrong_amount": ("billing", 1, "issue_refund"),
    "invoice_request": ("billing", 0, "answer_question"),
    "plan_change": ("billing", 0, "answer_question"),
    "damaged_delivery": ("shipping", 1, "reship_order"),
    "address_change": ("shipping", 0, "answer_question"),
    "login_problem": ("account_access", 1, "reset_access"),
    "lost_2fa": ("account_access", 2, "escalate_security"),
    "email_change": ("account_access", 0, "reset_access"),
}


def _affected(ki: str, stated: str | None) -> bool:
    current, first, last = ORACLE_KNOWN[ki]
    if stated is None:
        return True
    v = tuple(int(p) for p in (current if stated == "latest" else stated).split("."))
    lo = tuple(int(p) for p in first.split("."))
    hi = tuple(int(p) for p in last.replace(".x", "").split("."))
    return lo <= v and v[: len(hi)] <= hi


def _oracle_issue(i) -> tuple[str, int, str]:
    if i.kind in ORACLE_FIXED:
        return ORACLE_FIXED[i.kind]
    if i.kind in ("product_question", "feature_request", "feedback"):
        return "general_inquiry", 0, "answer_question"
    if i.kind == "hardware_return":
        action = ("issue_refund" if i.days <= 30 else "offer_store_credit" if i.days <= 90
                  else "reship_order" if i.defective else "answer_question")
        return "refund", 1, action
    if i.kind == "subscription_refund":
        return "refund", 1, "issue_refund" if i.days <= 14 else "offer_store_credit"
    if i.kind == "late_delivery":
        late = i.days > ORACLE_DELIVERY[i.method or "standard"]
        return "shipping", int(late), "reship_order" if late else "answer_question"
    if i.symptom in ORACLE_HAZARD:
        return "technical_issue", 3, "escalate_engineering"
    ki = ORACLE_SYMPTOM_KI.get(i.symptom)
    if ki and _affected(ki, i.version):
        return "known_issue", 1, "send_workaround"
    return "technical_issue", 2 if i.symptom in ORACLE_DEAD else 1, "escalate_engineering"


def _oracle(facts) -> tuple[str, str, str]:
    labelled = [_oracle_issue(i) for i in facts.issues]
    hazard = [lab for i, lab in zip(facts.issues, labelled, strict=True) if i.symptom in ORACLE_HAZARD]
    category, _, action = hazard[0] if hazard else min(
        labelled, key=lambda lab: ORACLE_PRIORITY.index(lab[0]))
    level = max(lab[1] for lab in labelled)
    level += (facts.plan == "Enterprise") + facts.repeat_contact
    return category, ("low", "normal", "high", "critical")[min(level, 3)], action


def test_labels_follow_the_written_rules_except_the_planted_slips(records):
    labelled = [r for r in records if r.label is not None and not r.malformed]
    wrong = [r for r in labelled
             if _oracle(r.facts) != (r.label.category, r.label.urgency, r.label.next_action)]
    assert len(labelled) >= 0.9 * N
    assert 1 - len(wrong) / len(labelled) >= 0.95
    assert {id(r) for r in wrong} == {id(r) for r in labelled if r.slipped}
    assert all(json.loads(r.answer) == r.label.as_dict() for r in labelled)


def test_the_written_files_carry_the_generated_labels(project, records):
    out, _ = project
    by_id: dict[str, set[str]] = {}
    for r in records:
        if r.label is not None and not r.malformed:
            by_id.setdefault(r.ticket_id, set()).add(r.answer)
    rows = csv.DictReader(io.StringIO((out / CSV_FILE).read_text("utf-8-sig"), newline=""))
    checked = 0
    for row in rows:
        if row["ticket_id"] in by_id:
            assert row["triage_json"] in by_id[row["ticket_id"]]
            checked += 1
    assert checked > 500


# --------------------------------------------------------------------------- facts are in the text
_MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august",
           "september", "october", "november", "december")
_WORDS = {w: n for n, w in enumerate(("zero", "one", "two", "three", "four", "five", "six",
                                      "seven", "eight"))}
_MONTH_RE = r"(?P<m>" + "|".join(m[:3] + m[3:].join("()") + "?" for m in _MONTHS) + ")"


def _month(name: str) -> int:
    return next(i for i, m in enumerate(_MONTHS, 1) if m.startswith(name[:3]))


def _dates(text: str, submitted: date) -> set[int]:
    """Every day count a careful reader finds in `text`, relative to `submitted`."""
    t = text.lower()
    found = {int(n) for n in re.findall(r"(\d+) days ago", t)}
    found |= {7 * (int(n) if n.isdigit() else _WORDS[n])
              for n in re.findall(r"(\d+|[a-z]+) weeks ago", t) if n.isdigit() or n in _WORDS}
    found |= {1} if "yesterday" in t else set()
    found |= {7} if "a week ago" in t else set()
    found |= {(submitted - date.fromisoformat(d)).days
              for d in re.findall(r"\d{4}-\d\d-\d\d", t.split("\n\n", 1)[1])}
    patterns = (_MONTH_RE + r" (?P<d>\d+)(?:st|nd|rd|th)?(?: (?P<y>\d{4}))?",
                r"(?:the )?(?P<d>\d+)(?:st|nd|rd|th)?(?: of)? " + _MONTH_RE + r"(?: (?P<y>\d{4}))?")
    for pattern in patterns:
        for m in re.finditer(pattern, t):
            try:
                day = date(int(m["y"] or submitted.year), _month(m["m"]), int(m["d"]))
            except ValueError:  # "May 2024" read as day 2024: not a date
                continue
            found.add((submitted - day).days)
    return found


def test_the_deciding_facts_can_be_read_from_the_ticket(records):
    checked = 0
    for r in records:
        if r.facts is None or r.noise or r.mojibake:
            continue
        assert f"Plan: {r.customer.plan} | Submitted: {r.created.date()}" in r.text
        dated = [i for i in r.facts.issues if i.days is not None]
        if len(r.facts.issues) == 1 and dated:
            assert dated[0].days in _dates(r.text, r.created.date()), r.text
            checked += 1
        for i in r.facts.issues:
            if i.version == "latest":
                assert any(w in r.text.lower() for w in ("latest", "all updates", "newest"))
            elif i.version is not None:
                assert i.version in r.text
            if i.method:
                said = ("standard", "normal") if i.method == "standard" else (i.method,)
                assert any(word in r.text.lower() for word in said)
    assert checked > 300


def test_dates_parse_like_a_reader_would():
    day = date(2024, 5, 14)
    assert _dates("Subject: x\n\nit arrived on the 3rd of May", day) == {11}
    assert _dates("Subject: x\n\ngot it on Dec 31st 2023, bad", day) == {(day - date(2023, 12, 31)).days}
    assert _dates("Subject: x\n\ndelivered two weeks ago", day) == {14}
    assert _dates("Subject: x\n\non 2024-05-01", day) == {13}
    assert day - timedelta(days=1) == date(2024, 5, 13)


# --------------------------------------------------------------------------- not too easy
def test_multi_issue_and_policy_dependent_labels_are_common(records):
    clean = [r for r in records if r.facts is not None and not r.noise]
    multi = sum(len(r.facts.issues) > 1 for r in clean) / len(clean)
    assert multi >= 0.25
    refunds = {r.label.next_action for r in clean if r.label.category == "refund"}
    assert {"issue_refund", "offer_store_credit", "reship_order", "answer_question"} <= refunds
    faults = [i for r in clean for i in r.facts.issues if i.symptom in ORACLE_SYMPTOM_KI]
    outside = sum(not _affected(ORACLE_SYMPTOM_KI[i.symptom], i.version) for i in faults)
    assert 0.2 <= outside / len(faults) <= 0.6


def _keyword_baseline(text: str) -> tuple[str, str, str]:
    """What a model that learned keywords (not the rules) would answer."""
    t = text.lower()
    rules = (("hack", "security", "escalate_security"), ("charge", "billing", "issue_refund"),
             ("refund", "refund", "issue_refund"), ("return", "refund", "issue_refund"),
             ("order", "shipping", "answer_question"), ("log in", "account_access", "reset_access"),
             ("2fa", "account_access", "reset_access"))
    for word, category, action in rules:
        if word in t:
            return category, "normal", action
    return "technical_issue", "normal", "escalate_engineering"


def test_a_keyword_baseline_gets_most_tickets_wrong(records):
    clean = [r for r in records if r.label is not None and not r.noise]
    hits = sum(_keyword_baseline(r.text) == (r.label.category, r.label.urgency, r.label.next_action)
               for r in clean)
    assert hits / len(clean) < 0.35
