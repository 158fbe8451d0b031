"""Read-your-writes tokens: a shard's replication position after a write, opaque to clients.

A token names its shard, so that a token from one shard is never taken as a position of
another (such a read simply goes to the primary). A write whose position could not be read
after it committed (the connection broke in between, as in a failover) gets a token only the
primary serves: when unsure, read the primary.
"""

import base64
import binascii
from collections.abc import Awaitable, Callable

from kvstore.errors import InvalidRequest, ShardError

PRIMARY_ONLY = "primary"
"""The position of a write whose replication position is unknown: replicas never serve its token."""


async def position_after_write(read_position: Callable[[], Awaitable[str]]) -> str:
    """The primary's position after a committed write, or ``PRIMARY_ONLY`` if it cannot be read now.

    The write has been applied by then: failing the request for the token's sake would tell the
    client it was not.
    """
    try:
        return await read_position()
    except ShardError:
        return PRIMARY_ONLY


_MAX_TOKEN_CHARS = 512


def encode_read_after(shard: str, position: str) -> str:
    return base64.urlsafe_b64encode(f"{shard}\n{position}".encode()).decode().rstrip("=")


def decode_read_after(token: str) -> tuple[str, str]:
    """``(shard, position)`` from a token; a token we did not issue is a 400."""
    if len(token) > _MAX_TOKEN_CHARS:
        raise InvalidRequest("read-after token is too long")
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidRequest("read-after token is not one kvstore issued") from None
    shard, separator, position = text.partition("\n")
    if not separator or not shard or not position:
        raise InvalidRequest("read-after token is not one kvstore issued")
    return shard, position
