"""``tunesmith retrain``: a thin typer shell over :func:`tunesmith.retrain.run.retrain`.

Registered on the main app at the end of ``tunesmith.cli`` (wrapped in its error handler there);
the main CLI's helpers are imported when the command runs, so either module may be imported
first."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from tunesmith.config import CONFIG_FILENAME


def _console() -> tuple[Any, Any]:
    from tunesmith.cli import err, out

    return out, err


def retrain_command(
    config: Annotated[Path, typer.Option("--config", "-c", help="Path to tunesmith.yaml (or its folder).")]
    = Path(CONFIG_FILENAME),
    add: Annotated[list[Path] | None, typer.Option(
        "--add", help="More labelled data (any ingestable file or folder) for this round; repeatable.")] = None,
    start: Annotated[str | None, typer.Option(
        help="base: a fresh adapter; champion: continue the champion's LoRA adapter (default retrain.start).")] = None,
    rollout: Annotated[str | None, typer.Option(
        help="shadow or canary: start the challenger's rollout once it is registered.")] = None,
    by: Annotated[str | None, typer.Option("--by", help="Who ran it (the alias ledger); default the OS user.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one machine-readable JSON summary on stdout.")]
    = False,
) -> None:
    """Retrain from the reviewed corrections: new snapshot, rehearsal mix, train, champion vs
    challenger on the frozen pack and the new slice, gate, register as challenger. Exit 1 when
    the gate refuses the challenger (it is kept, not registered)."""
    from tunesmith.cli import _emit_json, load_config
    from tunesmith.retrain.run import retrain

    cfg = load_config(config)
    say = (lambda e: None) if as_json else _progress
    result = retrain(cfg, add=list(add or []), start=start, rollout=rollout, by=by, log=say)
    if as_json:
        _emit_json(result.to_dict())
    else:
        _print(result)
    if not result.passed:
        raise typer.Exit(1)


def _progress(event: dict[str, Any]) -> None:
    err = _console()[1]
    kind = event.get("event")
    if kind == "retrain_start":
        trig = event["triggers"]
        err.print(f"retrain: champion {event['champion'][:12]}, frozen pack {event['frozen_pack']}; "
                  + (f"triggered by {len(trig)} alarm(s): {', '.join(trig)}" if trig else "no alarm recorded since "
                     "the champion took office (a retrain may run any time)"), highlight=False)
    elif kind == "data_ready":
        c = event["counts"]
        err.print(f"data: {c['new']} new + {c['correction']} corrections + {c['rehearsal']} rehearsed "
                  f"(ratio {event['rehearsal_ratio']['achieved']:.2f}); new slice {c['new_slice']} cases", highlight=False)
    elif kind == "compare_done":
        err.print(f"compared on the {event['kind']} pack: challenger − champion {event['diff']}", highlight=False)


def _pts(v: float | None) -> str:
    return "n/a" if v is None else f"{v * 100:+.1f}"


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v * 100:.1f}%"


def _print(r: Any) -> None:
    out = _console()[0]
    if r.triggers:
        out.print("triggered by: " + "; ".join(f"#{t.seq} {t.kind} ({', '.join(t.checks)})" for t in r.triggers),
                  highlight=False)
    else:
        out.print("triggered by: no recorded alarm", highlight=False)
    d = r.mix
    out.print(f"data: snapshot {d.snapshot} → mix {d.mix_snapshot}: {d.counts['new']} new, "
              f"{d.counts['correction']} corrections, {d.counts['rehearsal']} rehearsed from {d.previous_snapshot} "
              f"(ratio asked {d.ratio_asked}, achieved {d.ratio_achieved:.2f}); new slice {d.counts['new_slice']} cases; "
              f"left out: {d.excluded or 'nothing'}", highlight=False)
    out.print(f"trained from {r.start} → challenger {r.challenger[:12] if r.challenger else '-'} "
              f"(parent {r.champion[:12]})", highlight=False)
    table = Table(title="champion vs challenger (paired, 95% CI of the difference)")
    for col in ("pack", "metric", "champion", "challenger", "difference (pts)", "95% CI"):
        table.add_column(col)
    for cmp in (r.new_slice, r.frozen):
        rows = [(cmp.headline, cmp.diff, cmp.headline)] + [(f, c, cmp.metric_of(f)) for f, c in cmp.fields.items()
                                                           if cmp.metric_of(f) != cmp.headline]
        for name, c, m in rows:
            champ, chall = cmp.champion.mean(m), cmp.challenger.mean(m)
            table.add_row(f"{cmp.kind} ({cmp.cases})", name, _pct(champ), _pct(chall), _pts(c.diff),
                          f"[{_pts(c.low)}, {_pts(c.high)}]")
    out.print(table)
    for c in r.checks:
        mark = "[green]pass[/]" if c.passed else "[red]FAIL[/]"
        out.print(f"  {mark} {escape(c.name)}: {escape(c.detail)}", highlight=False, emoji=False)
    out.print(("[green]gate passed[/]: " if r.passed else "[red]gate refused[/]: ") + escape(r.registration),
              highlight=False)
    if r.rollout:
        out.print(f"rollout: {r.rollout.get('mode')} " + ("started" if r.rollout.get("started")
                                                          else f"not started ({r.rollout.get('why')})"),
                  highlight=False)
    for note in r.notes:
        out.print(f"note: {escape(note)}", highlight=False)
