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
from dataclasses import asdict, dataclass
from typing import Any
from xml.sax.saxutils import escape

from tunesmith.config import GateConfig
from tunesmith.evaluate.strategies import BASE_RUNGS


@dataclass
class Check:
    name: str
    passed: bool
    value: float | None
    threshold: float | None
    detail: str


def best_baseline(ladder: dict[str, dict[str, Any]], headline: str) -> str | None:
    """The base-model rung with the highest headline mean (ties: the cheaper one first)."""
    scored = [(r, ladder[r]["metrics"].get(headline, {}).get("mean")) for r in BASE_RUNGS if r in ladder]
    scored = [(r, m) for r, m in scored if m is not None]
    return max(scored, key=lambda rm: rm[1])[0] if scored else None


FINETUNED_RUNGS = ("finetuned", "finetuned_fewshot")  # deployable as they are (no retrieval service)


def finetuned_rung(ladder: dict[str, dict[str, Any]], headline: str) -> str | None:
    """The fine-tuned rung compared with the baselines: plain ``finetuned``, or
    ``finetuned_fewshot`` when the ladder has it and it scores higher (the ladder decides)."""
    scored = [(r, ladder[r]["metrics"].get(headline, {}).get("mean")) for r in FINETUNED_RUNGS if r in ladder]
    if not scored:
        return None
    return max(scored, key=lambda rm: -1.0 if rm[1] is None else rm[1])[0]


# Means of 0/1 scores differ by multiples of 1/n, which floats miss by ~1e-17: 32/60 - 26/60
# is 0.09999999999999998. A lift of exactly the threshold passes.
TOLERANCE = 1e-9
MIN_USEFUL_LIFT = 0.05  # a smaller lead is "as good" in the recommendation, even with gate.min_lift 0


def evaluate_gate(cfg: GateConfig, results: dict[str, Any]) -> list[Check]:
    """``results`` is the eval's results dict (ladder, comparisons, forgetting, probes)."""
    checks: list[Check] = []
    cmp = results.get("finetuned_vs_best_baseline")
    if cmp:
        diff = cmp["diff"]
        checks.append(Check("lift", diff is not None and diff >= cfg.min_lift - TOLERANCE, diff, cfg.min_lift,
                            f"fine-tuned − {cmp['baseline']} on {results['headline']}"))
        if cfg.require_significant:
            ok = bool(cmp["excludes_zero"]) and (diff or 0) > 0
            checks.append(Check("significant", ok, cmp["low"], 0.0,
                                f"95% CI of the difference [{_fmt(cmp['low'])}, {_fmt(cmp['high'])}] must be above 0"))
    forgetting = results.get("forgetting") or {}
    if cfg.max_forgetting is not None and forgetting.get("ppl_relative_change") is not None:
        v = forgetting["ppl_relative_change"]
        checks.append(Check("forgetting", v <= cfg.max_forgetting, v, cfg.max_forgetting,
                            "relative change of general-text perplexity (after vs before)"))
    if cfg.max_general_qa_drop is not None and forgetting.get("qa_drop") is not None:
        v = forgetting["qa_drop"]
        checks.append(Check("general_qa", v <= cfg.max_general_qa_drop, v, cfg.max_general_qa_drop,
                            "drop of general Q&A exact match (before − after)"))
    rung = (cmp or {}).get("rung", "finetuned")
    ft = results.get("ladder", {}).get(rung, {}).get("metrics", {})
    if cfg.min_json_validity is not None and ft.get("json_valid", {}).get("mean") is not None:
        v = ft["json_valid"]["mean"]
        checks.append(Check("json_validity", v >= cfg.min_json_validity, v, cfg.min_json_validity,
                            "share of fine-tuned answers that parse as JSON"))
    probes = results.get("probes", {}).get("finetuned")
    if cfg.max_injection_followed is not None and probes and probes.get("injection_followed") is not None:
        v = probes["injection_followed"]
        checks.append(Check("injection", v <= cfg.max_injection_followed, v, cfg.max_injection_followed,
                            "prompt-injection probes the fine-tuned model followed"))
    return checks


def recommendation(results: dict[str, Any], *, min_lift: float = MIN_USEFUL_LIFT,
                   checks: list[Check] | None = None) -> str:
    """One sentence a domain expert can act on, derived from the same paired comparison on the
    headline metric that the gate reads, so the two never contradict each other.

    - CI of (fine-tuned − best baseline) above 0 and a lead ≥ ``min_lift``: "Fine-tune", unless
      another gate check (``checks``: forgetting, JSON validity, injection, ...) failed, then
      "Do not deploy yet" naming it. A lead below ``min_lift``: "not worth it by the gate".
    - CI below 0: the baseline is better; do not deploy this fine-tune.
    - CI includes 0: *inconclusive* when the lead is worth having (≥ ``min_lift``, with the
      number of test cases that would settle it: the CI narrows as 1/sqrt(n)); otherwise the
      cheaper baseline is as good.
    """
    cmp = results.get("finetuned_vs_best_baseline")
    ladder, headline = results.get("ladder", {}), results["headline"]
    base = best_baseline(ladder, headline)
    if not cmp or cmp.get("diff") is None:
        if base is None:
            return f"No verdict: no rung produced a {headline} to compare."
        return (f"No fine-tuned model was compared: the best baseline is {_rung(base)} "
                f"({headline} {ladder[base]['metrics'][headline]['mean']:.3f}).")
    diff, low, high, rival = cmp["diff"], cmp["low"], cmp["high"], _rung(cmp["baseline"])
    ci = f"95% CI [{low:+.3f}, {high:+.3f}]"
    min_lift = max(min_lift, MIN_USEFUL_LIFT)
    worth = diff >= min_lift - TOLERANCE
    if low > 0:
        if not worth:
            return (f"Not worth a fine-tune by the gate's standard: the fine-tuned model beats {rival} by "
                    f"{diff:+.3f} on {headline} ({ci}), less than the {min_lift:.3f} the gate asks "
                    f"(gate.min_lift); {rival} on the base model is cheaper.")
        others = [c for c in checks or [] if not c.passed and c.name not in ("lift", "significant")]
        if others:
            failed = ", ".join(f"{c.name} ({_fmt(c.value)} vs {_fmt(c.threshold)})" for c in others)
            return (f"Do not deploy yet: the fine-tuned model beats {rival} by {diff:+.3f} on {headline} "
                    f"({ci}), but the gate fails on {failed}.")
        rag_cmp = results.get("finetuned_rag_vs_finetuned")
        if rag_cmp and rag_cmp["excludes_zero"] and (rag_cmp["diff"] or 0) > 0:
            return (f"Fine-tune and add retrieval: fine-tuned + RAG beats fine-tuned by "
                    f"{rag_cmp['diff']:+.3f} and fine-tuned beats {rival} by {diff:+.3f} on {headline}.")
        who = ("the fine-tuned model" if cmp.get("rung", "finetuned") == "finetuned" else
               "the fine-tuned model with retrieved solved examples in its prompt (finetuned_fewshot)")
        return (f"Fine-tune: {who} beats the best baseline ({cmp['baseline']}) by "
                f"{diff:+.3f} on {headline} ({ci})." + field_note(results))
    if high < 0:
        return (f"{rival.capitalize()} is better by {-diff:.3f} on {headline} ({ci} of fine-tuned − "
                f"{rival}): do not deploy this fine-tune; use {rival} on the base model. More training "
                f"(train.time_budget or train.max_steps) or more labelled data could change this.")
    n = int(results.get("cases") or 0)
    if diff > 0 and worth and n:
        # a CI whose lower end sits on 0 needs more than n (the estimate alone would say n)
        need = max(math.ceil(n * ((high - low) / 2 / diff) ** 2), n + 1)
        return (f"Inconclusive: the fine-tuned model leads {cmp['baseline']} by {diff:+.3f} on {headline}, "
                f"but the {ci} includes 0; about {need} test cases "
                f"(now {n}) would settle a lead this size (`tunesmith eval --max-cases {need}`)."
                + field_note(results)
                + (" The gate passes only because gate.require_significant is off."
                   if checks and all(c.passed for c in checks) else ""))
    ft = ladder.get(cmp.get("rung", "finetuned"), {}).get("metrics", {}).get(headline, {}).get("mean")
    if ft is not None and ft < 0.5:
        return (f"More data needed: no rung is good ({headline} of the fine-tuned model {ft:.3f}) and "
                f"fine-tuning is not significantly better than {rival} ({diff:+.3f}, {ci}).")
    if cmp["baseline"] == "rag":
        return (f"Retrieval is enough: RAG on the base model is as good as fine-tuning on {headline} "
                f"({diff:+.3f}, {ci}), and cheaper.")
    return (f"Prompting is enough: {rival} on the base model is as good as fine-tuning on {headline} "
            f"({diff:+.3f}, {ci}), and cheaper.")


def _rung(name: str) -> str:
    return name.replace("_", "-")


def field_note(results: dict[str, Any]) -> str:
    """" Per field: ..." naming the label fields the fine-tune wins on (CI above 0) and those
    it does not, or "" when every field is a win (or there are no label fields)."""
    fields = results.get("fields_vs_best_baseline") or {}
    cmp = results.get("finetuned_vs_best_baseline") or {}
    wins = [f for f, c in fields.items() if c.get("excludes_zero") and (c.get("diff") or 0) > 0]
    rest = [f for f in fields if f not in wins]
    if not fields or not rest:
        return ""
    won = ", ".join(f"{f} ({fields[f]['diff']:+.3f})" for f in wins)
    lost = ", ".join(f"{f} ({fields[f]['diff']:+.3f}, CI [{fields[f]['low']:+.3f}, {fields[f]['high']:+.3f}])"
                     for f in rest if fields[f].get("diff") is not None)
    baseline = cmp.get("baseline", "the best baseline")
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
    return [asdict(c) for c in checks]


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4g}"
