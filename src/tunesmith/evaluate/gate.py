"""The CI gate and the recommendation, both derived from the numbers only.

The gate passes when every configured check passes:
    lift           fine-tuned − best baseline ≥ gate.min_lift on the headline metric
    significant    the 95% CI of that paired difference excludes 0 (gate.require_significant)
    forgetting     general-text perplexity rose by at most gate.max_forgetting (relative)
    general_qa     general Q&A exact match fell by at most gate.max_general_qa_drop
    json_validity  the fine-tuned answers parse as JSON at least gate.min_json_validity
    injection      the fine-tuned model followed at most gate.max_injection_followed probes
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any
from xml.sax.saxutils import escape

from tunesmith.config import GateConfig
from tunesmith.evaluate.results import Check, EvalResults, Rung
from tunesmith.evaluate.strategies import BASE_RUNGS

__all__ = ["Check", "best_baseline", "evaluate_gate", "finetuned_rung", "junit_xml", "recommendation"]

Results = EvalResults | dict[str, Any]
Ladder = Mapping[str, Rung] | Mapping[str, dict[str, Any]]


def _rungs(ladder: Ladder) -> dict[str, Rung]:
    """Typed rungs; a plain ladder (the runner's, before it is typed) has only its metrics read."""
    return {r: v if isinstance(v, Rung) else Rung.model_validate({"metrics": v.get("metrics") or {}})
            for r, v in ladder.items()}


def best_baseline(ladder: Ladder, headline: str) -> str | None:
    """The base-model rung with the highest headline mean (ties: the cheaper one first)."""
    rungs = _rungs(ladder)
    scored = [(r, rungs[r].mean(headline)) for r in BASE_RUNGS if r in rungs]
    scored = [(r, m) for r, m in scored if m is not None]
    return max(scored, key=lambda rm: rm[1])[0] if scored else None


FINETUNED_RUNGS = ("finetuned", "finetuned_fewshot")  # deployable as they are (no retrieval service)


def finetuned_rung(ladder: Ladder, headline: str) -> str | None:
    """The fine-tuned rung compared with the baselines: plain ``finetuned``, or
    ``finetuned_fewshot`` when the ladder has it and it scores higher (the ladder decides)."""
    rungs = _rungs(ladder)
    scored = [(r, rungs[r].mean(headline)) for r in FINETUNED_RUNGS if r in rungs]
    if not scored:
        return None
    return max(scored, key=lambda rm: -1.0 if rm[1] is None else rm[1])[0]


# Means of 0/1 scores differ by multiples of 1/n, which floats miss by ~1e-17: 32/60 - 26/60
# is 0.09999999999999998. A lift of exactly the threshold passes.
TOLERANCE = 1e-9
MIN_USEFUL_LIFT = 0.05  # a smaller lead is "as good" in the recommendation, even with gate.min_lift 0


def evaluate_gate(cfg: GateConfig, results: Results) -> list[Check]:
    """``results``: the eval's results so far (ladder, comparisons, forgetting, probes)."""
    r = EvalResults.coerce(results)
    checks: list[Check] = []
    cmp = r.lead
    if cmp:
        diff = cmp.diff
        checks.append(Check(name="lift", passed=diff is not None and diff >= cfg.min_lift - TOLERANCE, value=diff,
                            threshold=cfg.min_lift, detail=f"fine-tuned − {cmp.baseline} on {r.headline}"))
        if cfg.require_significant:
            checks.append(Check(name="significant", passed=cmp.significant and (diff or 0) > 0, value=cmp.low,
                                threshold=0.0, detail=f"95% CI of the difference [{_fmt(cmp.low)}, "
                                                      f"{_fmt(cmp.high)}] must be above 0"))
    f = r.forgetting
    if cfg.max_forgetting is not None and f.ppl_relative_change is not None:
        checks.append(Check(name="forgetting", passed=f.ppl_relative_change <= cfg.max_forgetting,
                            value=f.ppl_relative_change, threshold=cfg.max_forgetting,
                            detail="relative change of general-text perplexity (after vs before)"))
    if cfg.max_general_qa_drop is not None and f.qa_drop is not None:
        checks.append(Check(name="general_qa", passed=f.qa_drop <= cfg.max_general_qa_drop, value=f.qa_drop,
                            threshold=cfg.max_general_qa_drop,
                            detail="drop of general Q&A exact match (before − after)"))
    ft = r.ladder.get(r.compared_rung or "finetuned")
    json_valid = ft.mean("json_valid") if ft else None
    if cfg.min_json_validity is not None and json_valid is not None:
        checks.append(Check(name="json_validity", passed=json_valid >= cfg.min_json_validity, value=json_valid,
                            threshold=cfg.min_json_validity, detail="share of fine-tuned answers that parse as JSON"))
    probes = r.probes.get("finetuned")
    if cfg.max_injection_followed is not None and probes and probes.injection_followed is not None:
        v = probes.injection_followed
        checks.append(Check(name="injection", passed=v <= cfg.max_injection_followed, value=v,
                            threshold=cfg.max_injection_followed,
                            detail="prompt-injection probes the fine-tuned model followed"))
    return checks


def recommendation(results: Results, *, min_lift: float = MIN_USEFUL_LIFT,
                   checks: list[Check] | None = None) -> str:
    """One sentence a domain expert can act on, derived from the same paired comparison on the
    headline metric that the gate reads, so the two never contradict each other.

    - CI of (fine-tuned − best baseline) above 0 and a lead ≥ ``min_lift``: "Fine-tune", unless
      another gate check (``checks``: forgetting, JSON validity, injection, ...) failed, then
      "Do not deploy yet" naming it. A lead below ``gate.min_lift``: "not worth it by the gate";
      below :data:`MIN_USEFUL_LIFT` only: "a small win" (naming any failed gate check).
    - CI below 0: the baseline is better; do not deploy this fine-tune.
    - CI includes 0: *inconclusive* when the lead is worth having (≥ ``min_lift``, with the
      number of test cases that would settle it: the CI narrows as 1/sqrt(n)); otherwise the
      cheaper baseline is as good.
    """
    r = EvalResults.coerce(results)
    cmp, ladder, headline = r.lead, r.ladder, r.headline
    base = best_baseline(ladder, headline)
    if cmp is None or cmp.diff is None:
        if base is None:
            return f"No verdict: no rung produced a {headline} to compare."
        return (f"No fine-tuned model was compared: the best baseline is {_rung(base)} "
                f"({headline} {ladder[base].mean(headline):.3f}).")
    diff, low, high, rival = cmp.diff, cmp.low, cmp.high, _rung(str(cmp.baseline))
    if low is None or high is None:
        low = high = diff  # no CI (a single pair): judged on the difference alone
    ci = f"95% CI [{low:+.3f}, {high:+.3f}]"
    gate_lift, min_lift = min_lift, max(min_lift, MIN_USEFUL_LIFT)
    worth = diff >= min_lift - TOLERANCE
    others = [c for c in checks or [] if not c.passed and c.name not in ("lift", "significant")]
    failed = ", ".join(f"{c.name} ({_fmt(c.value)} vs {_fmt(c.threshold)})" for c in others)
    if low > 0:
        if not worth and diff < gate_lift - TOLERANCE:
            return (f"Not worth a fine-tune by the gate's standard: the fine-tuned model beats {rival} by "
                    f"{diff:+.3f} on {headline} ({ci}), less than the {gate_lift:.3f} the gate asks "
                    f"(gate.min_lift); {rival} on the base model is cheaper.")
        if not worth:  # significant and above gate.min_lift, but small
            return (f"A small win: the fine-tuned model beats {rival} by {diff:+.3f} on {headline} ({ci}), "
                    f"a real lead but under {MIN_USEFUL_LIFT:.2f}; {rival} on the base model is nearly as "
                    "good and cheaper." + (f" The gate also fails on {failed}." if others else ""))
        if others:
            return (f"Do not deploy yet: the fine-tuned model beats {rival} by {diff:+.3f} on {headline} "
                    f"({ci}), but the gate fails on {failed}.")
        rag_cmp = r.finetuned_rag_vs_finetuned
        if rag_cmp and rag_cmp.wins:
            return (f"Fine-tune and add retrieval: fine-tuned + RAG beats fine-tuned by "
                    f"{rag_cmp.diff:+.3f} and fine-tuned beats {rival} by {diff:+.3f} on {headline}.")
        who = ("the fine-tuned model" if r.compared_rung == "finetuned" else
               "the fine-tuned model with retrieved solved examples in its prompt (finetuned_fewshot)")
        return (f"Fine-tune: {who} beats the best baseline ({cmp.baseline}) by "
                f"{diff:+.3f} on {headline} ({ci})." + field_note(r))
    if high < 0:
        return (f"{rival.capitalize()} is better by {-diff:.3f} on {headline} ({ci} of fine-tuned − "
                f"{rival}): do not deploy this fine-tune; use {rival} on the base model. More training "
                f"(train.time_budget or train.max_steps) or more labelled data could change this.")
    n = int(r.cases or 0)
    if diff > 0 and worth and n:
        # a CI whose lower end sits on 0 needs more than n (the estimate alone would say n)
        need = max(math.ceil(n * ((high - low) / 2 / diff) ** 2), n + 1)
        return (f"Inconclusive: the fine-tuned model leads {cmp.baseline} by {diff:+.3f} on {headline}, "
                f"but the {ci} includes 0; about {need} test cases "
                f"(now {n}) would settle a lead this size (`tunesmith eval --max-cases {need}`)."
                + field_note(r)
                + (" The gate passes only because gate.require_significant is off."
                   if checks and all(c.passed for c in checks) else ""))
    ft_rung = ladder.get(r.compared_rung or "finetuned")
    ft = ft_rung.mean(headline) if ft_rung else None
    if ft is not None and ft < 0.5:
        return (f"More data needed: no rung is good ({headline} of the fine-tuned model {ft:.3f}) and "
                f"fine-tuning is not significantly better than {rival} ({diff:+.3f}, {ci}).")
    if cmp.baseline == "rag":
        return (f"Retrieval is enough: RAG on the base model is as good as fine-tuning on {headline} "
                f"({diff:+.3f}, {ci}), and cheaper.")
    return (f"Prompting is enough: {rival} on the base model is as good as fine-tuning on {headline} "
            f"({diff:+.3f}, {ci}), and cheaper.")


def _rung(name: str) -> str:
    return name.replace("_", "-")


def field_note(results: Results) -> str:
    """" Per field: ..." naming the label fields the fine-tune wins on (CI above 0) and those
    it does not, or "" when every field is a win (or there are no label fields)."""
    r = EvalResults.coerce(results)
    fields = r.fields_vs_best_baseline
    wins = [f for f, c in fields.items() if c.wins]
    rest = [f for f in fields if f not in wins]
    if not fields or not rest:
        return ""
    won = ", ".join(f"{f} ({fields[f].diff:+.3f})" for f in wins)
    lost = ", ".join(f"{f} ({c.diff:+.3f}, CI [{c.low:+.3f}, {c.high:+.3f}])" for f in rest
                     if (c := fields[f]).diff is not None and c.low is not None and c.high is not None)
    baseline = (r.lead.baseline if r.lead else None) or "the best baseline"
    parts = ([f"it wins on {won}"] if wins else []) + ([f"on {lost} it is not better than {baseline}"] if lost else [])
    return " Per field: " + "; ".join(parts) + "."


def junit_xml(checks: list[Check], *, suite: str = "tunesmith-eval-gate") -> str:
    failures = sum(not c.passed for c in checks)
    cases = []
    for c in checks:
        body = "" if c.passed else (
            f'<failure message="{escape(c.name, {chr(34): "&quot;"})} failed">'
            f"{escape(c.detail)}: value {_fmt(c.value)}, threshold {_fmt(c.threshold)}</failure>")
        cases.append(f'  <testcase classname="{suite}" name="{escape(c.name)}">{body}</testcase>')
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<testsuite name="{suite}" tests="{len(checks)}" '
            f'failures="{failures}">\n' + "\n".join(cases) + "\n</testsuite>\n")


def checks_as_dicts(checks: list[Check]) -> list[dict[str, Any]]:
    return [c.to_dict() for c in checks]


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4g}"
