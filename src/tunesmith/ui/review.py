"""The reviewers' workbench: one queued item at a time, decided with the keyboard.

``GET /review`` shows the first pending item (filters: ``?tier=``, ``?below=0.6`` for a confidence
ceiling, ``&field=urgency`` for one field's), or ``?item=N``; ``GET /review/mine`` is the
reviewer's own decisions and agreement with the others. The form posts to ``/review/{item}``:

    approve   the model's answer as it is
    save      approve when no field was changed, else correct with the changed fields
    reject    needs a reason code

The form carries how many decisions the item had when it was drawn; if another reviewer
decided it meanwhile the decision is refused (``StaleItem``), nothing is written, and the page
shows the newer decision. Every check of the CLI's ``review`` commands applies (values among
the allowed ones, configured reason codes), because it is the same function.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from tunesmith.errors import TunesmithError
from tunesmith.review import project as review_stage
from tunesmith.review.queue import ReviewItem, StaleItem, agreement
from tunesmith.review.routing import TIERS
from tunesmith.ui.project import Project

UPCOMING = 12  # pending items listed beside the one shown


def _user_turns(item: ReviewItem) -> list[dict[str, str]]:
    return [m for m in item.input if m.get("role") != "system"]


def _system(item: ReviewItem) -> str:
    return "\n".join(m.get("content") or "" for m in item.input if m.get("role") == "system")


@dataclass(frozen=True)
class Filters:
    """Which pending items the workbench walks through: a tier, and/or a confidence ceiling
    (the answer's, or one field's)."""

    tier: str | None = None
    field: str | None = None
    below: float | None = None

    @classmethod
    def parse(cls, tier: str | None, field: str | None, below: str | None) -> Filters:
        if tier and tier not in TIERS:
            raise TunesmithError(f"unknown tier {tier!r}; one of {', '.join(t for t in TIERS if t != 'auto')}")
        try:
            ceiling = float(below) if below not in (None, "") else None
        except ValueError:
            raise TunesmithError(f"the confidence filter must be a number within 0..1, got {below!r}") from None
        return cls(tier or None, field or None, ceiling)

    def query(self, **extra: Any) -> str:
        """The filters (and ``extra``) as a query string, for the links and the redirect."""
        pairs = {"tier": self.tier, "field": self.field, "below": self.below, **extra}
        return urlencode({k: v for k, v in pairs.items() if v not in (None, "")})

    def kwargs(self) -> dict[str, Any]:
        return {"tier": self.tier, "field": self.field, "below": self.below}


def workbench(p: Project, filters: Filters, *, item: int | None, reviewer: str) -> dict[str, Any]:
    """The item to show, its neighbours among the pending ones, the queue's counts."""
    f = filters.kwargs()
    current = p.queue.get(item) if item is not None else next(iter(p.queue.page(limit=1, **f)), None)
    upcoming = p.queue.page(after=current.item if current else None, limit=UPCOMING, **f)
    previous = p.queue.page(before=current.item, limit=1, **f) if current else []
    counts = p.queue.counts()
    names = list(current.fields) if current else []
    return {"item": current, "upcoming": upcoming, "next_item": upcoming[0].item if upcoming else None,
            "prev_item": previous[-1].item if previous else None, "filters": filters, "tier": filters.tier,
            "tiers": [t for t in TIERS if t != "auto"], "counts": counts, "field_names": names,
            "pending": sum(c["pending"] for c in counts.values()),
            "reason_codes": p.cfg.review.reason_codes,
            "mine": current.latest_by(reviewer) if current else None,
            "turns": _user_turns(current) if current else [], "system": _system(current) if current else ""}


def my_history(p: Project, reviewer: str) -> dict[str, Any]:
    """A reviewer's latest decisions and their agreement with the others on shared items."""
    return {"decisions": p.queue.history(reviewer, limit=100),
            "agreement": agreement(p.queue.shared_with_others(reviewer))}


def decision_from_form(item: ReviewItem, form: dict[str, str]) -> tuple[str, dict[str, str], str | None]:
    """(action, changed fields, reason) from the posted form; ``save`` becomes approve or correct."""
    action = form.get("action", "")
    if action not in ("approve", "save", "reject"):
        raise TunesmithError(f"unknown action {action!r}: approve, save or reject")
    reason = form.get("reason") or None
    if action != "save":
        return action, {}, reason
    changes = {name: form[f"f_{name}"] for name, f in item.fields.items()
               if form.get(f"f_{name}") not in (None, "") and form[f"f_{name}"] != f.value}
    return ("correct" if changes else "approve"), changes, reason


def install(app: FastAPI, p: Project, render: Callable[..., HTMLResponse], need: Callable[[Request], Any],
            need_form: Callable[[Request], Any]) -> None:
    @app.get("/review", response_class=HTMLResponse)
    def review_page(request: Request, tier: str | None = None, field: str | None = None, below: str | None = None,
                    item: int | None = None, saved: int | None = None, action: str | None = None) -> HTMLResponse:
        ctx = need(request)
        data = workbench(p, Filters.parse(tier, field, below), item=item, reviewer=ctx.session.user.name)
        return render(request, "review.html", {**data, "saved": saved, "saved_action": action, "error": None},
                      session=ctx.session, active="review")

    @app.get("/review/mine", response_class=HTMLResponse)
    def review_mine(request: Request) -> HTMLResponse:
        ctx = need(request)
        return render(request, "review_mine.html", my_history(p, ctx.session.user.name), session=ctx.session,
                      active="review")

    @app.post("/review/{item}", response_model=None)
    async def decide(request: Request, item: int) -> Response:
        checked = await need_form(request)
        if isinstance(checked, HTMLResponse):
            return checked
        ctx, form = checked
        reviewer = ctx.session.user.name
        filters = Filters.parse(form.get("tier"), form.get("field"), form.get("below"))
        try:
            current = p.queue.get(item)
            action, changes, reason = decision_from_form(current, form)
            seen = int(form.get("seen", "-1"))
            review_stage.decide(p.cfg, str(item), action, by=reviewer, changes=changes, reason=reason,
                                expect_decisions=seen if seen >= 0 else None)
        except (TunesmithError, ValueError) as exc:
            status = 409 if isinstance(exc, StaleItem) else 400
            data = workbench(p, filters, item=item, reviewer=reviewer)
            return render(request, "review.html", {**data, "saved": None, "saved_action": None, "error": str(exc)},
                          session=ctx.session, active="review", status=status)
        f = filters.kwargs()
        following = p.queue.page(after=item, limit=1, **f) or p.queue.page(limit=1, **f)
        query = filters.query(saved=item, action=action, item=following[0].item if following else None)
        return RedirectResponse(f"{ctx.base}/review?{query}", status_code=303)
