"""The snapshot report: one self-contained HTML page (PNG plots embedded and also saved)."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

PLOT_STYLE = {"figsize": (6.4, 3.2), "dpi": 100}


def _plots(out: Path, manifest: dict, lengths: dict[str, list[int]], cluster_sizes: list[int]) -> list[tuple[str, Path]]:
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede pyplot
    import matplotlib.pyplot as plt

    made: list[tuple[str, Path]] = []

    def save(fig: Any, name: str, title: str) -> None:
        fig.tight_layout()
        path = out / f"{name}.png"
        fig.savefig(path)
        plt.close(fig)
        made.append((title, path))

    fig, ax = plt.subplots(**PLOT_STYLE)
    for split, values in lengths.items():
        if values:
            ax.hist(values, bins=40, alpha=0.6, label=f"{split} ({len(values)})")
    ax.set_xlabel("characters of user text")
    ax.set_ylabel("records")
    if any(lengths.values()):
        ax.legend()
    save(fig, "lengths", "Lengths per split")

    for name, title, data in (
        ("drops", "Drops per reason", manifest["counts"]["dropped_by_reason"]),
        ("pii", "PII found per entity", manifest["counts"]["pii"]),
    ):
        fig, ax = plt.subplots(**PLOT_STYLE)
        if data:
            keys = list(data)
            ax.barh(keys, [data[k] for k in keys], color="#4a7ab5")
            ax.invert_yaxis()
        else:
            ax.text(0.5, 0.5, "none", ha="center", va="center")
        ax.set_xlabel("records" if name == "drops" else "occurrences")
        save(fig, name, title)

    fig, ax = plt.subplots(**PLOT_STYLE)
    multi = [s for s in cluster_sizes if s > 1]
    if multi:
        ax.hist(multi, bins=range(2, max(multi) + 2), color="#b5634a", align="left")
    else:
        ax.text(0.5, 0.5, "no near-duplicate clusters", ha="center", va="center")
    ax.set_xlabel("records per near-duplicate cluster")
    ax.set_ylabel("clusters")
    save(fig, "clusters", "Near-duplicate cluster sizes")
    return made


def _table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def write_report(out: Path, manifest: dict, lengths: dict[str, list[int]], cluster_sizes: list[int]) -> Path:
    counts = manifest["counts"]
    plots = _plots(out, manifest, lengths, cluster_sizes)
    figures = "".join(
        f"<figure><img alt='{html.escape(t)}' src='data:image/png;base64,"
        f"{base64.b64encode(p.read_bytes()).decode()}'><figcaption>{html.escape(t)}</figcaption></figure>"
        for t, p in plots
    )
    summary = [
        ("read", counts["read"]), ("kept", counts["kept"]), ("dropped", counts["dropped"]),
        ("quarantined", counts["quarantined"]),
        *((f"split: {k}", v) for k, v in counts["splits"].items()),
        ("near-duplicate clusters", counts["near_duplicate_clusters"]),
        ("texts changed by normalisation", counts["normalised"]),
        ("test examples over the contamination threshold", manifest["contamination"]["over_threshold"]),
    ]
    sources = [(s["path"], f"{s['sha256'][:16]}… {s['bytes']} bytes") for s in manifest["sources"]]
    page = f"""<!doctype html><html><head><meta charset="utf-8">
<title>tunesmith snapshot {html.escape(manifest['snapshot_id'])}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;color:#222}}
table{{border-collapse:collapse;margin:1rem 0}}td{{border:1px solid #ccc;padding:.25rem .6rem}}
figure{{display:inline-block;margin:.5rem}}img{{max-width:30rem}}</style></head><body>
<h1>Snapshot {html.escape(manifest['snapshot_id'])}</h1>
<p>Project <b>{html.escape(manifest['project'])}</b> · config {manifest['config_hash']} · seed {manifest['seed']}</p>
<h2>Accounting</h2>{_table(summary)}
<h2>Drops by reason</h2>{_table(list(counts['dropped_by_reason'].items()))}
<h2>PII redacted (per entity)</h2>{_table(list(counts['pii'].items()) or [('none', 0)])}
<h2>Plots</h2>{figures}
<h2>Sources</h2>{_table(sources)}
</body></html>"""
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
