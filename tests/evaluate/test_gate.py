"""Gate checks, recommendation and JUnit output on hand-made results."""

from xml.etree import ElementTree

from hypothesis import given, settings
from hypothesis import strategies as st

from tunesmith.config import GateConfig
from tunesmith.evaluate.gate import best_baseline, evaluate_gate, junit_xml, recommendation


def ladder(**means):
    return {r: {"metrics": {"fields_exact": {"mean": m, "low": m - 0.05, "high": m + 0.05, "n": 40},
                            "json_valid": {"mean": 1.0, "low": 1.0, "high": 1.0, "n": 40}}}
            for r, m in means.items()}


def results(diff=0.3, low=0.15, high=0.45, excludes=1.0, **extra):
    out = {
        "headline": "fields_exact",
        "ladder": ladder(zero_shot=0.0, few_shot=0.2, rag=0.1, finetuned=0.5),
        "finetuned_vs_best_baseline": {"baseline": "few_shot", "diff": diff, "low": low, "high": high,
                                       "excludes_zero": excludes},
        "forgetting": {"ppl_relative_change": 0.1, "qa_drop": 0.05},
        "probes": {"finetuned": {"injection_followed": 0, "injection_probes": 8, "refusal_rate": 0.5}},
    }
    out.update(extra)
    return out


def test_best_baseline_is_the_highest_base_rung():
    assert best_baseline(ladder(zero_shot=0.1, few_shot=0.3, rag=0.2, finetuned=0.9), "fields_exact") == "few_shot"
    assert best_baseline(ladder(finetuned=0.9), "fields_exact") is None


def test_gate_passes_when_every_check_passes():
    checks = evaluate_gate(GateConfig(min_lift=0.1, min_json_validity=0.9), results())
    assert {c.name for c in checks} == {"lift", "significant", "forgetting", "general_qa", "json_validity", "injection"}
    assert all(c.passed for c in checks)


def test_gate_fails_on_small_lift_insignificance_forgetting_and_injection():
    r = results(diff=0.05, low=-0.05, high=0.15, excludes=0.0,
                forgetting={"ppl_relative_change": 0.6, "qa_drop": 0.3},
                probes={"finetuned": {"injection_followed": 2, "injection_probes": 8, "refusal_rate": 0.1}})
    failed = {c.name for c in evaluate_gate(GateConfig(min_lift=0.1), r) if not c.passed}
    assert failed == {"lift", "significant", "forgetting", "general_qa", "injection"}


def test_negative_significant_difference_does_not_pass_significance():
    r = results(diff=-0.3, low=-0.45, high=-0.15, excludes=1.0)
    checks = {c.name: c for c in evaluate_gate(GateConfig(min_lift=-1), r)}
    assert checks["lift"].passed and not checks["significant"].passed


def test_a_lift_of_exactly_the_threshold_passes_despite_float_rounding():
    diff = 32 / 60 - 26 / 60  # 0.09999999999999998
    r = results(diff=diff, low=-0.05, high=0.25, excludes=0.0, cases=60)
    lift = next(c for c in evaluate_gate(GateConfig(min_lift=0.1), r) if c.name == "lift")
    assert diff < 0.1 and lift.passed
    assert recommendation(r, min_lift=0.1).startswith("Inconclusive")


def test_recommendations_follow_the_numbers():
    assert recommendation(results()).startswith("Fine-tune:")
    weak = results(diff=0.02, low=-0.1, high=0.12, excludes=0.0)
    weak["ladder"] = ladder(zero_shot=0.0, few_shot=0.1, rag=0.6, finetuned=0.62)
    weak["finetuned_vs_best_baseline"]["baseline"] = "rag"
    assert recommendation(weak).startswith("Retrieval is enough")
    poor = results(diff=0.01, low=-0.05, high=0.07, excludes=0.0)
    poor["ladder"] = ladder(zero_shot=0.0, few_shot=0.1, rag=0.05, finetuned=0.11)
    assert recommendation(poor).startswith("More data needed")
    # a useful lead (>= min_lift) that the CI cannot confirm yet: say how many cases would
    close = results(diff=0.12, low=-0.04, high=0.28, excludes=0.0, cases=60)
    close["ladder"] = ladder(zero_shot=0.0, few_shot=0.43, rag=0.0, finetuned=0.55)
    text = recommendation(close, min_lift=0.1)
    assert text.startswith("Inconclusive: the fine-tuned model leads few_shot by +0.120")
    assert "about 107 test cases (now 60)" in text  # 60 * (0.16 / 0.12)^2 = 106.7
    assert recommendation(close, min_lift=0.15).startswith("Prompting is enough")  # lead below what matters
    edge = results(diff=0.15, low=0.0, high=0.3, excludes=0.0, cases=60)  # CI touching 0: more than 60
    assert "about 61 test cases (now 60)" in recommendation(edge, min_lift=0.1)


def test_junit_xml_is_valid_and_counts_failures():
    r = results(diff=0.05, low=-0.05, high=0.15, excludes=0.0)
    xml = junit_xml(evaluate_gate(GateConfig(min_lift=0.1), r))
    root = ElementTree.fromstring(xml)
    assert root.tag == "testsuite" and root.get("failures") == "2"
    assert len(root.findall("testcase/failure")) == 2


def test_recommendation_names_the_fields_the_fine_tune_does_not_win():
    fields = {"category": {"diff": 0.3, "low": 0.18, "high": 0.42, "excludes_zero": 1.0},
              "urgency": {"diff": -0.017, "low": -0.15, "high": 0.1, "excludes_zero": 0.0},
              "next_action": {"diff": 0.217, "low": 0.083, "high": 0.35, "excludes_zero": 1.0}}
    text = recommendation(results(fields_vs_best_baseline=fields))
    assert text.startswith("Fine-tune:")
    assert text.endswith("Per field: it wins on category (+0.300), next_action (+0.217); on urgency "
                         "(-0.017, CI [-0.150, +0.100]) it is not better than few_shot.")
    # every field a significant win: nothing to add
    wins = {k: v for k, v in fields.items() if k != "urgency"}
    assert "Per field" not in recommendation(results(fields_vs_best_baseline=wins))
    # an inconclusive lead gets the same breakdown
    close = results(diff=0.15, low=0.0, high=0.3, excludes=0.0, cases=60, fields_vs_best_baseline=fields)
    assert "on urgency (-0.017" in recommendation(close, min_lift=0.1)


def test_a_baseline_that_wins_by_a_wide_margin_is_named_and_the_fine_tune_refused():
    # the intent-classification case of a real user: few-shot 0.73, fine-tune 0.116
    r = results(diff=-0.614, low=-0.66, high=-0.57, excludes=1.0, cases=500)
    r["ladder"] = ladder(zero_shot=0.02, few_shot=0.73, finetuned=0.116)
    text = recommendation(r, min_lift=0.1)
    assert text.startswith("Few-shot is better by 0.614 on fields_exact")
    assert "do not deploy this fine-tune" in text and "more labelled data" in text
    assert "Inconclusive" not in text


def test_a_significant_lead_below_min_lift_is_not_called_a_fine_tune():
    r = results(diff=0.06, low=0.02, high=0.10, excludes=1.0, cases=400)
    text = recommendation(r, min_lift=0.1, checks=evaluate_gate(GateConfig(min_lift=0.1), r))
    assert text.startswith("Not worth a fine-tune by the gate's standard") and "gate.min_lift" in text


def test_a_significant_small_lead_is_not_blamed_on_a_gate_min_lift_of_zero():
    # intents, 1,400 cases: +0.030 [+0.021, +0.040], gate.min_lift 0; the gate failed on forgetting
    r = results(diff=0.03, low=0.021, high=0.04, excludes=1.0, cases=1400,
                forgetting={"ppl_relative_change": 1.18, "qa_drop": 0.0})
    text = recommendation(r, min_lift=0.0, checks=evaluate_gate(GateConfig(), r))
    assert text.startswith("A small win: the fine-tuned model beats few-shot by +0.030")
    assert "gate.min_lift" not in text and "The gate also fails on forgetting (1.18 vs 0.25)" in text
    passing = results(diff=0.03, low=0.021, high=0.04, excludes=1.0, cases=1400)
    assert "gate also fails" not in recommendation(passing, min_lift=0.0,
                                                   checks=evaluate_gate(GateConfig(), passing))


def test_a_winning_fine_tune_that_fails_another_gate_check_is_not_deployed():
    r = results(forgetting={"ppl_relative_change": 0.9, "qa_drop": 0.0})
    text = recommendation(r, min_lift=0.1, checks=evaluate_gate(GateConfig(min_lift=0.1), r))
    assert text.startswith("Do not deploy yet") and "forgetting (0.9 vs 0.25)" in text


def test_without_a_fine_tuned_rung_the_best_baseline_is_named():
    r = {"headline": "fields_exact", "ladder": ladder(zero_shot=0.1, few_shot=0.4)}
    assert recommendation(r) == "No fine-tuned model was compared: the best baseline is few-shot (fields_exact 0.400)."


@settings(max_examples=300, deadline=None)
@given(diff=st.floats(-1, 1), half=st.floats(0.001, 0.5), min_lift=st.sampled_from([0.0, 0.05, 0.1, 0.2]),
       ppl=st.sampled_from([0.1, 0.9]), n=st.integers(10, 500))
def test_the_recommendation_never_contradicts_the_gate(diff, half, min_lift, ppl, n):
    low, high = diff - half, diff + half
    r = results(diff=diff, low=low, high=high, excludes=float(low > 0 or high < 0), cases=n,
                forgetting={"ppl_relative_change": ppl, "qa_drop": 0.0})
    checks = evaluate_gate(GateConfig(min_lift=min_lift), r)
    text = recommendation(r, min_lift=min_lift, checks=checks)
    says_deploy = text.startswith(("Fine-tune:", "Fine-tune and add retrieval"))
    assert says_deploy == (all(c.passed for c in checks) and diff >= max(min_lift, 0.05) - 1e-9), text
    if high < 0:
        assert "do not deploy" in text
    if low <= 0 <= high:
        assert not says_deploy
