from tunesmith.config import NormaliseConfig
from tunesmith.data.normalise import build_normaliser


def norm(text: str, **kw) -> str:
    return build_normaliser(NormaliseConfig(**kw))(text)


def test_nfkc_folds_compatibility_forms():
    assert norm("ｆｕｌｌｗｉｄｔｈ ﬁle №5") == "fullwidth file No5"


def test_mojibake_repaired():
    assert norm("CafÃ© crÃ¨me") == "Café crème"
    assert norm("donâ€™t") == "don’t" or norm("donâ€™t") == "don't"


def test_mojibake_repair_can_be_turned_off():
    assert "Ã" in norm("CafÃ©", fix_mojibake=False, unicode_form="none")


def test_control_characters_and_zero_width_removed_but_newlines_kept():
    assert norm("a\x00b\x07c\u200bd\ne\tf") == "abcd\ne f"


def test_whitespace_collapsed_and_blank_lines_limited():
    assert norm("  hello   world \r\n\r\n\r\n\r\nbye  ") == "hello world\n\nbye"


def test_lowercase_off_by_default_and_on_when_asked():
    assert norm("Hello") == "Hello"
    assert norm("Hello", lowercase=True) == "hello"


def test_domain_normalisers_off_by_default():
    text = "On 03/04/2025 I paid $12 for 3 kilos"
    assert norm(text) == text


def test_dates_currency_units():
    assert norm("paid on 03/04/2025 and 5th March 2024, due Jan 7, 2026", dates=True) == (
        "paid on 2025-04-03 and 2024-03-05, due 2026-01-07"
    )
    assert norm("it cost $1,200.5 or 30 euros", currency=True) == "it cost 1200.50 USD or 30.00 EUR"
    assert norm("weighs 12 kilos, 3kgs and 40 centimetres", units=True) == "weighs 12 kg, 3 kg and 40 cm"


def test_invalid_dates_left_alone():
    assert norm("version 45/13/2025", dates=True) == "version 45/13/2025"
