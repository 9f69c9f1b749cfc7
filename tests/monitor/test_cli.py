"""`tunesmith monitor` end to end on a tiny project: a snapshot prepared from generated tickets,
traffic written into the request log, the exit codes, the JSON, the HTML and the alarm table."""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path

import pytest
from tests.monitor.textgen import tickets
from typer.testing import CliRunner

from tunesmith.cli import app
from tunesmith.monitor import alarms
from tunesmith.serve.requestlog import Answer, LogEntry, RequestLog, pii_scrubber

runner = CliRunner()
CATEGORIES = ["technical_issue", "refund_request", "account"]
CONFIG = """project: monitor-test
data:
  sources:
    - path: data/tickets.jsonl
  workers: 1
  pii: {{enabled: false}}
  dedup: {{near: {{enabled: false}}}}
eval:
  output: {{kind: json, label_fields: [category]}}
monitor:
  embedder: hashing
  permutations: 500
  min_requests: 100
  window: {window}
"""


def answer(rng: random.Random, shift: bool = False) -> str:
    weights = [1, 1, 6] if shift else [6, 3, 1]
    return json.dumps({"category": rng.choices(CATEGORIES, weights)[0]})


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("monitor")
    rng = random.Random(0)
    (root / "data").mkdir()
    with open(root / "data" / "tickets.jsonl", "w") as fh:
        for i, text in enumerate(tickets(900, seed=1)):
            fh.write(json.dumps({"id": f"t{i}", "messages": [
                {"role": "system", "content": "Triage the ticket."}, {"role": "user", "content": text},
                {"role": "assistant", "content": answer(rng)}]}) + "\n")
    (root / "tunesmith.yaml").write_text(CONFIG.format(window=200))
    result = runner.invoke(app, ["prepare", "-c", str(root)])
    assert result.exit_code == 0, result.output
    return root


def log_traffic(root: Path, texts: list[str], *, shift: bool = False, start: float = 1e9) -> None:
    """Through the server's own request log: its PII scrubber, its table."""
    from tunesmith.config import load_config
    from tunesmith.data.pipeline import _salt

    cfg = load_config(root)
    rng = random.Random(len(texts))
    log = RequestLog(cfg.workspace_dir / "tunesmith.db", scrub=pii_scrubber(cfg.data.pii, _salt(cfg)))
    log.start()
    for i, text in enumerate(texts):
        prompt = (f"<|im_start|>system\nTriage the ticket.<|im_end|>\n<|im_start|>user\n{text}<|im_end|>\n"
                  "<|im_start|>assistant\n")
        conf = {"category": rng.betavariate(3, 2) if shift else rng.betavariate(8, 2)}
        log.record(LogEntry(f"r{start}-{i}", start + i, 200, model="monitor-test", version="v1", variant="champion",
                            prompt=prompt, answers=[Answer(answer(rng, shift), "stop", 9, confidence=conf)],
                            messages=[{"role": "system", "content": "Triage the ticket."},
                                      {"role": "user", "content": text}]))
    log.stop()


def monitor(root: Path, *args: str):
    return runner.invoke(app, ["monitor", "-c", str(root), *args], env={"COLUMNS": "200"})


def test_too_few_requests_is_a_clear_message_not_an_alarm(project):
    never_served = monitor(project)
    assert never_served.exit_code == 2 and "holds 0 answered request(s)" in never_served.output
    log_traffic(project, tickets(50, seed=7), start=1e9)
    result = monitor(project)
    assert result.exit_code == 2
    assert "holds 50 answered request(s); at least 100" in result.output
    assert alarms.history(project / ".tunesmith" / "tunesmith.db") == []


def test_same_distribution_traffic_passes_and_drift_alarms_once(project, tmp_path):
    log_traffic(project, tickets(200, seed=8), start=2e9)
    result = monitor(project, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["alarm"] is False and report["n_current"] == 200
    assert report["embedder"] == "hashing-1024" and report["reference"].startswith("snapshot ")
    cached = list((project / ".tunesmith" / "cache" / "monitor").glob("*.npy"))
    assert len(cached) == 1  # the snapshot's embeddings, reused by the next runs
    stamp = cached[0].stat().st_mtime_ns
    assert {f["check"] for f in report["findings"]} == {
        "input.length", "input.unseen_tokens", "input.embedding", "output.label.category", "output.confidence"}

    log_traffic(project, tickets(200, seed=9, new_share=0.5), shift=True, start=3e9)
    page = tmp_path / "report.html"
    result = monitor(project, "--json", "--html", str(page))
    assert result.exit_code == 1, result.output
    report = json.loads(result.output)
    alarming = {f["check"] for f in report["findings"] if f["alarm"]}
    assert {"input.unseen_tokens", "input.embedding", "output.label.category"} <= alarming
    assert {a["kind"] for a in report["alarms"]} == {"input_drift", "output_drift"}
    text = page.read_text()
    assert "data:image/png;base64," in text and "<script" not in text and "ALARM" in text

    again = json.loads(monitor(project, "--json").output)  # the same window again: no second record
    assert cached[0].stat().st_mtime_ns == stamp
    assert [a["new"] for a in again["alarms"]] == [False, False]
    db_path = project / ".tunesmith" / "tunesmith.db"
    assert len(alarms.history(db_path)) == 2
    db = sqlite3.connect(db_path)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("DELETE FROM monitor_alarms")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("UPDATE monitor_alarms SET kind = 'x'")
    db.close()


def test_previous_window_reference_and_the_terminal_summary(project):
    result = monitor(project, "--reference", "previous", "--window", "150")
    assert result.exit_code in (0, 1), result.output
    assert "reference: requests" in result.output and "input.embedding" in result.output
    report = json.loads(monitor(project, "--reference", "previous", "--window", "200", "--json").output)
    conf = next(f for f in report["findings"] if f["check"] == "output.confidence")
    assert conf["alarm"] and conf["effect"] > 0.3  # the shifted window's confidences fell (logged per field)
    bad = monitor(project, "--reference", "yesterday")
    assert bad.exit_code == 2 and "snapshot or previous" in bad.output


def test_a_rise_of_reviewed_errors_raises_one_quality_alarm(project):
    from tunesmith.review.queue import FieldValue, NewItem, ReviewQueue
    from tunesmith.review.routing import Decision

    db_path = project / ".tunesmith" / "tunesmith.db"
    queue = ReviewQueue(db_path)
    allowed = tuple(CATEGORIES)
    items = [NewItem(f"q{i}", "v1", "json", [{"role": "user", "content": "x"}], '{"category": "account"}',
                     {"category": FieldValue("account", 0.9, allowed)},
                     Decision("low_confidence" if i % 10 == 0 else "sampled", "test")) for i in range(160)]
    queue.enqueue(items)
    rng = random.Random(1)
    for i, it in enumerate(queue.items()):
        wrong = rng.random() < (0.02 if i < 60 else 0.5)  # fine, then half the answers wrong
        if wrong:
            queue.decide(it.item, "correct", by="ann", changes={"category": "refund_request"})
        else:
            queue.decide(it.item, "approve", by="ann")
    queue.decide(1, "reject", by="bob", reason="bad_input")  # not a model error: item 1 stays right

    report = json.loads(monitor(project, "--json").output)
    q = report["quality"]
    assert q["tiers"]["sampled"]["n"] == 144 and q["tiers"]["low_confidence"]["n"] == 16
    assert q["fields"]["category"] == q["tiers"]["sampled"]  # one field: its errors are the answers'
    assert q["alarm"] is True and q["alarms"] and q["alarms"][0] > 54  # none while the rate was 2%
    assert "quality" in {a["kind"] for a in report["alarms"]}
    again = json.loads(monitor(project, "--json").output)
    assert again["quality"]["alarm"] is False  # the same chart alarm is not a new one
    assert [a.kind for a in alarms.history(db_path, kind="quality")] == ["quality"]


def test_a_field_whose_whole_traffic_error_rose_alarms(project, tmp_path):
    """Two routed windows of 200, every tier's answers reviewed in part: the later window's
    category is wrong far more often, in the low-confidence tier the sampled chart never sees."""
    from tunesmith.config import load_config
    from tunesmith.data.pipeline import _salt
    from tunesmith.review.queue import FieldValue, NewItem, ReviewQueue
    from tunesmith.review.routing import Decision

    cfg = load_config(project)
    db_path = project / ".tunesmith" / "tunesmith.db"
    rng = random.Random(5)
    log = RequestLog(db_path, scrub=pii_scrubber(cfg.data.pii, _salt(cfg)))
    log.start()
    queued, truth = [], {}
    for w, (start, low_conf_error) in enumerate(((4e9, 0.1), (5e9, 0.6))):
        for i, text in enumerate(tickets(200, seed=20 + w)):
            rid = f"f{w}-{i}"
            tier = rng.choices(["auto", "sampled", "low_confidence"], [3, 3, 4])[0]
            ans = answer(rng)
            log.record(LogEntry(rid, start + i, 200, model="monitor-test", version="v1", variant="champion",
                                prompt=text, answers=[Answer(ans, "stop", 9, decision=Decision(tier, "t").to_dict())],
                                messages=[{"role": "user", "content": text}]))
            if tier != "auto":
                value = json.loads(ans)["category"]
                queued.append(NewItem(rid, "v1", "json", [{"role": "user", "content": text}], ans,
                                      {"category": FieldValue(value, 0.5, tuple(CATEGORIES))}, Decision(tier, "t")))
                truth[rid] = rng.random() < (low_conf_error if tier == "low_confidence" else 0.05)
    log.stop()
    queue = ReviewQueue(db_path)
    queue.enqueue(queued)
    for it in queue.items(status="pending"):
        if it.request_id in truth:
            other = next(c for c in CATEGORIES if c != it.fields["category"].value)
            queue.decide(it.item, *(("correct",) if truth[it.request_id] else ("approve",)), by="ann",
                         **({"changes": {"category": other}} if truth[it.request_id] else {}))

    page = tmp_path / "quality.html"
    result = monitor(project, "--json", "--window", "200", "--html", str(page))
    report = json.loads(result.output)
    rise = report["quality"]["traffic"]["category"]
    assert rise["previous"]["rate"] < 0.15 and rise["current"]["rate"] > 0.25 and rise["alarm"] is True
    assert rise["current"]["strata"]["auto"]["answers"] > rise["current"]["strata"]["auto"]["reviewed"] > 0
    assert report["quality"]["field_alarms"] == ["category"] and result.exit_code == 1
    recorded = [a for a in report["alarms"] if a["kind"] == "quality" and a["checks"] == ["quality.field.category"]]
    assert len(recorded) == 1 and recorded[0]["reference"].startswith("requests ")
    assert "quality.field.category" in page.read_text() and "whole traffic" in page.read_text()
    text = monitor(project, "--window", "200").output
    assert "whole traffic" in text and "category" in text and "ALARM" in text


def test_the_preflight_names_the_monitor_extra(project):
    from tunesmith import deps
    from tunesmith.config import load_config

    needed = deps.needed(load_config(project), ["monitor"])
    assert deps.SCIPY in needed and deps.SKLEARN in needed
    assert "tunesmith[monitor]" in deps.SKLEARN.install
