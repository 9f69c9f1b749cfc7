"""The eval report's calibration part: a reliability diagram and a risk-coverage curve as inline
SVG (no image files, no plotting library: the numbers are few), and the table beside them."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from tunesmith.evaluate.results import CalibrationResult

W, H, PAD = 320, 260, 36  # px: plot size and margin for the axes' labels


def _xy(x: float, y: float) -> tuple[float, float]:
    return PAD + x * (W - 2 * PAD), H - PAD - y * (H - 2 * PAD)


def _frame(title: str, xlabel: str, ylabel: str) -> list[str]:
    x0, y0 = _xy(0, 0)
    x1, y1 = _xy(1, 1)
    out = [f"<rect x='{x0}' y='{y1}' width='{x1 - x0}' height='{y0 - y1}' fill='none' stroke='#999'/>",
           f"<text x='{W / 2}' y='14' text-anchor='middle' font-size='12'>{html.escape(title)}</text>",
           f"<text x='{W / 2}' y='{H - 6}' text-anchor='middle' font-size='11'>{html.escape(xlabel)}</text>",
           f"<text x='10' y='{H / 2}' font-size='11' transform='rotate(-90 10 {H / 2})' "
           f"text-anchor='middle'>{html.escape(ylabel)}</text>"]
    for t in (0, 0.5, 1):
        x, _ = _xy(t, 0)
        _, y = _xy(0, t)
        out += [f"<text x='{x}' y='{y0 + 13}' text-anchor='middle' font-size='10'>{t:g}</text>",
                f"<text x='{x0 - 4}' y='{y + 3}' text-anchor='end' font-size='10'>{t:g}</text>"]
    return out


def _svg(parts: Sequence[str], label: str) -> str:
    return (f"<svg xmlns='http://www.w3.org/2000/svg' role='img' aria-label='{html.escape(label)}' "
            f"width='{W}' height='{H}' viewBox='0 0 {W} {H}'>{''.join(parts)}</svg>")


def reliability_svg(before: Sequence[Any], after: Sequence[Any]) -> str:
    """Accuracy against mean confidence per bin, before (grey) and after (blue) scaling; the
    diagonal is perfect calibration; a dot's area grows with its bin's count."""
    parts = _frame("Reliability (test answers, fields pooled)", "confidence", "accuracy")
    a, b = _xy(0, 0), _xy(1, 1)
    parts.append(f"<line x1='{a[0]}' y1='{a[1]}' x2='{b[0]}' y2='{b[1]}' stroke='#bbb' stroke-dasharray='4 3'/>")
    total = max(sum(x.count for x in after), 1)
    for bins, colour in ((before, "#999"), (after, "#1f6feb")):
        pts = [(x.confidence, x.accuracy, x.count) for x in bins if x.count and x.confidence is not None]
        if pts:
            path = " ".join(f"{'M' if i == 0 else 'L'}{_xy(c, acc)[0]:.1f},{_xy(c, acc)[1]:.1f}"
                            for i, (c, acc, _) in enumerate(pts))
            parts.append(f"<path d='{path}' fill='none' stroke='{colour}' stroke-width='1.5'/>")
        for c, acc, n in pts:
            x, y = _xy(c, acc)
            parts.append(f"<circle cx='{x:.1f}' cy='{y:.1f}' r='{2 + 6 * (n / total) ** 0.5:.1f}' fill='{colour}' "
                         f"fill-opacity='0.6'><title>conf {c:.3f}, acc {acc:.3f}, n {n}</title></circle>")
    parts += [f"<text x='{PAD + 6}' y='{PAD + 4}' font-size='10' fill='#777'>before scaling</text>",
              f"<text x='{PAD + 6}' y='{PAD + 16}' font-size='10' fill='#1f6feb'>after scaling</text>"]
    return _svg(parts, "reliability diagram")


def risk_coverage_svg(coverage: Sequence[float], risk: Sequence[float], threshold_coverage: float | None) -> str:
    """Error rate among the answers kept against the share kept (most confident first); the
    fitted threshold's coverage as a vertical line."""
    parts = _frame("Risk-coverage (test answers)", "coverage (share kept)", "error among kept")
    top = max([*risk, 0.05])
    scale = 1.0 if top > 0.5 else (0.5 if top > 0.2 else 0.2)
    if len(coverage):
        path = " ".join(f"{'M' if i == 0 else 'L'}{_xy(c, r / scale)[0]:.1f},{_xy(c, r / scale)[1]:.1f}"
                        for i, (c, r) in enumerate(zip(coverage, risk, strict=True)))
        parts.append(f"<path d='{path}' fill='none' stroke='#1f6feb' stroke-width='1.5'/>")
    if threshold_coverage is not None:
        a, b = _xy(threshold_coverage, 0), _xy(threshold_coverage, 1)
        parts.append(f"<line x1='{a[0]}' y1='{a[1]}' x2='{b[0]}' y2='{b[1]}' stroke='#d29922' stroke-dasharray='3 3'>"
                     "<title>auto-approved at the fitted threshold</title></line>")
    if scale != 1.0:
        parts.append(f"<text x='{W - PAD}' y='{PAD - 4}' text-anchor='end' font-size='10' fill='#777'>"
                     f"error axis 0–{scale:g}</text>")
    return _svg(parts, "risk-coverage curve")


def calibration_rows(c: CalibrationResult) -> list[list[str]]:
    """The table: what was fitted and how it does."""
    def num(v: Any, fmt: str = ".4f") -> str:
        return "–" if v is None else format(v, fmt)

    t = c.threshold or {}
    rows = [["fitted on", f"{c.used} of {c.examples} {c.split} answers ({c.rung})"],
            ["temperature per field", ", ".join(f"{k} {v:.3g}" for k, v in c.temperatures.items()) or "–"],
            ["ECE (15 bins), validation holdout half: before → after", f"{num(c.ece_before)} → {num(c.ece_after)}"]]
    if c.test is not None:
        rows.append(["ECE (15 bins), test answers: before → after",
                     f"{num(c.test.ece_before)} → {num(c.test.ece_after)} ({c.test.answers} answers)"])
    rows.append(["auto-approval threshold",
                 "none certified: nothing auto-approved" if t.get("threshold") is None else
                 f"{t['threshold']:g} for error ≤ {t.get('target_error')} with prob. ≥ {1 - t.get('delta', 0):g} "
                 f"({t.get('method')})"])
    if t.get("threshold") is not None:
        rows.append(["validation: coverage, error (upper bound)",
                     f"{num(t.get('coverage'), '.1%')}, {num(t.get('error'), '.1%')} ({num(t.get('upper_bound'), '.1%')})"])
    if c.test is not None:
        rows.append(["test: auto-approved share, their error", f"{num(c.test.auto_coverage, '.1%')}, "
                                                                f"{num(c.test.auto_error, '.1%')}"])
        if c.test.risk_coverage is not None:
            rows.append(["test: area under risk-coverage (AURC)", num(c.test.risk_coverage.aurc)])
    if c.ms_per_answer is not None:
        rows.append(["confidence cost", f"{c.ms_per_answer:.1f} ms per answer (scoring the allowed values)"])
    if c.note:
        rows.append(["note", c.note])
    return rows


def calibration_figures(c: CalibrationResult) -> str:
    """The two inline SVGs (empty without test answers)."""
    if c.test is None:
        return ""
    rc = c.test.risk_coverage
    threshold = (c.threshold or {}).get("threshold")
    figs = [reliability_svg(c.test.reliability_before, c.test.reliability_after)]
    if rc is not None:
        figs.append(risk_coverage_svg(rc.coverage, rc.risk, c.test.auto_coverage if threshold is not None else None))
    return "".join(f"<figure>{f}</figure>" for f in figs)
