"""Token stream -> text deltas: never a half character, never the start of a stop string, and
together exactly the engine's final text."""

from __future__ import annotations

import pytest

from models.tiny import build_tokenizer
from tunesmith.generate.sampling import StopChecker
from tunesmith.serve.streaming import TextStream, unsafe_tail


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def stream_all(tok, ids: list[int], stop: list[str], budget: int = 100) -> tuple[list[str], str | None, str]:
    checker = StopChecker(tok, [tok.convert_tokens_to_ids("<|im_end|>")], stop)
    stream, deltas, finish = TextStream(tok, checker, budget), [], None
    for i in range(1, len(ids) + 1):
        delta, finish = stream.update(ids[:i])
        deltas.append(delta)
        if finish:
            break
    text, _ = checker.text(ids[:i], finish or "length")
    return deltas, finish, text


def test_multibyte_characters_are_sent_whole(tok):
    eot = tok.convert_tokens_to_ids("<|im_end|>")
    ids = tok("héllo 😀 wörld, ça va?")["input_ids"]
    assert any("\ufffd" in tok.decode(ids[:i]) for i in range(1, len(ids)))  # bytes split across tokens
    deltas, finish, text = stream_all(tok, [*ids, eot], [])
    assert finish == "stop" and "".join(deltas) == text == "héllo 😀 wörld, ça va?"
    assert not any("\ufffd" in d for d in deltas)


def test_a_stop_string_never_leaks_into_the_stream(tok):
    ids = tok("Hello there\n\nUser: and more words")["input_ids"]
    deltas, finish, text = stream_all(tok, ids, ["\n\nUser:"])
    assert finish == "stop" and "".join(deltas) == text == "Hello there"
    assert not any("\n" in d for d in deltas)


def test_the_budget_ends_the_stream_with_length(tok):
    ids = tok("one two three four five")["input_ids"]
    deltas, finish, text = stream_all(tok, ids, [], budget=3)
    assert finish == "length" and "".join(deltas) == text == tok.decode(ids[:3])


def test_unsafe_tail():
    assert unsafe_tail("abc\n\nUs", ["\n\nUser:"]) == 4
    assert unsafe_tail("abc \ufffd", []) == 2
    assert unsafe_tail("abc", ["xyz"]) == 0
