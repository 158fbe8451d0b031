"""Read-your-writes tokens: a shard's replication position after a write, opaque to clients.

A token names its shard, so that a token from one shard is never taken as a position of
another (such a read simply goes to the primary). A client that writes to several shards (the
Python client's session) sends its tokens together, comma-separated, one per shard: it cannot
know which shard owns the key it reads, and the server picks the token naming that shard. A
write whose position could not be read after it committed (the connection broke in between, as in
a failover) gets a token only the primary serves: when unsure, read the primary.
"""

import base64
import binascii
from collections.abc import Awaitable, Callable

from kvstore.errors import InvalidRequest, ShardError

PRIMARY_ONLY = "primary"
"""The position of a write whose replication position is unknown: replicas never serve its token."""

_MAX_TOKEN_CHARS = 512
_MAX_TOKENS = 64  # one per shard a client wrote to


async def position_after_write(read_position: Callable[[], Awaitable[str]]) -> str:
    """The primary's position after a committed write, or ``PRIMARY_ONLY`` if it cannot be read now.

    The write has been applied by then: failing the request for the token's sake would tell the
    client it was not.
    """
    try:
        return await read_position()
    except ShardError:
        return PRIMARY_ONLY


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


def positions_by_shard(tokens: str) -> dict[str, str]:
    """Shard -> position from ``tokens`` (comma-separated; the first token naming a shard counts).
    Every token must be one we issued (400 otherwise)."""
    parts = tokens.split(",")
    if len(parts) > _MAX_TOKENS:
        raise InvalidRequest(f"more than {_MAX_TOKENS} read-after tokens")
    positions: dict[str, str] = {}
    for part in parts:
        shard, position = decode_read_after(part.strip())
        positions.setdefault(shard, position)
    return positions


def position_for(shard: str, tokens: str) -> str | None:
    """The position ``tokens`` give for ``shard``; None when none names it."""
    return positions_by_shard(tokens).get(shard)
