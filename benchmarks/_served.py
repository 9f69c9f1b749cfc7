"""The ``demo --operate`` simulation's server set up for an A/B benchmark: a copy of a demo
workspace (COPY_DIR, replaced), the simulation's config with the response cache off, and fresh
month-1 tickets: ``clients`` for a warm-up, then two halves of ``n`` to alternate settings over
(A with each setting, then B with each, so a drift in machine speed touches all alike)."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.config import load_config
from tunesmith.sample.operate import OperatePlan, operate_config
from tunesmith.sample.operate_serve import replay
from tunesmith.sample.triage_month2 import month_traffic


def served_ab(src: Path, dst: Path, n: int, clients: int, *, seed: int) -> tuple[Any, list[Any], list[list[Any]]]:
    """(config, warm-up tickets, [half A, half B])."""
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    ocfg = operate_config(load_config(dst / "tunesmith.yaml"), OperatePlan())
    ocfg.serve.cache.max_entries = 0
    tickets = month_traffic(1, n + clients, seed=seed)
    return ocfg, tickets[:clients], [tickets[clients:clients + n // 2], tickets[clients + n // 2:]]


@dataclass
class Tally:
    """One setting's totals over the halves it answered."""

    seconds: float = 0.0
    calls: int = 0
    answers: list[str] = field(default_factory=list)


def run_half(server: Any, ocfg: Any, half: list[Any], clients: int, tally: Tally, label: str) -> None:
    """Replay ``half`` through ``server`` (``clients`` in flight) into ``tally``; prints a line."""
    scheduler = server.loaded.app.state.service.scheduler
    before = scheduler.batches
    t0 = time.perf_counter()
    served = replay(server, ocfg, half, concurrency=clients)
    took = time.perf_counter() - t0
    tally.seconds += took
    tally.calls += scheduler.batches - before
    tally.answers += [s.answer for s in served]
    print(f"{label}: {len(served)} requests in {took:.1f} s, {scheduler.batches - before} engine calls", flush=True)
