import pytest

from space_defs import format_count, parse_budget


@pytest.mark.parametrize("text, value", [
    ("36M", 36_000_000), ("36m", 36_000_000), (" 36M ", 36_000_000), ("1.5M", 1_500_000),
    ("500K", 500_000), ("500k", 500_000), ("2G", 2_000_000_000), ("2_000_000", 2_000_000),
    ("36000000", 36_000_000), (".5M", 500_000), ("1.25k", 1250), (123, 123),
])
def test_accepts(text, value):
    assert parse_budget(text) == value


@pytest.mark.parametrize("text", [
    "", " ", "abc", "-5M", "0", "0.0M", "nan", "NaN", "inf", "36MB", "1e400", "1e6", "36 M M",
    "1__000", "1_", "1.5", "1.0001K", "101G", "99999999999999999999", True, -3, 0, "3T",
])
def test_rejects_with_a_message_that_says_what_is_accepted(text):
    with pytest.raises(ValueError, match="budget"):
        parse_budget(text)


def test_format_count():
    assert format_count(36_479_194) == "36.48M" and format_count(512) == "512"
