"""Served answers of a label project carry their confidence (calibrated with the version's stored
temperature) and a review decision in ``choices[i].tunesmith``, the request log records them,
and ``tunesmith review enqueue`` queues them; batch prediction writes the same fields."""

from __future__ import annotations

import json
import math

import pytest

from serve.conftest import KEY, running
from train.test_trainer import CATS

TEMPERATURE = 2.0


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    import yaml

    from train.test_trainer import make_project
    from tunesmith.config import load_config
    from tunesmith.review.calibration import Calibration, Threshold
    from tunesmith.review.live import CALIBRATION_FILE
    from tunesmith.train.recipe import train
    from tunesmith.workspace import Workspace

    root = tmp_path_factory.mktemp("review-serve")
    path = make_project(root, "{max_steps: 3, lr: 0.02}")
    data = yaml.safe_load(path.read_text())
    data["eval"] = {"output": {"kind": "label"}}  # labels from the training answers
    data["review"] = {"rules": [{"label": "shipping"}], "sample_rate": 0.0}
    path.write_text(yaml.safe_dump(data))
    cfg = load_config(path)
    version = train(cfg).model_id
    ws = Workspace(cfg.workspace_dir)
    calibration = Calibration({"label": TEMPERATURE}, Threshold(0.995, 0.05, 0.1, "test", 100, 0.1, 0.0, 0.04))
    with ws.staging() as staging:  # what eval stores: calibration.json in the version's eval artifact
        (staging / CALIBRATION_FILE).write_text(json.dumps(calibration.to_dict()))
        ws.publish(staging, "eval", "evalcalibration01", meta={"model": version})
    return cfg, version


@pytest.fixture(scope="module")
def served(project):
    from tunesmith.serve.auth import ApiKeys
    from tunesmith.serve.launch import build_app

    cfg, version = project
    loaded = build_app(cfg, keys=ApiKeys([KEY]), default_max_tokens=6)
    with running(loaded.app) as url:
        yield url, loaded, cfg, version


def client(url):
    import httpx
    from openai import OpenAI

    return OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=60,
                  http_client=httpx.Client(trust_env=False, timeout=60))


def expected(engine, version, messages, answer) -> tuple[float | None, str | None]:
    """The calibrated confidence, brute force: every label + end-of-turn scored alone."""
    import torch

    from tunesmith.evaluate.metrics import parse_label

    label = parse_label(answer, CATS)[0]
    prompt = engine.encode(messages)
    lls = []
    with engine.running(version):
        for v in CATS:
            ids = prompt + engine.tokenizer(v, add_special_tokens=False)["input_ids"] + engine.stop_ids[:1]
            lp = torch.log_softmax(engine.model(input_ids=torch.tensor([ids])).logits[0].double(), -1)
            lls.append(sum(float(lp[t - 1, ids[t]]) for t in range(len(prompt), len(ids))))
    if label is None:
        return 0.0, None
    z = [math.exp((x - max(lls)) / TEMPERATURE) for x in lls]
    return z[CATS.index(label)] / sum(z), label


def test_served_answer_carries_confidence_and_decision_and_is_queued(served):
    from tunesmith.review import project as review_project
    from tunesmith.serve import requestlog

    url, loaded, cfg, version = served
    turns = [[{"role": "user", "content": f"ticket {i} about my {c} problem, reference 7, please help soon"}]
             for i, c in enumerate(CATS * 2)]
    seen = []
    hits = loaded.engine.finished.hits
    with client(url) as c:
        for messages in turns:
            resp = c.chat.completions.create(model=cfg.project, messages=messages)  # unmodified openai client
            choice = resp.choices[0]
            ext = choice.model_extra["tunesmith"]
            want, label = expected(loaded.engine, version, messages, choice.message.content)
            assert ext["confidence"] == pytest.approx(want, abs=1e-5) and ext["calibrated"] is True
            assert ext["fields"] == {"label": {"value": label, "confidence": ext["confidence"]}}
            tier = "mandatory" if label == "shipping" else ("auto" if want >= 0.995 else "low_confidence")
            assert ext["decision"] == tier and ext["threshold"] == 0.995 and ext["reasons"]
            seen.append((resp.id, tier))
    # each answer was scored from the keys/values its generation left (no second prefill)
    assert loaded.engine.finished.hits - hits == len(turns)
    loaded.app.state.service.request_log.flush()
    rows = {r["request_id"]: r for r in requestlog.read(_db(cfg), limit=50)}
    for rid, tier in seen:
        row = rows[rid]
        assert json.loads(row["decision"])["tier"] == tier and json.loads(row["messages"])[0]["role"] == "user"
        assert set(json.loads(row["confidence"])) == {"label"}
    report = review_project.enqueue(cfg)
    queued = {i.request_id: i for i in review_project.queue(cfg).items()}
    for rid, tier in seen:
        if tier != "auto":
            assert queued[rid].tier == tier
    assert report.queued + report.already_queued == sum(t != "auto" for _, t in seen)


def test_streamed_answer_carries_the_extension_in_its_finish_chunk(served):
    url, loaded, cfg, version = served
    messages = [{"role": "user", "content": "ticket 99 about my billing problem, please help soon"}]
    with client(url) as c:
        chunks = list(c.chat.completions.create(model=cfg.project, messages=messages, stream=True))
    finish = [ch.choices[0] for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert len(finish) == 1
    ext = finish[0].model_extra["tunesmith"]
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    want, _ = expected(loaded.engine, version, messages, text)
    assert ext["confidence"] == pytest.approx(want, abs=1e-5)


def test_mandatory_rule_routes_whatever_the_confidence(served):
    from tunesmith.review.confidence import score_answers
    from tunesmith.review.live import AnswerReviewer
    from tunesmith.review.project import resolved_spec

    _, loaded, cfg, version = served
    spec = resolved_spec(cfg).model_copy(update={"labels": CATS})
    reviewer = AnswerReviewer(loaded.engine, spec, cfg.review.model_copy(update={"threshold": 0.0}))
    prompt = loaded.engine.encode([{"role": "user", "content": "where is my parcel"}])
    out = reviewer.review_answers("req-1", prompt, ["shipping", "billing", "no idea"], adapter=version,
                                  version=version)
    assert [r.decision.tier for r in out] == ["mandatory", "auto", "auto"]
    assert out[0].decision.reason == "rule label=shipping" and out[2].confidence == 0.0
    [raw] = score_answers(loaded.engine, spec, [prompt], ["shipping"], adapter=version)
    # no calibration: T = 1 (the two calls differ only in float rounding: the second reuses the
    # system prompt's keys/values from the engine's prefix memo)
    assert out[0].confidence == pytest.approx(raw.confidences()[1], rel=1e-4)


def test_predict_rows_carry_confidence_and_decision(project, tmp_path):
    from tunesmith.serve.predict import predict

    cfg, version = project
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"ticket {i} about shipping"}]})
                           + "\n" for i in range(3)))
    result = predict(cfg, src, tmp_path / "out.jsonl", model=version)
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert result.records == 3
    for row in rows:
        ext = row["tunesmith"]
        assert ext["decision"] in ("mandatory", "low_confidence", "auto") and ext["calibrated"] is True
        label = ext["fields"]["label"]["value"]
        assert (ext["decision"] == "mandatory") == (label == "shipping")
        assert row["confidence"] == ext["confidence"] and row["decision"] == ext["decision"]


def _db(cfg):
    from tunesmith.workspace import Workspace

    return Workspace(cfg.workspace_dir).db_path


def test_enqueue_routes_undecided_log_rows_with_the_versions_fitted_threshold(project):
    from tunesmith.review import project as review_project
    from tunesmith.serve.requestlog import Answer, LogEntry, RequestLog

    cfg, version = project
    log = RequestLog(_db(cfg), scrub=lambda t: t)
    log.start()
    turns = [{"role": "user", "content": "where is my parcel"}]
    for rid, conf in (("undecided-low", 0.9), ("undecided-high", 0.999)):  # fitted threshold: 0.995
        log.record(LogEntry(rid, 1.0, 200, model=cfg.project, version=version, answers=[
            Answer("billing", "stop", 2, confidence={"label": conf})], messages=turns))
    log.stop()
    review_project.enqueue(cfg)
    queued = {i.request_id: i for i in review_project.queue(cfg).items()}
    assert queued["undecided-low"].tier == "low_confidence" and "< threshold 0.995" in queued["undecided-low"].reason
    assert "undecided-high" not in queued  # auto (sample_rate 0)
