"""The simulation's printed report: the before/after table (month-2 traffic and the frozen
month-1 pack, champion vs challenger with paired CIs) and the acceptance figures, every line
marked as a simulation."""

from __future__ import annotations

from typing import Any

from tunesmith.sample.operate import TAG, OperateResult
from tunesmith.sample.operate_serve import FIELDS

ROWS = (*FIELDS, "fields_mean")


def _num(x: Any, fmt: str = ".3f") -> str:
    return "n/a" if x is None else format(x, fmt)


def _diff(row: dict[str, Any] | None) -> str:
    if not row or row.get("diff") is None:
        return "n/a"
    return f"{row['diff']:+.3f} [{_num(row.get('low'), '+.3f')}, {_num(row.get('high'), '+.3f')}]"


def _table(title: str, rows: dict[str, Any], n: Any) -> list[str]:
    lines = [f"{TAG} {title} (n={n})",
             f"{TAG}   {'field':<12} {'champion':>9} {'challenger':>10}   challenger − champion [95% CI]"]
    for name in ROWS:
        row = rows.get(name) or rows.get(f"field_{name}") or {}
        lines.append(f"{TAG}   {name:<12} {_num(row.get('champion')):>9} {_num(row.get('challenger')):>10}   "
                     f"{_diff(row)}")
    return lines


def before_after_lines(result: OperateResult) -> list[str]:
    lines: list[str] = []
    shadow = result.before_after.get("month2_shadow") or {}
    if shadow.get("tickets"):
        lines += _table("month-2 traffic, the same fresh tickets answered by both (shadow phase, paired)", shadow,
                        shadow["tickets"])
    offline = result.before_after.get("month2_offline") or {}
    if offline.get("tickets"):
        lines += _table("month-2 traffic, fresh tickets answered offline by both (the refused challenger never "
                        "went live; paired)", offline, offline["tickets"])
    r = result.retrain
    if r:
        lines += _table(f"frozen month-1 eval pack {str(r['frozen']['pack'])[:12]} (non-inferiority margin 2 points)",
                        r["frozen"]["rows"], r["frozen"]["cases"])
        lines += _table(f"new slice: held-out reviewed corrections, pack {str(r['new_slice']['pack'])[:12]}",
                        r["new_slice"]["rows"], r["new_slice"]["cases"])
    return lines


def acceptance_lines(result: OperateResult) -> list[str]:
    """The issue's acceptance figures this run measured (the rest are tests on generated data)."""
    c, lines = result.calibration, []
    served = c.get("served_month1") or {}
    lines.append(f"{TAG} calibration: ECE before {_num(c.get('test_ece_before'))} → after "
                 f"{_num(c.get('test_ece_after'))} on {c.get('test_answers')} eval test answers "
                 f"(validation fit: {_num(c.get('validation_ece_before'))} → {_num(c.get('validation_ece_after'))}); "
                 f"served month-1 confidences (calibrated) ECE {_num(served.get('ece'))} on "
                 f"{served.get('answers')} answers × 3 fields")
    op = result.routing.get("operating_point")
    if op:
        lines.append(f"{TAG} routing: {op['why']}; ran at the stated operating point review.threshold "
                     f"{op['threshold']} (held-out test: {op['test_coverage']:.0%} auto-approved, {op['test_error']:.1%} "
                     f"of them wrong); the quality chart's in-control error estimated from the first "
                     f"{op['quality_phase1']} sampled reviews (Phase I), tuned to detect a rise of "
                     f"{op['quality_alarm_rise']:.0%}")
    for month in ("month1", "month2"):
        g = result.routing.get(month) or {}
        if not g:
            continue
        lines.append(f"{TAG} routing {month}: threshold {_num(g.get('threshold'))}, auto-approved "
                     f"{g.get('auto_approved')}/{g.get('answers')} (coverage {_num(g.get('coverage'))}), their error "
                     f"{_num(g.get('auto_error'))} {g.get('auto_error_ci')} vs target {g.get('target_error')}; "
                     f"sampled {_num(g.get('sampled_share'))} of auto-approved (rate {g.get('sample_rate')}); "
                     f"mandatory rules routed {_num(g.get('mandatory_routed'))}; tiers {g.get('tiers')}")
    for month in ("month1", "month2"):
        m = result.monitor.get(month) or {}
        q = m.get("quality") or {}
        lines.append(f"{TAG} monitor {month} ({m.get('n_current')} requests vs {m.get('reference')}, "
                     f"{m.get('embedder')}): drift alarms {m.get('drift_alarms')}; quality alarm {q.get('alarm')} "
                     f"({q.get('chart') or 'no chart'} over {q.get('reviewed_sampled')} "
                     f"sampled answers; tiers {q.get('tiers')}; sampled error per field {q.get('fields')}); "
                     f"whole-traffic error per field vs the window before {_rises(q.get('traffic') or {})}")
    r = result.retrain
    if r:
        checks = ", ".join(f"{c['name']} {'pass' if c['passed'] else 'FAIL'}" for c in r["checks"])
        lines.append(f"{TAG} retrain gate ({'PASSED' if r['passed'] else 'REFUSED'}): {checks}")
    if result.rollout:
        lines.append(f"{TAG} rollout: {result.rollout}")
    lines.append(f"{TAG} champion {result.champion[:12]} → "
                 f"{'challenger ' + str(result.challenger)[:12] + ' promoted' if result.promoted else 'not replaced'}; "
                 f"took {result.seconds.get('total', 0) / 60:.1f} min ({result.seconds})")
    lines += [f"{TAG} note: {n}" for n in result.notes]
    return lines


def _rises(traffic: dict[str, Any]) -> str:
    """``next_action 0.267 -> 0.299 (+0.032, p 0.16)`` per field; ``-`` where not tested."""
    parts = []
    for name, f in traffic.items():
        if f.get("rise") is None:
            parts.append(f"{name} {_num(f.get('current'))} (no earlier window)")
        else:
            parts.append(f"{name} {_num(f.get('previous'))} -> {_num(f.get('current'))} ({f['rise']:+.3f}, "
                         f"p {_num(f.get('p_value'), '.2g')}{', ALARM' if f.get('alarm') else ''})")
    return "; ".join(parts) or "-"
