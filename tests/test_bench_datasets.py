"""The generators of ``benchmarks/bench_defaults.py`` (``benchmarks/_datasets.py``): seeded,
well-formed, balanced enough. No model runs here."""

from __future__ import annotations

import csv
import importlib.util
import json
import re
import sys
from collections import Counter
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "_datasets.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_datasets", _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


ds = _load()
SNAKE = re.compile(r"^[a-z]+(_[a-z]+)*$")


@pytest.fixture(scope="module")
def intents() -> list[dict[str, str]]:
    return ds.generate_intents(3000, seed=13)


@pytest.fixture(scope="module")
def summaries() -> list[dict]:
    return ds.generate_summaries(2000, seed=13)


# --------------------------------------------------------------------------- intents
def test_intents_are_seeded(intents) -> None:
    assert ds.generate_intents(3000, seed=13) == intents
    assert ds.generate_intents(3000, seed=14) != intents


def test_intent_label_set(intents) -> None:
    assert len(ds.INTENT_LABELS) == 40
    assert all(SNAKE.match(label) for label in ds.INTENT_LABELS)
    assert {"card_arrival", "lost_or_stolen_card", "exchange_rate"} <= set(ds.INTENT_LABELS)
    assert {r["category"] for r in intents} == set(ds.INTENT_LABELS)
    assert all(len(templates) >= 4 for templates in ds.INTENTS.values())


def test_every_intent_has_at_least_30_examples(intents) -> None:
    counts = Counter(r["category"] for r in intents)
    assert len(intents) == 3000
    assert min(counts.values()) >= 30, counts.most_common()[-3:]


def test_intent_texts_are_filled_and_distinct(intents) -> None:
    texts = [r["text"] for r in intents]
    assert all(t.strip() and len(t.split()) >= 3 for t in texts)
    assert not any("{" in t or "}" in t for t in texts)  # every slot filled
    keys = {" ".join(re.findall(r"\w+", t.lower())) for t in texts}
    assert len(keys) == len(texts)  # nothing for exact dedup to remove
    assert any(t != t.rstrip(".!?") for t in texts) and any(t == t.lower() for t in texts)  # noise


def test_intents_csv_parses(tmp_path: Path, intents) -> None:
    info = ds.write_intents(tmp_path, n=3000, seed=13)
    with info["path"].open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["text", "category"]
    assert rows == intents
    assert info["records"] == 3000 and sum(info["labels"].values()) == 3000


def test_intent_instructions_list_no_labels() -> None:
    assert not any(label in ds.INTENT_INSTRUCTIONS for label in ds.INTENT_LABELS)


# --------------------------------------------------------------------------- summaries
def test_summaries_are_seeded(summaries) -> None:
    assert ds.generate_summaries(2000, seed=13) == summaries
    assert ds.generate_summaries(50, seed=14) != summaries[:50]


def test_summaries_follow_the_form_and_the_truth(summaries) -> None:
    form = re.compile(r"^Customer (.+) reports (.+) with (the .+); wants (.+)\.$")
    for row in summaries:
        m = form.match(row["summary"])
        assert m, row["summary"]
        truth = row["truth"]
        assert m.groups() == (truth["persona"], truth["issue"], truth["product"], truth["resolution"])
        assert row["ticket"].strip() and "{" not in row["ticket"] and "{" not in row["summary"]
        assert all(v.strip() for v in truth.values())
    assert len({r["ticket"] for r in summaries}) == len(summaries)


def test_summaries_name_no_one(summaries) -> None:
    names = set(ds.FIRST_NAMES) | set(ds.SURNAMES)
    assert not any(set(re.findall(r"\w+", r["summary"])) & names for r in summaries)
    assert any(set(re.findall(r"\w+", r["ticket"])) & names for r in summaries)  # tickets do


def test_summaries_jsonl_parses(tmp_path: Path, summaries) -> None:
    info = ds.write_summaries(tmp_path, n=2000, seed=13)
    lines = info["path"].read_text(encoding="utf-8").splitlines()
    assert len(lines) == info["records"] == 2000
    records = [json.loads(line) for line in lines]
    for rec, row in zip(records, summaries, strict=True):
        roles = [m["role"] for m in rec["messages"]]
        assert roles == ["system", "user", "assistant"]
        assert all(m["content"].strip() for m in rec["messages"])
        assert rec["messages"][1]["content"] == row["ticket"]
        assert rec["messages"][2]["content"] == row["summary"]
    assert len({r["ticket_id"] for r in records}) == 2000


def test_held_out_intents_are_unlike_the_dataset(tmp_path: Path) -> None:
    """``bench_defaults.py --extra-cases``: no held-out query equals or near-duplicates a dataset
    record (a leak would flatter the fine-tune), and each is a chat case with a real label."""
    spec = importlib.util.spec_from_file_location("bench_defaults", _PATH.parent / "bench_defaults.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    from tunesmith.config import NearDedupConfig
    from tunesmith.data.minhash import NearDuplicateIndex, signatures

    ds.write_intents(tmp_path, n=800, seed=13)
    path = bench.held_out_intents(tmp_path, 150)
    cases = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(cases) == 150
    assert all([m["role"] for m in c["messages"]] == ["system", "user", "assistant"] for c in cases)
    assert {c["messages"][2]["content"] for c in cases} <= set(ds.INTENT_LABELS)
    with (tmp_path / "data" / "intents.csv").open(encoding="utf-8", newline="") as fh:
        known = [r["text"] for r in csv.DictReader(fh)]
    held = [c["messages"][1]["content"] for c in cases]
    key = ds._key
    assert not {key(t) for t in held} & {key(t) for t in known}
    index = NearDuplicateIndex(NearDedupConfig())
    index.add(signatures(known + held, NearDedupConfig()))
    pairs = index.similar_pairs()
    assert not ((pairs["i"] < len(known)) & (pairs["j"] >= len(known))).any()  # none near a dataset record
    assert not (pairs["i"] >= len(known)).any()  # nor near each other
