"""Whole `tunesmith prepare` on N short records (~500 chars): wall time and peak RSS.

Goal (issue 2): 1M records in <= 10 minutes and <= 4 GiB peak RSS on a 2-core machine.
Peak RSS is the sum over the driver and its worker processes, sampled every 0.2 s.

    python benchmarks/bench_prepare.py               # 1,000,000 records
    python benchmarks/bench_prepare.py --records 100000
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

WORDS = (  # noqa: SIM905 (one readable paragraph of words)
    "order refund invoice delivery parcel account password login charge payment card app crash "
    "update screen settings subscription plan premium cancel address courier tracking damaged "
    "broken missing late replacement warranty discount code checkout basket email phone support "
    "agent manager urgent please help thanks again still waiting since last week month yesterday"
).split()
NAMES = ["Anna Kowalski", "Jean Dupont", "Li Wei", "Olu Adeyemi", "Maria Garcia", "Sven Larsen"]


def make_record(rng: random.Random, i: int) -> dict:
    words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(60, 80)))
    name = rng.choice(NAMES)
    body = (
        f"Hello, this is {name}. {words.capitalize()}. You can reach me at "
        f"{name.split()[0].lower()}{i % 997}@example.com or +44 20 7946 {i % 10000:04d}."
    )
    answer = json.dumps({"category": rng.choice(["billing", "shipping", "account"]), "urgency": "normal"})
    return {
        "messages": [{"role": "user", "content": body}, {"role": "assistant", "content": answer}],
        "customer_id": f"c{rng.randint(0, 200_000)}",
    }


def write_corpus(folder: Path, n: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    path = folder / "data" / "records.jsonl"
    path.parent.mkdir(parents=True)
    recent: list[str] = []
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            if recent and rng.random() < 0.03:  # 3% exact re-submissions
                line = rng.choice(recent)
            else:
                line = json.dumps(make_record(rng, i))
                recent = ([*recent, line])[-1000:]
            fh.write(line + "\n")
    (folder / "tunesmith.yaml").write_text(
        "project: bench\ndata:\n  sources:\n    - path: data/records.jsonl\n      group_field: customer_id\n"
    )
    return path


def run_measured(cmd: list[str]) -> tuple[float, float, str]:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    root, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            procs = [root, *root.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in procs if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.2)
    stdout = proc.stdout.read() if proc.stdout else ""
    if proc.returncode:
        raise SystemExit(f"prepare failed with exit code {proc.returncode}")
    return time.perf_counter() - start, peak / 2**30, stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=1_000_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        corpus = write_corpus(folder, args.records)
        print(f"corpus: {args.records:,} records, {corpus.stat().st_size / 2**20:.0f} MiB "
              f"(written in {time.perf_counter() - t0:.0f} s)")
        cmd = [sys.executable, "-m", "tunesmith.cli", "prepare", "-c", str(folder), "--json"]
        seconds, peak_gib, stdout = run_measured(cmd)
    summary = json.loads(stdout.strip().splitlines()[-1])
    c = summary["counts"]
    scale = 1_000_000 / args.records
    print(f"prepare: {seconds:.0f} s wall, {args.records / seconds:,.0f} records/s, peak RSS {peak_gib:.2f} GiB")
    print(f"counts: read {c['read']:,} kept {c['kept']:,} dropped {c['dropped']:,} quarantined {c['quarantined']:,}")
    print(f"goal (1M records): <= 600 s -> {'met' if seconds * scale <= 600 else 'MISSED'} "
          f"(projected {seconds * scale:.0f} s); <= 4 GiB -> {'met' if peak_gib <= 4 else 'MISSED'}")


if __name__ == "__main__":
    main()
