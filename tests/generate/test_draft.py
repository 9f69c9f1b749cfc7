"""Drafted greedy decoding: guesses from the engine's recent answers are checked in one step and
kept only where the model agrees, so answers equal one-at-a-time ``model.generate`` (and a
draft-free engine's) while a warm book saves decode steps; wrong guesses cost no token."""

from __future__ import annotations

import pytest
import torch

from models.tiny import build_model, build_tokenizer
from tunesmith.generate import Engine, GenerationConfig
from tunesmith.generate.batch import DecodeBatch
from tunesmith.generate.constrain import Grammar
from tunesmith.generate.draft import DraftBook
from tunesmith.generate.kv import cache_kwargs, new_cache

from .test_constrain import SCHEMA
from .test_engine import SYSTEM, VARIED, conversations, reference, varied_model


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


@pytest.fixture
def steps(monkeypatch):
    """Counts decode passes: (plain one-token steps, drafted steps)."""
    counts = {"plain": 0, "drafted": 0}
    plain, drafted = DecodeBatch.step, DecodeBatch.step_drafts

    def count_plain(self, *a, **k):
        counts["plain"] += 1
        return plain(self, *a, **k)

    def count_drafted(self, *a, **k):
        counts["drafted"] += 1
        return drafted(self, *a, **k)

    monkeypatch.setattr(DecodeBatch, "step", count_plain)
    monkeypatch.setattr(DecodeBatch, "step_drafts", count_drafted)
    return counts


def test_the_book_proposes_what_the_last_two_answers_wrote_after_the_same_tokens():
    book = DraftBook(n=2, length=4)
    book.learn("a", [5, 6, 7, 8, 9])
    assert book.propose("a", [1, 5, 6], 8) == []  # seen once: not yet a guess
    book.learn("a", [5, 6, 7, 8, 2])
    assert book.propose("a", [], 8) == [5, 6, 7, 8]  # an answer's start has its own context
    assert book.propose("a", [1, 5, 6], 8) == [7, 8]  # where the two answers parted, the guess ends
    assert book.propose("a", [5, 6], 1) == [7]  # cut to the row's budget
    assert book.propose("a", [6, 5], 8) == [] and book.propose("b", [5, 6], 8) == []  # other weights
    book.learn("a", [5, 6, 1])
    assert book.propose("a", [5, 6], 8) == []  # a new choice after (5, 6): nothing agreed
    small = DraftBook(n=1, length=2, entries=4)
    small.learn("a", [1, 2, 3, 4, 5, 6])
    small.learn("a", [1, 2, 3, 4, 5, 6])
    assert small.propose("a", [6], 8) == [] and small.propose("a", [4], 8) == [5, 6]  # oldest forgotten


@pytest.mark.parametrize(("arch", "seed", "scale"), VARIED)
def test_a_warm_book_saves_steps_and_changes_no_token(tok, steps, arch, seed, scale):
    model = varied_model(tok, arch, seed, scale)
    convs = conversations(8)
    want = reference(model, tok, convs, max_new=20)
    engine = Engine(model, tok, system=SYSTEM, max_batch_size=3)
    cfg = GenerationConfig(max_new_tokens=20)
    assert [g.token_ids for g in engine.generate(convs, cfg)] == want
    cold = dict(steps)
    assert [g.token_ids for g in engine.generate(convs, cfg)] == want  # the book now holds these answers
    warm = {k: steps[k] - cold[k] for k in steps}
    assert engine.drafts.accepted > 0 and warm["drafted"] > 0
    assert warm["plain"] + warm["drafted"] < cold["plain"] + cold["drafted"]


@pytest.mark.parametrize(("arch", "seed", "scale"), VARIED)
def test_wrong_guesses_are_rejected_without_changing_a_token(tok, arch, seed, scale):
    """A book full of other answers: most guesses fail, the answers stay the greedy ones."""
    model = varied_model(tok, arch, seed, scale)
    convs = conversations(8)
    want = reference(model, tok, convs, max_new=20)
    engine = Engine(model, tok, system=SYSTEM, max_batch_size=3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(200):  # random continuations after every context the answers might reach, twice
        noise = torch.randint(0, len(tok), (12,), generator=generator).tolist()
        engine.drafts.learn(engine._weights_key(), noise)
        engine.drafts.learn(engine._weights_key(), noise)
    for answer in want:  # and each answer with one wrong token in the middle, twice (a guess)
        wrong = [*answer[:3], (answer[3] + 1) % len(tok), *answer[4:]] if len(answer) > 4 else answer
        engine.drafts.learn(engine._weights_key(), wrong)
        engine.drafts.learn(engine._weights_key(), wrong)
    got = engine.generate(convs, GenerationConfig(max_new_tokens=20))
    assert [g.token_ids for g in got] == want
    assert engine.drafts.proposed > engine.drafts.accepted > 0


def test_grammar_answers_equal_a_draft_free_engine(tok, steps):
    model = build_model("llama", tok, seed=3)
    convs = [[{"role": "user", "content": t}] for t in ["my parcel is late", "refund please", "cannot login",
                                                        "billing is wrong twice", "where is my order"]]
    cfg = GenerationConfig(max_new_tokens=80, grammar=Grammar.json_schema(SCHEMA))
    want = [g.token_ids for g in Engine(model, tok, system=SYSTEM, max_batch_size=3, draft_tokens=0).generate(convs, cfg)]
    assert steps["drafted"] == 0
    engine = Engine(model, tok, system=SYSTEM, max_batch_size=3)
    engine.generate(convs[:2], cfg)  # learn the schema's keys and quotes from two answers
    before = engine.drafts.accepted
    assert [g.token_ids for g in engine.generate(convs, cfg)] == want
    assert engine.drafts.accepted > before and steps["drafted"] > 0


def test_sampling_and_logprobs_step_one_token_at_a_time(tok, steps):
    model = varied_model(tok, "llama", 0, 1.6)
    engine = Engine(model, tok, system=SYSTEM, max_batch_size=3)
    engine.generate(conversations(4), GenerationConfig(max_new_tokens=12))  # a warm book
    drafted = steps["drafted"]
    engine.generate(conversations(4), GenerationConfig(max_new_tokens=12, temperature=1.0, seed=1))
    engine.generate(conversations(4), GenerationConfig(max_new_tokens=12, logprobs=2))
    assert steps["drafted"] == drafted


def test_a_finished_rows_kept_cache_holds_its_tokens_but_the_last(tok):
    """The confidence scorer starts from a finished answer's keys/values: after drafted steps
    (rejected guesses masked out) they must equal a fresh run of prompt + answer[:-1]."""
    model = varied_model(tok, "qwen2", 1, 1.3)
    convs = conversations(6)
    engine = Engine(model, tok, system=SYSTEM, max_batch_size=3)
    engine.generate(convs, GenerationConfig(max_new_tokens=20))
    engine.finished.capacity = 6
    got = engine.generate(convs, GenerationConfig(max_new_tokens=20))
    assert engine.drafts.accepted > 0
    for g, conv in zip(got, convs, strict=True):
        tokens = engine.encode(conv) + g.token_ids[:-1]
        found = engine.finished.take((id(model), None), tokens, at_least=len(tokens))
        assert found is not None and found[0] == tokens
        fresh = new_cache(model)
        with torch.inference_mode():
            model(input_ids=torch.tensor([tokens]), **cache_kwargs(model, fresh), use_cache=True)
        for kept, ref in zip(found[1].layers, fresh.layers, strict=True):
            assert kept.keys.shape == ref.keys.shape
            torch.testing.assert_close(kept.keys, ref.keys, atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(kept.values, ref.values, atol=1e-4, rtol=1e-4)


def test_draft_tokens_must_not_be_negative(tok):
    with pytest.raises(Exception, match="draft_tokens must be >= 0"):
        Engine(build_model("llama", tok), tok, draft_tokens=-1)


def test_streamed_tokens_of_drafted_steps_arrive_one_by_one_in_order(tok, steps):
    """The server streams through ``on_token``: a drafted step that keeps several tokens still
    reports each, in order, and the stream equals the answer."""
    model = varied_model(tok, "llama", 0, 1.6)
    convs = conversations(8)
    engine = Engine(model, tok, system=SYSTEM, max_batch_size=3)
    engine.generate(convs, GenerationConfig(max_new_tokens=20))
    streamed: dict[int, list[int]] = {}

    def on_token(index: int, token_ids: list[int]) -> None:
        seen = streamed.setdefault(index, [])
        assert token_ids[: len(seen)] == seen and len(token_ids) == len(seen) + 1
        seen.append(token_ids[-1])

    got = engine.generate(convs, GenerationConfig(max_new_tokens=20), on_token=on_token)
    assert steps["drafted"] > 0 and engine.drafts.accepted > 0
    assert [streamed[i] for i in range(8)] == [g.token_ids for g in got]
