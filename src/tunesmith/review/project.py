"""The review stage over a project's config and workspace: what ``tunesmith review`` calls.

Each function opens the project's workspace, does one thing with the queue and returns a typed
record; the CLI only parses and prints.
"""

from __future__ import annotations

from pathlib import Path

from tunesmith.config import Config, OutputSpec
from tunesmith.review.export import ExportResult, export_reviewed, pack_hashes
from tunesmith.review.queue import (
    Agreement,
    EnqueueReport,
    LoggedAnswer,
    ReviewDecision,
    ReviewQueue,
    agreement,
    enqueue_from_request_log,
    logged_answers,
)
from tunesmith.review.routing import Decision, RoutingPolicy
from tunesmith.workspace import Workspace


def workspace(cfg: Config) -> Workspace:
    return Workspace(cfg.workspace_dir)


def queue(cfg: Config) -> ReviewQueue:
    return ReviewQueue(workspace(cfg).db_path)


def resolved_spec(cfg: Config, ws: Workspace | None = None) -> OutputSpec:
    """The output spec answers are read with: the one frozen in the pinned eval pack (label set
    resolved from the training data), else in the newest pack, else ``eval.output`` as
    configured (allowed values from its schema's enums only)."""
    from tunesmith.evaluate.pack import PACK_KIND, load_pack

    ws = ws or workspace(cfg)
    pack_id = cfg.eval.pack or (latest.id if (latest := ws.latest(PACK_KIND)) else None)
    if pack_id:
        output = load_pack(ws, pack_id).settings.get("output")
        if output:
            return OutputSpec.model_validate(output)
    return cfg.eval.output


def enqueue(cfg: Config, *, since: float | None = None, until: float | None = None,
            fitted_threshold: float | None = None) -> EnqueueReport:
    """Queue the request log's answers that need a person (see
    :func:`~tunesmith.review.queue.enqueue_from_request_log`); answers logged without a
    decision are routed with ``review:`` and ``fitted_threshold``, by default the threshold
    the answering version's eval fitted (``review.threshold`` wins)."""
    from tunesmith.review.answers import answer_fields, field_names
    from tunesmith.review.live import workspace_calibrations
    from tunesmith.review.routing import decide as route_answer

    ws = workspace(cfg)
    spec = resolved_spec(cfg, ws)
    calibrations = workspace_calibrations(ws)
    names = field_names(spec)

    def route(a: LoggedAnswer) -> Decision:
        threshold, calibrated = fitted_threshold, fitted_threshold is not None
        if threshold is None and a.version and (found := calibrations(a.version)) is not None:
            threshold, calibrated = found.threshold.threshold, True
        known = [c for n, c in (a.confidence or {}).items() if n in names and c is not None]
        return route_answer(a.request_id, answer_fields(spec, a.answer), min(known) if known else None,
                            RoutingPolicy.from_config(cfg.review, threshold, uncertified=calibrated))

    return enqueue_from_request_log(ReviewQueue(ws.db_path), spec,
                                    logged_answers(ws.db_path, since=since, until=until), route=route)


def decide(cfg: Config, ref: str, action: str, *, by: str | None = None, changes: dict[str, str] | None = None,
           reason: str | None = None, revise: bool = False, expect_decisions: int | None = None) -> ReviewDecision:
    """One decision, checked against ``review.reason_codes`` (``expect_decisions``: see
    :meth:`ReviewQueue.decide`)."""
    return queue(cfg).decide(ref, action, by=by, changes=changes, reason=reason,
                             reason_codes=cfg.review.reason_codes, revise=revise, expect_decisions=expect_decisions)


def export(cfg: Config, *, drop_overlap: bool = False, out: Path | None = None) -> ExportResult:
    """Export against the frozen eval pack (``eval.pack``, else every pack in the workspace)."""
    ws = workspace(cfg)
    return export_reviewed(ws, packs=pack_hashes(ws, cfg.eval.pack), drop_overlap=drop_overlap,
                           out=out)


def reviewer_agreement(cfg: Config) -> Agreement:
    return agreement(queue(cfg).items(status="decided"))
