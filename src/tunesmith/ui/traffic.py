"""The request log summarised for the Deployments and Monitoring pages.

Nothing else reads the log this way (the rollout's windows are per variant and small, the
monitor's are texts), so the queries are here. Every figure is over the latest ``LATEST``
requests (one row per request: ``choice = 0``), read through the ``created`` index, so a page
costs the same with a hundred thousand logged requests as with a thousand; the page says so.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LATEST = 10_000


@dataclass
class VariantStats:
    variant: str
    versions: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    share: float = 0.0  # of the requests clients received (shadow copies excluded)
    errors: int = 0  # 5xx
    refused: int = 0  # 4xx (and 499: the client went away)
    json_asked: int = 0
    json_valid: int = 0
    latency: dict[str, float | None] = field(default_factory=dict)  # p50, p95, p99

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @property
    def validity(self) -> float | None:
        return self.json_valid / self.json_asked if self.json_asked else None


@dataclass
class TrafficSummary:
    total_logged: int
    window: int  # requests summarised (the latest ones)
    since: float | None
    until: float | None
    variants: list[VariantStats]
    series: dict[str, Any]  # per-hour buckets for the charts: {"t": [...], "<variant>": [...], ...}


def percentile(sorted_values: list[float], q: float) -> float | None:
    """The nearest-rank percentile (``q`` in 0..100) of already sorted values."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def _parses(text: str | None) -> bool:
    try:
        json.loads(text or "")
    except ValueError:
        return False
    return True


def summary(db_path: Path, *, latest: int = LATEST) -> TrafficSummary:
    """Traffic per variant (share, latency percentiles, error and JSON validity rates) and per
    hour (requests, errors, p95 latency per variant) over the latest ``latest`` requests."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'request_log'").fetchone():
            return TrafficSummary(0, 0, None, None, [], {})
        have = {r[1] for r in db.execute("PRAGMA table_info(request_log)")}
        json_col = "json_asked" if "json_asked" in have else "NULL"
        shadow_col = "shadow_of" if "shadow_of" in have else "NULL"
        total = db.execute("SELECT MAX(rowid) FROM request_log").fetchone()[0] or 0
        rows = db.execute(
            f"SELECT created, COALESCE(variant, 'direct'), version, status, latency_ms, {json_col}, "
            f"CASE WHEN {json_col} = 1 THEN answer END, {shadow_col} FROM request_log WHERE choice = 0 "
            "ORDER BY created DESC LIMIT ?", (latest,)).fetchall()
    finally:
        db.close()
    return _summarise(rows, total)


def _summarise(rows: list[tuple], total: int) -> TrafficSummary:
    stats: dict[str, VariantStats] = {}
    latencies: dict[str, list[float]] = defaultdict(list)
    hours: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    hour_counts: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    hour_errors: dict[int, int] = defaultdict(int)
    for created, variant, version, status, latency, json_asked, answer, _shadow_of in rows:
        s = stats.setdefault(variant, VariantStats(variant))
        s.requests += 1
        s.versions[version or "?"] = s.versions.get(version or "?", 0) + 1
        if status >= 500:
            s.errors += 1
        elif status != 200:
            s.refused += 1
        if json_asked and status == 200:
            s.json_asked += 1
            s.json_valid += _parses(answer)
        bucket = int(created // 3600)
        hour_counts[bucket][variant] += 1
        if latency is not None:
            latencies[variant].append(latency)
            hours[bucket][variant].append(latency)
        hour_errors[bucket] += status >= 500
    served = sum(s.requests for v, s in stats.items() if v != "shadow")
    for v, s in stats.items():
        s.share = s.requests / served if served and v != "shadow" else 0.0
        ordered = sorted(latencies[v])
        s.latency = {f"p{q}": percentile(ordered, q) for q in (50, 95, 99)}
    names = sorted(stats)
    buckets = sorted(hour_counts)
    series: dict[str, Any] = {"t": [b * 3600 for b in buckets], "variants": names,
                              "requests": {v: [hour_counts[b].get(v, 0) for b in buckets] for v in names},
                              "p95": {v: [percentile(sorted(hours[b].get(v, [])), 95) for b in buckets] for v in names},
                              "errors": [hour_errors[b] for b in buckets]}
    return TrafficSummary(total, len(rows), rows[-1][0] if rows else None, rows[0][0] if rows else None,
                          [stats[v] for v in names], series)
