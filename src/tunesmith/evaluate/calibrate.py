"""Calibration at eval: the fine-tuned version's confidence made to mean something.

1. The fine-tuned rung answers up to ``review.calibration_examples`` validation examples (a
   seeded sample; the test split stays untouched), with the same strategy, grammar and
   generation settings as its eval answers.
2. Each answer's label fields are scored (:mod:`tunesmith.review.confidence`); answers with
   every field parsed and a reference among the allowed values are used.
3. :func:`tunesmith.review.calibration.fit_calibration`: a temperature per field (even
   positions) and the Learn-then-Test auto-approval threshold (odd positions).
4. The fitted calibration is checked on the test answers the rung already gave: ECE before and
   after scaling, reliability bins, the risk-coverage curve, and the coverage and error the
   threshold achieves there.

The result is the ``calibration`` section of results.json; ``calibration.json`` (the
:class:`~tunesmith.review.calibration.Calibration`) is written next to it for the server.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tunesmith.config import Config, OutputSpec
from tunesmith.data.example import Example
from tunesmith.errors import TunesmithError
from tunesmith.review import calibration as cal
from tunesmith.review.answers import allowed, answer_fields, field_names
from tunesmith.review.confidence import AnswerScores, ScoringCost, score_answers
from tunesmith.review.live import reviews_answers

LogFn = Callable[[dict[str, Any]], None]


def _rows(scores: Sequence[AnswerScores], refs: Sequence[dict[str, str | None] | None], names: list[str],
          values: dict[str, list[str]]) -> tuple[dict[str, cal.FieldScores], int]:
    """Per field: logits in allowed-value order, chosen and reference indices, over the answers
    usable for calibration (every field parsed, allowed, scored; the reference known)."""
    keep = []
    for i, (s, ref) in enumerate(zip(scores, refs, strict=True)):
        if s.values is None or ref is None:
            continue
        if all(s.values.get(n) in values[n] and ref.get(n) in values[n] and len(s.logliks.get(n, {})) == len(values[n])
               for n in names):
            keep.append(i)
    out = {}
    for n in names:
        vals = values[n]
        logits = np.array([[scores[i].logliks[n][v] for v in vals] for i in keep], dtype=np.float64).reshape(-1, len(vals))
        chosen = np.array([vals.index(scores[i].values[n]) for i in keep], dtype=np.int64)  # type: ignore[index]
        reference = np.array([vals.index(refs[i][n]) for i in keep], dtype=np.int64)  # type: ignore[index]
        out[n] = cal.FieldScores(logits, chosen, reference)
    return out, len(keep)


def _bins(bins: list[cal.ReliabilityBin]) -> list[dict[str, Any]]:
    return [{"low": round(b.low, 6), "high": round(b.high, 6), "count": b.count,
             "confidence": None if b.confidence is None else round(b.confidence, 6),
             "accuracy": None if b.accuracy is None else round(b.accuracy, 6)} for b in bins]


def check_on(fields: dict[str, cal.FieldScores], fitted: cal.Calibration) -> dict[str, Any] | None:
    """The fitted calibration measured on held-out answers (the test split's)."""
    if not fields or len(next(iter(fields.values())).chosen) == 0:
        return None
    raw, scaled, right, per_answer = [], [], [], []
    for name, f in fields.items():
        t = fitted.temperatures.get(name, 1.0)
        raw.append(cal.chosen_confidence(f.logits, f.chosen))
        scaled.append(cal.chosen_confidence(f.logits, f.chosen, t))
        right.append(f.chosen == f.reference)
        per_answer.append(scaled[-1])
    conf_raw, conf_scaled, correct = np.concatenate(raw), np.concatenate(scaled), np.concatenate(right)
    answer_conf, answer_right = np.min(per_answer, axis=0), np.all(right, axis=0)
    rc = cal.risk_coverage(answer_conf, answer_right)
    t = fitted.threshold.threshold
    kept = answer_conf >= t if t is not None else np.zeros(len(answer_conf), dtype=bool)
    return {
        "answers": len(answer_conf),
        "ece_before": round(cal.expected_calibration_error(conf_raw, correct), 6),
        "ece_after": round(cal.expected_calibration_error(conf_scaled, correct), 6),
        "reliability_before": _bins(cal.reliability(conf_raw, correct)),
        "reliability_after": _bins(cal.reliability(conf_scaled, correct)),
        "risk_coverage": {"threshold": [round(float(x), 6) for x in rc.threshold],
                          "coverage": [round(float(x), 6) for x in rc.coverage],
                          "risk": [round(float(x), 6) for x in rc.risk], "aurc": round(rc.area(), 6)},
        "auto_coverage": round(float(kept.mean()), 6),
        "auto_error": round(float((~answer_right[kept]).mean()), 6) if kept.any() else None,
    }


def validation_sample(examples: list[Example], k: int, seed: int) -> list[Example]:
    """``k`` validation examples with an answer, a seeded sample in file order."""
    answered = [ex for ex in examples if ex.answer_text().strip()]
    if len(answered) <= k:
        return answered
    keep = set(random.Random(seed).sample(range(len(answered)), k))
    return [ex for i, ex in enumerate(answered) if i in keep]


@dataclass
class Calibrated:
    """What :func:`calibrate` gives: the ``calibration`` section of results.json, the fitted
    calibration (None when none could be fitted: the section's ``note`` says why), and each
    test answer's calibrated confidence (its lowest field's; 0 when it did not parse)."""

    section: dict[str, Any]
    fitted: cal.Calibration | None = None
    test_confidence: list[float] = field(default_factory=list)


Answer = Callable[[list[Example], ScoringCost], tuple[list[list[int]], list[Any], list[AnswerScores]]]


@dataclass
class TestAnswers:
    """The rung's test answers: prompt ids, texts and cases; ``scores`` when they were scored
    as they were generated (:func:`~tunesmith.review.confidence.generate_scored`)."""

    prompts: list[list[int]]
    answers: list[str]
    cases: list[Example]
    scores: list[AnswerScores] | None = None


def calibrate(cfg: Config, engine: Any, spec: OutputSpec, validation: list[Example], *, rung: str,
              answer: Answer, test: TestAnswers | None, adapter: str | None,
              log: LogFn | None = None) -> Calibrated:
    """Fit and check the calibration of ``rung``'s answers.

    Args:
        validation: the snapshot's validation split (sampled here).
        answer: (examples, cost) -> (prompt token ids, generations, their scores) with the
            rung's settings.
        test: the rung's test answers, or None.
        adapter: the engine adapter of the rung.
    """
    log = log or (lambda e: None)
    section: dict[str, Any] = {"rung": rung, "split": "validation"}
    if not reviews_answers(spec):
        return Calibrated({**section, "note": "free-text answers: no label fields to calibrate"})
    names = [n for n in field_names(spec) if allowed(spec, n)]
    values = {n: allowed(spec, n) for n in names}
    sample = validation_sample(validation, cfg.review.calibration_examples, cfg.seed)
    section["examples"] = len(sample)
    if len(sample) < 4:
        return Calibrated({**section, "note": f"{len(sample)} validation examples with answers (at least 4 needed); "
                                   "set review.calibration_examples or add validation data"})
    t0 = time.perf_counter()
    log({"event": "calibration_start", "examples": len(sample)})
    cost = ScoringCost()
    _, _, scores = answer(sample, cost)
    refs = [answer_fields(spec, ex.answer_text()) for ex in sample]
    fields, used = _rows(scores, refs, names, values)
    section["used"] = used
    try:
        fitted = cal.fit_calibration(fields, target_error=cfg.review.target_error, delta=cfg.review.delta)
    except TunesmithError as exc:
        return Calibrated({**section, "note": str(exc)})
    section |= {"temperatures": {k: round(v, 6) for k, v in fitted.temperatures.items()},
                "threshold": fitted.threshold.to_dict(),
                "ece_before": round(fitted.ece_before, 6) if fitted.ece_before is not None else None,
                "ece_after": round(fitted.ece_after, 6) if fitted.ece_after is not None else None}
    test_confidence: list[float] = []
    if test is not None:
        t_scores = test.scores
        if t_scores is None:
            t_scores = score_answers(engine, spec, test.prompts, test.answers, adapter=adapter, cost=cost)
        t_fields, _ = _rows(t_scores, [answer_fields(spec, c.answer_text()) for c in test.cases], names, values)
        section["test"] = check_on(t_fields, fitted)
        test_confidence = [round(s.confidences(fitted.temperatures)[1] or 0.0, 6) for s in t_scores]
    section["ms_per_answer"] = round(cost.ms_per_answer, 3)
    log({"event": "calibration_done", "seconds": round(time.perf_counter() - t0, 1), "used": used,
         "temperatures": section["temperatures"], "threshold": fitted.threshold.threshold})
    return Calibrated(section, fitted, test_confidence)
