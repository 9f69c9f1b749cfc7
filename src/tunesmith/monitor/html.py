"""The monitor's HTML report: one self-contained file (plots are PNGs embedded as base64; no
script, no CDN), readable offline and attachable to a ticket."""

from __future__ import annotations

import base64
import html
import io
import time
from pathlib import Path
from typing import Any

from tunesmith.monitor.drift import Finding
from tunesmith.monitor.quality import Rate
from tunesmith.monitor.runner import MonitorReport
from tunesmith.workspace import write_atomic

_CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1000px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}
.alarm{background:#fdd;font-weight:bold}.ok{background:#dfd}.skip{color:#888}
.banner{padding:.6em 1em;border-radius:4px;font-size:1.2em}img{max-width:100%}"""


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _figure(width: float = 6.5, height: float = 2.8) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def _hist(f: Finding, ref_key: str, cur_key: str, xlabel: str) -> str:
    ref, cur = f.detail.get(ref_key), f.detail.get(cur_key)
    if not ref or not cur:
        return ""
    fig, ax = _figure()
    bins = 30
    ax.hist(ref, bins=bins, density=True, alpha=0.5, label=f"reference (n={len(ref)})")
    ax.hist(cur, bins=bins, density=True, alpha=0.5, label=f"current (n={len(cur)})")
    ax.set_xlabel(xlabel)
    ax.legend()
    return _png(fig)


def _labels(f: Finding) -> str:
    import numpy as np

    values, ref, cur = f.detail.get("values"), f.detail.get("reference"), f.detail.get("current")
    if not values:
        return ""
    ref_p = np.array(ref, float) / max(1, sum(ref))
    cur_p = np.array(cur, float) / max(1, sum(cur))
    fig, ax = _figure(6.5, 0.4 * len(values) + 1.2)
    y = np.arange(len(values))
    ax.barh(y - 0.2, ref_p, height=0.4, label="reference")
    ax.barh(y + 0.2, cur_p, height=0.4, label="current")
    ax.set_yticks(y, values)
    ax.set_xlabel("share of answers")
    ax.legend()
    return _png(fig)


def _cusum(report: MonitorReport) -> str:
    q = report.quality
    if not q or not q.path:
        return ""
    fig, ax = _figure()
    start = q.design.get("phase1", 0)  # a Phase I's answers set p0; the chart starts after them
    ax.plot(range(start + 1, start + len(q.path) + 1), q.path, lw=1)
    ax.axhline(q.design["h"], color="red", ls="--", label=f"h = {q.design['h']:.2f}")
    for a in q.alarms:
        ax.axvline(a, color="red", alpha=0.4)
    ax.set_xlabel("sampled reviewed answers")
    ax.set_ylabel("CUSUM")
    ax.legend()
    return _png(fig)


def _num(v: float | None, fmt: str = ".4g") -> str:
    return "" if v is None else format(v, fmt)


def _findings_table(findings: list[Finding]) -> str:
    rows = ["<tr><th>check</th><th>test</th><th>p-value</th><th>alpha</th><th>effect</th><th>min effect</th>"
            "<th>verdict</th></tr>"]
    for f in findings:
        cls, verdict = ("alarm", "ALARM") if f.alarm else (("skip", f"not run: {f.note}") if f.p_value is None
                                                            else ("ok", "ok"))
        rows.append(f"<tr class='{cls}'><td>{html.escape(f.check)}</td><td>{html.escape(f.test)}</td>"
                    f"<td>{_num(f.p_value)}</td><td>{_num(f.alpha)}</td><td>{html.escape(f.effect_name)} "
                    f"{_num(f.effect, '.3f')}</td><td>{_num(f.min_effect, '.3f')}</td>"
                    f"<td>{html.escape(verdict)}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def _rate_row(name: str, r: Rate) -> str:
    """A table row: what was reviewed, its errors, the rate with its Wilson CI."""
    rate = "too few reviewed" if r.rate is None else f"{r.rate:.3f} ({r.low:.3f} - {r.high:.3f})"
    return f"<tr><td>{html.escape(name)}</td><td>{r.n}</td><td>{r.errors}</td><td>{rate}</td></tr>"


def _quality(report: MonitorReport) -> str:
    q = report.quality
    if q is None:
        return ""
    rows = ["<tr><th>tier</th><th>reviewed</th><th>errors</th><th>error rate (95% Wilson CI)</th></tr>"]
    for tier, r in q.tiers.items():
        rows.append(_rate_row(tier, r))
    if q.fields:
        rows.append("<tr><th colspan='4'>sampled tier, per label field</th></tr>")
        rows += [_rate_row(name, r) for name, r in q.fields.items()]
    d = q.design
    within = next((v for k, v in d.items() if k.startswith("p_alarm_within")), None)
    watched = html.escape(q.of_version)
    if "h" not in d:
        design = f"<p>CUSUM on the sampled tier{watched}: {html.escape(q.note)}</p>"
    else:
        phase1 = (f" p0 is the 90% upper confidence bound of the error rate of the first {d['phase1']} sampled "
                  f"reviewed answers (Phase I: {d['phase1_errors']} wrong, {d['phase1_rate']:.3f}); the chart "
                  "watches the answers after them." if d.get("phase1") else "")
        design = (f"<p>CUSUM on the sampled tier{watched}: p0 = {d['p0']:.3f}, p1 = {d['p1']:.3f}, h = {d['h']:.2f} "
                  f"(in-control ARL {d['arl0']:,.0f}; at p1 mean delay {d['arl_at_p1']:.0f} answers, "
                  f"P(alarm within 300) = {_num(within, '.2f')}).{phase1} Seen {q.reviewed} sampled answers; "
                  f"statistic {q.statistic:.2f}; alarms at {q.alarms or 'none'}"
                  f"{' — NEW ALARM' if q.alarm else ''}. {html.escape(q.note)}</p>")
    return ("<h2>Quality (reviewed answers)</h2><table>" + "".join(rows) + "</table>" + design + _cusum(report)
            + _traffic(report))


def _traffic(report: MonitorReport) -> str:
    """Per label field: the whole traffic's error rate, the window before vs the latest."""
    q = report.quality
    if q is None or not q.traffic:
        return ""
    rows = ["<tr><th>field</th><th>window before</th><th>latest window</th><th>rise</th><th>p (one-sided)</th>"
            "<th>verdict</th></tr>"]
    for name, f in q.traffic.items():
        before = f.previous.rate if f.previous else None
        verdict = ("ALARM" if f.alarm else "ok") if f.p_value is not None else html.escape(f.note or "not tested")
        rows.append(f"<tr><td>{html.escape(name)}</td><td>{_estimate(before, f.previous.se if f.previous else None)}"
                    f"</td><td>{_estimate(f.current.rate, f.current.se)}</td><td>{_num(f.rise, '+.3f')}</td>"
                    f"<td>{_num(f.p_value)}</td><td>{verdict}</td></tr>")
    return ("<h3>Error rate per field over the whole traffic</h3><p>Every tier's reviewed answers, each tier "
            "weighted by its share of the window (the sampled tier stands for the auto-approved answers): "
            f"{html.escape(q.previous or 'no earlier window')} vs {html.escape(q.current)}. An alarm needs p below "
            f"alpha / fields and a rise of at least {next(iter(q.traffic.values())).min_rise:.2f}.</p><table>"
            + "".join(rows) + "</table>")


def _estimate(rate: float | None, se: float | None) -> str:
    return "-" if rate is None else f"{rate:.3f} ± {1.96 * (se or 0):.3f}"


def render(report: MonitorReport) -> str:
    by = {f.check: f for f in report.findings}
    q = report.quality
    alarming = {f.check for f in report.findings if f.alarm} | {f"quality.field.{n}" for n in (
        q.field_alarms if q else [])} | ({"quality.cusum"} if q and q.alarm else set())
    state = ("<div class='banner alarm'>ALARM: " + ", ".join(sorted(alarming)) + "</div>"
             if report.alarm else "<div class='banner ok'>no alarm</div>")
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>tunesmith monitor: {html.escape(report.project)}"
        f"</title><style>{_CSS}</style></head><body>",
        f"<h1>Monitor report: {html.escape(report.project)}</h1>",
        f"<p>{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(report.created))}. Current: "
        f"{html.escape(report.current)} ({report.n_current} requests; versions "
        f"{html.escape(str(report.versions))}). Reference: {html.escape(report.reference)} ({report.n_reference}). "
        f"Embedder: {html.escape(report.embedder)} ({html.escape(report.embedder_why)}). Run false-alarm budget "
        f"alpha = {report.alpha} (each check at {report.alpha_per_check:.4g}).</p>",
        state, "<h2>Drift checks</h2>", _findings_table(report.findings),
    ]
    parts += [f"<p class='skip'>{html.escape(n)}</p>" for n in report.notes]
    if f := by.get("input.length"):
        parts += ["<h3>Prompt length (characters)</h3>", _hist(f, "reference_lengths", "current_lengths", "characters")]
    if (f := by.get("input.unseen_tokens")) and f.detail:
        words = ", ".join(f"{html.escape(w)} ({n})" for w, n in f.detail.get("top_unseen", []))
        parts += [f"<h3>Words unseen in the reference</h3><p>share {f.detail['reference_share']:.3f} (held-out "
                  f"reference) → {f.detail['current_share']:.3f} (current). Most frequent new words: {words}</p>"]
    if (f := by.get("input.embedding")) and f.detail:
        parts += [f"<h3>Embeddings</h3><p>MMD² {f.detail['mmd2']:.4g} (pooled permutation p = "
                  f"{f.detail['mmd_p']:.4g}, {f.detail['permutations']} permutations); domain classifier ROC AUC "
                  f"{f.detail['auc']:.3f} (0.5 = indistinguishable).</p>"]
    for f in report.findings:
        if f.check.startswith("output.label."):
            parts += [f"<h3>{html.escape(f.check)}</h3>", _labels(f)]
    if (f := by.get("output.confidence")) and f.p_value is not None:
        parts += ["<h3>Confidence</h3>", _hist(f, "reference", "current", "confidence")]
    parts += [_quality(report)]
    if report.alarms:
        parts += ["<h2>Recorded alarms (retrain triggers)</h2><ul>"] + [
            f"<li>#{a.seq} {a.kind}: {html.escape(', '.join(a.checks))}{'' if a.new else ' (already recorded)'}</li>"
            for a in report.alarms] + ["</ul>"]
    parts.append("</body></html>")
    return "\n".join(p for p in parts if p)


def write(report: MonitorReport, path: Path) -> Path:
    write_atomic(Path(path), render(report))
    return Path(path)
