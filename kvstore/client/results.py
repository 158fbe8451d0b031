"""What the client's operations return: typed, immutable, with the server's version and expiry."""

from dataclasses import dataclass

from kvstore.client.errors import ClientError


def format_etag(version: int) -> str:
    """The strong ETag the server sends for ``version``."""
    return f'"{version}"'


@dataclass(frozen=True, slots=True)
class Entry:
    """A key's live value as read; ``expires_at_ms`` is epoch milliseconds, None when persistent."""

    key: str
    value: bytes
    version: int
    expires_at_ms: int | None

    @property
    def etag(self) -> str:
        return format_etag(self.version)

    @property
    def text(self) -> str:
        return self.value.decode()


@dataclass(frozen=True, slots=True)
class Written:
    """A key's state after a write (PUT, expire, persist); ``created`` when the key was not live before."""

    key: str
    version: int
    expires_at_ms: int | None
    created: bool = False

    @property
    def etag(self) -> str:
        return format_etag(self.version)


@dataclass(frozen=True, slots=True)
class CounterValue:
    """A counter after an increment: its new value, and its version and expiry as for ``Written``."""

    key: str
    value: int
    version: int
    expires_at_ms: int | None


@dataclass(frozen=True, slots=True)
class Item:
    """A key as a listing returns it; ``value`` only when the listing asked for values."""

    key: str
    version: int
    expires_at_ms: int | None
    value: bytes | None = None


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a listing; ``cursor`` continues it (None: the listing is complete)."""

    items: list[Item]
    cursor: str | None


@dataclass(frozen=True, slots=True)
class OpResult:
    """One op's answer: its single-key request's ``status``, the key's ``version`` and expiry after
    it, ``value`` (bytes for a get, the new count for an incr), or the ``error`` that request would
    raise (``NotFound``, ``PreconditionFailed``, ``Unavailable``, …)."""

    status: int
    key: str
    version: int | None = None
    expires_at_ms: int | None = None
    value: bytes | int | None = None
    error: ClientError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def result(self) -> "OpResult":
        """This result, or its error raised."""
        if self.error is not None:
            raise self.error
        return self


@dataclass(frozen=True, slots=True)
class TxnResult:
    """Whether every compare held (the success branch ran, else the failure branch), and the
    results of the branch's ops, which all applied."""

    succeeded: bool
    results: list[OpResult]
