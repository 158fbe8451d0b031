"""Our exception tree. Drivers' errors are mapped to it inside ``backends/``.

::

    KvError
    ├── ConfigError              bad shards.yaml or flags; names the path of the bad field
    ├── InvalidRequest           bad key, ttl or parameter (HTTP 400)
    │   └── ValueTooLarge        value over max_value_bytes (HTTP 413)
    ├── PreconditionFailed       If-Match / If-None-Match not met (HTTP 412)
    ├── Conflict                 the key's value does not allow the operation, e.g. incr of a non-integer (HTTP 409)
    ├── CrossShard               a transaction's keys live on several shards (HTTP 422)
    ├── SchemaError              a shard's schema is missing, foreign or newer than ours
    ├── ReshardError             a resharding step cannot run now (wrong phase, someone else's change)
    └── ShardError               a shard could not answer (HTTP 503 + Retry-After)
        ├── ShardUnavailable     could not connect, or the connection broke before the query ran
        ├── ShardTimeout         no answer within the deadline
        └── WriteOutcomeUnknown  the connection broke or the deadline passed after a write was sent:
                                 it may have committed (HTTP 503 with ``"write_outcome": "unknown"``)
"""


class KvError(Exception):
    """Base of every error kvstore raises on purpose."""


class ConfigError(KvError):
    """The configuration is invalid; the message names the offending field."""


class InvalidRequest(KvError):
    """The client sent something we refuse: a bad key, ttl, header or parameter."""


class ValueTooLarge(InvalidRequest):
    """The value is larger than ``server.max_value_bytes``."""


class PreconditionFailed(KvError):
    """A conditional write's precondition did not hold."""


class Conflict(KvError):
    """The operation cannot apply to the key's current value (an increment of a non-integer, or one
    that would overflow): the request is valid, the state is not."""


class CrossShard(KvError):
    """A transaction names keys that live on different shards; hash tags put keys together."""

    def __init__(self, shards: dict[str, list[str]]) -> None:
        described = "; ".join(f"{shard}: {', '.join(repr(key) for key in keys[:3])}" for shard, keys in shards.items())
        super().__init__(
            f"a transaction's keys must live on one shard, these are on {len(shards)} ({described});"
            " give them a common hash tag, e.g. {user42}/..."
        )
        self.shards = sorted(shards)


class SchemaError(KvError):
    """A shard's schema is not one this version of kvstore can serve."""


class ReshardError(KvError):
    """A resharding step cannot run in the migration's current state; the message says what to do."""


class ShardError(KvError):
    """A shard could not answer; the request may be retried later."""

    def __init__(self, shard: str, detail: str) -> None:
        super().__init__(f"shard {shard}: {detail}")
        self.shard = shard
        self.detail = detail


class ShardUnavailable(ShardError):
    """The shard's database could not be reached."""


class ShardTimeout(ShardError):
    """The shard did not answer within the request deadline."""


class WriteOutcomeUnknown(ShardError):
    """A write was sent but its outcome is unknown; it was not retried."""


class StaleRing(ShardError):
    """The shard refused a statement routed by a ring epoch that is not its own (nothing was
    applied): the front end re-reads the ring record and routes again."""


def describe(error: BaseException) -> str:
    """``Type: message`` for a driver error, for the detail of the ShardError it becomes."""
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
