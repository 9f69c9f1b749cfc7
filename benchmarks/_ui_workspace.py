"""A generated project workspace for the web UI's benchmark and browser tests: snapshots with
a quarantine file, model versions with training metrics, an eval pack and evals (ladder, scores,
answers, confusion matrices), aliases moved through the registry, ``requests`` logged requests
across champion, canary and shadow, ``items`` queued review items, alarms and rollout events.

Everything is written with the stages' own functions (Workspace.publish, ModelRegistry,
ReviewQueue.enqueue, RolloutEvents.append, monitor alarms.record) or in the files and meta the
stages write (see tests/registry/conftest.py). Nothing is trained or served. Seeded.
"""

from __future__ import annotations

import hashlib
import json
import random
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CATEGORIES = ["billing", "bug", "security", "account", "shipping"]
URGENCIES = ["low", "high", "critical"]
ACTIONS = ["refund", "fix", "escalate_security", "reset", "track"]
FIELDS = {"category": CATEGORIES, "urgency": URGENCIES, "next_action": ACTIONS}
SYSTEM = "You triage support tickets. Answer in JSON with category, urgency and next_action."
RUNGS = {"zero_shot": 0.35, "few_shot": 0.62, "rag": 0.55, "finetuned": 0.84, "finetuned_rag": 0.86}


@dataclass
class Generated:
    root: Path  # the project folder (tunesmith.yaml inside)
    cfg: Any
    versions: list[str]
    pack: str
    evals: list[str]
    snapshot: str


def _id(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def _answer(values: dict[str, str]) -> str:
    return json.dumps(values)


def _ticket(rng: random.Random, i: int) -> tuple[str, dict[str, str]]:
    cat = rng.choice(CATEGORIES)
    text = {"billing": "I was charged twice for order {n}, please refund", "bug": "The app crashes when I open report {n}",
            "security": "Someone logged into my account from an unknown device ({n})",
            "account": "I cannot reset my password, ticket {n}", "shipping": "Where is my parcel {n}? It is late"}[cat]
    action = {"billing": "refund", "bug": "fix", "security": "escalate_security", "account": "reset",
              "shipping": "track"}[cat]
    return text.format(n=1000 + i), {"category": cat, "urgency": rng.choice(URGENCIES), "next_action": action}


def _wrong(rng: random.Random, values: dict[str, str], p: float) -> dict[str, str]:
    return {k: (rng.choice([x for x in FIELDS[k] if x != v]) if rng.random() < p else v) for k, v in values.items()}


def build(root: Path, *, requests: int = 1_000, items: int = 100, cases: int = 60, seed: int = 0) -> Generated:
    from tunesmith.config import load_config
    from tunesmith.registry import ModelRegistry
    from tunesmith.workspace import Workspace

    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    (root / "data" / "tickets.jsonl").write_text('{"prompt": "a", "completion": "b"}\n')
    (root / "tunesmith.yaml").write_text(
        "project: support-triage\n"
        "data:\n  sources:\n    - path: data/tickets.jsonl\n"
        "train:\n  tracking:\n    mlflow: false\n    tensorboard: false\n"
        f"model:\n  system_prompt: {json.dumps(SYSTEM)}\n"
        "serve:\n  rollout:\n    mode: canary\n    share: 0.1\n")
    cfg = load_config(root)
    ws = Workspace(cfg.workspace_dir)
    tickets = [_ticket(rng, i) for i in range(max(cases, 50))]
    snapshot = _snapshot(ws, rng)
    pack = _pack(ws, snapshot, tickets[:cases])
    versions, evals = [], []
    for n in range(3):
        model = _model(ws, cfg, snapshot, n, rng)
        versions.append(model)
        evals.append(_eval(ws, model, pack, tickets[:cases], rng, lift=0.05 * n, passed=n > 0))
    reg = ModelRegistry.from_config(cfg)
    reg.promote(versions[1], "champion", reason="first release", by="admin-seed")
    reg.promote(versions[2], "challenger", reason="canary candidate", by="admin-seed")
    _requests(ws.db_path, rng, requests, versions[1], versions[2], tickets)
    _review_items(ws.db_path, rng, items, versions[1], tickets)
    _alarms_and_events(ws.db_path, versions[1], versions[2])
    return Generated(root, cfg, versions, pack, evals, snapshot)


def _snapshot(ws: Any, rng: random.Random) -> str:
    snapshot_id = _id("snapshot")[:20]
    counts = {"read": 1200, "kept": 1000, "dropped": 150, "quarantined": 50,
              "splits": {"train": 800, "validation": 100, "test": 100},
              "dropped_by_stage": {"exact_dedup": 100, "filter": 50},
              "dropped_by_reason": {"exact_dedup:duplicate": 100, "filter:too_short": 30, "filter:language": 20},
              "pii": {"EMAIL": 70, "PHONE": 30, "PERSON": 55}, "normalised": 40, "near_duplicate_clusters": 12}
    manifest = {"kind": "tunesmith.snapshot", "project": "support-triage", "config_hash": "d" * 16,
                "sources": [{"path": "data/tickets.jsonl", "sha256": "ab" * 32, "bytes": 123456, "format": "jsonl"}],
                "counts": counts, "contamination": {"checked_test_examples": 100, "over_threshold": 0, "examples": []},
                "config": {"pii": {"enabled": True, "action": "placeholder"}}}
    with ws.staging() as staging:
        (staging / "manifest.json").write_text(json.dumps(manifest))
        with open(staging / "quarantine.jsonl", "w") as fh:
            for i in range(counts["quarantined"]):
                fh.write(json.dumps({"source": "data/tickets.jsonl", "location": f"line {10 + i * 7}",
                                     "error": "not JSON: Expecting ',' delimiter",
                                     "preview": f'{{"prompt": "call me at 555-0{i:03d} or mail jo{i}@example.com" '}) + "\n")
        ws.publish(staging, "snapshot", snapshot_id, meta={"counts": counts, "config_hash": "d" * 16})
    return snapshot_id


def _pack(ws: Any, snapshot: str, tickets: list[tuple[str, dict[str, str]]]) -> str:
    pack_id = _id("pack", snapshot)[:16]
    cases = [{"id": f"case{i}", "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text},
                                             {"role": "assistant", "content": _answer(values)}],
              "text": None, "meta": {}} for i, (text, values) in enumerate(tickets)]
    with ws.staging() as staging:
        (staging / "pack.json").write_text(json.dumps({"cases": cases, "probes": [], "general_qa": [],
                                                       "general_text": [], "settings": {}}))
        ws.publish(staging, "evalpack", pack_id, meta={"cases": len(cases), "snapshot": snapshot},
                   parents=[("snapshot", snapshot, "test_cases_from")])
    return pack_id


def _model(ws: Any, cfg: Any, snapshot: str, n: int, rng: random.Random) -> str:
    model_id = _id("model", n)[:20]
    run_dir = cfg.workspace_dir / "runs" / f"train-{model_id[:12]}"
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "metrics.jsonl", "w") as fh:
        for step in range(1, 201):
            fh.write(json.dumps({"event": "step", "step": step, "loss": 2.5 * 0.99 ** step + rng.random() * 0.1}) + "\n")
            if step % 25 == 0:
                fh.write(json.dumps({"event": "eval", "step": step, "val_loss": 2.4 * 0.99 ** step + 0.15}) + "\n")
    record = {"kind": "tunesmith.model_version", "id": model_id, "run_key": model_id[:12], "base_model": "starter",
              "base_fingerprint": "f" * 16, "snapshot": snapshot, "config_hash": "c" * 16, "method": "lora",
              "tunesmith": "0.1.0", "seed": 13 + n,
              "metrics": {"steps": 200, "best_val_loss": 0.43, "tokens_per_second": 250.0, "seconds": 600.0},
              "config": {"model": cfg.model.model_dump(mode="json"), "train": cfg.train.model_dump(mode="json")},
              "weights": "adapter", "run_dir": str(run_dir)}
    with ws.staging() as staging:
        (staging / "adapter").mkdir()
        (staging / "adapter" / "adapter_model.safetensors").write_bytes(b"\0" * 16)
        (staging / "model_version.json").write_text(json.dumps(record, indent=1))
        ws.publish(staging, "model", model_id, parents=[("snapshot", snapshot, "trained_on")],
                   meta={k: record[k] for k in ("run_key", "base_model", "snapshot", "config_hash", "method",
                                                "metrics")})
    return model_id


def _eval(ws: Any, model: str, pack: str, tickets: list, rng: random.Random, *, lift: float, passed: bool) -> str:
    head = "fields_mean"
    ladder: dict[str, Any] = {}
    for rung, p_right in RUNGS.items():
        p_right = min(0.97, p_right + (lift if rung.startswith("finetuned") else 0))
        scores, answers = [], []
        for _, values in tickets:
            got = _wrong(rng, values, 1 - p_right)
            per = {f"field/{k}": float(got[k] == values[k]) for k in values}
            scores.append({head: sum(per.values()) / len(per), **per})
            answers.append(_answer(got))
        metrics = {}
        for key in [head, *[f"field/{k}" for k in FIELDS]]:
            vals = [s[key] for s in scores]
            mean = sum(vals) / len(vals)
            metrics[key] = {"mean": mean, "low": max(0.0, mean - 0.07), "high": min(1.0, mean + 0.07), "n": len(vals)}
        ladder[rung] = {"metrics": metrics, "scores": scores, "answers": answers,
                        "cost": {"seconds_per_answer": 0.4 if rung.startswith("fine") else 0.9}}
        if rung == "finetuned":
            ladder[rung]["confidence"] = [min(0.99, 0.5 + 0.5 * s[head] * rng.random() + 0.1) for s in scores]
    ft, base = ladder["finetuned"]["metrics"][head]["mean"], ladder["few_shot"]["metrics"][head]["mean"]
    diff = ft - base
    labels = CATEGORIES
    counts = [[0] * len(labels) for _ in labels]
    for (_, values), ans in zip(tickets, ladder["finetuned"]["answers"], strict=True):
        counts[labels.index(values["category"])][labels.index(json.loads(ans)["category"])] += 1
    results = {
        "headline": head, "pack": pack, "model": model, "cases": len(tickets), "ladder": ladder,
        "finetuned_vs_best_baseline": {"baseline": "few_shot", "rung": "finetuned", "diff": diff, "low": diff - 0.08,
                                       "high": diff + 0.08, "n": len(tickets), "excludes_zero": float(passed)},
        "fields_vs_best_baseline": {k: {"diff": diff, "low": diff - 0.1, "high": diff + 0.1, "n": len(tickets),
                                        "excludes_zero": float(passed)} for k in FIELDS},
        "confusion": {"category": {"rung": "finetuned", "field": "category", "labels": labels, "columns": labels,
                                   "counts": counts}},
        "gate": {"passed": passed, "checks": [
            {"name": "lift", "passed": passed, "value": diff, "threshold": 0.0, "detail": "fine-tuned − few_shot"},
            {"name": "forgetting", "passed": True, "value": 0.05, "threshold": 0.25, "detail": "perplexity change"}]},
        "recommendation": "Fine-tune." if passed else "Prompting is enough.",
    }
    eval_id = _id("eval", model, pack)[:16]
    with ws.staging() as staging:
        (staging / "results.json").write_text(json.dumps(results))
        ws.publish(staging, "eval", eval_id, parents=[("evalpack", pack, "evaluated_on"), ("model", model, "evaluates")],
                   meta={"headline": head, "passed": passed, "model": model, "pack": pack})
    ws.record_eval(eval_id, model, pack, {r: v["metrics"] for r, v in ladder.items()})
    return eval_id


def _requests(db_path: Path, rng: random.Random, n: int, champion: str, challenger: str, tickets: list) -> None:
    from tunesmith.serve import requestlog

    now = time.time()
    rows = []
    for i in range(n):
        variant = "canary" if rng.random() < 0.1 else "champion"
        version = challenger if variant == "canary" else champion
        text, values = tickets[i % len(tickets)]
        status = 500 if rng.random() < 0.01 else 200
        created = now - (n - i) * 5.0
        answer = _answer(_wrong(rng, values, 0.1)) if status == 200 else None
        msgs = json.dumps([{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}])
        base = (created, "support-triage", version, None, variant, f"<|im_start|>user\n{text}<|im_end|>", answer,
                "stop", 40, 12, rng.lognormvariate(5.5, 0.4), None, status, None if status == 200 else "boom", 0, 0)
        rows.append((f"req-{i}", 0, *base, None, 1, msgs, None, None))
        if variant == "champion" and rng.random() < 0.05:  # a shadow copy
            rows.append((f"shadow-{i}", 0, *base[:4], "shadow", *base[5:], f"req-{i}", 1, msgs, None, None))
    db = requestlog.connect(db_path)
    try:
        with db:
            db.executemany(f"INSERT OR REPLACE INTO request_log ({', '.join(requestlog.COLUMNS)}) VALUES "
                           f"({', '.join('?' * len(requestlog.COLUMNS))})", rows)
    finally:
        db.close()


def _review_items(db_path: Path, rng: random.Random, n: int, version: str, tickets: list) -> None:
    from tunesmith.review.queue import FieldValue, NewItem, ReviewQueue
    from tunesmith.review.routing import Decision

    queue = ReviewQueue(db_path)
    items = []
    for i in range(n):
        text, values = tickets[i % len(tickets)]
        got = _wrong(rng, values, 0.3)
        conf = {k: round(rng.uniform(0.3, 0.99), 3) for k in FIELDS}
        tier = "mandatory" if got["category"] == "security" else rng.choice(["low_confidence", "sampled"])
        why = {"mandatory": "rule category=security", "low_confidence": f"confidence {min(conf.values()):.3f} < "
               "threshold 0.800", "sampled": "quality-control sample (5.0% of auto-approved)"}[tier]
        fields = {k: FieldValue(got[k], conf[k], tuple(FIELDS[k])) for k in FIELDS}
        items.append(NewItem(f"req-{i}", version, "json", [{"role": "system", "content": SYSTEM},
                                                          {"role": "user", "content": text}],
                             _answer(got), fields, Decision(tier, why, min(conf.values()), 0.8)))  # type: ignore[arg-type]
    queue.enqueue(items)


def _alarms_and_events(db_path: Path, champion: str, challenger: str) -> None:
    from tunesmith.monitor import alarms
    from tunesmith.serve.rollout import RolloutEvents

    now = time.time()
    for k in range(4):
        alarms.record(db_path, alarms.Alarm(
            "input_drift", ["input.length"], f"requests {k * 500 + 1}-{(k + 1) * 500}", now - (4 - k) * 3600,
            now - (3 - k) * 3600, 500, "snapshot", {champion: 500},
            {"input.length": {"test": "ks", "p_value": 10 ** -(3 + k), "ks_d": 0.12 + 0.03 * k}}))
    events = RolloutEvents(db_path)
    events.append("start", champion=champion, canary=challenger, share=0.1, reason={"why": "canary started"})
    events.append("set", champion=champion, canary=challenger, share=0.1,
                  reason={"settings": {"share": 0.1}, "by": "admin-seed", "why": "start small"})


def count_rows(db_path: Path, table: str) -> int:
    db = sqlite3.connect(db_path)
    try:
        return db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    finally:
        db.close()
