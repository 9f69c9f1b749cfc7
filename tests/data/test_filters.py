import pytest

from tunesmith.config import FilterConfig
from tunesmith.data.example import Example
from tunesmith.data.filters import QualityFilter


def chat(user: str, answer: str = '{"category": "billing"}') -> Example:
    return Example("t:1", [{"role": "system", "content": "Triage."}, {"role": "user", "content": user},
                           {"role": "assistant", "content": answer}])


GOOD = "My invoice for March shows a double charge, can you refund the second payment please?"


@pytest.mark.parametrize(
    ("user", "answer", "reason"),
    [
        (GOOD, "", "empty_or_placeholder_answer"),
        (GOOD, "  N/A ", "empty_or_placeholder_answer"),
        (GOOD, "TODO", "empty_or_placeholder_answer"),
        ("hi", '{"a": 1}', "too_short"),
        ("aaaaaaaaaaaaa", '{"a": 1}', "too_few_words"),
        ("### ### ### ### refund ### ###", '{"a": 1}', "symbol_word_ratio"),
        ("12 34 56 78 90 11 22 33 44 55 refund", '{"a": 1}', "alpha_ratio"),
        ("a b c d e f g h i j k l m n", '{"a": 1}', "mean_word_length"),
        ("x" * 40 + " " + "y" * 40, '{"a": 1}', "mean_word_length"),
        ("Lorem ipsum dolor sit amet, consectetur", '{"a": 1}', "boilerplate"),
        ("Sent from my iPhone", '{"a": 1}', "boilerplate"),
        ("refund please\nrefund please\nrefund please\nrefund please\nother", '{"a": 1}', "duplicate_lines"),
        ("buy now cheap " * 10, '{"a": 1}', "repeated_ngrams"),
        ("bad bytes \ufffd\ufffd here in text", '{"a": 1}', "undecodable_characters"),
    ],
)
def test_drop_reasons(user, answer, reason):
    assert QualityFilter(FilterConfig()).check(chat(user, answer)) == reason


def test_good_ticket_kept_and_compact_json_answer_not_judged_as_prose():
    answer = '{"category":"billing","urgency":"high","next_action":"issue_refund"}'
    assert QualityFilter(FilterConfig()).check(chat(GOOD, answer)) is None


def test_none_turns_a_check_off():
    cfg = FilterConfig(min_chars=None, min_words=None)
    assert QualityFilter(cfg).check(chat("hi")) is None


def test_too_long():
    assert QualityFilter(FilterConfig(max_chars=50)).check(chat(GOOD)) == "too_long"


def test_raw_text_record_checked_on_its_text():
    f = QualityFilter(FilterConfig())
    assert f.check(Example("b:1", text="It was a dark and stormy night; the rain fell in torrents.")) is None
    assert f.check(Example("b:2", text="!!")) == "too_short"
