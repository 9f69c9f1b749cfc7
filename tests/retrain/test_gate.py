"""The retrain gate on constructed results: per-field non-inferiority (pass, a drop, too few
cases to tell), the new-slice lift, and paired differences from per-case scores."""

from __future__ import annotations

import pytest

from tunesmith.config import Config, OutputSpec
from tunesmith.evaluate.results import Comparison, Rung
from tunesmith.retrain.compare import paired
from tunesmith.retrain.gate import field_checks, new_slice_checks, non_inferiority, retrain_checks

SPEC = OutputSpec(kind="json", label_fields=["category", "urgency"])
CFG = Config.model_validate({"data": {"sources": [{"path": "x.jsonl"}]}, "eval": {"bootstrap_resamples": 2000}})


def cmp(diff, low, high, n=200):
    excludes = low is not None and (low > 0 or high < 0)
    return Comparison(diff=diff, low=low, high=high, n=n, excludes_zero=float(excludes))


@pytest.mark.parametrize(("c", "verdict"), [
    (cmp(0.0, -0.01, 0.01), "pass"),             # the whole CI above -2 pts
    (cmp(0.01, -0.019, 0.04), "pass"),
    (cmp(-0.05, -0.08, -0.02), "regression"),    # the estimate itself drops 5 pts
    (cmp(-0.021, -0.05, 0.01), "regression"),
    (cmp(0.0, -0.06, 0.06), "inconclusive"),     # no change measured, but a 6-pt drop not ruled out
    (cmp(-0.01, -0.03, 0.01), "inconclusive"),
    (cmp(None, None, None, n=0), "inconclusive"),  # nothing scored on both sides
    (cmp(-0.02, -0.02, -0.02), "inconclusive"),  # exactly at the margin is not above it
])
def test_non_inferiority_verdicts(c, verdict):
    assert non_inferiority(c, 0.02) == verdict


def test_field_checks_name_each_field_and_say_why():
    checks = field_checks({"category": cmp(0.0, -0.01, 0.01), "urgency": cmp(-0.05, -0.08, -0.02),
                           "action": cmp(0.0, -0.06, 0.06)}, 0.02)
    by = {c.name: c for c in checks}
    assert [c.passed for c in checks] == [True, False, False]
    assert by["field:urgency"].verdict == "regression" and "worse by 5.0 pts" in by["field:urgency"].detail
    assert by["field:action"].verdict == "inconclusive" and "cannot be ruled out" in by["field:action"].detail
    assert by["field:category"].threshold == -0.02 and by["field:category"].value == -0.01


def test_new_slice_needs_a_lift_and_a_ci_above_zero():
    won = new_slice_checks(cmp(0.3, 0.2, 0.4), min_lift=0.0, require_significant=True, metric="fields_exact")
    assert [c.passed for c in won] == [True, True]
    noisy = new_slice_checks(cmp(0.05, -0.02, 0.12), min_lift=0.0, require_significant=True, metric="m")
    assert [c.name for c in noisy if not c.passed] == ["new_slice_significant"]
    small = new_slice_checks(cmp(0.05, 0.01, 0.1), min_lift=0.1, require_significant=False, metric="m")
    assert [(c.name, c.passed) for c in small] == [("new_slice_lift", False)]


def test_retrain_checks_pass_only_when_every_part_does():
    good = {"category": cmp(0.0, -0.01, 0.01)}
    kw = {"metric": "m", "margin": 0.02, "min_lift": 0.0, "require_significant": True}
    assert all(c.passed for c in retrain_checks(frozen_fields=good, new_slice=cmp(0.3, 0.2, 0.4), **kw))
    bad_field = retrain_checks(frozen_fields={"category": cmp(-0.1, -0.15, -0.05)}, new_slice=cmp(0.3, 0.2, 0.4), **kw)
    assert [c.name for c in bad_field if not c.passed] == ["field:category"]
    invalid = retrain_checks(frozen_fields=good, new_slice=cmp(0.3, 0.2, 0.4), json_valid=0.8,
                             min_json_validity=0.95, **kw)
    assert [c.name for c in invalid if not c.passed] == ["json_validity"]


def _rung(category: list[int], urgency: list[int]) -> Rung:
    scores = [{"field/category": float(c), "field/urgency": float(u), "fields_exact": float(c and u)}
              for c, u in zip(category, urgency, strict=True)]
    return Rung(scores=scores, metrics={})


def test_paired_differences_from_per_case_scores_drive_the_verdicts():
    """400 cases: category unchanged (pass), urgency 40 answers worse (a 10-pt regression); on 20
    cases one flipped answer each way leaves the estimate at 0 with a CI far beyond 2 pts."""
    n = 400
    cat = [1] * 300 + [0] * 100
    champion = _rung(cat, [1] * n)
    challenger = _rung(cat, [1] * 360 + [0] * 40)
    out = paired(champion, challenger, SPEC, CFG, pack="p", kind="frozen")
    assert out.fields["category"].diff == 0 and out.fields["category"].low == 0
    assert out.fields["urgency"].diff == pytest.approx(-0.1)
    verdicts = {c.name: c.verdict for c in field_checks(out.fields, 0.02)}
    assert verdicts == {"field:category": "pass", "field:urgency": "regression"}

    few_champion = _rung([1] * 20, [1, 0] + [1] * 18)
    few_challenger = _rung([1] * 20, [0, 1] + [1] * 18)
    few = paired(few_champion, few_challenger, SPEC, CFG, pack="p", kind="frozen")
    assert few.fields["urgency"].diff == 0 and few.fields["urgency"].low < -0.02
    assert {c.name: c.verdict for c in field_checks(few.fields, 0.02)}["field:urgency"] == "inconclusive"
    assert few.diff.n == 20 and few.metric_of("urgency") == "field/urgency"
