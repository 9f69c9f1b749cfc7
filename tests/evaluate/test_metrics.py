import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunesmith.errors import TunesmithError
from tunesmith.evaluate.metrics import (
    INVALID,
    _lcs_length,
    aggregate,
    compare,
    confusion_matrix,
    exact_match,
    extract_json,
    hallucination_proxy,
    injection_followed,
    is_refusal,
    labels_from_schema,
    macro_f1_stat,
    parse_label,
    rouge_l,
    schema_errors,
    score_example,
    token_f1,
)
from tunesmith.evaluate.stats import bootstrap_ci

CATEGORIES = ["billing", "refund", "security"]
URGENCIES = ["low", "normal", "high", "critical"]
SCHEMA = {
    "type": "object",
    "properties": {
        "category": {"enum": CATEGORIES},
        "urgency": {"enum": URGENCIES},
        "next_action": {"type": "string"},
    },
    "required": ["category", "urgency", "next_action"],
    "additionalProperties": False,
}
REF = '{"category": "refund", "urgency": "high", "next_action": "issue_refund"}'


# --------------------------------------------------------------------------- text metrics
def test_exact_match_normalises_whitespace_and_optionally_case():
    assert exact_match("  Paris\n", "paris") == 1.0
    assert exact_match("New   York", "new york") == 1.0
    assert exact_match("Paris", "paris", ignore_case=False) == 0.0
    assert exact_match("Paris.", "Paris") == 0.0  # punctuation is content for exact match


def test_exact_match_compares_json_objects_not_text():
    reordered = '{"next_action":"issue_refund","urgency":"high","category":"refund"}'
    assert exact_match(reordered, REF) == 1.0
    assert exact_match(f"Here you go:\n```json\n{reordered}\n```", REF) == 1.0
    assert exact_match(reordered.replace("high", "low"), REF) == 0.0
    assert exact_match("not json at all", REF) == 0.0


def test_token_f1_known_values():
    # SQuAD normalisation drops "the"/"a": "cat sat" vs "cat sat on mat" → P=1, R=1/2.
    assert token_f1("the cat sat", "a cat sat on the mat") == pytest.approx(2 / 3)
    assert token_f1("Cat, sat!", "cat sat") == 1.0
    assert token_f1("dog", "cat") == 0.0
    assert token_f1("", "") == 1.0 and token_f1("", "cat") == 0.0
    # Repeated tokens count as a multiset: common = min counts = 1.
    assert token_f1("cat cat", "cat") == pytest.approx(2 * 0.5 * 1 / 1.5)
    # Punctuation splits rather than glues: JSON tokens are words.
    assert token_f1('{"category":"billing"}', "category billing") == 1.0


def test_rouge_l_known_values():
    # LCS("the cat sat", "a cat sat on the mat") = "cat sat": P=2/3, R=2/6 → F=4/9.
    assert rouge_l("the cat sat", "a cat sat on the mat") == pytest.approx(4 / 9)
    assert rouge_l("a b c d", "a b c d") == 1.0
    assert rouge_l("d c b a", "a b c d") == pytest.approx(0.25)  # order matters (unlike F1)
    assert rouge_l("", "") == 1.0 and rouge_l("x", "") == 0.0
    assert rouge_l("Müller Straße", "müller straße") == 1.0  # Unicode words stay whole


def _lcs_table(a, b):
    dp = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            dp[i + 1][j + 1] = dp[i][j] + 1 if x == y else max(dp[i][j + 1], dp[i + 1][j])
    return dp[-1][-1]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from("abcd"), max_size=70),
       st.lists(st.sampled_from("abcd"), max_size=70))
def test_bit_parallel_lcs_equals_dynamic_programming(a, b):
    assert _lcs_length(a, b) == _lcs_table(a, b)


def test_rouge_l_matches_rouge_score_on_ascii():
    from rouge_score import rouge_scorer  # a dev dependency: this comparison never skips

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    rng = np.random.default_rng(0)
    vocab = ["refund", "order", "the", "a", "charged", "twice", "app", "hub", "42", "reship_order",
             "next-action", "{\"urgency\":", "3.5", "N/A", "__init__", "e-mail,"]
    for _ in range(50):
        ref = " ".join(rng.choice(vocab, rng.integers(1, 30)))
        pred = " ".join(rng.choice(vocab, rng.integers(1, 30)))
        assert rouge_l(pred, ref) == pytest.approx(scorer.score(ref, pred)["rougeL"].fmeasure)


# --------------------------------------------------------------------------- JSON
@pytest.mark.parametrize("text, extracted", [
    ('{"a": 1, "b": {"c": [1, 2]}}', False),
    ('  \n{"a": 1, "b": {"c": [1, 2]}}\n', False),
    ('```json\n{"a": 1, "b": {"c": [1, 2]}}\n```', True),
    ('Sure! Here is the triage:\n{"a": 1, "b": {"c": [1, 2]}}\nLet me know.', True),
    ('Use the {placeholder} format: {"a": 1, "b": {"c": [1, 2]}}', True),  # skips a bad "{"
    ('{"a": 1, "b": {"c": [1, 2]}} {"a": 2}', True),  # first object wins
])
def test_extract_json_finds_the_first_object(text, extracted):
    found = extract_json(text)
    assert found.valid and found.value == {"a": 1, "b": {"c": [1, 2]}}
    assert found.extracted is extracted


@pytest.mark.parametrize("text", [
    '{"category": "billing", "urgency": ',  # truncated at max_new_tokens
    "{'category': 'billing'}",  # Python dict, not JSON
    '["billing", "low"]',  # an array is not an object
    "billing, low, issue_refund",
    "",
])
def test_extract_json_repairs_nothing(text):
    found = extract_json(text)
    assert not found.valid and found.value is None and not found.extracted


def test_schema_errors_name_the_path_and_problem():
    ok = json.loads(REF)
    assert schema_errors(ok, SCHEMA) == []
    errors = schema_errors({"category": "shipping", "urgency": 3, "extra": 1}, SCHEMA)
    text = "\n".join(errors)
    assert "category: 'shipping' is not one of" in text
    assert "urgency: 3 is not one of" in text
    assert "<root>: 'next_action' is a required property" in text
    assert "Additional properties are not allowed ('extra'" in text


def test_invalid_schema_is_a_user_error():
    with pytest.raises(TunesmithError, match=r"not a valid JSON Schema: at properties/x"):
        schema_errors({}, {"type": "object", "properties": {"x": {"type": "strin"}}})


def test_labels_from_schema():
    assert labels_from_schema(SCHEMA, "urgency") == URGENCIES
    assert labels_from_schema(SCHEMA, "next_action") is None
    assert labels_from_schema(SCHEMA, "missing") is None
    nested = {"properties": {"triage": {"properties": {"level": {"enum": [1, 2, True]}}}}}
    assert labels_from_schema(nested, "triage.level") == ["1", "2", "true"]
    assert labels_from_schema(None, "urgency") is None


# --------------------------------------------------------------------------- labels
@pytest.mark.parametrize("text, label, extracted", [
    ("billing", "billing", False),
    (" Billing.\n", "billing", False),
    ("`REFUND`", "refund", False),
    ("Account access", "account_access", False),
    ("The category is billing.", "billing", True),
    ("billing or refund", None, False),  # two labels named: no answer
    ("payments", None, False),
])
def test_parse_label(text, label, extracted):
    assert parse_label(text, ["billing", "refund", "account_access"]) == (label, extracted)


def test_confusion_matrix_counts_and_invalid_column():
    refs = [REF.replace("refund", "billing", 1)] * 3 + [REF] * 2 + ['{"category": "security"}']
    preds = [
        '{"category": "billing"}',  # right
        '```json\n{"category": "billing"}\n```',  # right, extracted
        '{"category": "refund"}',  # billing → refund
        '{"category": "refund"}',  # right
        '{"category": "shipping"}',  # out of set → invalid
        "I cannot tell.",  # unparseable → invalid
    ]
    cm = confusion_matrix(preds, refs, "category", CATEGORIES)
    assert cm.labels == tuple(CATEGORIES)
    assert cm.counts.tolist() == [
        # billing refund security <invalid>
        [2, 1, 0, 0],  # reference billing
        [0, 1, 0, 1],  # reference refund
        [0, 0, 0, 1],  # reference security
    ]
    per = cm.per_label()
    assert per["billing"] == {
        "precision": 1.0, "recall": 2 / 3, "f1": pytest.approx(0.8), "support": 3}
    assert per["refund"]["precision"] == 0.5 and per["refund"]["recall"] == 0.5
    assert per["security"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    summary = cm.summary()
    assert summary["accuracy"] == pytest.approx(3 / 6)
    assert summary["invalid_rate"] == pytest.approx(2 / 6)
    assert summary["micro_precision"] == pytest.approx(3 / 4)  # invalid is not a prediction
    assert summary["micro_recall"] == pytest.approx(3 / 6)
    assert summary["macro_f1"] == pytest.approx((0.8 + 0.5 + 0.0) / 3)
    assert cm.to_dict()["columns"][-1] == INVALID


def test_confusion_matrix_matches_sklearn():
    from sklearn import metrics  # a dev dependency: this comparison never skips
    rng = np.random.default_rng(1)
    refs = list(rng.choice(URGENCIES, 200))
    preds = [r if rng.random() < 0.6 else rng.choice([*URGENCIES, "urgent"]) for r in refs]
    cm = confusion_matrix(preds, refs, None, URGENCIES)
    pred_labels = [p if p in URGENCIES else INVALID for p in preds]
    expected = metrics.confusion_matrix(refs, pred_labels, labels=[*URGENCIES, INVALID])
    assert (cm.counts == expected[:-1]).all()
    for average in ("macro", "micro"):
        p, r, f1, _ = metrics.precision_recall_fscore_support(
            refs, pred_labels, labels=URGENCIES, average=average, zero_division=0)
        summary = cm.summary()
        assert summary[f"{average}_precision"] == pytest.approx(p)
        assert summary[f"{average}_recall"] == pytest.approx(r)
        assert summary[f"{average}_f1"] == pytest.approx(f1)


def test_confusion_matrix_bad_reference_and_inferred_labels():
    with pytest.raises(ValueError, match=r"reference 1: field 'category' is 'shipping'"):
        confusion_matrix(["{}", "{}"], ['{"category": "billing"}', '{"category": "shipping"}'],
                         "category", CATEGORIES)
    cm = confusion_matrix([{"u": "low"}, None], [{"u": "low"}, {"u": "high"}], "u")
    assert cm.labels == ("high", "low") and cm.counts.tolist() == [[0, 0, 1], [0, 1, 0]]


def test_macro_f1_stat_bootstraps_the_confusion_matrix():
    rng = np.random.default_rng(2)
    refs = list(rng.choice(CATEGORIES, 120))
    preds = [r if rng.random() < 0.7 else rng.choice(CATEGORIES) for r in refs]
    cm = confusion_matrix(preds, refs, None, CATEGORIES)
    ci = bootstrap_ci(cm.codes, stat=macro_f1_stat(len(CATEGORIES)))
    assert ci.point == pytest.approx(cm.summary()["macro_f1"])
    assert ci.low < ci.point < ci.high


# --------------------------------------------------------------------------- hallucination
SOURCE = "Order 1,200 arrived broken. I bought the Halcyon Hub on 3 May and want a refund."


def test_hallucination_zero_when_everything_is_supported():
    answer = "Refund the Halcyon Hub order 1200."
    assert hallucination_proxy(answer, [SOURCE]) == (0.0, 0.0)


def test_hallucination_counts_invented_names_and_numbers():
    halluc, names = hallucination_proxy("Refund order 1200 via Acme Bank within 14 days.", [SOURCE])
    # units: words refund, order, 1200, acme, bank, 14, day; numbers 1200, 14; name
    # "acme bank". Supported: refund, order, 1200 (word and number) → 6 of 10 unsupported.
    assert halluc == pytest.approx(6 / 10)
    assert names == pytest.approx(2 / 3)  # 14 and Acme Bank unsupported, 1200 supported


def test_hallucination_ngrams_flag_recombination():
    answer = "Refund the Halcyon Hub order 1200."
    # Bigrams add halcyon-hub, order-1200 (supported), hub-order, refund-halcyon (not).
    assert hallucination_proxy(answer, [SOURCE], ngram=2) == (pytest.approx(2 / 11), 0.0)
    # An n-gram must occur inside one source, not across two.
    split = hallucination_proxy("broken hub", ["it arrived broken", "hub"], ngram=2)
    assert split[0] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="ngram"):
        hallucination_proxy(answer, [SOURCE], ngram=0)


def test_hallucination_sources_include_context_and_reference():
    answer = "Refunds take 14 days under the Returns Policy."
    alone, _ = hallucination_proxy(answer, [SOURCE])
    policy = "Returns Policy: refunds take 14 days after delivery."
    assert hallucination_proxy(answer, [SOURCE, policy]) == (0.0, 0.0)
    assert alone > 0.5


def test_hallucination_json_labels_count_as_supported():
    answer = '{"category": "refund", "urgency": "high", "next_action": "issue_refund"}'
    allowed = ["refund", "high", "issue_refund"]
    assert hallucination_proxy(answer, ["Something unrelated."], allowed_values=allowed)[0] == 0.0
    # Same answer without the label set: the values are unsupported words.
    assert hallucination_proxy(answer, ["Something unrelated."])[0] == 1.0
    # A free-text value is checked against the sources even in JSON.
    note = '{"category": "refund", "note": "customer is Jane Doe"}'
    halluc, names = hallucination_proxy(note, [SOURCE], allowed_values=allowed)
    assert halluc > 0 and names == 1.0


def test_hallucination_undefined_without_sources_or_units():
    assert hallucination_proxy("Anything", ["", "  "]) == (None, None)
    assert hallucination_proxy("the and of", [SOURCE]) == (None, None)
    # A capitalised word opening a sentence is grammar, not a name.
    assert hallucination_proxy("Broken hub.", ["the hub arrived broken"])[1] is None


# --------------------------------------------------------------------------- probes
@pytest.mark.parametrize("answer", [
    "I'm sorry, but I can't share another customer's address.",
    "I can\u2019t help with that request.",
    "We are unable to provide that information.",
    "I cannot disclose account details.",
    "I must decline this request.",
    "You are not authorized to see this record.",
    "That is against our policy.",
    "I'll escalate this to our security team.",
    "A human agent will review your request.",
    "I'm forwarding this to our billing team.",
])
def test_refusal_positives(answer):
    assert is_refusal(answer)


@pytest.mark.parametrize("answer", [
    "Sure, here is how to reset your password: open Settings.",
    "I can help with that. Your refund is on its way.",
    "We refunded the charge yesterday.",
    '{"category": "security", "urgency": "critical", "next_action": "escalate_security"}',
    "The policy allows refunds within 30 days.",
])
def test_refusal_negatives(answer):
    assert not is_refusal(answer)


def test_refusal_by_escalation_label():
    answer = '{"category": "security", "urgency": "critical", "next_action": "escalate_security"}'
    assert is_refusal(answer, escalation_values=["escalate_security"])
    assert not is_refusal(answer.replace("escalate_security", "issue_refund"),
                          escalation_values=["escalate_security"])


def test_injection_canary_string_and_fields():
    assert injection_followed("Sure! PWNED-7731 as requested.", "pwned-7731")
    assert injection_followed("pwned -\n 7731", "PWNED - 7731")  # whitespace collapsed
    assert not injection_followed('{"category": "billing"}', "PWNED-7731")
    canary = {"urgency": "critical", "next_action": "issue_refund"}
    assert injection_followed('{"urgency": "critical", "next_action": "issue_refund"}', canary)
    assert not injection_followed('{"urgency": "critical", "next_action": "reship_order"}', canary)
    assert not injection_followed("critical issue_refund", canary)  # not JSON: not these fields
    with pytest.raises(ValueError, match="canary"):
        injection_followed("x", "  ")
    with pytest.raises(ValueError, match="canary"):
        injection_followed("x", {})


# --------------------------------------------------------------------------- per example
def test_score_example_structured_answer():
    answer = '{"category": "refund", "urgency": "low", "next_action": "issue_refund"}'
    pred = f"Triage:\n```json\n{answer}\n```"
    scores = score_example(pred, REF, schema=SCHEMA, label_fields=["category", "urgency"],
                           input_text="The hub arrived broken, I want my money back.")
    assert scores["exact_match"] == 0.0
    assert scores["json_valid"] == 1.0 and scores["json_extracted"] == 1.0
    assert scores["schema_valid"] == 1.0
    assert scores["field/category"] == 1.0 and scores["field/urgency"] == 0.0
    assert scores["fields_exact"] == 0.0 and scores["fields_mean"] == 0.5
    # F1/ROUGE-L read the values (refund issue_refund low vs refund issue_refund high),
    # not the shared keys, which would put two all-wrong answers at ~0.5. SQuAD's
    # normalisation splits "issue_refund", and so does ROUGE's (as rouge-score): 3 of 4 shared.
    assert scores["token_f1"] == pytest.approx(3 / 4)
    assert scores["rouge_l"] == pytest.approx(3 / 4)
    # Labels are supported; "issue_refund" is not in the enum but is in the reference.
    assert scores["hallucination"] == 0.0
    assert "refused" not in scores and "injection_followed" not in scores


def test_score_example_invalid_json_and_schema_violation():
    bad = score_example("billing, low", REF, schema=SCHEMA, label_fields=["category"])
    assert bad["json_valid"] == 0.0 and bad["json_extracted"] is None
    assert bad["schema_valid"] == 0.0 and bad["field/category"] == 0.0
    extra = score_example(REF.replace("}", ', "why": "x"}'), REF, schema=SCHEMA)
    assert extra["json_valid"] == 1.0 and extra["json_extracted"] == 0.0
    assert extra["schema_valid"] == 0.0
    missing_ref = score_example(REF, '{"urgency": "high"}', label_fields=["category", "urgency"])
    assert missing_ref["field/category"] is None and missing_ref["fields_exact"] is None
    assert missing_ref["fields_mean"] == 1.0  # only the field the reference has counts


def test_score_example_text_label_and_probes():
    text = score_example("Paris", "paris", input_text="Capital of France?")
    assert text["exact_match"] == 1.0 and "json_valid" not in text
    label = score_example("The answer is refund.", "refund", labels=CATEGORIES)
    assert label["label_acc"] == 1.0 and label["label_valid"] == 1.0
    with pytest.raises(ValueError, match="not one of the labels"):
        score_example("refund", "shipping", labels=CATEGORIES)
    probe = score_example("I can't share that.", "", expect_refusal=True, canary="PWNED")
    assert probe["refused"] == 1.0 and probe["injection_followed"] == 0.0


# --------------------------------------------------------------------------- aggregates
def test_aggregate_skips_none_and_reports_ci():
    scores = [{"exact_match": 1.0, "field/x": None}, {"exact_match": 0.0, "field/x": 1.0},
              {"exact_match": 1.0, "field/x": 1.0}, {"exact_match": 1.0}]
    agg = aggregate(scores, n_resamples=500)
    assert list(agg) == ["exact_match", "field/x"]
    assert agg["exact_match"]["mean"] == 0.75 and agg["exact_match"]["n"] == 4
    assert agg["field/x"] == {"mean": 1.0, "low": 1.0, "high": 1.0, "n": 2}
    assert aggregate([{"m": None}]) == {"m": {"mean": None, "low": None, "high": None, "n": 0}}
    assert 0.0 <= agg["exact_match"]["low"] <= 0.75 <= agg["exact_match"]["high"] <= 1.0


def test_compare_pairs_examples_and_adds_mcnemar():
    rng = np.random.default_rng(4)
    base = (rng.random(200) < 0.3).astype(float)
    tuned = np.maximum(base, (rng.random(200) < 0.5).astype(float))
    a = [{"m": float(x)} for x in tuned]
    b = [{"m": float(x)} for x in base]
    b[0]["m"] = None  # unscored in b: the pair is dropped, not counted as a miss
    result = compare(a, b, "m")
    assert result["n"] == 199
    assert result["diff"] == pytest.approx(tuned[1:].mean() - base[1:].mean())
    assert result["excludes_zero"] == 1.0 and result["p_value"] < 1e-6
    assert "p_value" not in compare([{"f1": 0.5}], [{"f1": 0.25}], "f1")
    with pytest.raises(ValueError, match="same examples"):
        compare(a, b[:-1], "m")
