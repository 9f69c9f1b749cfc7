"""The server end to end with the official ``openai`` client (and raw HTTP where the client
would hide the wire): models, answers equal to the engine's, streaming, usage, JSON schemas,
auth, OpenAI-shaped errors, batching of concurrent requests, the request log."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import jsonschema
import openai
import pytest

from serve.conftest import KEY
from tunesmith.generate import GenerationConfig


def ask(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def engine_answer(served, messages, adapter, max_tokens=8):
    (g,) = served.engine.generate([messages], GenerationConfig(max_new_tokens=max_tokens), adapter=adapter)
    return g


def raw(served, method: str, path: str, *, key: str | None = KEY, headers: dict | None = None, **kw) -> httpx.Response:
    headers = {**({"Authorization": f"Bearer {key}"} if key else {}), **(headers or {})}
    return httpx.request(method, served.url + path, headers=headers, timeout=60, trust_env=False, **kw)


def assert_openai_error(resp: httpx.Response, status: int, code: str | None = None) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and "detail" not in resp.text
    assert set(body["error"]) == {"message", "type", "param", "code"} and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]


def test_models_lists_the_deployment_each_version_and_base(served):
    client = served.client()
    ids = [m.id for m in client.models.list()]
    assert ids == [served.cfg.project, served.version, "base"]
    assert client.models.retrieve(served.version).id == served.version


def test_chat_answers_like_the_engine_with_exact_usage(served):
    client = served.client()
    messages = ask("ticket 7 about my billing problem, please help")
    resp = client.chat.completions.create(model=served.cfg.project, messages=messages, temperature=0,
                                          max_tokens=8)
    want = engine_answer(served, messages, served.version)
    (choice,) = resp.choices
    assert choice.message.content == want.text and choice.finish_reason == want.finish_reason
    assert resp.model == served.cfg.project and resp.id.startswith("chatcmpl-")
    prompt = len(served.engine.encode(messages))
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens, resp.usage.total_tokens) == (
        prompt, want.tokens, prompt + want.tokens)
    base = client.chat.completions.create(model="base", messages=messages, temperature=0,
                                          max_completion_tokens=8)
    assert base.choices[0].message.content == engine_answer(served, messages, None).text


def test_streaming_equals_the_answer_and_ends_with_usage(served):
    client = served.client()
    messages = ask("where is my parcel? it is late")
    kw = {"model": served.version, "messages": messages, "temperature": 0, "max_tokens": 8, "n": 2}
    whole = client.chat.completions.create(**kw)
    chunks = list(client.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    texts, finish = ["", ""], [None, None]
    for chunk in chunks[:-1]:
        assert chunk.usage is None
        for c in chunk.choices:
            texts[c.index] += c.delta.content or ""
            finish[c.index] = c.finish_reason or finish[c.index]
    assert texts == [c.message.content for c in whole.choices]
    assert finish == [c.finish_reason for c in whole.choices]
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    # the raw wire: SSE data lines, ending with [DONE]
    with httpx.stream("POST", served.url + "/v1/chat/completions", json={**kw, "stream": True}, timeout=60,
                      headers={"Authorization": f"Bearer {KEY}"}, trust_env=False) as resp:
        lines = [line for line in resp.iter_lines() if line]
    assert resp.headers["content-type"].startswith("text/event-stream")
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"
    assert all("usage" not in json.loads(line[6:]) for line in lines[:-1])  # not asked for


def test_json_schema_answers_parse_and_validate(served):
    schema = {"type": "object", "properties": {"category": {"enum": ["billing", "shipping", "account"]},
                                               "urgent": {"type": "boolean"}},
              "required": ["category", "urgent"], "additionalProperties": False}
    resp = served.client().chat.completions.create(
        model=served.cfg.project, messages=ask("ticket 3: I was charged twice"), n=3, temperature=1.0, seed=4,
        max_tokens=40, response_format={"type": "json_schema", "json_schema": {"name": "t", "schema": schema}})
    assert len(resp.choices) == 3
    for choice in resp.choices:
        assert choice.finish_reason == "stop"
        jsonschema.validate(json.loads(choice.message.content), schema)


def test_a_schema_the_grammar_engine_refuses_is_a_400(served):
    with pytest.raises(openai.BadRequestError) as info:
        served.client().chat.completions.create(
            model="base", messages=ask("hi"), response_format={
                "type": "json_schema", "json_schema": {"name": "x", "schema": {"not": {"type": "string"}}}})
    assert info.value.body["param"] == "response_format" and "not" in info.value.body["message"]


def test_keys_are_required_and_checked(served):
    with pytest.raises(openai.AuthenticationError):
        served.client("wrong-key-0123456789abcdef").models.list()
    assert_openai_error(raw(served, "GET", "/v1/models", key=None), 401, "missing_api_key")
    assert_openai_error(raw(served, "POST", "/v1/chat/completions", key="nope", content=b"{not json"), 401,
                        "invalid_api_key")  # the key is checked before the body is read
    assert raw(served, "GET", "/health", key=None).json()["status"] == "ok"


def test_unknown_model_is_a_404_naming_the_served_ones(served):
    with pytest.raises(openai.NotFoundError) as info:
        served.client().chat.completions.create(model="gpt-4o", messages=ask("hi"))
    assert info.value.body["param"] == "model" and served.cfg.project in info.value.body["message"]


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "base"}, "messages"),
    ({"model": "base", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, "temperature"),
    ({"model": "base", "messages": [{"role": "user", "content": "hi"}], "n": 9}, "n"),
    ({"model": "base", "messages": [{"role": "user", "content": "hi"}], "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"model": "base", "messages": [{"role": "tool", "content": "hi"}]}, "messages.0.role"),
    ({"model": "base", "messages": [{"role": "user", "content": "hi"}], "top_logprobs": 2}, "top_logprobs"),
    ({"model": "base", "messages": [{"role": "assistant", "content": "hi"}]}, "messages"),
])
def test_malformed_requests_are_openai_shaped_400s(served, body, param):
    error = assert_openai_error(raw(served, "POST", "/v1/chat/completions", json=body), 400)
    assert error["param"] == param and error["type"] == "invalid_request_error"


def test_other_errors_keep_the_shape_too(served):
    assert_openai_error(raw(served, "POST", "/v1/chat/completions", content=b"{not json",
                            headers={"Content-Type": "application/json"}), 400, "invalid_json")
    long = {"model": "base", "messages": ask("order " * 300)}
    assert_openai_error(raw(served, "POST", "/v1/chat/completions", json=long), 400, "context_length_exceeded")
    assert_openai_error(raw(served, "GET", "/v1/nothing-here"), 404)
    assert_openai_error(raw(served, "GET", "/v1/chat/completions"), 405)


def test_unknown_fields_are_accepted_and_ignored(served):
    resp = served.client().chat.completions.create(
        model="base", messages=ask("hi"), temperature=0, max_tokens=3, user="u-1",
        extra_body={"frequency_penalty": 0, "some_vendor_option": {"x": 1}})
    assert resp.choices[0].message.content == engine_answer(served, ask("hi"), None, 3).text


def test_concurrent_requests_are_batched_and_answer_like_the_engine_alone(served):
    client = served.client()
    jobs = [(served.cfg.project if i % 2 else "base", ask(f"ticket {i} about my {'refund' if i % 3 else 'login'}"))
            for i in range(20)]
    before = served.service.scheduler.batches

    def call(job):
        model, messages = job
        return client.chat.completions.create(model=model, messages=messages, temperature=0,
                                              max_tokens=8).choices[0].message.content

    with ThreadPoolExecutor(20) as pool:
        got = list(pool.map(call, jobs))
    assert served.service.scheduler.batches - before < 20  # requests shared engine calls
    want = [engine_answer(served, m, served.version if model != "base" else None).text for model, m in jobs]
    assert got == want


def test_the_request_log_records_scrubbed_prompts_and_refusals(served):
    from tunesmith.serve.requestlog import read

    client = served.client()
    resp = client.chat.completions.create(model=served.cfg.project, temperature=0, max_tokens=4,
                                          messages=ask("mail me at jane.roe@example.com about it"))
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="missing", messages=ask("hi"))
    served.service.request_log.flush()
    rows = {r["request_id"]: r for r in read(served.service.request_log.db_path)}
    row = rows[resp.id]
    assert "jane.roe@example.com" not in row["prompt"] and "<EMAIL>" in row["prompt"]
    assert "<|im_start|>user" in row["prompt"]  # the rendered prompt, as the model saw it
    assert (row["version"], row["adapter"], row["variant"], row["status"]) == (
        served.version, served.version, "champion", 200)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (resp.usage.prompt_tokens,
                                                                resp.usage.completion_tokens)
    assert row["answer"] == resp.choices[0].message.content and row["latency_ms"] > 0
    refused = [r for r in rows.values() if r["model"] == "missing"]
    assert refused and refused[0]["status"] == 404 and refused[0]["prompt"] is None


def test_a_full_queue_is_a_429(served):
    from fastapi.testclient import TestClient

    from tunesmith.serve.app import create_app
    from tunesmith.serve.auth import ApiKeys
    from tunesmith.serve.service import ChatService

    busy = ChatService(served.engine, served.service.catalog, max_queue=0)
    with TestClient(create_app(busy, keys=ApiKeys.disabled())) as client:
        resp = client.post("/v1/chat/completions", json={"model": "base", "messages": ask("hi")})
    assert assert_openai_error(resp, 429, "queue_full")["type"] == "rate_limit_error"


@pytest.mark.parametrize("shape_inputs", [True, False])
def test_requests_reach_the_model_shaped_like_the_training_data(project, shape_inputs):
    """With ``data.pii`` on, prepare trained the model on ``<EMAIL>``: the server scrubs (and
    normalises) request messages the same way before the model sees them, unless
    ``serve.shape_inputs: false``."""
    from serve.conftest import running
    from tunesmith.data.pipeline import input_shaper
    from tunesmith.serve.auth import ApiKeys
    from tunesmith.serve.launch import build_app

    cfg, version = project
    shaped_cfg = cfg.model_copy(deep=True)
    shaped_cfg._base_dir = cfg.base_dir
    shaped_cfg.data.pii.enabled = True
    shaped_cfg.serve.shape_inputs = shape_inputs
    sent = ask("ticket 7:   please mail the refund to jane.doe@example.com today")
    shaped = input_shaper(shaped_cfg.model_copy(update={"serve": cfg.serve}))(sent)
    assert shaped[0]["content"] == "ticket 7: please mail the refund to <EMAIL> today"
    loaded = build_app(shaped_cfg, keys=ApiKeys([KEY]), default_max_tokens=4)
    seen = shaped if shape_inputs else sent
    with running(loaded.app) as url:
        resp = httpx.post(f"{url}/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"}, timeout=60,
                          trust_env=False, json={"model": version, "messages": sent, "temperature": 0,
                                                 "max_tokens": 4})
    assert resp.status_code == 200, resp.text
    (want,) = loaded.engine.generate([seen], GenerationConfig(max_new_tokens=4), adapter=version)
    assert resp.json()["usage"]["prompt_tokens"] == len(loaded.engine.encode(seen)) == want.prompt_tokens
    assert len(loaded.engine.encode(shaped)) != len(loaded.engine.encode(sent))
    assert resp.json()["choices"][0]["message"]["content"] == want.text


def test_the_loading_thread_frees_its_openmp_team_for_the_worker(project, monkeypatch):
    """The engine's worker thread runs the model once the app is built: the thread that loaded
    it gives its OpenMP helpers up (generate/openmp.py), so the worker's team is the only one."""
    import threading

    import tunesmith.generate.openmp as openmp
    from tunesmith.serve.auth import ApiKeys
    from tunesmith.serve.launch import build_app

    callers: list[str] = []
    monkeypatch.setattr(openmp, "release_thread_pool", lambda: callers.append(threading.current_thread().name))
    cfg, _ = project
    build_app(cfg, keys=ApiKeys([KEY]), default_max_tokens=4)
    assert callers == [threading.current_thread().name]
