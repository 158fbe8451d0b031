"""Read-after tokens: their round trip, and the token of a write whose position could not be read."""

import pytest

from kvstore.errors import InvalidRequest, ShardUnavailable
from kvstore.positions import PRIMARY_ONLY, decode_read_after, encode_read_after, position_after_write


def test_a_token_names_its_shard_and_position() -> None:
    assert decode_read_after(encode_read_after("s0", "0/16B3748")) == ("s0", "0/16B3748")
    with pytest.raises(InvalidRequest):
        decode_read_after("not-ours")


async def test_a_position_read_after_the_write_is_the_token() -> None:
    async def read() -> str:
        return "0/16B3748"

    assert await position_after_write(read) == "0/16B3748"


async def test_a_position_that_cannot_be_read_sends_the_token_to_the_primary() -> None:
    async def connection_lost() -> str:
        raise ShardUnavailable("s0", "primary: connection lost")

    assert await position_after_write(connection_lost) == PRIMARY_ONLY
