"""Charts drawn on the server as SVG: they read without JavaScript and print as they look.
(The interactive time series are uPlot, in static/ui.js.)"""

from __future__ import annotations

from html import escape
from typing import Any

from tunesmith.evaluate.results import EvalResults


def ci_chart(r: EvalResults) -> str:
    """The ladder's headline means with their 95% CIs as a horizontal SVG chart (0..1 scale)."""
    rows = [(name, rung.metrics.get(r.headline)) for name, rung in r.ladder.items()]
    rows = [(n, m) for n, m in rows if m is not None and m.mean is not None]
    if not rows:
        return ""
    left, width, row_h = 130, 360, 26
    height = 24 + row_h * len(rows)
    out = [f'<svg class="cichart" role="img" aria-label="{escape(r.headline)} per rung with 95% confidence '
           f'intervals" viewBox="0 0 {left + width + 60} {height}" width="{left + width + 60}" height="{height}" '
           'xmlns="http://www.w3.org/2000/svg">']
    for tick in (0, 0.25, 0.5, 0.75, 1.0):
        x = left + tick * width
        out.append(f'<line class="grid" x1="{x}" y1="4" x2="{x}" y2="{height - 18}"/>'
                   f'<text class="tick" x="{x}" y="{height - 4}" text-anchor="middle">{tick:g}</text>')
    for j, (name, m) in enumerate(rows):
        y = 8 + j * row_h
        lo, hi = (m.low if m.low is not None else m.mean), (m.high if m.high is not None else m.mean)
        out.append(f'<text class="label" x="{left - 8}" y="{y + 13}" text-anchor="end">{escape(name)}</text>'
                   f'<rect class="bar" x="{left}" y="{y + 3}" width="{max(m.mean, 0) * width:.1f}" height="14"/>'
                   f'<line class="ci" x1="{left + lo * width:.1f}" y1="{y + 10}" x2="{left + hi * width:.1f}" '
                   f'y2="{y + 10}"/><text class="value" x="{left + width + 6}" y="{y + 14}">{m.mean:.3f}</text>')
    out.append("</svg>")
    return "".join(out)


def reliability_chart(bins: list[dict[str, Any]], size: int = 240) -> str:
    """A reliability diagram: each confidence bin's mean confidence (x) against its accuracy (y),
    the dot's area by its answers, over the diagonal a calibrated model sits on."""
    if not bins:
        return ""
    pad, inner = 34, size - 44
    most = max(b["count"] for b in bins) or 1

    def x(v: float) -> float:
        return pad + v * inner

    def y(v: float) -> float:
        return 10 + (1 - v) * inner

    out = [f'<svg class="reliability" role="img" aria-label="Reliability diagram: accuracy against confidence per bin" '
           f'viewBox="0 0 {size} {size}" width="{size}" height="{size}" xmlns="http://www.w3.org/2000/svg">',
           f'<rect class="frame" x="{pad}" y="10" width="{inner}" height="{inner}"/>',
           f'<line class="diag" x1="{x(0)}" y1="{y(0)}" x2="{x(1)}" y2="{y(1)}"/>']
    for t in (0, 0.5, 1):
        out.append(f'<text class="tick" x="{x(t)}" y="{size - 18}" text-anchor="middle">{t:g}</text>'
                   f'<text class="tick" x="{pad - 4}" y="{y(t) + 4}" text-anchor="end">{t:g}</text>')
    out.append(f'<text class="tick" x="{x(0.5)}" y="{size - 4}" text-anchor="middle">confidence</text>')
    for b in bins:
        if b["confidence"] is None or b["accuracy"] is None:
            continue
        r = 3 + 7 * (b["count"] / most) ** 0.5
        out.append(f'<circle class="bin" cx="{x(b["confidence"]):.1f}" cy="{y(b["accuracy"]):.1f}" r="{r:.1f}">'
                   f'<title>{b["count"]} answers: confidence {b["confidence"]:.2f}, accuracy {b["accuracy"]:.2f}</title>'
                   '</circle>')
    out.append("</svg>")
    return "".join(out)
