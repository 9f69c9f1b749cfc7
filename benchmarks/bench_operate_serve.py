"""The confidence scorer inside the served loop: packed alternatives vs batched rows.

    tunesmith demo DEMO_DIR            # once: a demo workspace with its calibrated version
    python benchmarks/bench_operate_serve.py DEMO_DIR COPY_DIR [REQUESTS]   # default 48

The ``demo --operate`` simulation's server (in-process, 127.0.0.1, the simulation's review
settings, response cache off) on a copy of the demo workspace (COPY_DIR, replaced), 8 requests in
flight, fresh month-1 tickets (seed 99). The same tickets are answered with the scorer's
fallback (``rows``: a batch of rows, each over a copy of the cache) and with the default
(``packed``: one row, a 4D mask), alternating halves: rows A, packed A, rows B, packed B. Prints
seconds per request for each and their ratio.
"""
import shutil
import sys
import time
from pathlib import Path

import tunesmith.review.confidence as confidence
from tunesmith.config import load_config
from tunesmith.sample.operate import OperatePlan, operate_config
from tunesmith.sample.operate_serve import LocalServer, replay
from tunesmith.sample.triage_month2 import month_traffic

src, dst = Path(sys.argv[1]), Path(sys.argv[2])
n = int(sys.argv[3]) if len(sys.argv) > 3 else 48
shutil.rmtree(dst, ignore_errors=True)
shutil.copytree(src, dst)
cfg = load_config(dst / "tunesmith.yaml")
ocfg = operate_config(cfg, OperatePlan())
ocfg.serve.cache.max_entries = 0
tickets = month_traffic(1, n + 8, seed=99)
packable = confidence._PACKABLE
with LocalServer(ocfg) as server:
    replay(server, ocfg, tickets[:8])  # warm-up
    times = {"rows": [], "packed": []}
    for way in ("rows", "packed", "rows", "packed"):
        confidence._PACKABLE = packable if way == "packed" else ()
        t0 = time.perf_counter()
        served = replay(server, ocfg, tickets[8:8 + n // 2] if len(times[way]) == 0 else tickets[8 + n // 2:])
        times[way].append((time.perf_counter() - t0) / len(served))
        print(way, f"{times[way][-1]:.2f} s per request ({len(served)} requests)", flush=True)
r, p = sum(times["rows"]) / 2, sum(times["packed"]) / 2
print(f"rows {r:.2f} s/request, packed {p:.2f} s/request: {r / p:.2f}x")
