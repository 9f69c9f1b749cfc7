"""Eval fits the fine-tuned version's confidence calibration on validation answers, checks it on
the test answers, stores it with the eval (results.json's ``calibration``, calibration.json),
and the report shows the reliability diagram and the risk-coverage curve (inline SVG)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from evaluate.test_runner import project
from tunesmith.evaluate.calibration_report import (
    calibration_rows,
    reliability_svg,
    risk_coverage_svg,
)
from tunesmith.evaluate.results import CalibrationResult

EVAL = ("{max_cases: 6, rungs: [zero_shot, finetuned], generation: {max_new_tokens: 6}, "
        "bootstrap_resamples: 100, output: {kind: label, labels: [billing, shipping, account]}}")


@pytest.mark.slow
def test_eval_fits_stores_and_reports_the_calibration(tmp_path):
    from tunesmith.evaluate.runner import evaluate
    from tunesmith.review.calibration import Calibration
    from tunesmith.review.live import CALIBRATION_FILE, version_calibration
    from tunesmith.train.recipe import train
    from tunesmith.workspace import Workspace

    cfg = project(tmp_path, EVAL)
    version = train(cfg).model_id
    events = []
    res = evaluate(cfg, log=events.append)
    c = res.results.calibration
    assert c is not None and c.rung == "finetuned" and c.split == "validation"
    assert c.examples >= 4 and 0 < c.used <= c.examples, c
    assert set(c.temperatures) == {"label"} and 0.05 <= c.temperatures["label"] <= 20
    assert c.threshold["method"].startswith("learn-then-test") and c.ms_per_answer > 0
    assert c.test is not None and c.test.answers <= 6 and len(c.test.reliability_after) == 15
    assert sum(b.count for b in c.test.reliability_before) == c.test.answers
    assert 0 <= c.test.ece_before <= 1 and 0 <= c.test.ece_after <= 1
    rc = c.test.risk_coverage
    assert rc.coverage[-1] == 1.0 and len(rc.coverage) == len(rc.risk) == len(rc.threshold)
    assert any(e["event"] == "calibration_done" for e in events)
    conf = res.results.ladder["finetuned"].confidence  # per test case, calibrated (0: did not parse)
    assert len(conf) == 6 and all(0 <= x <= 1 for x in conf) and sum(x > 0 for x in conf) == c.test.answers
    # stored with the eval, found for the version, as the server reads it
    stored = json.loads((res.path / CALIBRATION_FILE).read_text())
    assert stored["temperatures"] == c.temperatures and stored["threshold"] == c.threshold
    found = version_calibration(Workspace(cfg.workspace_dir), version)
    assert isinstance(found, Calibration) and found.temperatures == c.temperatures
    assert found.threshold.threshold == c.threshold["threshold"]
    page = (res.path / "report.html").read_text()
    assert "<h2>Confidence calibration</h2>" in page and page.count("<svg") == 2
    assert "Confidence calibration" in (res.path / "report.md").read_text()


def test_calibration_section_round_trips_and_renders():
    from tunesmith.evaluate.calibrate import check_on
    from tunesmith.review import calibration as cal

    rng = np.random.default_rng(0)
    n, k = 400, 4
    logits = rng.normal(size=(n, k)) * 3
    truth = np.array([rng.choice(k, p=cal.softmax(row[None], 3.0)[0]) for row in logits])
    fields = {"category": cal.FieldScores(logits, logits.argmax(1), truth)}
    fitted = cal.fit_calibration(fields, target_error=0.2)
    test = check_on(fields, fitted)
    section = CalibrationResult.model_validate({"rung": "finetuned", "examples": n, "used": n,
                                                "temperatures": fitted.temperatures,
                                                "threshold": fitted.threshold.to_dict(), "test": test})
    assert section.test.ece_after < section.test.ece_before  # overconfident by 3: scaling helps
    assert abs(fitted.temperatures["category"] - 3.0) < 0.6
    rows = dict((r[0], r[1]) for r in calibration_rows(section))
    assert "→" in rows["ECE (15 bins), test answers: before → after"]
    svg = reliability_svg(section.test.reliability_before, section.test.reliability_after)
    assert svg.startswith("<svg") and svg.count("<circle") >= 4
    rc = section.test.risk_coverage
    assert "<path" in risk_coverage_svg(rc.coverage, rc.risk, section.test.auto_coverage)
    assert CalibrationResult.model_validate(section.to_dict()).to_dict() == section.to_dict()
