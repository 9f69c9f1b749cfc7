"""The server's batch wait: concurrent clients' requests taken at once vs held for a full batch.

    tunesmith demo DEMO_DIR            # once: a demo workspace with its version
    python benchmarks/bench_batch_wait.py DEMO_DIR COPY_DIR [REQUESTS] [CLIENTS] [WAITS_MS]
    # default 192 requests, 32 clients, waits 0,50 (the first is the baseline)

The ``demo --operate`` simulation's server (in-process, 127.0.0.1, the simulation's review
settings: each answer's confidence is scored on the worker; response cache off) on a copy of
the demo workspace (COPY_DIR, replaced). CLIENTS clients in flight over HTTP, fresh month-1
tickets (seed 99), greedy with the answer schema as ``response_format``. The scheduler's
``batch_wait`` is switched between halves of the tickets: A with each wait, then B with each
(so a drift in machine speed touches every setting alike). Prints, per wait, seconds per
request, the engine calls made and their mean size in requests, and the ratio to the baseline.
Answers must be identical across waits (greedy decoding does not depend on the batch).
"""
import sys
from pathlib import Path

from _served import Tally, run_half, served_ab

from tunesmith.sample.operate_serve import LocalServer, replay

src, dst = Path(sys.argv[1]), Path(sys.argv[2])
n = int(sys.argv[3]) if len(sys.argv) > 3 else 192
clients = int(sys.argv[4]) if len(sys.argv) > 4 else 32
waits = [float(w) for w in (sys.argv[5] if len(sys.argv) > 5 else "0,50").split(",")]
ocfg, warmup, halves = served_ab(src, dst, n, clients, seed=99)

with LocalServer(ocfg) as server:
    scheduler = server.loaded.app.state.service.scheduler
    replay(server, ocfg, warmup, concurrency=clients)  # warm-up
    tally = {w: Tally() for w in waits}
    for half in halves:
        for w in waits:
            scheduler.batch_wait = w / 1000
            run_half(server, ocfg, half, clients, tally[w], f"wait {w:g} ms")

base = waits[0]
for w in waits:
    t, b0 = tally[w], tally[base]
    same = sum(x == y for x, y in zip(t.answers, b0.answers, strict=True))
    print(f"wait {w:g} ms: {t.seconds / n:.3f} s/request, {t.calls} engine calls "
          f"({n / t.calls:.1f} requests each), {b0.seconds / t.seconds:.2f}x vs {base:g} ms; "
          f"answers identical to {base:g} ms: {same}/{n}")
