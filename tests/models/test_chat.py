import pytest

from models.tiny import CHATML_TEMPLATE, SPACE_JOINED_TEMPLATE, build_tokenizer
from tunesmith.models.chat import (
    FALLBACK_TEMPLATES,
    ChatTemplateError,
    PromptMismatchError,
    check_prompt_consistency,
    encode,
    encode_prompt,
    end_of_turn_ids,
    render,
    render_for_training,
)

CHAT = [
    {"role": "user", "content": "Hello! How can I help?"},
    {"role": "assistant", "content": "Please reset my password."},
    {"role": "user", "content": "Thanks"},
    {"role": "assistant", "content": "Goodbye!"},
]


def _trained_texts(tok, rendered) -> list[str]:
    return [tok.decode(rendered.input_ids[a:b]) for a, b in rendered.token_spans()]


def test_render_is_the_template_with_the_default_system_prompt():
    tok = build_tokenizer()
    text = render(tok, CHAT[:1], add_generation_prompt=True, system="Be brief.")
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHello! How can I help?<|im_end|>\n<|im_start|>assistant\n"
    )
    own = [{"role": "system", "content": "Mine."}, *CHAT[:1]]
    assert "Mine." in render(tok, own, add_generation_prompt=False, system="Be brief.")
    assert "Be brief." not in render(tok, own, add_generation_prompt=False, system="Be brief.")


def test_training_prompt_equals_generation_prompt_for_every_turn():
    tok = build_tokenizer()
    rendered = render_for_training(tok, CHAT, system="Be brief.")
    for turn, upto in zip(rendered.turns, (1, 3), strict=True):
        gen = encode_prompt(tok, CHAT[:upto], system="Be brief.")
        assert rendered.input_ids[: turn.token_start] == gen
        assert turn.consistent
    assert rendered.input_ids == encode(
        tok, render(tok, CHAT, add_generation_prompt=False, system="Be brief.")
    )
    check_prompt_consistency(tok, CHAT, system="Be brief.")


def test_trained_span_is_answer_plus_end_of_turn_token():
    tok = build_tokenizer()
    rendered = render_for_training(tok, CHAT)
    assert _trained_texts(tok, rendered) == [
        "Please reset my password.<|im_end|>",
        "Goodbye!<|im_end|>",
    ]
    assert end_of_turn_ids(tok) == [tok.convert_tokens_to_ids("<|im_end|>")]


def test_token_across_the_prompt_boundary_is_detected():
    tok = build_tokenizer(chat_template=SPACE_JOINED_TEMPLATE)
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "How can I help?"}]
    rendered = render_for_training(tok, chat)
    (turn,) = rendered.turns
    first = tok.convert_ids_to_tokens(rendered.input_ids[turn.token_start])
    assert first == "ĠHow"  # the prompt's trailing space merged into the answer's first word
    assert not turn.consistent
    # The whole answer is still trained (the straddling token included).
    assert _trained_texts(tok, rendered) == [" How can I help?<|im_end|>"]
    with pytest.raises(PromptMismatchError, match="assistant turn 1"):
        check_prompt_consistency(tok, chat)


def test_base_tokenizer_without_template_needs_a_fallback():
    base = build_tokenizer(chat_template=None)
    with pytest.raises(ChatTemplateError, match=r"fallback_template.*chatml, alpaca, plain"):
        render(base, CHAT, add_generation_prompt=True)
    with pytest.raises(ChatTemplateError, match="unknown template 'vicuna'"):
        render(base, CHAT, add_generation_prompt=True, fallback_template="vicuna")


@pytest.mark.parametrize("name", FALLBACK_TEMPLATES)
def test_fallback_templates_train_answer_and_stop_token(name: str):
    base = build_tokenizer(chat_template=None)
    rendered = render_for_training(base, CHAT, system="Be brief.", fallback_template=name)
    assert _trained_texts(base, rendered) == [
        "Please reset my password.<|im_end|>",
        "Goodbye!<|im_end|>",
    ]
    assert "Be brief." in rendered.text
    check_prompt_consistency(base, CHAT, system="Be brief.", fallback_template=name)
    assert base.convert_tokens_to_ids("<|im_end|>") in end_of_turn_ids(base, fallback_template=name)


def test_fallback_ignored_when_the_tokenizer_has_a_template():
    tok = build_tokenizer()
    assert render(tok, CHAT, add_generation_prompt=False, fallback_template="alpaca") == render(
        tok, CHAT, add_generation_prompt=False
    )


@pytest.mark.parametrize(
    ("messages", "match"),
    [
        ([{"role": "assistant", "content": "Hi"}], "user turn before any assistant"),
        ([{"role": "bot", "content": "Hi"}], "message 0: expected"),
        ([{"role": "user", "content": None}], "message 0: expected"),
    ],
)
def test_malformed_conversations_are_rejected(messages, match):
    with pytest.raises(ChatTemplateError, match=match):
        render(build_tokenizer(), messages, add_generation_prompt=True)


def test_template_that_rewrites_earlier_turns_still_locates_answers():
    # Like reasoning templates that render earlier answers differently once later turns exist.
    rewrite = CHATML_TEMPLATE.replace(
        "m['content'] + '<|im_end|>'",
        "(m['content'] if loop.last or m['role'] != 'assistant' else m['content'] + ' (seen)') "
        "+ '<|im_end|>'",
    )
    tok = build_tokenizer(chat_template=rewrite)
    rendered = render_for_training(tok, CHAT)
    first, last = _trained_texts(tok, rendered)
    # Found by its content; its stop token is not trained (masks flags it as missing_eos).
    assert first == "Please reset my password."
    assert last == "Goodbye!<|im_end|>"
    check_prompt_consistency(tok, CHAT)  # the prompts before each answer are still exact


def test_template_errors_become_clear_errors():
    strict = "{{ raise_exception('Conversation roles must alternate user/assistant') }}"
    with pytest.raises(ChatTemplateError, match=r"rejected roles.*must alternate"):
        render(build_tokenizer(chat_template=strict), CHAT, add_generation_prompt=True)
