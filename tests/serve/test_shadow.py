"""Shadow and live rollout changes on a served tiny project with two versions: a shadow that
raises or is slow changes neither the client's answers (byte for byte) nor their latency;
`tunesmith rollout set/abort` reach a running server; auto-promotion moves the champion while
requests are in flight, and every answer comes wholly from one version."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from typer.testing import CliRunner

from serve.conftest import KEY, running

pytestmark = pytest.mark.slow  # each test loads the model and serves it (about 10-20 s)

HEADERS = {"Authorization": f"Bearer {KEY}"}
PROMPTS = ["where is my parcel?", "my invoice is wrong", "the app crashes on login", "cancel my order please",
           "how do I reset my password", "refund for a broken item"]


def clone_version(ws, version_id: str, seed: int) -> str:
    """A second model version: the first one's adapter with noise added to its LoRA B matrices,
    so that greedy answers differ (published like training publishes)."""
    import torch
    from safetensors.torch import load_file, save_file

    src = ws.get("model", version_id)
    new_id = hashlib.sha256(f"{version_id}/{seed}".encode()).hexdigest()[:len(version_id)]
    with ws.staging() as staging:
        shutil.copytree(src.path, staging, dirs_exist_ok=True)
        weights = staging / "adapter" / "adapter_model.safetensors"
        tensors = load_file(str(weights))
        gen = torch.Generator().manual_seed(seed)
        tensors = {k: v + 0.5 * torch.randn(v.shape, generator=gen) if "lora_B" in k else v
                   for k, v in tensors.items()}
        save_file(tensors, str(weights))
        record = json.loads((staging / "model_version.json").read_text())
        (staging / "model_version.json").write_text(json.dumps({**record, "id": new_id}))
        ws.publish(staging, "model", new_id, meta=src.meta,
                   parents=[("snapshot", src.meta["snapshot"], "trained_on")])
    return new_id


@pytest.fixture(scope="module")
def pair(project, tmp_path_factory):
    """A copy of the session's project with a second version: champion = the trained one,
    challenger = the clone (both forced: no evals)."""
    from tunesmith.config import load_config
    from tunesmith.registry import ModelRegistry
    from tunesmith.workspace import Workspace

    base_cfg, first = project
    root = tmp_path_factory.mktemp("shadow") / "p"
    shutil.copytree(base_cfg.base_dir, root)
    cfg = load_config(root)
    ws = Workspace(cfg.workspace_dir)
    second = clone_version(ws, first, seed=1)
    reg = ModelRegistry(ws, cfg.project)
    reg.promote(first, "champion", force=True, reason="test", by="test")
    reg.promote(second, "challenger", force=True, reason="test", by="test")
    return SimpleNamespace(root=root, first=first, second=second, project=cfg.project)


def build(root: Path, **rollout):
    from tunesmith.config import load_config
    from tunesmith.serve.auth import ApiKeys
    from tunesmith.serve.launch import build_app

    data = yaml.safe_load((root / "tunesmith.yaml").read_text())
    data["serve"] = {"rollout": rollout} if rollout else {}
    data["serve"]["cache"] = {"max_entries": 0}  # every request reaches the engine
    (root / "tunesmith.yaml").write_text(yaml.safe_dump(data))
    cfg = load_config(root)
    return cfg, build_app(cfg, keys=ApiKeys([KEY]), default_max_tokens=8)


def client():
    import httpx

    return httpx.Client(headers=HEADERS, timeout=60, trust_env=False)


def ask(http, url: str, model: str, prompt: str, *, stream: bool, user: str | None = None):
    """(the body without id/created, the response, seconds)."""
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "temperature": 0,
            "stream": stream, **({"user": user} if user else {})}
    t0 = time.perf_counter()
    resp = http.post(f"{url}/v1/chat/completions", json=body)
    seconds = time.perf_counter() - t0
    assert resp.status_code == 200, resp.text
    if not stream:
        data = resp.json()
        return json.dumps({k: v for k, v in data.items() if k not in ("id", "created")}), resp, seconds
    chunks = []
    for line in resp.text.split("\n\n"):
        if line.startswith("data: {"):
            chunk = json.loads(line[6:])
            chunks.append({k: v for k, v in chunk.items() if k not in ("id", "created")})
        elif line:
            chunks.append(line)
    return json.dumps(chunks), resp, seconds


def answers_of(url: str, model: str) -> tuple[list[str], list[float]]:
    with client() as http:
        bodies, latencies = [], []
        for prompt in PROMPTS:
            for stream in (False, True):
                body, _, seconds = ask(http, url, model, prompt, stream=stream)
                bodies.append(body)
                latencies.append(seconds)
                time.sleep(0.15)  # the previous request's shadow copy is running now
    return bodies, latencies


def faulty(generate, shadow: str, fault: str, calls: list[float]):
    """``engine.generate`` where the ``shadow`` adapter raises, or decodes one token per 50 ms
    for 3 s (a slow version: each token goes through the scheduler's callback)."""

    def run(conversations, cfg=None, *, adapter=None, on_token=None):
        if adapter != shadow:
            return generate(conversations, cfg, adapter=adapter, on_token=on_token)
        calls.append(time.perf_counter())
        if fault == "raises":
            raise RuntimeError("the shadow broke")
        for i in range(60):
            time.sleep(0.05)
            if on_token is not None:
                on_token(0, [0] * (i + 1))
        return generate(conversations, cfg, adapter=adapter, on_token=on_token)

    return run


def test_a_failing_or_slow_shadow_leaves_answers_and_latency_alone(pair):
    from tunesmith.serve import requestlog
    from tunesmith.workspace import Workspace

    _, loaded = build(pair.root)
    with running(loaded.app) as url:
        baseline, base_latency = answers_of(url, pair.project)

    for fault in ("raises", "sleeps"):
        cfg, loaded = build(pair.root, mode="shadow", shadow_share=1.0)
        engine, service = loaded.engine, loaded.app.state.service
        shadow_calls: list[float] = []
        engine.generate = faulty(engine.generate, pair.second, fault, shadow_calls)
        with running(loaded.app) as url:
            bodies, latencies = answers_of(url, pair.project)
            during = dataclasses.replace(service.shadow.counts)  # before shutdown runs what is left
            counts = service.shadow.counts
            deadline = time.monotonic() + 10
            while fault == "raises" and counts.failed < counts.submitted:
                assert time.monotonic() < deadline, counts
                time.sleep(0.05)
            service.request_log.flush()
            status = client().get(f"{url}/v1/rollout").json()
        assert bodies == baseline, fault  # byte-identical, stream and not
        # a slow shadow costs a client at most one 50 ms "token" plus noise, never its 3 s
        assert max(latencies) < max(base_latency) + 1.0, (fault, latencies, base_latency)
        assert counts.submitted == len(PROMPTS) * 2 and len(shadow_calls) >= len(PROMPTS)
        assert status["mode"] == "shadow" and status["shadow_copies"]["submitted"] == counts.submitted
        rows = requestlog.read(Workspace(cfg.workspace_dir).db_path, limit=1000)
        shadows = [r for r in rows if r["variant"] == "shadow" and r["request_id"].startswith("shadow-")]
        champion_ids = {r["request_id"] for r in rows if r["variant"] == "champion"}
        if fault == "raises":
            assert counts.failed == counts.submitted
            assert shadows and all(r["status"] == 500 and "the shadow broke" in r["error"] for r in shadows)
            assert {r["shadow_of"] for r in shadows} <= champion_ids
            assert status["windows"]["shadow"]["error_rate"] == 1.0
        else:  # each copy was stopped by the next client request (and queued again)
            assert during.preempted >= len(PROMPTS) * 2 - 1 and during.answered == 0, during


def test_shadow_answers_are_logged_beside_the_champions(pair):
    from tunesmith.serve import requestlog
    from tunesmith.serve.agreement import labels
    from tunesmith.workspace import Workspace

    cfg, loaded = build(pair.root, mode="shadow", shadow_share=1.0)
    service = loaded.app.state.service
    with running(loaded.app) as url, client() as http:
        ids = []
        for prompt in PROMPTS[:3]:
            for stream in (False, True):
                ids.append(ask(http, url, pair.project, prompt, stream=stream)[1].headers["x-request-id"])
                time.sleep(0.3)  # an idle engine: the copy runs (a client request would stop it)
        counts = service.shadow.counts
        deadline = time.monotonic() + 30
        while counts.answered + counts.dropped < len(ids):
            assert time.monotonic() < deadline, counts
            time.sleep(0.05)
        service.request_log.flush()
        status = http.get(f"{url}/v1/rollout").json()
    rows = requestlog.read(Workspace(cfg.workspace_dir).db_path, limit=1000)
    by_champion = {r["shadow_of"]: r for r in rows if r["variant"] == "shadow"}
    champion = {r["request_id"]: r for r in rows if r["request_id"] in ids}
    answered = [i for i in ids if i in by_champion]
    assert len(answered) == counts.answered >= len(ids) // 2, counts
    same = 0
    for request_id in answered:
        shadow = by_champion[request_id]
        assert shadow["status"] == 200 and shadow["version"] == pair.second and shadow["model"] == pair.project
        assert champion[request_id]["version"] == pair.first and champion[request_id]["variant"] == "champion"
        same += labels(shadow["answer"]) == labels(champion[request_id]["answer"])
    assert status["windows"]["shadow"]["requests"] == len(answered)
    assert status["agreement"]["answer"]["answers"] == len(answered)
    assert status["agreement"]["answer"]["agreement"] == pytest.approx(same / len(answered))


def test_rollout_set_and_abort_reach_a_running_server(pair):
    from tunesmith.cli import app

    _, loaded = build(pair.root)  # mode off in the config
    c = str(pair.root)
    with running(loaded.app) as url, client() as http:
        assert http.get(f"{url}/v1/rollout").json()["mode"] == "off"
        _, resp, _ = ask(http, url, pair.project, PROMPTS[0], stream=False, user="ann")
        assert resp.headers["x-tunesmith-variant"] == "champion"
        res = CliRunner().invoke(app, ["rollout", "set", "-c", c, "--mode", "canary", "--share", "1", "--by", "ann"])
        assert res.exit_code == 0, res.output
        time.sleep(1.2)  # servers read the control rows once a second
        _, resp, _ = ask(http, url, pair.project, PROMPTS[0], stream=False, user="ann")
        assert (resp.headers["x-tunesmith-variant"], resp.headers["x-tunesmith-model-version"]) == (
            "canary", pair.second)
        state = http.get(f"{url}/v1/rollout").json()
        assert (state["mode"], state["share"], state["canary"]) == ("canary", 1.0, pair.second)
        res = CliRunner().invoke(app, ["rollout", "abort", "-c", c, "--reason", "bad answers"])
        assert res.exit_code == 0, res.output
        time.sleep(1.2)
        _, resp, _ = ask(http, url, pair.project, PROMPTS[0], stream=False, user="ann")
        assert resp.headers["x-tunesmith-variant"] == "champion"
        events = [e["event"] for e in http.get(f"{url}/v1/rollout").json()["events"]]
        assert events[-3:] == ["set", "start", "abort"]
    # the changes were made over this config: one with another rollout section ignores them
    from tunesmith.config import load_config
    from tunesmith.serve.rollout import RolloutEvents, effective_settings

    data = yaml.safe_load((pair.root / "tunesmith.yaml").read_text())
    data["serve"] = {"rollout": {"mode": "shadow"}}
    (pair.root / "tunesmith.yaml").write_text(yaml.safe_dump(data))
    other = load_config(pair.root)
    events = RolloutEvents(other.workspace_dir / "tunesmith.db")
    assert effective_settings(other.serve.rollout, events)[0].mode == "shadow"
    assert effective_settings(loaded.app.state.service.rollout.cfg, events)[0].share == 0.0


def test_auto_promotion_moves_the_champion_under_load_without_a_mixed_answer(pair):
    from registry.conftest import FakeProject
    from tunesmith.generate.sampling import GenerationConfig
    from tunesmith.registry import ModelRegistry
    from tunesmith.workspace import Workspace

    cfg, loaded = build(pair.root, mode="canary", share=0.5, promote_after=6, min_requests=3, check_every=3,
                        max_latency_ratio=100.0)
    ws = Workspace(cfg.workspace_dir)
    fake = SimpleNamespace(ws=ws)  # an eval with a passed gate for the challenger, as the eval stage writes it
    snapshot = ws.get("model", pair.second).meta["snapshot"]
    FakeProject.eval(fake, pair.second, FakeProject.pack(fake, snapshot), passed=True)

    engine = loaded.engine
    gen = GenerationConfig(max_new_tokens=8, temperature=0.0)
    expected = {v: {p: engine.generate([[{"role": "user", "content": p}]], gen, adapter=v)[0].text
                    for p in PROMPTS} for v in (pair.first, pair.second)}
    assert any(expected[pair.first][p] != expected[pair.second][p] for p in PROMPTS)

    results = []
    lock = threading.Lock()

    def one(i: int) -> None:
        prompt, stream = PROMPTS[i % len(PROMPTS)], i % 3 == 0
        with client() as http:
            body = {"model": pair.project, "messages": [{"role": "user", "content": prompt}], "temperature": 0,
                    "stream": stream, "user": f"user-{i}"}
            resp = http.post(f"{url}/v1/chat/completions", json=body)
        if stream:
            text = "".join(json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
                           for line in resp.text.split("\n\n")
                           if line.startswith("data: {") and json.loads(line[6:])["choices"])
        else:
            text = resp.json()["choices"][0]["message"]["content"] if resp.status_code == 200 else None
        with lock:
            results.append((resp.status_code, prompt, resp.headers.get("x-tunesmith-model-version"), text))

    with running(loaded.app) as url:
        with ThreadPoolExecutor(6) as pool:
            list(pool.map(one, range(60)))
        deadline = time.monotonic() + 10
        while ModelRegistry(ws, cfg.project).aliases()["champion"] != pair.second:
            assert time.monotonic() < deadline, "no promotion"
            time.sleep(0.1)
        time.sleep(1.2)  # the server's alias cache
        with client() as http:
            _, resp, _ = ask(http, url, pair.project, PROMPTS[0], stream=False, user="user-0")
            state = http.get(f"{url}/v1/rollout").json()
    assert resp.headers["x-tunesmith-model-version"] == pair.second  # the new champion, no restart
    assert all(status == 200 for status, *_ in results), results
    for _, prompt, version, text in results:  # each answer wholly from the version that says it answered
        assert version in (pair.first, pair.second) and text == expected[version][prompt], (version, prompt, text)
    moves = ModelRegistry(ws, cfg.project).history("champion")
    assert (moves[-1].by, moves[-1].from_model, moves[-1].to_model) == ("rollout", pair.first, pair.second)
    assert "without a failed check" in moves[-1].reason and "error_rate" in moves[-1].reason
    promote = [e for e in state["events"] if e["event"] == "promote"]
    assert promote and promote[-1]["share"] == 0.0 and promote[-1]["reason"]["ledger_seq"] == moves[-1].seq
