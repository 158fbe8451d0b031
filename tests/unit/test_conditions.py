import pytest

from kvstore.conditions import (
    UNCONDITIONAL,
    Precondition,
    format_etag,
    none_match,
    parse_etag,
    parse_if_match,
    parse_preconditions,
)
from kvstore.errors import InvalidRequest, PreconditionFailed


def test_etag_round_trip() -> None:
    assert parse_etag(format_etag(1795435794045000)) == 1795435794045000


@pytest.mark.parametrize("tag", ['W/"12"', '"abc"', '"-1"', '"99999999999999999999"'])
def test_tags_that_can_never_match(tag: str) -> None:
    assert parse_etag(tag) is None


@pytest.mark.parametrize("tag", ["12", '"12', '12"', '"1"2"', ""])
def test_malformed_tags_are_refused(tag: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_etag(tag)


@pytest.mark.parametrize(
    ("if_match", "if_none_match", "expected"),
    [
        (None, None, UNCONDITIONAL),
        ('"7"', None, Precondition(if_version=7)),
        (" * ", None, Precondition(require_live=True)),
        (None, "*", Precondition(require_absent=True)),
        ('W/"7"', None, Precondition(if_version=-1)),
    ],
)
def test_write_preconditions(if_match: str | None, if_none_match: str | None, expected: Precondition) -> None:
    assert parse_preconditions(if_match, if_none_match) == expected


@pytest.mark.parametrize(("if_match", "if_none_match"), [('"1", "2"', None), (None, '"1"'), ("nonsense", None)])
def test_unsupported_write_preconditions_are_refused(if_match: str | None, if_none_match: str | None) -> None:
    with pytest.raises(InvalidRequest):
        parse_preconditions(if_match, if_none_match)


def test_if_match_with_if_none_match_star_can_never_hold() -> None:
    with pytest.raises(PreconditionFailed):
        parse_preconditions('"1"', "*")


def test_get_if_none_match_uses_weak_comparison() -> None:
    assert none_match('"5"', 5)
    assert none_match('W/"5"', 5)
    assert none_match('"4", "5"', 5)
    assert none_match("*", 5)
    assert not none_match('"4"', 5)
    assert not none_match(None, 5)
    assert not none_match("garbage", 5)


@pytest.mark.parametrize(
    ("if_match", "version", "holds"),
    [
        (None, None, True),
        (None, 7, True),
        ("*", 7, True),
        ("*", None, False),  # RFC 9110 13.1.1: no current representation
        ('"7"', 7, True),
        ('"7"', 8, False),
        ('"7"', None, False),
        ('W/"7"', 7, False),  # strong comparison
    ],
)
def test_if_match_holds_per_rfc_9110(if_match: str | None, version: int | None, holds: bool) -> None:
    assert parse_if_match(if_match).holds(version) is holds


@pytest.mark.parametrize(
    ("precondition", "says"),
    [
        (Precondition(require_live=True), "If-Match: * requires a live value"),
        (Precondition(if_version=7), "no live value with the version If-Match names"),
        (Precondition(require_absent=True), "If-None-Match: *"),
    ],
)
def test_a_failed_precondition_says_what_it_required(precondition: Precondition, says: str) -> None:
    assert says in str(precondition.failure())
    assert isinstance(precondition.failure(), PreconditionFailed)
