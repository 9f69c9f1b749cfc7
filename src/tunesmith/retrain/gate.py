"""The retrain gate: the challenger must be better where the world changed and no worse where it
did not.

    new_slice_lift         challenger − champion on the new slice's headline ≥ retrain.min_new_slice_lift
    new_slice_significant  its paired 95% CI lies above 0 (with eval.gate.require_significant)
    field:<name>           per label field on the frozen pack: non-inferior, i.e. the lower end of
                           the paired 95% CI of (challenger − champion) > −retrain.max_field_drop
    json_validity          the challenger's answers on the frozen pack parse as JSON (eval.gate.min_json_validity)

Non-inferiority has three outcomes, and only one passes:
    pass           the whole CI lies above −margin: any drop is smaller than the margin
    regression     the point estimate itself is a drop beyond the margin
    inconclusive   the estimate is within the margin but the CI reaches below it: too few cases
                   (or too much disagreement) to rule out a drop beyond the margin
A point estimate of "no change" is not evidence of no change; the CI's lower end is.
"""

from __future__ import annotations

from typing import Literal

from tunesmith.evaluate.gate import TOLERANCE
from tunesmith.evaluate.results import Check, Comparison

Verdict = Literal["pass", "regression", "inconclusive"]


def non_inferiority(cmp: Comparison, margin: float) -> Verdict:
    """The verdict of one paired difference (challenger − champion) against ``−margin``."""
    if cmp.diff is None or cmp.low is None:
        return "inconclusive"  # no case scored this field on both sides
    if cmp.low > -margin + TOLERANCE:
        return "pass"
    if cmp.diff < -margin - TOLERANCE:
        return "regression"
    return "inconclusive"


def field_checks(fields: dict[str, Comparison], margin: float) -> list[Check]:
    """One check per label field of the frozen pack."""
    checks = []
    for name, cmp in fields.items():
        verdict = non_inferiority(cmp, margin)
        why = {"pass": "no drop beyond the margin",
               "regression": f"the challenger is worse by {abs(cmp.diff or 0) * 100:.1f} pts (beyond the margin)",
               "inconclusive": "the CI reaches below the margin: a drop beyond it cannot be ruled out "
                               "(more frozen-pack cases narrow it)"}[verdict]
        checks.append(Check(name=f"field:{name}", passed=verdict == "pass", value=cmp.low, threshold=-margin,
                            detail=f"{verdict}: challenger − champion {_pt(cmp.diff)} (95% CI {_pt(cmp.low)} to "
                                   f"{_pt(cmp.high)}, n={cmp.n}) on the frozen pack; {why}",
                            verdict=verdict))
    return checks


def new_slice_checks(cmp: Comparison, *, min_lift: float, require_significant: bool, metric: str) -> list[Check]:
    diff = cmp.diff
    checks = [Check(name="new_slice_lift", passed=diff is not None and diff >= min_lift - TOLERANCE, value=diff,
                    threshold=min_lift, detail=f"challenger − champion on {metric}, new-slice pack (n={cmp.n})")]
    if require_significant:
        checks.append(Check(name="new_slice_significant", passed=cmp.low is not None and cmp.low > 0,
                            value=cmp.low, threshold=0.0,
                            detail=f"95% CI of the difference [{_pt(cmp.low)}, {_pt(cmp.high)}] must be above 0"))
    return checks


def json_validity_check(value: float | None, minimum: float | None) -> list[Check]:
    if minimum is None or value is None:
        return []
    return [Check(name="json_validity", passed=value >= minimum, value=value, threshold=minimum,
                  detail="share of the challenger's frozen-pack answers that parse as JSON")]


def retrain_checks(*, frozen_fields: dict[str, Comparison], new_slice: Comparison, metric: str, margin: float,
                   min_lift: float, require_significant: bool, json_valid: float | None = None,
                   min_json_validity: float | None = None) -> list[Check]:
    """Every check of the retrain gate (see the module docstring); it passes when all do."""
    return (new_slice_checks(new_slice, min_lift=min_lift, require_significant=require_significant, metric=metric)
            + field_checks(frozen_fields, margin) + json_validity_check(json_valid, min_json_validity))


def _pt(v: float | None) -> str:
    return "n/a" if v is None else f"{v * 100:+.1f} pts"
