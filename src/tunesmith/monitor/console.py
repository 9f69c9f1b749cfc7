"""The monitor's terminal summary (rich): one table of checks, the quality line, the alarms."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tunesmith.monitor.runner import FieldRise, MonitorReport


def _num(v: float | None, fmt: str = ".3g") -> str:
    return "-" if v is None else format(v, fmt)


def print_report(report: MonitorReport, console: Console) -> None:
    console.print(f"current: {escape(report.current)} · {report.n_current} requests", highlight=False)
    console.print(f"reference: {escape(report.reference)} · {report.n_reference}", highlight=False)
    console.print(f"embedder: {escape(report.embedder)} ({escape(report.embedder_why)}) · alpha {report.alpha} "
                  f"per run, {report.alpha_per_check:.2g} per check", highlight=False)
    table = Table("check", "test", "p-value", "effect (min)", "verdict")
    table.columns[0].no_wrap = True
    skipped = []
    for f in report.findings:
        if f.p_value is None:
            skipped.append(f"{f.check} not run: {f.note}")
            table.add_row(f.check, f.test, "-", "-", "[dim]not run[/]")
            continue
        verdict = "[bold red]ALARM[/]" if f.alarm else "[green]ok[/]"
        table.add_row(f.check, f.test, _num(f.p_value), f"{f.effect_name} {_num(f.effect, '.3f')} "
                      f"({_num(f.min_effect, '.2f')})", verdict)
    console.print(table)
    for line in skipped:
        console.print(f"[dim]{escape(line)}[/]", highlight=False)
    for note in report.notes:
        console.print(f"[dim]{escape(note)}[/]")
    q = report.quality
    if q is not None:
        s = q.tiers["sampled"]
        rate = ("too few reviewed" if s.rate is None else f"{s.rate:.3f} (95% CI {s.low:.3f}-{s.high:.3f})")
        low = q.tiers["low_confidence"]
        low_rate = "-" if low.rate is None else f"{low.rate:.3f}"
        console.print(f"quality: sampled tier {s.n} reviewed, error rate {rate}; low-confidence tier {low.n} "
                      f"reviewed, {low_rate} (reported apart: chosen for risk). {escape(q.chart_text)}" + (" [bold red]ALARM[/]" if q.alarm else "")
                      + (f" [dim]{escape(q.note)}[/]" if q.note else ""), highlight=False)
        if q.fields:
            console.print("quality per field (sampled tier): " + "; ".join(
                f"{escape(name)} {'-' if r.rate is None else f'{r.rate:.3f}'} ({r.errors}/{r.n})"
                for name, r in q.fields.items()), highlight=False)
        if q.traffic:
            console.print(f"quality per field, whole traffic (every tier's reviews weighted by its share), "
                          f"{escape(q.current)} vs {escape(q.previous or 'no earlier window')}: "
                          + "; ".join(_rise(name, f) for name, f in q.traffic.items()), highlight=False)
    for a in report.alarms:
        state = "recorded" if a.new else "already recorded"
        console.print(f"[bold red]alarm #{a.seq}[/] {a.kind} ({', '.join(a.checks)}) {state} as a retrain trigger",
                      highlight=False)
    if not report.alarm:
        console.print("[green]no alarm[/]")


def _rise(name: str, f: FieldRise) -> str:
    now = "-" if f.current.rate is None else f"{f.current.rate:.3f}"
    if f.previous is None or f.previous.rate is None or f.rise is None:
        return f"{escape(name)} {now} [dim]({escape(f.note or 'not tested')})[/]"
    p = "-" if f.p_value is None else f"{f.p_value:.3g}"
    return (f"{escape(name)} {f.previous.rate:.3f} -> {now} ({f.rise:+.3f}, p {p})"
            + (" [bold red]ALARM[/]" if f.alarm else ""))
