"""Where ``process_batch`` runs: inline, a local process pool, or Ray Data.

All three yield the output batches in input order, so the snapshot is the same whichever runs
it. Submission is bounded (a few batches in flight per worker), so memory stays flat however
large the input is.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Literal

import pyarrow as pa

from tunesmith.deps import RAY, require

BatchFn = Callable[..., pa.Table]
ExecutorName = Literal["local", "ray"]


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def run_inline(batches: Iterable[pa.Table], fn: BatchFn, *args: object) -> Iterator[pa.Table]:
    for batch in batches:
        yield fn(batch, *args)


def run_pool(batches: Iterable[pa.Table], fn: BatchFn, *args: object, workers: int) -> Iterator[pa.Table]:
    """A process pool with at most ``2 * workers`` batches in flight, results in order."""
    # forkserver: the driver may have threads (progress bars), which fork does not survive.
    ctx = mp.get_context("forkserver")
    with ctx.Pool(workers) as pool:
        pending: deque = deque()
        for batch in batches:
            pending.append(pool.apply_async(fn, (batch, *args)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def run_ray(batches: Iterable[pa.Table], fn: BatchFn, *args: object, window: int = 16) -> Iterator[pa.Table]:
    """Ray Data ``map_batches`` over windows of Arrow batches, order preserved."""
    require(RAY)
    import ray
    import ray.data

    if not ray.is_initialized():
        ray.init(ignore_reinit_error=True, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().execution_options.preserve_order = True

    def apply(table: pa.Table) -> pa.Table:
        return fn(table, *args)

    window_batches: list[pa.Table] = []
    for batch in batches:
        window_batches.append(batch)
        if len(window_batches) >= window:
            yield from _ray_window(window_batches, apply)
            window_batches = []
    if window_batches:
        yield from _ray_window(window_batches, apply)


def _ray_window(tables: list[pa.Table], apply: Callable[[pa.Table], pa.Table]) -> Iterator[pa.Table]:
    import ray.data

    ds = ray.data.from_arrow(tables).map_batches(apply, batch_format="pyarrow", batch_size=None)
    yield from ds.iter_batches(batch_format="pyarrow", batch_size=None)


def run(
    batches: Iterable[pa.Table], fn: BatchFn, *args: object, executor: ExecutorName = "local", workers: int = 0
) -> Iterator[pa.Table]:
    if executor == "ray":
        return run_ray(batches, fn, *args)
    workers = workers or default_workers()
    if workers == 1:
        return run_inline(batches, fn, *args)
    return run_pool(batches, fn, *args, workers=workers)
