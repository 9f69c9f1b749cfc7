"""Web UI page times on a big workspace: 100,000 logged requests and 10,000 review items.

    python benchmarks/bench_ui.py [--requests 100000] [--items 10000] [--repeat 5] [--json out.json]

Builds the workspace once (benchmarks/_ui_workspace.py, seeded), starts the UI app in-process
(Starlette's TestClient: the full ASGI stack, no network), logs in as an admin, then requests
every page ``--repeat`` times and prints, per page, the first (cold: caches empty) and the median
of the rest (warm) in milliseconds, wall clock and CPU (this process's CPU time: on a machine
shared with other work the wall clock also counts waiting for a core). The issue's budget is
300 ms per page.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import _ui_workspace

BUDGET_MS = 300.0


def pages(gen: _ui_workspace.Generated) -> dict[str, str]:
    return {"overview": "/", "models": "/models", "model": f"/models/{gen.versions[1]}", "evaluation": "/evaluation",
            "evaluation (filtered)": "/evaluation?field=category&q=order&page=2", "runs": "/runs", "data": "/data",
            "data (page 2)": "/data?page=2", "review": "/review", "review (tier)": "/review?tier=sampled",
            "review (item 9000)": "/review?item=9000", "deployments": "/deployments", "monitoring": "/monitoring"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    from fastapi.testclient import TestClient

    from tunesmith.ui import create_ui_app
    from tunesmith.ui.auth import UiKeys

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        gen = _ui_workspace.build(Path(tmp) / "proj", requests=args.requests, items=args.items)
        print(f"workspace: {args.requests} requests, {args.items} review items, built in "
              f"{time.perf_counter() - t0:.1f} s")
        key = "admin-bench-key-0123456789"
        app = create_ui_app(gen.cfg, keys=UiKeys.parse(f"admin:{key}"))
        app.state.warming.join()  # the PII scrubber is built in the background at start
        client = TestClient(app)
        token = re.search(r'name="login_csrf" value="([^"]+)"', client.get("/login").text).group(1)
        assert client.post("/login", data={"key": key, "login_csrf": token, "next": "/"}).status_code == 200
        results = {}
        print(f"{'page':<24}{'cold ms':>9}{'warm ms':>9}{'cold cpu':>10}{'warm cpu':>10}")
        for name, path in pages(gen).items():
            times, cpu = [], []
            for _ in range(args.repeat):
                t, c = time.perf_counter(), time.process_time()
                r = client.get(path)
                times.append((time.perf_counter() - t) * 1000)
                cpu.append((time.process_time() - c) * 1000)
                assert r.status_code == 200, (path, r.status_code, r.text[-500:])
            warm = statistics.median(times[1:]) if len(times) > 1 else times[0]
            warm_cpu = statistics.median(cpu[1:]) if len(cpu) > 1 else cpu[0]
            results[name] = {"path": path, "cold_ms": round(times[0], 1), "warm_ms": round(warm, 1),
                             "cold_cpu_ms": round(cpu[0], 1), "warm_cpu_ms": round(warm_cpu, 1)}
            flag = "" if max(times[0], warm) <= BUDGET_MS else "  over budget (wall)"
            print(f"{name:<24}{times[0]:>9.0f}{warm:>9.0f}{cpu[0]:>10.0f}{warm_cpu:>10.0f}{flag}")
        print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    if args.json:
        args.json.write_text(json.dumps({"requests": args.requests, "items": args.items, "pages": results}, indent=1))


if __name__ == "__main__":
    main()
