"""The request log summarised for the Deployments and Monitoring pages.

Nothing else reads the log this way (the rollout's windows are per variant and small, the
monitor's are texts), so the queries are here. Every figure is over the latest ``LATEST``
requests (one row per request: ``choice = 0``), read through the ``created`` index, so a page
costs the same with a hundred thousand logged requests as with a thousand; the page says so.
"""

from __future__ import annotations

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


BUCKETS = ((2 * 3600, 60, "minute"), (12 * 3600, 600, "10 minutes"), (7 * 86400, 3600, "hour"))


def _bucket(span: float) -> tuple[int, str]:
    """The chart's time bucket for a window spanning ``span`` seconds: a few dozen points."""
    for longest, size, name in BUCKETS:
        if span <= longest:
            return size, name
    return 86400, "day"


def log_mark(db_path: Path) -> int:
    """The request log's highest rowid: every write (an insert or a replace) raises it, so a
    summary computed at the same mark is still exact (what the UI's cache is keyed on)."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'request_log'").fetchone():
            return 0
        return db.execute("SELECT MAX(rowid) FROM request_log").fetchone()[0] or 0
    finally:
        db.close()


def summary(db_path: Path, *, latest: int = LATEST) -> TrafficSummary:
    """Traffic per variant (share, latency percentiles, error and JSON validity rates) and per
    time bucket (requests, errors, p95 latency per variant; a minute to a day, by the span) over the latest ``latest`` requests. The
    counts are aggregated by SQLite; only (time, variant, latency, 5xx) rows come to Python."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'request_log'").fetchone():
            return TrafficSummary(0, 0, None, None, [], {})
        have = {r[1] for r in db.execute("PRAGMA table_info(request_log)")}
        asked = "json_asked = 1 AND status = 200" if "json_asked" in have else "0"
        latest_rows = ("SELECT created, COALESCE(variant, 'direct') AS variant, version, status, latency_ms, "
                       f"({asked}) AS asked, answer FROM request_log WHERE choice = 0 ORDER BY created DESC LIMIT ?")
        total = db.execute("SELECT MAX(rowid) FROM request_log").fetchone()[0] or 0
        groups = db.execute(
            "SELECT variant, COALESCE(version, '?'), COUNT(*), SUM(status >= 500), SUM(status <> 200 AND status < 500), "
            f"SUM(asked), SUM(asked AND json_valid(answer)), MIN(created), MAX(created) FROM ({latest_rows}) "
            "GROUP BY 1, 2", (latest,)).fetchall()
        rows = db.execute("SELECT created, COALESCE(variant, 'direct'), latency_ms, status >= 500 FROM request_log "
                          "WHERE choice = 0 ORDER BY created DESC LIMIT ?", (latest,)).fetchall()
    finally:
        db.close()
    return _summarise(groups, rows, total)


def _summarise(groups: list[tuple], rows: list[tuple], total: int) -> TrafficSummary:
    stats: dict[str, VariantStats] = {}
    for variant, version, n, errors, refused, asked, valid, _, _ in groups:
        s = stats.setdefault(variant, VariantStats(variant))
        s.versions[version] = n
        s.requests += n
        s.errors += errors or 0
        s.refused += refused or 0
        s.json_asked += asked or 0
        s.json_valid += valid or 0
    latencies: dict[str, list[float]] = defaultdict(list)
    hours: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    hour_counts: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    hour_errors: dict[int, int] = defaultdict(int)
    size, size_name = _bucket(rows[0][0] - rows[-1][0] if rows else 0.0)
    for created, variant, latency, failed in rows:
        bucket = int(created // size)
        hour_counts[bucket][variant] += 1
        hour_errors[bucket] += failed
        if latency is not None:
            latencies[variant].append(latency)
            hours[bucket][variant].append(latency)
    served = sum(s.requests for v, s in stats.items() if v != "shadow")
    for v, s in stats.items():
        s.share = s.requests / served if served and v != "shadow" else 0.0
        ordered = sorted(latencies[v])
        s.latency = {f"p{q}": percentile(ordered, q) for q in (50, 95, 99)}
    names = sorted(stats)
    buckets = sorted(hour_counts)
    series: dict[str, Any] = {"t": [b * size for b in buckets], "bucket": size, "bucket_name": size_name,
                              "variants": names,
                              "requests": {v: [hour_counts[b].get(v, 0) for b in buckets] for v in names},
                              "p95": {v: [percentile(sorted(hours[b].get(v, [])), 95) for b in buckets] for v in names},
                              "errors": [hour_errors[b] for b in buckets]}
    return TrafficSummary(total, len(rows), rows[-1][0] if rows else None, rows[0][0] if rows else None,
                          [stats[v] for v in names], series)
