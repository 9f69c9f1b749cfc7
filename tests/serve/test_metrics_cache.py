"""``/metrics`` (Prometheus text, parsed back with prometheus_client's own parser), the
``x-tunesmith-*`` response headers, and the response cache of greedy requests: hits answer
without the engine, count on /metrics, are logged as cached, and follow alias moves."""

from __future__ import annotations

import sqlite3
import uuid

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from serve.conftest import KEY, running
from tunesmith.generate import GenerationConfig
from tunesmith.generate.constrain import Grammar
from tunesmith.serve.cache import CachedAnswer, ResponseCache, cache_key


def ask(text: str) -> list[dict]:
    return [{"role": "user", "content": f"{text} ({uuid.uuid4().hex[:6]})"}]  # unique: a cold cache entry


def post(url: str, body: dict, key: str | None = KEY) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=60, trust_env=False)


def scrape(url: str, key: str | None = KEY) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} from GET /metrics."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    resp = httpx.get(f"{url}/metrics", headers=headers, timeout=30, trust_env=False)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(resp.text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


# ------------------------------------------------------------------ the cache on its own
def test_cache_key_holds_everything_a_greedy_answer_depends_on():
    greedy = GenerationConfig(max_new_tokens=8)
    key = cache_key("v1", [1, 2, 3], greedy, 1)
    assert key == cache_key("v1", [1, 2, 3], GenerationConfig(max_new_tokens=8, seed=99), 1)  # seed: no effect
    others = [cache_key("v2", [1, 2, 3], greedy, 1), cache_key("v1", [1, 2, 4], greedy, 1),
              cache_key("v1", [1, 2, 3], GenerationConfig(max_new_tokens=9), 1),
              cache_key("v1", [1, 2, 3], GenerationConfig(max_new_tokens=8, stop=["x"]), 1),
              cache_key("v1", [1, 2, 3], GenerationConfig(max_new_tokens=8, top_p=0.5), 1),
              cache_key("v1", [1, 2, 3], GenerationConfig(max_new_tokens=8, grammar=Grammar.json_schema({})), 1),
              cache_key("v1", [1, 2, 3], greedy, 2)]
    assert len({key, *others}) == len(others) + 1
    assert cache_key("v1", [1, 2, 3], GenerationConfig(max_new_tokens=8, temperature=0.7, seed=1), 1) is None


def test_cache_is_an_lru_bounded_by_entries():
    cache = ResponseCache(2)
    a = [CachedAnswer("a", "stop", 2)]
    cache.put("k1", a)
    cache.put("k2", a)
    assert cache.get("k1") == tuple(a)  # k1 is now the most recent
    cache.put("k3", a)
    assert cache.get("k2") is None and cache.get("k1") and cache.get("k3") and len(cache) == 2
    off = ResponseCache(0)
    off.put("k", a)
    assert not off.enabled and off.get("k") is None and len(off) == 0
    with pytest.raises(ValueError):
        ResponseCache(-1)


def test_request_log_gains_the_cached_column_on_an_old_table(tmp_path):
    from tunesmith.serve.requestlog import COLUMNS, LogEntry, RequestLog, read

    db_path = tmp_path / "old.db"
    db = sqlite3.connect(db_path)
    old = ", ".join(c for c in COLUMNS if c != "cached")
    db.execute(f"CREATE TABLE request_log ({old}, PRIMARY KEY (request_id, choice))")
    db.execute("INSERT INTO request_log (request_id, choice, created, status, stream) VALUES ('old', 0, 1, 200, 0)")
    db.commit()
    db.close()
    log = RequestLog(db_path, scrub=lambda t: t)
    log.start()
    log.record(LogEntry("new", created=2.0, status=200, cached=True))
    log.stop()
    rows = {r["request_id"]: r for r in read(db_path)}
    assert rows["old"]["cached"] == 0 and rows["new"]["cached"] == 1


# ------------------------------------------------------------------ served
def test_metrics_need_the_key_and_count_requests_tokens_and_latency(served):
    assert httpx.get(f"{served.url}/metrics", timeout=30, trust_env=False).status_code == 401
    project, version = served.cfg.project, served.version
    labels = {"endpoint": "chat", "model": project, "version": version, "variant": "champion"}
    before = scrape(served.url)
    resp = post(served.url, {"model": project, "messages": ask("my invoice is wrong"), "temperature": 0.5,
                             "seed": 3, "max_tokens": 6})
    assert resp.status_code == 200, resp.text
    assert post(served.url, {"model": "nope", "messages": ask("hi")}).status_code == 404
    after = scrape(served.url)
    usage = resp.json()["usage"]

    def grew(name: str, **extra: str) -> float:
        return value(after, name, **{**labels, **extra}) - value(before, name, **{**labels, **extra})

    assert grew("tunesmith_requests_total", status="200") == 1
    assert grew("tunesmith_prompt_tokens_total") == usage["prompt_tokens"]
    assert grew("tunesmith_completion_tokens_total") == usage["completion_tokens"]
    assert grew("tunesmith_request_latency_seconds_count") == 1
    assert grew("tunesmith_time_to_first_token_seconds_count") == 1
    assert 0 < grew("tunesmith_time_to_first_token_seconds_sum") <= grew("tunesmith_request_latency_seconds_sum")
    unknown = {"endpoint": "chat", "model": "", "version": "", "variant": "", "status": "404"}
    assert value(after, "tunesmith_requests_total", **unknown) - value(before, "tunesmith_requests_total",
                                                                       **unknown) == 1
    assert value(after, "tunesmith_requests_waiting") == 0 and ("tunesmith_requests_running", ()) in after
    # sampled requests never touch the cache
    assert value(after, "tunesmith_response_cache_hits_total") == value(before, "tunesmith_response_cache_hits_total")
    assert value(after, "tunesmith_response_cache_misses_total") == value(
        before, "tunesmith_response_cache_misses_total")


def test_every_chat_answer_names_its_version_and_variant(served):
    body = {"model": served.cfg.project, "messages": ask("hello"), "temperature": 0, "max_tokens": 3}
    resp = post(served.url, body)
    assert (resp.headers["x-tunesmith-model-version"], resp.headers["x-tunesmith-variant"]) == (
        served.version, "champion")
    with httpx.stream("POST", f"{served.url}/v1/chat/completions", json={**body, "model": "base", "stream": True},
                      headers={"Authorization": f"Bearer {KEY}"}, timeout=60, trust_env=False) as streamed:
        assert (streamed.headers["x-tunesmith-model-version"], streamed.headers["x-tunesmith-variant"]) == (
            "base", "direct")
        assert streamed.read().decode().rstrip().endswith("data: [DONE]")


def stream_chunks(url: str, body: dict) -> list[dict]:
    import json

    chunks = []
    with httpx.stream("POST", f"{url}/v1/chat/completions", json={**body, "stream": True},
                      headers={"Authorization": f"Bearer {KEY}"}, timeout=60, trust_env=False) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunks.append(json.loads(line[6:]))
    return chunks


def test_a_repeated_greedy_request_is_answered_from_the_cache(served):
    from tunesmith.serve.requestlog import read

    service = served.service
    body = {"model": served.cfg.project, "messages": ask("where is my parcel"), "temperature": 0, "max_tokens": 6,
            "n": 2, "stop": ["zzz"]}
    before = scrape(served.url)
    first = post(served.url, body).json()
    batches = service.scheduler.batches
    second = post(served.url, body).json()
    assert service.scheduler.batches == batches  # the engine did not run
    assert second["id"] != first["id"]
    assert (second["choices"], second["usage"]) == (first["choices"], first["usage"])
    chunks = stream_chunks(served.url, {**body, "stream_options": {"include_usage": True}})  # a hit too
    assert service.scheduler.batches == batches
    by_choice = ["", ""]
    for ch in chunks:
        for c in ch["choices"]:
            by_choice[c["index"]] += c["delta"].get("content") or ""
    assert by_choice == [c["message"]["content"] for c in first["choices"]]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == first["usage"]
    other = post(served.url, {**body, "max_tokens": 5}).json()  # another setting: a miss
    assert service.scheduler.batches == batches + 1 and other["id"]
    after = scrape(served.url)
    assert value(after, "tunesmith_response_cache_hits_total") - value(before, "tunesmith_response_cache_hits_total") == 2
    assert value(after, "tunesmith_response_cache_misses_total") - value(
        before, "tunesmith_response_cache_misses_total") == 2
    service.request_log.flush()
    rows = {(r["request_id"], r["choice"]): r for r in read(service.request_log.db_path, limit=1000)}
    assert rows[(first["id"], 1)]["cached"] == 0 and rows[(second["id"], 1)]["cached"] == 1
    assert rows[(second["id"], 0)]["answer"] == first["choices"][0]["message"]["content"]
    assert rows[(second["id"], 0)]["status"] == 200


@pytest.fixture(scope="module")
def two_versions(project):
    """An app whose engine holds the trained version twice (ids ``v-one``, ``v-two``: equal
    weights, different versions) and whose ``challenger`` alias the test moves; open metrics."""
    from tunesmith.serve.app import create_app
    from tunesmith.serve.auth import ApiKeys
    from tunesmith.serve.catalog import ModelCatalog
    from tunesmith.serve.launch import load_engine
    from tunesmith.serve.service import ChatService
    from tunesmith.workspace import Workspace

    cfg, version = project
    path = Workspace(cfg.workspace_dir).get("model", version).path
    engine = load_engine(cfg)
    engine.add_adapter("v-one", path)
    engine.add_adapter("v-two", path)
    aliases = {"challenger": "v-one"}
    catalog = ModelCatalog(cfg.project, {"v-one": 1.0, "v-two": 2.0}, champion="v-one", aliases=lambda: aliases)
    service = ChatService(engine, catalog, cache=ResponseCache(16), default_max_tokens=4)
    with running(create_app(service, keys=ApiKeys([KEY]), metrics_require_key=False)) as url:
        yield url, service, aliases


def test_an_alias_move_misses_the_cache_and_metrics_can_be_open(two_versions):
    url, service, aliases = two_versions
    body = {"model": f"{service.catalog.deployment}@challenger", "messages": ask("refund please"), "temperature": 0}
    one = post(url, body)
    assert post(url, body).headers["x-tunesmith-model-version"] == "v-one"
    aliases["challenger"] = "v-two"
    two = post(url, body)
    assert two.headers["x-tunesmith-model-version"] == "v-two"
    assert two.json()["choices"] == one.json()["choices"]  # same weights, same greedy answer...
    samples = scrape(url, key=None)  # open: no key needed
    assert value(samples, "tunesmith_response_cache_hits_total") == 1  # ...but generated again: a miss
    assert value(samples, "tunesmith_response_cache_misses_total") == 2
    assert value(samples, "tunesmith_response_cache_entries") == 2
    assert service.scheduler.batches == 2
