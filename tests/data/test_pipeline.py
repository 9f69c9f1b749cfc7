"""End-to-end tests of `prepare` on small hand-made projects."""

import json
import os
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunesmith.config import load_config
from tunesmith.data import pipeline
from tunesmith.data.pipeline import load_split, prepare
from tunesmith.errors import TunesmithError
from tunesmith.workspace import Workspace

SYSTEM = "Triage the ticket. Answer with JSON."
TOPICS = [
    "my parcel never arrived and tracking has not updated for ten days",
    "the app crashes every time I open the settings page on android",
    "I was charged twice for the premium plan this month",
    "please delete my account and all personal data you hold",
    "the discount code from the newsletter is rejected at checkout",
    "how do I change the delivery address for an order already shipped",
    "password reset emails never reach my inbox even in spam",
    "the blender I bought makes a burning smell after two minutes",
]


def chat(user: str, answer: str = '{"category":"billing"}', group: str | None = None) -> dict:
    rec = {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user},
                        {"role": "assistant", "content": answer}]}
    if group:
        rec["customer_id"] = group
    return rec


def ticket(i: int) -> str:
    topic = TOPICS[i % len(TOPICS)]
    return f"Ticket {i}: {topic}. Order reference {1000 + i * 7}, case number {i * 31 % 997} regarding item {i}."


def make_project(tmp_path: Path, lines: list[str], extra_cfg: str = "") -> Path:
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "tickets.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "tunesmith.yaml").write_text(
        "project: test\nseed: 5\ndata:\n  sources:\n    - path: data/tickets.jsonl\n"
        "      group_field: customer_id\n  workers: 1\n" + extra_cfg
    )
    return tmp_path / "tunesmith.yaml"


def standard_lines() -> list[str]:
    lines = [json.dumps(chat(ticket(i), group=f"c{i % 40}")) for i in range(200)]
    lines.append(json.dumps(chat(ticket(3), group="c3")))                        # exact duplicate
    lines.append(json.dumps(chat(ticket(5).replace("Ticket", "ticket") + " Thanks", group="c99")))  # near dup
    lines.append(json.dumps(chat("Contact me at jane.doe@example.com or +44 20 7946 0958 about the refund please")))
    lines.append(json.dumps(chat(ticket(7), answer="N/A")))                      # placeholder answer
    lines.append(json.dumps(chat("Sent from my iPhone")))                         # boilerplate
    lines.append('{"messages": [{"role": "user", "content": "truncated')          # malformed
    lines.append("[1, 2, 3]")                                                     # not an object
    return lines


def test_prepare_accounts_for_every_record(tmp_path):
    cfg = load_config(make_project(tmp_path, standard_lines()))
    res = prepare(cfg)
    c = res.manifest["counts"]
    assert c["read"] == 207
    assert c["read"] == c["kept"] + c["dropped"] + c["quarantined"]
    assert c["quarantined"] == 2
    assert c["dropped_by_reason"]["exact_dedup:duplicate"] == 1
    assert c["dropped_by_reason"]["near_dedup:near_duplicate"] == 1
    assert c["dropped_by_reason"]["filter:empty_or_placeholder_answer"] == 1
    assert c["dropped_by_reason"]["filter:boilerplate"] == 1
    assert c["pii"]["EMAIL"] == 1 and c["pii"]["PHONE"] == 1
    # the drop log names each dropped record, its stage and what it duplicates
    drops = pq.read_table(res.path / "drops.parquet").to_pylist()
    assert len(drops) == c["dropped"]
    exact = next(d for d in drops if d["stage"] == "exact_dedup")
    assert exact["id"] == "data/tickets.jsonl:201" and exact["duplicate_of"] == "data/tickets.jsonl:4"
    near = next(d for d in drops if d["stage"] == "near_dedup")
    assert near["duplicate_of"] == "data/tickets.jsonl:6"
    # quarantine names file and line and what was wrong
    quarantine = [orjson.loads(x) for x in (res.path / "quarantine.jsonl").read_bytes().splitlines()]
    assert [q["location"] for q in quarantine] == ["line 206", "line 207"]
    assert all(q["source"] == "data/tickets.jsonl" and q["error"] for q in quarantine)
    for name in ("manifest.json", "report.html", "lengths.png", "drops.png", "pii.png", "clusters.png"):
        assert (res.path / name).exists(), name


def test_pii_is_redacted_in_the_snapshot(tmp_path):
    res = prepare(load_config(make_project(tmp_path, standard_lines())))
    texts = [m["content"] for s in ("train", "validation", "test") for ex in load_split(res.path, s) for m in ex.messages]
    blob = "\n".join(texts)
    assert "jane.doe@example.com" not in blob and "7946 0958" not in blob
    assert "<EMAIL>" in blob and "<PHONE>" in blob


def test_groups_never_cross_splits(tmp_path):
    res = prepare(load_config(make_project(tmp_path, standard_lines())))
    where: dict[str, set] = {}
    for split in ("train", "validation", "test"):
        for ex in load_split(res.path, split):
            assert ex.meta["split"] == split
            if ex.meta.get("group"):
                where.setdefault(ex.meta["group"], set()).add(split)
    assert where and all(len(s) == 1 for s in where.values())
    assert {s for v in where.values() for s in v} == {"train", "validation", "test"}


def test_same_inputs_same_snapshot_and_reuse(tmp_path):
    path = make_project(tmp_path, standard_lines())
    first = prepare(load_config(path))
    second = prepare(load_config(path))
    assert second.snapshot_id == first.snapshot_id and second.reused
    assert len(Workspace(tmp_path / ".tunesmith").list("snapshot")) == 1
    # a different config (seed) gives a different snapshot
    path.write_text(path.read_text().replace("seed: 5", "seed: 6"))
    assert prepare(load_config(path)).snapshot_id != first.snapshot_id


def test_process_pool_gives_the_same_snapshot(tmp_path):
    path = make_project(tmp_path, standard_lines(), "  batch_size: 16\n")
    one = prepare(load_config(path))
    path.write_text(path.read_text().replace("workers: 1", "workers: 2"))
    two = prepare(load_config(path))
    assert two.snapshot_id == one.snapshot_id


def test_dry_run_writes_nothing(tmp_path):
    res = prepare(load_config(make_project(tmp_path, standard_lines())), dry_run=True, dry_run_records=300)
    assert res.snapshot_id is None and res.path is None
    assert res.samples["quarantine"][0]["location"] == "line 206"
    assert not (tmp_path / ".tunesmith" / "artifacts" / "snapshot").exists()


def test_crash_mid_run_leaves_no_snapshot_and_marks_run_failed(tmp_path, monkeypatch):
    cfg = load_config(make_project(tmp_path, standard_lines()))

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("tunesmith.data.report.write_report", boom)
    with pytest.raises(OSError):
        prepare(cfg)
    ws = Workspace(cfg.workspace_dir)
    assert ws.list("snapshot") == []
    assert ws.runs("prepare")[-1]["status"] == "failed"
    assert list((cfg.workspace_dir / "tmp").iterdir()) == []


def test_missing_source_is_a_clear_error(tmp_path):
    path = make_project(tmp_path, standard_lines())
    path.write_text(path.read_text().replace("data/tickets.jsonl", "data/nothing-*.jsonl"))
    with pytest.raises(TunesmithError, match="nothing-"):
        prepare(load_config(path))


def test_accounting_error_is_raised_when_a_record_vanishes(tmp_path, monkeypatch):
    cfg = load_config(make_project(tmp_path, standard_lines()))
    real = pipeline._tally

    def lose_one(out, acc, drops, samples):
        real(out, acc, drops, samples)
        acc.read += 1  # simulate a record that entered but never came out

    monkeypatch.setattr(pipeline, "_tally", lose_one)
    with pytest.raises(pipeline.AccountingError, match="accounting mismatch"):
        prepare(cfg)


GOOD = st.integers(0, 10_000).map(lambda i: json.dumps(chat(ticket(i), group=f"g{i % 7}")))
BAD = st.sampled_from([
    "{", "[]", "null", '"just a string"', '{"messages": "not a list"}', '{"messages": []}',
    '{"instruction": 5, "output": null}', "\x00\x00", '{"messages": [{"role": "wizard", "content": "x"}]}',
])
JUNK = st.sampled_from([json.dumps(chat("Sent from my iPhone")), json.dumps(chat(ticket(1), answer=""))])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(GOOD, BAD, JUNK), min_size=1, max_size=40))
def test_property_read_equals_kept_dropped_quarantined(tmp_path_factory, lines):
    tmp = tmp_path_factory.mktemp("prop")
    res = prepare(load_config(make_project(tmp, lines)))
    c = res.manifest["counts"]
    assert c["read"] == len(lines)
    assert c["read"] == c["kept"] + c["dropped"] + c["quarantined"]
    kept_ids = {ex.id for s in ("train", "validation", "test") for ex in load_split(res.path, s)}
    dropped_ids = {d["id"] for d in pq.read_table(res.path / "drops.parquet").to_pylist()}
    quarantined = (res.path / "quarantine.jsonl").read_bytes().splitlines()
    assert not kept_ids & dropped_ids
    assert len(kept_ids) + len(dropped_ids) + len(quarantined) == len(lines)


@pytest.mark.slow
def test_ray_data_gives_the_same_snapshot(tmp_path):
    pytest.importorskip("ray")
    path = make_project(tmp_path, standard_lines(), "  batch_size: 50\n")
    local = prepare(load_config(path))
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    ray_run = prepare(load_config(path), executor="ray")
    assert ray_run.snapshot_id == local.snapshot_id
