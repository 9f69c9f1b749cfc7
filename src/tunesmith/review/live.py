"""Confidence and routing for answers as they are given: what the server and batch prediction
attach to every answer of a project whose output spec has label fields (or a label answer).

For one request's answers: score them (:mod:`tunesmith.review.confidence`), calibrate each
field with the answering version's fitted temperature, and route the answer
(:func:`tunesmith.review.routing.decide`) with ``review:`` and the version's fitted threshold
(``review.threshold`` wins). The calibration of a version is the one its latest eval fitted
(``calibration.json`` in the eval artifact, see :mod:`tunesmith.evaluate.calibrate`); a version
never evaluated is uncalibrated (temperature 1) and, without ``review.threshold``, has no
threshold: nothing goes to review for low confidence, only by rule and by sample. A version whose
calibration certified no threshold auto-approves nothing: every answer is ``low_confidence``.

The client sees the result in an extension field of each choice (:meth:`Reviewed.extension`);
the request log records ``confidence`` and ``decision`` so ``tunesmith review enqueue`` queues
what needs a person.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tunesmith.config import OutputSpec, ReviewConfig
from tunesmith.review.answers import answer_kind
from tunesmith.review.calibration import Calibration
from tunesmith.review.confidence import AnswerScores, ScoringCost, brief, score_answers
from tunesmith.review.routing import Decision, RoutingPolicy, decide

if TYPE_CHECKING:
    from tunesmith.generate.engine import Engine
    from tunesmith.generate.logprobs import TokenLogprob
    from tunesmith.workspace import Workspace

log = logging.getLogger(__name__)

CALIBRATION_FILE = "calibration.json"
EXTENSION = "tunesmith"  # the key of the extension field in each choice / output row
CalibrationLookup = Callable[[str], Calibration | None]  # model version id -> its calibration


@dataclass(frozen=True)
class Reviewed:
    """One answer's confidence and routing decision."""

    fields: dict[str, dict[str, Any]]  # field -> {"value", "confidence"}
    confidence: float | None
    decision: Decision
    calibrated: bool  # the version's fitted temperatures were applied

    def extension(self) -> dict[str, Any]:
        """The client's view: ``choices[i].tunesmith`` (and batch prediction's ``tunesmith``)."""
        return {"confidence": None if self.confidence is None else round(self.confidence, 6),
                "fields": self.fields, "decision": self.decision.tier, "reasons": [self.decision.reason],
                "threshold": self.decision.threshold, "calibrated": self.calibrated}

    def field_confidence(self) -> dict[str, float | None]:
        """The request log's ``confidence`` column: field -> calibrated confidence."""
        return {name: f["confidence"] for name, f in self.fields.items()}


def reviews_answers(spec: OutputSpec) -> bool:
    """Whether answers of this spec get a confidence and a decision: label answers, or JSON
    answers with label fields."""
    return answer_kind(spec) in ("json", "label")


class AnswerReviewer:
    """Scores, calibrates and routes answers over one engine.

    Args:
        engine: the engine that generated the answers (its adapters are the versions).
        spec: the resolved output spec (allowed values per field).
        review: the project's ``review:`` settings (rules, sample rate, fixed threshold).
        calibrations: version id -> its stored calibration (None: uncalibrated).
        keep: finished answers whose keys/values the engine keeps for the scorer (default: one
            batch, ``engine.max_batch_size``), so a served answer's prompt is not run a second
            time to score it (:class:`~tunesmith.generate.kv.FinishedRows`).
    """

    def __init__(self, engine: Engine, spec: OutputSpec, review: ReviewConfig,
                 calibrations: CalibrationLookup | None = None, *, keep: int | None = None):
        self.engine, self.spec, self.review = engine, spec, review
        if reviews_answers(spec):
            engine.finished.capacity = max(engine.finished.capacity,
                                           engine.max_batch_size if keep is None else keep)
        self.calibrations = calibrations or (lambda version: None)
        self.cost = ScoringCost()  # accumulated over every call (ms per answer on /metrics-style figures)

    def policy(self, calibration: Calibration | None) -> RoutingPolicy:
        fitted = calibration.threshold.threshold if calibration is not None else None
        return RoutingPolicy.from_config(self.review, fitted, uncertified=calibration is not None)

    def review_answers(self, request_id: str, prompt_ids: list[int], answers: Sequence[str], *,
                       adapter: str | None, version: str | None,
                       logprobs: Sequence[Sequence[TokenLogprob] | None] | None = None) -> list[Reviewed]:
        """Each answer's :class:`Reviewed` (answers to one prompt: ``n`` choices of a request)."""
        scores = score_answers(self.engine, self.spec, [prompt_ids] * len(answers), list(answers), adapter=adapter,
                               logprobs=logprobs, cost=self.cost)
        calibration = self.calibrations(version) if version else None
        return [self.route(request_id, s, calibration) for s in scores]

    def route(self, request_id: str, scores: AnswerScores, calibration: Calibration | None) -> Reviewed:
        temperatures = calibration.temperatures if calibration is not None else None
        _, overall = scores.confidences(temperatures)
        decision = decide(request_id, scores.values, overall, self.policy(calibration))
        return Reviewed(brief(scores, temperatures), overall, decision, bool(temperatures))


# ----------------------------------------------------------------------------- stored calibrations
def version_calibration(ws: Workspace, version_id: str) -> Calibration | None:
    """The calibration the latest eval of ``version_id`` fitted, or None."""
    for art in reversed(ws.list("eval")):
        if art.meta.get("model") != version_id:
            continue
        path = art.path / CALIBRATION_FILE
        if path.exists():
            try:
                return Calibration.from_dict(json.loads(path.read_text(encoding="utf-8")))
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("%s is unreadable (%s); version %s serves uncalibrated", path, exc, version_id)
                return None
    return None


def workspace_calibrations(ws: Workspace, *, ttl: float = 60.0) -> CalibrationLookup:
    """:func:`version_calibration` read at most once per ``ttl`` seconds per version, so an
    eval run while the server is up takes effect within a minute."""
    cache: dict[str, tuple[float, Calibration | None]] = {}
    lock = threading.Lock()

    def lookup(version_id: str) -> Calibration | None:
        with lock:
            hit = cache.get(version_id)
            if hit is not None and time.monotonic() - hit[0] < ttl:
                return hit[1]
        found = version_calibration(ws, version_id)
        with lock:
            cache[version_id] = (time.monotonic(), found)
        return found

    return lookup


def answer_reviewer(cfg: Any, ws: Workspace, engine: Engine) -> AnswerReviewer | None:
    """The reviewer of a project's answers (the output spec frozen in its eval pack, the
    ``review:`` settings, each version's stored calibration); None when its answers have no
    label fields (free text is not routed)."""
    from tunesmith.review.project import resolved_spec

    spec = resolved_spec(cfg, ws)
    if spec is cfg.eval.output and (snapshot := ws.latest("snapshot")) is not None:
        from tunesmith.data.pipeline import load_split
        from tunesmith.errors import TunesmithError
        from tunesmith.evaluate.outputs import resolve_output

        try:  # no eval pack yet: the label set from the training answers, as eval would resolve it
            spec = resolve_output(spec, load_split(snapshot.path, "train"))
        except TunesmithError as exc:
            log.warning("answers get no confidence: %s", exc)
            return None
    if not reviews_answers(spec):
        return None
    return AnswerReviewer(engine, spec, cfg.review, workspace_calibrations(ws))
