"""The simulation's server while its driving thread has run torch code: that thread's OpenMP
team kept (the baseline) vs freed before it replays (``generate.openmp.release_thread_pool``).

    tunesmith demo DEMO_DIR                                   # once: a demo workspace
    python benchmarks/bench_serve_openmp.py DEMO_DIR [PER] [ROUNDS]   # default 48 requests, 2 rounds

The ``demo --operate`` situation between the months: the server is up (its engine worker owns
one OpenMP team) and the month-1 monitor's embedder runs on the simulation's thread, which then
owns a second. Each round: 50 float32 matmuls on this thread, then PER fresh month-1 tickets
through the server (32 in flight, response cache off), once with this thread's team kept and
once freed first. Writes requests to DEMO_DIR's request log. Prints seconds per request and
the ratio.
"""
import sys
import time
from pathlib import Path

import torch

import tunesmith.generate.openmp as openmp
from tunesmith.config import load_config
from tunesmith.sample.operate import OperatePlan, operate_config
from tunesmith.sample.operate_serve import LocalServer, replay
from tunesmith.sample.triage_month2 import month_traffic

release = openmp.release_thread_pool
cfg = operate_config(load_config(Path(sys.argv[1]) / "tunesmith.yaml"), OperatePlan())
cfg.serve.cache.max_entries = 0
per = int(sys.argv[2]) if len(sys.argv) > 2 else 48
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 2
tickets = month_traffic(1, 8 + per * rounds * 2, seed=21)
a = torch.randn(512, 512)
times: dict[str, list[float]] = {"kept": [], "freed": []}
with LocalServer(cfg) as server:
    replay(server, cfg, tickets[:8], concurrency=8)  # warm-up
    at = 8
    for r in range(rounds):
        for way in times:
            for _ in range(50):
                a @ a  # this thread owns an OpenMP team again, as after the monitor's embedder
            openmp.release_thread_pool = release if way == "freed" else (lambda: False)
            t0 = time.perf_counter()
            replay(server, cfg, tickets[at:at + per], concurrency=32)
            times[way].append((time.perf_counter() - t0) / per)
            at += per
            print(f"round {r} {way}: {times[way][-1]:.3f} s per request", flush=True)
openmp.release_thread_pool = release
kept, freed = (sum(v) / len(v) for v in times.values())
print(f"team kept (baseline) {kept:.3f} s per request, freed {freed:.3f}: {kept / freed:.2f}x")
