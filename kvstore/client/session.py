"""Read-your-writes for a session: the newest ``Kv-Read-After`` token of each shard it wrote to.

A write on a shard with replicas answers with a token naming the shard and the primary's position
after the write. The session sends every token it holds with each read, comma-separated; the server
uses the one naming the key's shard (the client cannot know which shard owns a key) and reads from
a replica only if it has replayed that far, else from the primary.

Positions are opaque, so the newest token of a shard is known only by order: a write that started
after another one finished has the later position. When two writes of one session on one shard
overlapped (async code, threads) their order is unknown; the session then holds no token for that
shard, so its reads there go to the primary (the server's rule for a key whose shard no token names),
until a later write re-establishes the order.
"""

import threading

from kvstore.errors import InvalidRequest
from kvstore.positions import decode_read_after


class ReadAfterTokens:
    def __init__(self) -> None:
        self._clock = 0
        # shard -> (newest token, or None while the order is unknown; the clock when it was recorded)
        self._by_shard: dict[str, tuple[str | None, int]] = {}
        self._lock = threading.Lock()

    def begin_write(self) -> int:
        """A ticket for a write about to be sent: when it started, in this session's order."""
        with self._lock:
            self._clock += 1
            return self._clock

    def record(self, token: str, started: int) -> None:
        """Keep ``token`` from the write that began with ticket ``started``."""
        shard = _shard_of(token)
        with self._lock:
            self._clock += 1
            held = self._by_shard.get(shard)
            if held is None or held[1] < started:  # the write held finished before this one started
                self._by_shard[shard] = (token, self._clock)
            else:  # they overlapped: either position may be the later one
                self._by_shard[shard] = (None, self._clock)

    def lose_track(self, shard: str | None) -> None:
        """A write may have been applied, with no token to show for it:
        reads of its shard (of every shard held, when it is not known) go to the primary until a
        later write."""
        with self._lock:
            self._clock += 1
            for name in [shard] if shard is not None else list(self._by_shard):
                self._by_shard[name] = (None, self._clock)

    def header(self) -> str | None:
        """The ``Kv-Read-After`` value for a read: every token held, or None."""
        with self._lock:
            tokens = [token for token, _ in self._by_shard.values() if token is not None]
        return ",".join(tokens) or None


def _shard_of(token: str) -> str:
    try:
        return decode_read_after(token)[0]
    except InvalidRequest:
        # Not a token this client can read: one slot for all such, so a newer one replaces an older;
        # reads of a shard whose token was replaced go to the primary, which is never stale.
        return ""
