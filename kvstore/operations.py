"""One key's operation as a value: what batches and transactions carry, and what each answered.

The HTTP layer parses a client's ops into these (with the same validation as the single-key
requests), the store runs them, and the HTTP layer renders each ``Outcome`` as the single-key
request would have answered.
"""

from dataclasses import dataclass, field

from kvstore.backends.base import Row
from kvstore.conditions import Precondition
from kvstore.errors import KvError


@dataclass(frozen=True, slots=True)
class GetOp:
    key: str


@dataclass(frozen=True, slots=True)
class PutOp:
    key: str
    value: bytes
    ttl_ms: int | None
    precondition: Precondition = field(default_factory=Precondition)


@dataclass(frozen=True, slots=True)
class DeleteOp:
    key: str
    precondition: Precondition = field(default_factory=Precondition)


@dataclass(frozen=True, slots=True)
class IncrOp:
    key: str
    by: int


Op = GetOp | PutOp | DeleteOp | IncrOp


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one op did: ``row`` is the key's state after it (None: no live value, e.g. a GET of a
    missing key, or a DELETE); ``found`` says whether a GET found or a DELETE deleted a live key;
    ``error`` the op's own failure (the other ops of a batch are not affected)."""

    row: Row | None = None
    found: bool = True
    created: bool = False
    read_after: str | None = None
    error: KvError | Exception | None = None


def is_write(op: Op) -> bool:
    return not isinstance(op, GetOp)
