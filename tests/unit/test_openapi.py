"""The served OpenAPI document states the limits the parsers enforce."""

import re

from hypothesis import example, given
from hypothesis import strategies as st

from kvstore.errors import InvalidRequest
from kvstore.http.openapi import openapi_document
from kvstore.keys import MAX_TTL_MS, parse_ttl_ms

MAX_TTL_S = MAX_TTL_MS // 1000


def ttl_schema() -> dict[str, str]:
    put = openapi_document(1024)["paths"]["/v1/kv/{key}"]["put"]
    (ttl,) = [parameter for parameter in put["parameters"] if parameter["name"] == "ttl"]
    return ttl["schema"]  # type: ignore[no-any-return]


def accepted(text: str) -> bool:
    try:
        parse_ttl_ms(text)
    except InvalidRequest:
        return False
    return True


seconds = st.one_of(st.integers(0, 10 * MAX_TTL_S), st.integers(MAX_TTL_S - 1000, MAX_TTL_S + 1000))
fractions = st.one_of(st.just(""), st.from_regex(r"\.[0-9]{1,4}", fullmatch=True))


@given(seconds, fractions)
@example(MAX_TTL_S, "")
@example(MAX_TTL_S, ".000")
@example(MAX_TTL_S, ".001")
@example(MAX_TTL_S + 1, "")
@example(3_000_000_000, "")
@example(999_999_999, ".999")
@example(0, ".001")
@example(0, ".000")
def test_the_ttl_pattern_matches_exactly_what_the_server_accepts(whole: int, fraction: str) -> None:
    """Leading zeros aside (the server takes them, the document does not offer them)."""
    text = f"{whole}{fraction}"
    assert bool(re.fullmatch(ttl_schema()["pattern"], text)) == accepted(text), text


def test_the_ttl_description_names_the_cap() -> None:
    assert (
        f"{MAX_TTL_S} seconds" in openapi_document(1024)["paths"]["/v1/kv/{key}"]["put"]["parameters"][0]["description"]
    )
