"""Read-after tokens (kvstore/positions.py): one per shard, several in one header; the token of a write
whose position could not be read."""

import pytest

from kvstore.errors import InvalidRequest, ShardUnavailable
from kvstore.positions import PRIMARY_ONLY, decode_read_after, encode_read_after, position_after_write, position_for


def test_a_token_names_its_shard_and_position() -> None:
    assert decode_read_after(encode_read_after("s1", "0/3000148")) == ("s1", "0/3000148")


def test_the_token_naming_the_shard_is_chosen_among_several() -> None:
    tokens = ",".join(encode_read_after(shard, position) for shard, position in [("s0", "a"), ("s1", "b")])
    assert position_for("s1", tokens) == "b"
    assert position_for("s0", tokens) == "a"
    assert position_for("s2", tokens) is None
    assert position_for("s0", f"{encode_read_after('s0', 'first')}, {encode_read_after('s0', 'second')}") == "first"


@pytest.mark.parametrize("tokens", ["", "not-a-token", f"{encode_read_after('s0', 'a')},garbage", "x" * 600])
def test_a_token_we_did_not_issue_is_refused(tokens: str) -> None:
    with pytest.raises(InvalidRequest):
        position_for("s0", tokens)


def test_the_number_of_tokens_is_bounded() -> None:
    with pytest.raises(InvalidRequest, match="more than 64"):
        position_for("s0", ",".join([encode_read_after("s0", "a")] * 65))


async def test_a_position_read_after_the_write_is_the_token() -> None:
    async def read() -> str:
        return "0/16B3748"

    assert await position_after_write(read) == "0/16B3748"


async def test_a_position_that_cannot_be_read_sends_the_token_to_the_primary() -> None:
    async def connection_lost() -> str:
        raise ShardUnavailable("s0", "primary: connection lost")

    assert await position_after_write(connection_lost) == PRIMARY_ONLY
