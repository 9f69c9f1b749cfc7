"""``/v1/completions`` and chat ``logprobs`` with the official ``openai`` client: prompt-token
logprobs (``echo``) equal the model's own log-softmax, token-id prompts, ``max_tokens: 0``,
answers equal in-process generation, the request lm-evaluation-harness sends, and
OpenAI-shaped 400s for bad input."""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import torch

from serve.test_server import ask, assert_openai_error, raw
from tunesmith.generate import GenerationConfig

TEXT = "Hello! How can I help you today? My order has not arrived yet."


def log_softmax(served, ids: list[int], adapter: str | None) -> torch.Tensor:
    """The in-process model's log-probabilities [len(ids), V] (row t predicts token t + 1)."""
    engine = served.engine
    with engine.running(adapter):
        logits = engine.model(input_ids=torch.tensor([ids]), use_cache=False).logits[0]
    return torch.log_softmax(logits.float(), dim=-1)


def decode(served, token: int) -> str:
    return served.engine.tokenizer.decode([token])


def encode(served, text: str) -> list[int]:
    return served.engine.tokenizer(text, add_special_tokens=True)["input_ids"]


@pytest.mark.parametrize("model", ["base", "version"])
def test_echo_logprobs_equal_the_models_log_softmax(served, model):
    name, adapter = ("base", None) if model == "base" else (served.version, served.version)
    resp = served.client().completions.create(model=name, prompt=TEXT, max_tokens=0, echo=True, logprobs=3)
    (choice,) = resp.choices
    ids = encode(served, TEXT)
    lp = choice.logprobs
    assert choice.text == TEXT and choice.finish_reason == "length" and resp.object == "text_completion"
    assert len(lp.tokens) == len(ids) == resp.usage.prompt_tokens and resp.usage.completion_tokens == 0
    assert "".join(lp.tokens) == TEXT  # byte-level BPE: the token texts spell the prompt
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(ids))]
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    want = log_softmax(served, ids, adapter)
    for t in range(1, len(ids)):
        assert abs(lp.token_logprobs[t] - want[t - 1, ids[t]].item()) < 1e-4
        top, listed = want[t - 1].topk(3), lp.top_logprobs[t]
        assert abs(max(listed.values()) - top.values[0].item()) < 1e-4
        for token, value in zip(top.indices.tolist(), top.values.tolist(), strict=True):
            # tokens whose texts collide (half characters: U+FFFD) share a key: the likelier one's
            assert listed[decode(served, token)] > value - 1e-4
        assert listed[lp.tokens[t]] == pytest.approx(lp.token_logprobs[t])  # the token itself is listed


def test_token_id_prompts_score_like_text_and_keep_their_order(served):
    client = served.client()
    first, second = encode(served, TEXT), encode(served, "Please reset my password")
    by_text = client.completions.create(model="base", prompt=TEXT, max_tokens=0, echo=True, logprobs=1)
    both = client.completions.create(model="base", prompt=[first, second], max_tokens=0, echo=True, logprobs=1)
    assert [c.index for c in both.choices] == [0, 1]
    got = both.choices[0].logprobs.token_logprobs
    assert got[0] is None and got[1:] == pytest.approx(by_text.choices[0].logprobs.token_logprobs[1:], abs=1e-5)
    assert both.choices[1].text == served.engine.tokenizer.decode(second)
    want = log_softmax(served, second, None)
    assert [round(x, 4) for x in both.choices[1].logprobs.token_logprobs[1:]] == [
        round(want[t - 1, second[t]].item(), 4) for t in range(1, len(second))]
    flat = client.completions.create(model="base", prompt=first, max_tokens=0, echo=True)  # one id list
    assert flat.choices[0].text == served.engine.tokenizer.decode(first) and flat.choices[0].logprobs is None


def test_answers_equal_in_process_completion_with_their_logprobs(served):
    ids = encode(served, "The quick brown fox")
    resp = served.client().completions.create(model=served.version, prompt=ids, max_tokens=6, temperature=0,
                                              logprobs=2)
    (g,) = served.engine.complete_ids([ids], GenerationConfig(max_new_tokens=6), adapter=served.version)
    (choice,) = resp.choices
    assert (choice.text, choice.finish_reason) == (g.text, g.finish_reason)
    assert resp.usage.completion_tokens == g.tokens == len(choice.logprobs.tokens)
    want = log_softmax(served, ids + g.token_ids, served.version)
    for i, (token, got) in enumerate(zip(g.token_ids, choice.logprobs.token_logprobs, strict=True)):
        assert abs(got - want[len(ids) - 1 + i, token].item()) < 1e-4
        assert got == max(choice.logprobs.top_logprobs[i].values())  # greedy: the most likely token

    seeded = {"model": "base", "prompt": ids, "max_tokens": 5, "temperature": 1.0, "seed": 7, "n": 2}
    a = served.client().completions.create(**seeded)
    b = served.client().completions.create(**seeded, echo=True)
    gens = served.engine.complete_ids([ids, ids], GenerationConfig(max_new_tokens=5, temperature=1.0, seed=7))
    assert [c.text for c in a.choices] == [g.text for g in gens]
    assert [c.text for c in b.choices] == [served.engine.tokenizer.decode(ids) + g.text for g in gens]


def test_the_request_lm_eval_sends(served):
    """lm-evaluation-harness's local-completions: token ids, max_tokens 1, echo, logprobs 1; it
    reads token_logprobs[ctxlen:-1], so there is exactly one entry past the prompt."""
    context, continuation = encode(served, "Question: what is 2 plus 2?\nAnswer:"), encode(served, " 4")
    body = {"model": "base", "prompt": [context + continuation], "temperature": 0, "max_tokens": 1,
            "logprobs": 1, "seed": 1234, "echo": True}
    resp = raw(served, "POST", "/v1/completions", json=body)
    assert resp.status_code == 200, resp.text
    (choice,) = resp.json()["choices"]
    lp = choice["logprobs"]
    assert len(lp["token_logprobs"]) == len(context) + len(continuation) + 1
    want = log_softmax(served, context + continuation, None)
    score = sum(lp["token_logprobs"][len(context):-1])
    assert math.isclose(score, sum(want[t - 1, (context + continuation)[t]].item()
                                   for t in range(len(context), len(context) + len(continuation))), abs_tol=1e-4)
    assert resp.headers["x-request-id"] == resp.json()["id"] and resp.json()["id"].startswith("cmpl-")


def test_concurrent_scoring_requests_share_engine_calls(served):
    texts = [f"ticket {i}: my order {'has not arrived' * (i % 3 + 1)}" for i in range(8)]
    client = served.client()
    scheduler = served.service.scheduler
    before = scheduler.batches
    with ThreadPoolExecutor(len(texts)) as pool:
        with served.engine.running(None):  # the worker waits for the engine: the requests queue up
            futures = [pool.submit(client.completions.create, model="base", prompt=t, max_tokens=0, echo=True,
                                   logprobs=0) for t in texts]
            deadline = time.monotonic() + 30
            while scheduler.waiting + scheduler.running < len(texts) and time.monotonic() < deadline:
                time.sleep(0.01)
        got = [f.result() for f in futures]
    assert scheduler.batches - before <= 2  # what the worker took first, then all that waited, together
    for text, resp in zip(texts, got, strict=True):
        ids = encode(served, text)
        want = log_softmax(served, ids, None)
        assert resp.choices[0].logprobs.token_logprobs[1:] == pytest.approx(
            [want[t - 1, ids[t]].item() for t in range(1, len(ids))], abs=1e-4)


@pytest.mark.parametrize(("body", "param", "code"), [
    ({"prompt": "hi", "logprobs": 10}, "logprobs", "invalid_request"),
    ({"prompt": ""}, "prompt", "invalid_request"),
    ({"prompt": []}, "prompt", "invalid_request"),
    ({"prompt": [[]]}, "prompt", "invalid_request"),
    ({"prompt": [1, "a"]}, "prompt", "invalid_request"),
    ({"prompt": [10**9]}, "prompt", "invalid_request"),
    ({"prompt": "hi", "max_tokens": -1}, "max_tokens", "invalid_request"),
    ({"prompt": "hi", "stream": True}, "stream", "unsupported_parameter"),
    ({"prompt": "hi", "n": 9}, "n", "invalid_request"),
    ({"prompt": ["hi"] * 129}, "prompt", "invalid_request"),
])
def test_bad_input_is_an_openai_shaped_400(served, body, param, code):
    err = assert_openai_error(raw(served, "POST", "/v1/completions", json={"model": "base", **body}), 400, code)
    assert err["param"] == param, err


def test_a_prompt_longer_than_the_context_is_a_400(served):
    context = served.engine.context
    ids = [5] * context
    with pytest.raises(openai.BadRequestError, match="context is 256 tokens"):
        served.client().completions.create(model="base", prompt=ids, max_tokens=1)
    scored = served.client().completions.create(model="base", prompt=ids, max_tokens=0, echo=True, logprobs=0)
    assert len(scored.choices[0].logprobs.tokens) == context  # scoring alone fits exactly
    err = assert_openai_error(raw(served, "POST", "/v1/completions",
                                  json={"model": "base", "prompt": [5] * (context + 1), "max_tokens": 0}),
                              400, "context_length_exceeded")
    assert err["param"] == "prompt"


def test_auth_unknown_model_and_the_request_log(served):
    from tunesmith.serve.requestlog import read

    assert_openai_error(raw(served, "POST", "/v1/completions", key=None, json={"model": "base", "prompt": "x"}),
                        401, "missing_api_key")
    with pytest.raises(openai.NotFoundError):
        served.client().completions.create(model="missing", prompt="hi")
    resp = served.client().completions.create(model=served.cfg.project, prompt="write to jane.roe@example.com",
                                              max_tokens=3, temperature=0)
    served.service.request_log.flush()
    rows = {r["request_id"]: r for r in read(served.service.request_log.db_path)}
    row = rows[resp.id]
    assert "jane.roe@example.com" not in row["prompt"] and "<EMAIL>" in row["prompt"]
    assert (row["version"], row["variant"], row["status"], row["completion_tokens"]) == (
        served.version, "champion", 200, resp.usage.completion_tokens)
    assert row["answer"] == resp.choices[0].text
    assert any(r["model"] == "missing" and r["status"] == 404 and r["request_id"].startswith("cmpl-")
               for r in rows.values())


# ---------------------------------------------------------------------------- chat logprobs
def test_chat_logprobs_are_the_models_log_softmax_of_the_answer(served):
    messages = ask("where is my parcel? it is late")
    resp = served.client().chat.completions.create(model=served.version, messages=messages, temperature=0,
                                                   max_tokens=8, logprobs=True, top_logprobs=3)
    (g,) = served.engine.generate([messages], GenerationConfig(max_new_tokens=8), adapter=served.version)
    (choice,) = resp.choices
    content = choice.logprobs.content
    assert choice.message.content == g.text
    answer = g.token_ids[:-1] if g.token_ids[-1] in served.engine.stop_ids else g.token_ids
    assert len(content) == len(answer)  # the end-of-turn token is not part of the content
    assert "".join(c.token for c in content) == g.text
    assert b"".join(bytes(c.bytes) for c in content).decode() == g.text
    prompt = served.engine.encode(messages)
    want = log_softmax(served, prompt + g.token_ids, served.version)
    for i, (c, token) in enumerate(zip(content, answer, strict=True)):
        row = want[len(prompt) - 1 + i]
        assert abs(c.logprob - row[token].item()) < 1e-4
        assert [t.logprob for t in c.top_logprobs] == pytest.approx(row.topk(3).values.tolist(), abs=1e-4)
        assert c.top_logprobs[0].token == c.token  # greedy picks the most likely token
    plain = served.client().chat.completions.create(model=served.version, messages=messages, temperature=0,
                                                    max_tokens=8)
    assert plain.choices[0].logprobs is None and plain.choices[0].message.content == g.text


def test_streamed_logprobs_equal_the_answers(served):
    kw = {"model": served.version, "messages": ask("my refund is missing"), "temperature": 0, "max_tokens": 8,
          "n": 2, "logprobs": True, "top_logprobs": 2}
    whole = served.client().chat.completions.create(**kw)
    texts, logprobs, finish = ["", ""], [[], []], [None, None]
    for chunk in served.client().chat.completions.create(**kw, stream=True):
        for c in chunk.choices:
            assert finish[c.index] is None  # nothing comes after an answer's finish chunk
            texts[c.index] += c.delta.content or ""
            logprobs[c.index] += c.logprobs.content if c.logprobs else []
            finish[c.index] = c.finish_reason
    assert texts == [c.message.content for c in whole.choices]
    assert finish == [c.finish_reason for c in whole.choices]
    for got, c in zip(logprobs, whole.choices, strict=True):
        assert [t.model_dump() for t in got] == [t.model_dump() for t in c.logprobs.content]


def test_chat_logprobs_refusals(served):
    client = served.client()
    with pytest.raises(openai.BadRequestError, match="top_logprobs needs logprobs"):
        client.chat.completions.create(model="base", messages=ask("hi"), top_logprobs=2)
    err = assert_openai_error(raw(served, "POST", "/v1/chat/completions",
                                  json={"model": "base", "messages": ask("hi"), "logprobs": True,
                                        "top_logprobs": 21}), 400)
    assert err["param"] == "top_logprobs"
