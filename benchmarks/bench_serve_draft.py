"""Drafted decoding in the simulation's server: 32 clients over HTTP, drafts on vs off.

    tunesmith demo DEMO_DIR            # once: a demo workspace with its version
    python benchmarks/bench_serve_draft.py DEMO_DIR COPY_DIR [REQUESTS] [CLIENTS] [--show]
    # default 128 requests, 32 clients; --show prints the answers that differ

The ``demo --operate`` simulation's server (in-process, 127.0.0.1, the simulation's review
settings: each answer's confidence scored on the worker; response cache off) on a copy of the
demo workspace (COPY_DIR, replaced); fresh month-1 tickets (seed 98), greedy with the answer
schema as ``response_format``. The engine's draft book is switched on and off between halves of
the tickets (A on then off, B off then on: a drift in machine speed touches both alike); the
book is kept between the halves, as a running server keeps it. The scheduler's calls are
smaller than the clients in flight (requests arrive and finish at different times), which is
where drafting pays (benchmarks/bench_draft.py: 1.54x at one row, 0.99x at 32). Prints seconds
per request both ways, their ratio, the engine calls' mean size, and how many answers differ.
Served answers also differ between two runs with drafts off (4 of 128, 2026-12-04: a value
chosen differently in one field), though the engine alone answers them identically whatever
its calls' sizes (docs/performance.md): compare the count with such a run.
"""

import sys
from pathlib import Path

from _served import Tally, run_half, served_ab

from tunesmith.sample.operate_serve import LocalServer, replay

args = [a for a in sys.argv[1:] if a != "--show"]
src, dst = Path(args[0]), Path(args[1])
n = int(args[2]) if len(args) > 2 else 128
clients = int(args[3]) if len(args) > 3 else 32
ocfg, warmup, halves = served_ab(src, dst, n, clients, seed=98)

with LocalServer(ocfg) as server:
    scheduler = server.loaded.app.state.service.scheduler
    engine = scheduler.engine
    book = engine.drafts
    assert book is not None, "the project's eval.generation.draft_tokens is 0"
    replay(server, ocfg, warmup, concurrency=clients)  # warm-up (and a first book)
    tally = {"on": Tally(), "off": Tally()}
    for k, half in enumerate(halves):
        for which in (("on", "off") if k == 0 else ("off", "on")):
            engine.drafts = book if which == "on" else None
            run_half(server, ocfg, half, clients, tally[which], f"drafts {which}")

same = sum(a == b for a, b in zip(tally["on"].answers, tally["off"].answers, strict=True))
if "--show" in sys.argv:  # the answers that differ, side by side
    for a, b in zip(tally["on"].answers, tally["off"].answers, strict=True):
        if a != b:
            print(f"on:  {a}\noff: {b}")
for which in ("off", "on"):
    print(f"drafts {which}: {tally[which].seconds / n:.3f} s/request, {tally[which].calls} engine calls "
          f"({n / tally[which].calls:.1f} requests each)")
print(f"drafted {tally['off'].seconds / tally['on'].seconds:.2f}x one token a step; {book.accepted} of {book.proposed} "
      f"guessed tokens kept; answers identical: {same}/{n}")
