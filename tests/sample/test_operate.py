"""``demo --operate``'s orchestration end to end on a tiny random model: the support-triage
project (300 tickets), a full fine-tune of one layer as the champion, then the simulated month
with small counts: real server and HTTP, queue and audit rows by the simulated reviewer,
monitor, export, retrain from the champion's full weights, shadow, canary, promotion.

The tiny model's answers are noise; what is checked is that every stage ran on the data the
previous one produced, and that the figures are computed from the ground truth."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tunesmith.sample.operate import (
    REVIEWER,
    OperatePlan,
    accuracy,
    offline_table,
    routing_figures,
    simulate,
    write_frozen_extra,
)
from tunesmith.sample.operate_report import ROWS, acceptance_lines, before_after_lines
from tunesmith.sample.operate_serve import Served
from tunesmith.sample.triage_month2 import month_traffic
from tunesmith.sample.triage_policy import Triage


def _tiny_triage_project(root: Path):
    from models.tiny import build_model, build_tokenizer
    from tunesmith.config import load_config
    from tunesmith.registry import ModelRegistry
    from tunesmith.run import run_loop
    from tunesmith.sample import generate_support_triage

    generate_support_triage(root, seed=7, n_tickets=300)
    tok = build_tokenizer()  # the tiny Llama with room for a whole ticket (its BPE splits finely)
    model = build_model("llama", tok)
    model.config.max_position_embeddings = 4096
    model.save_pretrained(root / "tiny")
    tok.save_pretrained(root / "tiny")
    data = yaml.safe_load((root / "tunesmith.yaml").read_text())
    data["model"] = {"base": "tiny"}
    data["train"] = {"method": "full", "full": {"top_layers": 1}, "max_length": 2048, "batch_size": 2,
                     "max_steps": 2, "eval_every": 2, "save_every": 2, "lr": 0.01, "precision": "fp32",
                     "packing": False, "tracking": {"mlflow": False, "tensorboard": False}}
    data["eval"].update({"rungs": ["finetuned"], "max_cases": 8, "probes": False, "forgetting": False,
                         "bootstrap_resamples": 200,
                         "generation": {"max_new_tokens": 160, "batch_size": 16, "precision": "fp32"},
                         "gate": {"min_lift": 0.0, "require_significant": False}})
    data["review"] = {"calibration_examples": 12}
    # a random model cannot pass a real gate: margins wide enough that the plumbing runs to the end
    data["retrain"] = {"max_field_drop": 1.0, "min_new_slice_lift": -1.0, "new_slice_share": 0.3}
    data["serve"] = {"rollout": {"min_requests": 1, "window": 50}}
    (root / "tunesmith.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    cfg = load_config(root)
    summary = run_loop(cfg)
    ModelRegistry.from_config(cfg).promote(summary.model.model_id, "champion", force=True,
                                           reason="tiny test champion", by="test")
    return cfg, summary.model.model_id


@pytest.mark.slow
def test_operate_runs_the_whole_loop(tmp_path):
    from tunesmith.review.project import queue

    cfg, champion = _tiny_triage_project(tmp_path / "triage")
    plan = OperatePlan(month1=20, month2=20, shadow=6, canary=6, window=20, concurrency=4, sample_rate=0.5,
                       embedder="hashing", retrain_steps=2, retrain_lr=0.01, max_tokens=160)
    lines: list[str] = []
    result = simulate(cfg, plan, say=lines.append)
    assert lines and all(line.startswith("[simulation]") for line in lines)
    assert result.champion == champion
    assert result.accuracy["month1"]["answers"] == 20 and result.accuracy["month2"]["answers"] == 20
    assert sum(result.routing["month2"]["tiers"].values()) == 20
    audit = queue(cfg).audit()
    assert audit and {row.by for row in audit} == {REVIEWER}
    decided = result.review["month1"]["decisions"]
    assert decided.get("approve", 0) + decided.get("correct", 0) == sum(
        v for k, v in decided.items() if k.startswith("tier:"))
    assert result.review["export"]["records"] >= 1
    assert result.monitor["month2"].get("n_current") == 20
    assert result.retrain["start"] == "champion" and result.challenger and result.challenger != champion
    assert result.retrain["passed"], result.retrain
    assert result.rollout["shadow"]["copies_answered"] == 6
    assert result.before_after["month2_shadow"]["tickets"] == 6
    assert sum(v["answers"] for v in result.rollout["canary"]["variants"].values()) == 6
    assert result.promoted and result.rollout["promote"]["champion"] == result.challenger
    report = before_after_lines(result) + acceptance_lines(result)
    assert all(line.startswith("[simulation]") for line in report)
    assert (cfg.base_dir / "operate" / "result.json").exists()
    assert (cfg.base_dir / "operate" / "month2" / "truth.jsonl").exists()
    # the month-2 table of a refused challenger: both versions answer fresh tickets offline
    fresh = month_traffic(2, 5, seed=99)
    offline = offline_table(cfg, champion, result.challenger, fresh, result.retrain["frozen"]["pack"])
    assert offline["tickets"] == 5 and {"category", "urgency", "next_action", "fields_mean"} <= set(offline)
    same = offline_table(cfg, champion, champion, fresh, result.retrain["frozen"]["pack"])
    assert all(same[f]["diff"] == 0 and same[f]["champion"] == offline[f]["champion"] for f in ROWS)


def _served(ticket, fields, decision, confidence=0.9) -> Served:
    return Served(ticket=ticket, request_id=ticket.ticket_id, version="v", variant="champion", answer="",
                  fields=fields, confidence=confidence, field_confidence=dict.fromkeys(fields, confidence),
                  decision=decision, threshold=0.8, seconds=0.1)


def test_figures_read_the_ground_truth():
    tickets = month_traffic(2, 4, seed=1)
    right = [_served(t, t.truth.as_dict(), "auto") for t in tickets[:2]]
    wrong = Triage("general_inquiry", "low", "answer_question").as_dict()
    bad = [_served(t, {**t.truth.as_dict(), "next_action": "escalate_security"
                       if t.truth.next_action != "escalate_security" else wrong["next_action"]}, "sampled")
           for t in tickets[2:3]]
    rest = [_served(tickets[3], tickets[3].truth.as_dict(), "low_confidence", 0.2)]
    served = right + bad + rest
    acc = accuracy(served)
    assert acc["exact"] == 0.75 and acc["next_action"] == 0.75 and acc["category"] == 1.0
    g = routing_figures(served, 0.05, 0.3)
    assert g["auto_approved"] == 3 and g["coverage"] == 0.75
    assert g["auto_error"] == round(1 / 3, 4) and g["sampled_share"] == round(1 / 3, 4)
    assert g["tiers"] == {"auto": 2, "sampled": 1, "low_confidence": 1}


def test_frozen_extra_cases_are_labelled_month_one_tickets(tmp_path):
    from tunesmith.config import Config
    from tunesmith.data.pipeline import input_shaper
    from tunesmith.evaluate.pack import _read_extra

    path = write_frozen_extra(tmp_path / "frozen" / "m1.jsonl", 6, seed=12)
    served = {t.text for t in month_traffic(1, 50, seed=11)}  # the replayed month 1 (the plan's seed)
    cfg = Config.model_validate({"data": {"sources": [{"path": "x.jsonl"}]}})
    cfg._base_dir = tmp_path
    cases = _read_extra(cfg, str(path))
    assert len(cases) == 6 and all(c.is_chat for c in cases)
    fresh = month_traffic(1, 6, seed=12)
    shape = input_shaper(cfg)  # as prepare shaped the test split, and the server shapes requests
    for case, ticket in zip(cases, fresh, strict=True):
        assert case.messages[1]["content"] == shape(ticket.messages())[1]["content"]
        assert ticket.text not in served
        assert json.loads(case.answer_text()) == ticket.truth.as_dict()
        assert ticket.month == 1 and not ticket.new_product
    assert sum(c.messages[1]["content"] != t.text for c, t in zip(cases, fresh, strict=True)) >= 3  # PII scrubbed
    cfg.serve.shape_inputs = False
    assert [c.messages[1]["content"] for c in _read_extra(cfg, str(path))] == [t.text for t in fresh]
    assert write_frozen_extra(tmp_path / "none.jsonl", 0, seed=12) is None


def test_the_replaying_thread_gives_its_openmp_team_up_before_it_waits(monkeypatch):
    """Between the months the monitor's embedder runs on the simulation's thread while the
    server is up; replaying, that thread only waits, so it frees its OpenMP team for the
    engine's worker (generate/openmp.py)."""
    import threading

    import tunesmith.generate.openmp as openmp
    from tunesmith.sample.operate_serve import replay

    callers: list[str] = []
    monkeypatch.setattr(openmp, "release_thread_pool", lambda: callers.append(threading.current_thread().name))

    class Nowhere:
        url = "http://127.0.0.1:9"

    assert replay(Nowhere(), None, []) == []  # type: ignore[arg-type]  (no ticket: the config is never read)
    assert callers == [threading.current_thread().name]


def test_replay_answers_in_ticket_order_with_one_connection_per_client():
    """Against a stand-in OpenAI endpoint on 127.0.0.1 (it answers each ticket with its own id
    and stops after the replay): every ticket answered once, in order, and each client thread
    keeps its own connection (a shared pool once closed one under a reader)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from tunesmith.config import Config
    from tunesmith.sample.operate_serve import replay

    peers: list[tuple[str, int]] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as uvicorn

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            peers.append(self.client_address)
            answer = json.dumps({"category": body["user"], "urgency": "low", "next_action": "answer_question"})
            out = json.dumps({"id": f"req-{body['user']}", "choices": [{"message": {"content": answer},
                                                                        "tunesmith": {"confidence": 0.5}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()

    class Server:
        url = f"http://127.0.0.1:{httpd.server_address[1]}"

    cfg = Config.model_validate({"data": {"sources": [{"path": "x.jsonl"}]}})
    tickets = month_traffic(1, 40, seed=3)
    try:
        served = replay(Server(), cfg, tickets, concurrency=4)  # type: ignore[arg-type]
    finally:
        httpd.shutdown()
        thread.join(5)
        httpd.server_close()
    assert [s.fields["category"] for s in served] == [t.ticket_id for t in tickets]
    assert [s.request_id for s in served] == [f"req-{t.ticket_id}" for t in tickets]
    assert len(peers) == 40 and 1 <= len(set(peers)) <= 4  # connections reused, at most one per client
