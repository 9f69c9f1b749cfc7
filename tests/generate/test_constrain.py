"""Constrained decoding on tiny random models: answers that a random model would never give
unprompted are always one of the labels, or JSON that validates against the schema."""

from __future__ import annotations

import json

import jsonschema
import pytest

from models.tiny import build_model, build_tokenizer
from tunesmith.generate import Engine, GenerationConfig
from tunesmith.generate.constrain import Grammar, GrammarError

SYSTEM = "Triage the ticket."
TICKETS = ["my parcel is late", "refund please", "cannot login to my account", "billing is wrong twice",
           "the hub arrived broken", "thanks for the help", "password reset loop", "where is my order"]
LABELS = ["billing", "shipping", "account_access", "refund_not_received"]
SCHEMA = {"type": "object", "additionalProperties": False, "required": ["category", "urgency"],
          "properties": {"category": {"enum": LABELS}, "urgency": {"enum": ["low", "normal", "high"]}}}


@pytest.fixture(scope="module")
def engine():
    tok = build_tokenizer()
    return Engine(build_model("llama", tok, seed=3), tok, system=SYSTEM, max_batch_size=3)


def convs():
    return [[{"role": "user", "content": t}] for t in TICKETS]


def test_free_generation_of_a_random_model_is_not_a_label(engine):
    free = engine.generate(convs(), GenerationConfig(max_new_tokens=12))
    assert not [g.text for g in free if g.text in LABELS]  # what the constraint has to fix


def test_a_choice_grammar_answers_only_with_a_label(engine):
    got = engine.generate(convs(), GenerationConfig(max_new_tokens=12, grammar=Grammar.choice(LABELS)))
    assert all(g.text in LABELS for g in got), [g.text for g in got]
    assert all(g.finish_reason == "stop" for g in got)  # the end-of-turn token closes each answer


def test_a_json_schema_grammar_answers_with_valid_json(engine):
    got = engine.generate(convs(), GenerationConfig(max_new_tokens=150, grammar=Grammar.json_schema(SCHEMA)))
    for g in got:
        jsonschema.validate(json.loads(g.text), SCHEMA)


def test_sampling_under_a_grammar_stays_inside_it_and_is_reproducible(engine):
    cfg = GenerationConfig(max_new_tokens=12, temperature=1.5, seed=4, grammar=Grammar.choice(LABELS))
    first = [g.text for g in engine.generate(convs(), cfg)]
    assert set(first) <= set(LABELS) and first == [g.text for g in engine.generate(convs(), cfg)]


def test_constrained_answers_do_not_depend_on_the_batch(engine):
    cfg = GenerationConfig(max_new_tokens=40, grammar=Grammar.json_schema(SCHEMA))
    together = [g.token_ids for g in engine.generate(convs(), cfg)]
    alone = [engine.generate([c], cfg)[0].token_ids for c in convs()]
    assert together == alone


def test_a_single_allowed_value_is_forced():
    tok = build_tokenizer()
    engine = Engine(build_model("gpt2", tok), tok, system=SYSTEM)
    got = engine.generate(convs()[:2], GenerationConfig(max_new_tokens=12, grammar=Grammar.choice(["billing"])))
    assert [g.text for g in got] == ["billing", "billing"]


def test_bad_grammars_are_clear_errors(engine):
    with pytest.raises(GrammarError, match="at least one non-empty value"):
        Grammar.choice(["", ""])
    with pytest.raises(GrammarError, match="cannot be used as a grammar"):
        engine.generate(convs()[:1], GenerationConfig(grammar=Grammar.json_schema({"type": "no-such-type"})))


def test_json_keys_come_in_the_schema_order(engine):
    """The order the training answers use: a grammar that reordered them would force an order
    the model never saw."""
    schema = {**SCHEMA, "properties": {"urgency": SCHEMA["properties"]["urgency"],
                                       "category": SCHEMA["properties"]["category"]}}
    got = engine.generate(convs()[:3], GenerationConfig(max_new_tokens=150, grammar=Grammar.json_schema(schema)))
    assert all(list(json.loads(g.text)) == ["urgency", "category"] for g in got)
