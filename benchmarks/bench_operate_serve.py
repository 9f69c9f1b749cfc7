"""The confidence scorer inside the served loop: kept keys/values vs a prefill, packed vs rows.

    tunesmith demo DEMO_DIR            # once: a demo workspace with its calibrated version
    python benchmarks/bench_operate_serve.py DEMO_DIR COPY_DIR [REQUESTS] [WAYS]   # default 48, kept,packed

The ``demo --operate`` simulation's server (in-process, 127.0.0.1, the simulation's review
settings, response cache off) on a copy of the demo workspace (COPY_DIR, replaced), 8 requests in
flight, fresh month-1 tickets (seed 99). The same tickets are answered with the scorer's
fallback (``rows``: a batch of rows, each over a copy of the cache) and with the default
(``packed``: one row, a 4D mask), alternating halves: rows A, packed A, rows B, packed B. Prints
seconds per request for each and their ratio.

``kept`` (the default now) scores each answer from the keys/values its generation left
(``FinishedRows``); ``packed`` here means the same packed scorer after a prefill of the answer's
prompt (kept rows switched off), the scorer before that change. WAYS: two of rows, packed,
kept, comma-separated; the first is the baseline.
"""
import shutil
import sys
import time
from pathlib import Path

import tunesmith.review.confidence as confidence
from tunesmith.config import load_config
from tunesmith.generate.kv import FinishedRows
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
ways = (sys.argv[4] if len(sys.argv) > 4 else "kept,packed").split(",")
packable, put = confidence._PACKABLE, FinishedRows.put


def use(way: str) -> None:  # not kept: rows are neither copied out nor found
    confidence._PACKABLE = () if way == "rows" else packable
    FinishedRows.put = put if way == "kept" else (lambda self, key, tokens, cache: None)  # type: ignore[method-assign]


with LocalServer(ocfg) as server:
    replay(server, ocfg, tickets[:8])  # warm-up
    times: dict[str, list[float]] = {w: [] for w in ways}
    for way in ways + ways:
        use(way)
        t0 = time.perf_counter()
        served = replay(server, ocfg, tickets[8:8 + n // 2] if len(times[way]) == 0 else tickets[8 + n // 2:])
        times[way].append((time.perf_counter() - t0) / len(served))
        print(way, f"{times[way][-1]:.2f} s per request ({len(served)} requests)", flush=True)
use("kept")
base, new = (sum(times[w]) / 2 for w in ways)
print(f"{ways[0]} {base:.2f} s/request, {ways[1]} {new:.2f} s/request: {base / new:.2f}x")
