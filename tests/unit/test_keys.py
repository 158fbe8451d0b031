import pytest

from kvstore.errors import InvalidRequest
from kvstore.keys import MAX_TTL_MS, parse_key, parse_ttl_ms


@pytest.mark.parametrize(
    ("encoded", "key"),
    [
        (b"greeting", "greeting"),
        (b"users/42/profile", "users/42/profile"),
        (b"a%2Fb", "a/b"),
        (b"%D0%BA%D0%BB%D1%8E%D1%87", "ключ"),
        (b"sp%20ace", "sp ace"),
        (b"%25", "%"),
        (b"x" * 255, "x" * 255),
        ("é" * 255, "é" * 255),
    ],
)
def test_valid_keys_decode(encoded: bytes | str, key: str) -> None:
    assert parse_key(encoded) == key


@pytest.mark.parametrize(
    ("encoded", "message"),
    [
        (b"", "empty"),
        (b"x" * 256, "256 characters"),
        (b"%FF%FE", "UTF-8"),
        (b"%C3", "UTF-8"),
        (b"a%00b", "NUL"),
    ],
)
def test_invalid_keys_are_refused(encoded: bytes, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        parse_key(encoded)


@pytest.mark.parametrize(
    ("text", "ttl_ms"), [("30", 30_000), ("0.5", 500), ("1.25", 1_250), ("0.001", 1), ("007", 7_000)]
)
def test_ttl_seconds_parse_to_milliseconds(text: str, ttl_ms: int) -> None:
    assert parse_ttl_ms(text) == ttl_ms


@pytest.mark.parametrize(
    "text", ["", "0", "0.000", "-1", "1.2345", "1e3", "abc", " 5", "5 ", "+5", ".5", "5.", "inf", "NaN"]
)
def test_bad_ttls_are_refused(text: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_ttl_ms(text)


@pytest.mark.parametrize("text", [str(MAX_TTL_MS // 1000 + 1), "99999999999", "1" + "0" * 5000, "3153600000.001"])
def test_ttl_is_capped_at_100_years(text: str) -> None:
    assert parse_ttl_ms(str(MAX_TTL_MS // 1000)) == MAX_TTL_MS
    with pytest.raises(InvalidRequest, match=r"at most 3153600000 seconds \(100 years\)"):
        parse_ttl_ms(text)


@pytest.mark.parametrize("text", ["1.0001", "99999999999.0001"])
def test_ttl_has_at_most_millisecond_precision(text: str) -> None:
    with pytest.raises(InvalidRequest, match="at most 3 decimals"):
        parse_ttl_ms(text)


def test_leading_zeros_do_not_count_against_the_cap() -> None:
    assert parse_ttl_ms("0" * 5000 + "5") == 5000
