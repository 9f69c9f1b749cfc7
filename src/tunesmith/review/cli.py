"""``tunesmith review``: the review queue from the command line (a thin typer shell over
:mod:`tunesmith.review.project`).

It uses the main CLI's helpers (error handling, ``--json``, the console) and is registered on
the main app at the end of ``tunesmith.cli``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

# defined before the main CLI is imported: whichever of the two modules is imported first, the
# main CLI's registration finds it (its commands are added below, before typer builds the app)
review_app = typer.Typer(
    help="The human review queue: list, show, approve, correct, reject, export (and enqueue, agreement).",
    no_args_is_help=True,
)

from tunesmith.cli import JsonOpt, MaybeConfigOpt, _emit_json, _user_errors, load_config, out  # noqa: E402
from tunesmith.config import CONFIG_FILENAME  # noqa: E402
from tunesmith.errors import TunesmithError  # noqa: E402

ItemArg = Annotated[str, typer.Argument(metavar="ITEM", help="Item number, or the request id.")]
ByOpt = Annotated[str | None, typer.Option("--by", help="Reviewer name; default the OS user.")]
ReviseOpt = Annotated[bool, typer.Option(
    "--revise", help="Replace your own earlier decision on this item (both stay in the audit trail).")]


def _cfg(config: Path | None) -> Any:
    return load_config(config or Path(CONFIG_FILENAME))


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def _user_turn(item: Any) -> str:
    users = [m["content"] for m in item.input if m.get("role") == "user"]
    return users[-1] if users else ""


@review_app.command("list")
@_user_errors
def review_list(
    config: MaybeConfigOpt = None,
    status: Annotated[str, typer.Option(help="pending, decided or all.")] = "pending",
    tier: Annotated[str | None, typer.Option(help="Only this tier: mandatory, low_confidence, sampled.")] = None,
    not_by: Annotated[str | None, typer.Option(
        "--not-by", help="Only items this reviewer has not decided (a second reviewer's list).")] = None,
    limit: Annotated[int | None, typer.Option(help="Show at most this many.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Queued items, oldest first (default: the pending ones)."""
    from tunesmith.review import project

    items = project.queue(_cfg(config)).items(status=status, tier=tier, not_by=not_by, limit=limit)
    if as_json:
        _emit_json({"items": [it.to_dict() for it in items]})
        return
    if not items:
        out.print(f"no {status if status != 'all' else ''} review items".replace("  ", " "))
        return
    from rich import box

    table = Table(title=f"review queue ({status}); answer = {' / '.join(items[0].fields)}", box=box.SIMPLE_HEAD)
    for name in ("item", "tier", "conf", "answer", "input", "decided"):
        table.add_column(name, no_wrap=name in ("item", "tier", "conf"), overflow="fold")
    for it in items:
        table.add_row(str(it.item), it.tier, "-" if it.confidence is None else f"{it.confidence:.2f}",
                      escape(" / ".join(str(v.value) for v in it.fields.values())), escape(_user_turn(it)[:80]),
                      escape(", ".join(f"{d.action} ({d.by})" for d in it.decisions)) or "-")
    out.print(table)


@review_app.command("show")
@_user_errors
def review_show(item: ItemArg, config: MaybeConfigOpt = None, as_json: JsonOpt = False) -> None:
    """One item: input, answer fields (confidence, allowed values), tier, decisions."""
    from tunesmith.review import project

    it = project.queue(_cfg(config)).get(item)
    if as_json:
        _emit_json(it.to_dict())
        return
    out.print(f"[bold]item {it.item}[/] request {escape(it.request_id)}"
              + (f" (answer {it.choice})" if it.choice else "")
              + f", model {escape(str(it.model_version))}, queued {_when(it.queued)}", highlight=False)
    out.print(f"tier [bold]{it.tier}[/]: {escape(it.reason)}", highlight=False)
    for m in it.input:
        out.print(f"[dim]{m['role']}:[/] {escape(m['content'])}", highlight=False)
    out.print(f"[dim]answer:[/] {escape(it.answer)}", highlight=False)
    for name, f in it.fields.items():
        conf = "" if f.confidence is None else f" (confidence {f.confidence:.3f})"
        allowed = f"  allowed: {', '.join(f.allowed)}" if f.allowed else ""
        out.print(f"  {name} = [bold]{escape(str(f.value))}[/]{conf}{escape(allowed)}", highlight=False)
    if not it.decisions:
        out.print("no decision yet")
    for d in it.decisions:
        change = "; ".join(f"{k}: {a} → {b}" for k, (a, b) in d.changes.items())
        out.print(f"  {_when(d.at)} {d.action} by {escape(d.by)}" + (f": {escape(change)}" if change else "")
                  + (f" (reason: {escape(d.reason)})" if d.reason else ""), highlight=False)


def _print_decision(d: Any, as_json: bool) -> None:
    if as_json:
        _emit_json({"decision": d.id, "item": d.item, "by": d.by, "at": d.at, "action": d.action,
                    "changes": {k: {"from": a, "to": b} for k, (a, b) in d.changes.items()}, "reason": d.reason})
        return
    change = "; ".join(f"{k}: {a} → {b}" for k, (a, b) in d.changes.items())
    out.print(f"[green]{d.action}[/] item {d.item} by {escape(d.by)}" + (f": {escape(change)}" if change else "")
              + (f" (reason: {escape(d.reason)})" if d.reason else ""), highlight=False)


@review_app.command("approve")
@_user_errors
def review_approve(item: ItemArg, config: MaybeConfigOpt = None, by: ByOpt = None, revise: ReviseOpt = False,
                   as_json: JsonOpt = False) -> None:
    """The answer is right as it is."""
    from tunesmith.review import project

    _print_decision(project.decide(_cfg(config), item, "approve", by=by, revise=revise), as_json)


@review_app.command("correct")
@_user_errors
def review_correct(
    item: ItemArg,
    changes: Annotated[list[str], typer.Argument(
        metavar="FIELD=VALUE...", help="The right value of each wrong field (one of its allowed values).")],
    config: MaybeConfigOpt = None,
    by: ByOpt = None,
    reason: Annotated[str | None, typer.Option(help="A reason code (review.reason_codes).")] = None,
    revise: ReviseOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Correct the answer field by field: `tunesmith review correct 12 urgency=high next_action=escalate`."""
    from tunesmith.review import project

    values: dict[str, str] = {}
    for pair in changes:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise TunesmithError(f"{pair!r}: give each correction as FIELD=VALUE (e.g. urgency=high)")
        if name.strip() in values:
            raise TunesmithError(f"field {name.strip()!r} is corrected twice")
        values[name.strip()] = value.strip()
    _print_decision(project.decide(_cfg(config), item, "correct", by=by, changes=values, reason=reason,
                                   revise=revise), as_json)


@review_app.command("reject")
@_user_errors
def review_reject(
    item: ItemArg,
    config: MaybeConfigOpt = None,
    reason: Annotated[str | None, typer.Option(help="Why: a reason code (review.reason_codes); required.")] = None,
    by: ByOpt = None,
    revise: ReviseOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Neither the answer nor a correction belongs in training data (bad input, off topic...)."""
    from tunesmith.review import project

    _print_decision(project.decide(_cfg(config), item, "reject", by=by, reason=reason, revise=revise), as_json)


@review_app.command("export")
@_user_errors
def review_export(
    config: MaybeConfigOpt = None,
    out_file: Annotated[Path | None, typer.Option(
        "--out", help="Also write the dataset here (e.g. the path data.sources names); replaced each time.")] = None,
    drop_overlap: Annotated[bool, typer.Option(
        "--drop-overlap", help="Leave out (and report) items whose input is an eval-pack case instead of refusing.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Approved and corrected answers → a versioned dataset that `prepare` reads as a source."""
    from tunesmith.review import project

    res = project.export(_cfg(config), drop_overlap=drop_overlap, out=out_file)
    if as_json:
        _emit_json(res.to_dict())
        return
    verb = "wrote" if res.new else "unchanged since the last export:"
    out.print(f"[green]{verb}[/] review dataset {res.id}: {res.records} records ({res.approved} approved, "
              f"{res.corrected} corrected) → {escape(str(res.path))}", highlight=False, soft_wrap=True)
    out.print(f"left out: {res.rejected} rejected, {res.pending} pending, {len(res.overlap)} overlapping the eval "
              f"pack; checked against {', '.join(res.packs) or 'no eval pack (none built yet)'}", highlight=False)
    if res.copied_to is not None:
        out.print(f"copied to {escape(str(res.copied_to))}", highlight=False)


@review_app.command("enqueue")
@_user_errors
def review_enqueue(
    config: MaybeConfigOpt = None,
    since: Annotated[float | None, typer.Option(help="Only answers logged at or after this unix time.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Queue the request log's answers that need a person (their recorded decision, or routed now)."""
    from tunesmith.review import project

    rep = project.enqueue(_cfg(config), since=since)
    if as_json:
        _emit_json(rep.to_dict())
        return
    tiers = ", ".join(f"{k} {v}" for k, v in sorted(rep.tiers.items())) or "none"
    out.print(f"{rep.answers} logged answers: {rep.queued} queued now ({tiers}), {rep.already_queued} already "
              f"queued, {rep.auto} auto-approved, {rep.no_decision} without a decision, {rep.no_input} without "
              "logged input turns", highlight=False)


@review_app.command("agreement")
@_user_errors
def review_agreement(config: MaybeConfigOpt = None, as_json: JsonOpt = False) -> None:
    """How often two reviewers of the same item agree (per item, per field, Cohen's kappa)."""
    from tunesmith.review import project

    ag = project.reviewer_agreement(_cfg(config))
    if as_json:
        _emit_json(ag.to_dict())
        return
    if not ag.pairs:
        out.print("no item has two reviewers yet (`tunesmith review list --status decided --not-by NAME`)")
        return
    out.print(f"{ag.items} items with two or more reviewers ({ag.pairs} pairs): all fields agree on "
              f"{ag.item_agreement:.1%}, single fields on {ag.field_agreement:.1%}", highlight=False)
    for name, share in ag.per_field.items():
        k = ag.kappa[name]
        out.print(f"  {name}: {share:.1%} agree, Cohen's kappa {'n/a' if k is None else f'{k:.2f}'}",
                  highlight=False)
