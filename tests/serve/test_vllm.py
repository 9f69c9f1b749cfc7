"""``serve.engine: vllm`` against a FAKE vLLM (``fake_vllm.py``, a small FastAPI app run as the
``executable``); vLLM itself cannot be installed here. Checked: the exact ``vllm serve`` command
line for a workspace with two LoRA versions, the request that reaches the child (the version's
LoRA module name, the prompt rendered by tunesmith as token ids, the end-of-turn stop ids),
streaming, the child's errors as OpenAI-shaped errors, the response cache and /metrics, the
child stopped at shutdown and killed with its parent, and a clear error without vLLM."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from serve.conftest import KEY, running
from tunesmith.config import CacheConfig, ServeConfig, VllmConfig
from tunesmith.serve.vllm import (
    LoraVersion,
    VllmError,
    VllmProcess,
    free_port,
    lora_versions,
    vllm_command,
)
from tunesmith.workspace import Workspace

FAKE = Path(__file__).with_name("fake_vllm.py")


def fake_executable(folder: Path) -> Path:
    exe = folder / "fake-vllm"
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" "$@"\n')
    exe.chmod(0o755)
    return exe


def two_version_workspace(project, root: Path) -> Path:
    """A workspace holding the trained version twice (``v-a`` rank 16, ``v-b`` its config saying
    rank 24) and a full fine-tune record ``v-full`` (skipped: vLLM serves one base)."""
    cfg, version = project
    source = Workspace(cfg.workspace_dir).get("model", version).path
    ws = Workspace(root)
    for vid, rank in (("v-a", None), ("v-b", 24)):
        with ws.staging() as staged:
            shutil.copytree(source, staged, dirs_exist_ok=True)
            if rank:
                config = staged / "adapter" / "adapter_config.json"
                config.write_text(json.dumps({**json.loads(config.read_text()), "r": rank}))
            ws.publish(staged, "model", vid)
        time.sleep(0.01)  # distinct creation times: v-b is the latest
    with ws.staging() as staged:
        (staged / "model").mkdir()
        (staged / "model_version.json").write_text(json.dumps({"weights": "model"}))
        ws.publish(staged, "model", "v-full")
    return root


def vllm_cfg(project, root: Path, log: Path, **vllm):
    cfg, _ = project
    serve = ServeConfig(engine="vllm", cache=CacheConfig(max_entries=16),
                        vllm=VllmConfig(executable=str(fake_executable(root)), extra_args=["--fake-log", str(log)],
                                        startup_timeout=60, **vllm))
    return cfg.model_copy(update={"workspace": str(two_version_workspace(project, root / "ws")), "serve": serve})


def expected_command(cfg, exe: str, *, port: int, key: str) -> list[str]:
    ws = Workspace(cfg.workspace_dir)
    adapters = {v: ws.get("model", v).path / "adapter" for v in ("v-a", "v-b")}
    return [exe, "serve", str(cfg.resolve("tiny").resolve()), "--host", "127.0.0.1", "--port", str(port),
            "--api-key", key, "--served-model-name", "base", "--gpu-memory-utilization", "0.9",
            "--enable-lora", "--max-loras", "2", "--max-lora-rank", "32",
            "--lora-modules", f"v-a={adapters['v-a']}", f"v-b={adapters['v-b']}", *cfg.serve.vllm.extra_args]


def records(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def requests_seen(log: Path) -> list[dict]:
    return [r["body"] for r in records(log) if "body" in r]


# ------------------------------------------------------------------ without a server
def test_the_command_line_for_a_workspace_with_two_versions(project, tmp_path):
    from tunesmith.models.loading import model_fingerprint, resolve_model

    cfg = vllm_cfg(project, tmp_path, tmp_path / "log.jsonl")
    ref = resolve_model(str(cfg.resolve("tiny")))
    versions, skipped = lora_versions(Workspace(cfg.workspace_dir), model_fingerprint(ref), ref.ref)
    assert [(v.id, v.rank) for v in versions.values()] == [("v-a", 16), ("v-b", 24)]
    assert set(skipped) == {"v-full"} and "full fine-tune" in skipped["v-full"]
    cmd = vllm_command("/opt/vllm/bin/vllm", ref.location, list(versions.values()), cfg.serve.vllm, port=8123,
                       api_key="k" * 48)
    assert cmd == expected_command(cfg, "/opt/vllm/bin/vllm", port=8123, key="k" * 48)
    opts = VllmConfig(max_model_len=2048, max_lora_rank=64, gpu_memory_utilization=0.5, extra_args=["--x"])
    tail = vllm_command("vllm", "/m", [LoraVersion("a", Path("/a"), 8, 0.0)], opts, port=1, api_key="k")[12:]
    assert tail == ["0.5", "--max-model-len", "2048", "--enable-lora", "--max-loras", "1", "--max-lora-rank", "64",
                    "--lora-modules", "a=/a", "--x"]
    assert "--enable-lora" not in vllm_command("vllm", "/m", [], opts, port=1, api_key="k")  # base only
    many = [LoraVersion(f"v{i}", Path(f"/v{i}"), 8, 0.0) for i in range(12)]
    assert vllm_command("vllm", "/m", many, VllmConfig(), port=1, api_key="k")[13:17] == [
        "--enable-lora", "--max-loras", "8", "--max-lora-rank"]
    assert vllm_command("vllm", "/m", many, VllmConfig(max_loras=2), port=1, api_key="k")[15] == "2"
    with pytest.raises(VllmError, match="v-full cannot be served by vLLM"):
        lora_versions(Workspace(cfg.workspace_dir), model_fingerprint(ref), ref.ref, required="v-full")


def test_a_missing_vllm_says_how_to_install_it(project, tmp_path):
    from tunesmith.serve.auth import ApiKeys
    from tunesmith.serve.launch import build_app

    cfg, _ = project
    cfg = cfg.model_copy(update={"serve": ServeConfig(engine="vllm", vllm=VllmConfig(executable="vllm-absent-x"))})
    with pytest.raises(VllmError) as info:
        build_app(cfg, keys=ApiKeys([KEY]))
    assert "pip install vllm" in str(info.value) and "GPU" in str(info.value)


# ------------------------------------------------------------------ against the fake
@pytest.fixture(scope="module")
def proxied(project, tmp_path_factory):
    from tunesmith.serve.auth import ApiKeys
    from tunesmith.serve.launch import build_app

    root = tmp_path_factory.mktemp("vllm")
    log = root / "log.jsonl"
    cfg = vllm_cfg(project, root, log)
    loaded = build_app(cfg, keys=ApiKeys([KEY]), default_max_tokens=8)
    assert loaded.skipped.keys() == {"v-full"}
    with running(loaded.app) as url:
        yield url, loaded, cfg, log


def chat(url: str, body: dict, key: str = KEY) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"},
                      timeout=60, trust_env=False)


def test_the_child_runs_the_exact_command_on_loopback(proxied):
    _, loaded, cfg, log = proxied
    child = loaded.app.state.service.child
    argv = records(log)[0]["argv"]
    assert argv == [str(FAKE), *expected_command(cfg, "x", port=child.port, key=child.api_key)[1:]]
    assert child.api_key != KEY and len(child.api_key) == 48


def test_chat_reaches_vllm_as_the_versions_lora_with_tunesmiths_prompt(proxied):
    url, loaded, cfg, log = proxied
    renderer = loaded.engine
    messages = [{"role": "user", "content": "my parcel is late"}]
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0,
                           http_client=httpx.Client(trust_env=False, timeout=60))
    before = len(requests_seen(log))
    resp = client.chat.completions.with_raw_response.create(model=cfg.project, messages=messages,
                                                            temperature=0.7, seed=5, max_tokens=6)
    answer = resp.parse()
    (sent,) = requests_seen(log)[before:]
    prompt = renderer.encode(messages)
    assert sent["model"] == "v-b"  # the champion: the latest version that loads, by its LoRA name
    assert (sent["prompt"], sent["stop_token_ids"], sent["max_tokens"], sent["seed"], sent["temperature"]) == (
        prompt, renderer.stop_ids, 6, 5, 0.7)
    assert answer.choices[0].message.content == f"answer 0 from v-b to {len(prompt)} tokens"
    assert answer.model == cfg.project and answer.id.startswith("chatcmpl-")
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (len(prompt), 8)  # the fake counts words + 1
    assert (resp.headers["x-tunesmith-model-version"], resp.headers["x-tunesmith-variant"]) == ("v-b", "champion")
    base = chat(url, {"model": "base", "messages": messages, "n": 2, "temperature": 1,
                      "response_format": {"type": "json_object"}}).json()
    sent = requests_seen(log)[-1]
    assert sent["model"] == "base" and sent["n"] == 2 and sent["max_tokens"] == 8
    assert sent["response_format"] == {"type": "json_schema", "json_schema": {"name": "response",
                                                                            "schema": {"type": "object"}}}
    assert [c["message"]["content"] for c in base["choices"]] == [
        f"answer {i} from base to {len(prompt)} tokens" for i in range(2)]
    assert base["usage"]["completion_tokens"] == 16  # vLLM's total, split between the answers
    assert chat(url, {"model": "v-a", "messages": messages}).headers["x-tunesmith-model-version"] == "v-a"
    assert requests_seen(log)[-1]["model"] == "v-a"


def test_streaming_passes_through_as_chat_chunks(proxied):
    url, loaded, _, log = proxied
    body = {"model": "v-a", "messages": [{"role": "user", "content": "stream it"}], "temperature": 0.5,
            "stream": True, "stream_options": {"include_usage": True}}
    chunks = []
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"},
                      timeout=60, trust_env=False) as resp:
        assert resp.status_code == 200 and resp.headers["x-tunesmith-model-version"] == "v-a"
        lines = [line for line in resp.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert requests_seen(log)[-1]["stream"] is True
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    prompt = loaded.engine.encode(body["messages"])
    assert text == f"answer 0 from v-a to {len(prompt)} tokens"
    assert len(chunks) > 4 and all(c["object"] == "chat.completion.chunk" and c["model"] == "v-a" for c in chunks)
    assert [c["choices"][0]["finish_reason"] for c in chunks[1:-1]][-1] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 8


def test_the_childs_errors_are_openai_shaped(proxied):
    url, _, _, _ = proxied
    messages = [{"role": "user", "content": "hi"}]
    bad = chat(url, {"model": "v-a", "messages": messages, "stop": ["FAIL400"]})
    assert bad.status_code == 400 and set(bad.json()["error"]) == {"message", "type", "param", "code"}
    assert "not valid for the fake engine" in bad.json()["error"]["message"]
    broken = chat(url, {"model": "v-a", "messages": messages, "stop": ["FAIL500"]})
    assert broken.status_code == 502 and broken.json()["error"]["code"] == "generation_failed"
    streamed = chat(url, {"model": "v-a", "messages": messages, "stop": ["FAIL400"], "stream": True})
    assert streamed.status_code == 400  # refused before any byte: a real status, not an event
    with httpx.stream("POST", f"{url}/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                      json={"model": "v-a", "messages": messages, "stop": ["FAILMID"], "stream": True},
                      timeout=60, trust_env=False) as resp:
        lines = [line for line in resp.iter_lines() if line.startswith("data: ")]
    events = [json.loads(line[6:]) for line in lines if line != "data: [DONE]"]
    assert "error" in events[-1] and "mid-stream" in events[-1]["error"]["message"] and lines[-1] == "data: [DONE]"
    assert chat(url, {"model": "v-zzz", "messages": messages}).status_code == 404  # routing stays ours
    assert chat(url, {"model": "v-a", "messages": messages}, key="wrong-key-0123456789").status_code == 401


def test_completions_are_forwarded_with_the_model_mapped(proxied):
    url, _, cfg, log = proxied
    resp = httpx.post(f"{url}/v1/completions", headers={"Authorization": f"Bearer {KEY}"}, trust_env=False,
                      json={"model": cfg.project, "prompt": "Hello", "max_tokens": 3, "echo": True, "logprobs": 1},
                      timeout=60)
    assert resp.status_code == 200, resp.text
    sent = requests_seen(log)[-1]
    assert (sent["model"], sent["prompt"], sent["max_tokens"], sent["echo"], sent["logprobs"]) == (
        "v-b", "Hello", 3, True, 1)
    body = resp.json()
    assert body["model"] == cfg.project and body["id"].startswith("cmpl-") and body["id"] != "cmpl-fake"
    assert body["choices"][0]["text"] == "answer 0 from v-b to 5 tokens"
    assert resp.headers["x-tunesmith-model-version"] == "v-b"
    bad = httpx.post(f"{url}/v1/completions", headers={"Authorization": f"Bearer {KEY}"}, trust_env=False,
                     json={"model": "v-a", "prompt": "x", "stop": ["FAIL500"]}, timeout=60)
    assert bad.status_code == 502 and bad.json()["error"]["code"] == "generation_failed"


def test_cache_metrics_and_log_work_in_front_of_vllm(proxied):
    from prometheus_client.parser import text_string_to_metric_families

    from tunesmith.serve.requestlog import read

    url, loaded, _, log = proxied
    body = {"model": "v-a", "messages": [{"role": "user", "content": "cache me"}], "temperature": 0}
    before = len(requests_seen(log))
    first, second = chat(url, body).json(), chat(url, body).json()
    assert len(requests_seen(log)) == before + 1  # the second came from the cache
    assert second["choices"] == first["choices"] and second["id"] != first["id"]
    text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {KEY}"}, trust_env=False).text
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    ok = (("endpoint", "chat"), ("model", "v-a"), ("status", "200"), ("variant", "direct"), ("version", "v-a"))
    assert samples[("tunesmith_requests_total", ok)] >= 2
    assert samples[("tunesmith_response_cache_hits_total", ())] == 1
    service = loaded.app.state.service
    service.request_log.flush()
    rows = {r["request_id"]: r for r in read(service.request_log.db_path, limit=500)}
    assert rows[second["id"]]["cached"] == 1 and rows[first["id"]]["version"] == "v-a"
    assert rows[first["id"]]["answer"] == first["choices"][0]["message"]["content"]
    assert "cache me" in rows[first["id"]]["prompt"]


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in state  # exited, waiting to be reaped


def test_the_child_stops_with_the_server(project, tmp_path):
    from tunesmith.serve.auth import ApiKeys
    from tunesmith.serve.launch import build_app

    loaded = build_app(vllm_cfg(project, tmp_path, tmp_path / "log.jsonl"), keys=ApiKeys([KEY]))
    child = loaded.app.state.service.child
    with running(loaded.app):
        pid = child.proc.pid
        assert not gone(pid)
    assert child.proc is None and gone(pid)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{child.url}/health", timeout=5, trust_env=False)


def test_the_child_dies_when_its_parent_is_killed(tmp_path):
    port, log = free_port(), tmp_path / "log.jsonl"
    cmd = [str(fake_executable(tmp_path)), "serve", "m", "--host", "127.0.0.1", "--port", str(port), "--api-key",
           "k" * 20, "--served-model-name", "base", "--fake-log", str(log)]
    script = ("import sys, time; from tunesmith.serve.vllm import VllmProcess\n"
              f"p = VllmProcess({cmd!r}, port={port}, api_key='k', startup_timeout=60); p.start()\n"
              "print(p.proc.pid, flush=True); time.sleep(120)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    pid = 0
    try:
        pid = int(parent.stdout.readline())
        assert not gone(pid)
        os.kill(parent.pid, signal.SIGKILL)  # no cleanup runs in the parent
        parent.wait(10)
        deadline = time.monotonic() + 20
        while not gone(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert gone(pid), "the vLLM child outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()
        if pid and not gone(pid):  # the feature failed: leave no orphan behind the test either
            os.kill(pid, signal.SIGKILL)


def test_a_child_that_exits_at_start_is_a_clear_error(tmp_path):
    process = VllmProcess([sys.executable, "-c", "import sys; sys.exit(3)"], port=free_port(), api_key="k",
                          startup_timeout=20)
    with pytest.raises(VllmError, match="exited with code 3"):
        process.start()
    assert process.proc is None


def test_messages_reach_vllm_shaped_like_the_training_data(proxied):
    """``serve.shape_inputs``: prepare's normalisation (here: runs of spaces) before rendering."""
    url, loaded, _, log = proxied
    sent_text = "my   parcel \u200bis   late"
    resp = chat(url, {"model": "v-a", "messages": [{"role": "user", "content": sent_text}], "max_tokens": 4})
    assert resp.status_code == 200, resp.text
    assert requests_seen(log)[-1]["prompt"] == loaded.engine.encode([{"role": "user", "content": "my parcel is late"}])
