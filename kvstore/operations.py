"""One key's operation as a value: what batches and transactions carry, and what each answered.

The HTTP layer parses a client's ops into these (with the same validation as the single-key
requests), the store runs them, and the HTTP layer renders each ``Outcome`` as the single-key
request would have answered.
"""

from dataclasses import dataclass, field

from kvstore.backends.base import Row, StoredRow
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


@dataclass(frozen=True, slots=True)
class Compare:
    """A transaction's condition on one key: its live version is ``version``, or it is ``live``
    (True: exists, False: absent)."""

    key: str
    version: int | None = None
    live: bool | None = None

    def holds(self, row: "StoredRow | None") -> bool:
        is_live = row is not None and row.live
        if self.version is not None:
            return is_live and row is not None and row.version == self.version
        return is_live == self.live


class OpFailed(KvError):
    """A transaction op failed (a precondition, a counter): the whole transaction rolled back."""

    def __init__(self, branch: str, index: int, op: Op, error: KvError) -> None:
        kind = type(op).__name__.removesuffix("Op").lower()
        super().__init__(f"op {index} of the {branch} branch ({kind} {op.key!r}): {error}; nothing was applied")
        self.branch, self.index, self.error = branch, index, error


@dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool  # whether every compare held (the success branch ran)
    outcomes: list[Outcome]
