"""Sample-project generation: ``tunesmith init --template support-triage`` against the floor of
copying the files it writes, same run.

    python benchmarks/bench_sample.py [--tickets 3000] [--repeats 3]

The baseline is a plain ``shutil.copytree`` of an already generated project (the same bytes
on disk, nothing computed): the ratio says how much the generator adds to writing its output.
Kept here rather than as a timed test, where a loaded machine would fail it.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from tunesmith.sample.support_triage import generate_support_triage


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tickets", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root, n = Path(tmp), iter(range(10**6))
        generate_support_triage(root / "reference", seed=3, n_tickets=args.tickets)
        size = sum(f.stat().st_size for f in (root / "reference").rglob("*") if f.is_file())
        ours = best_of(args.repeats, lambda: generate_support_triage(root / f"g{next(n)}", seed=3,
                                                                      n_tickets=args.tickets))
        copy = best_of(args.repeats, lambda: shutil.copytree(root / "reference", root / f"c{next(n)}"))
    print(f"support-triage sample, {args.tickets} tickets, {size / 1e6:.1f} MB (best of {args.repeats})")
    print(f"  tunesmith generate_support_triage  {ours:7.3f} s")
    print(f"  baseline shutil.copytree           {copy:7.3f} s")
    print(f"  ratio generate / copy              {ours / copy:7.1f}x")


if __name__ == "__main__":
    main()
