"""Every client operation once, as a generator that yields what to do and receives what happened.

An operation yields an ``httpx.Request`` to be sent (and receives the ``httpx.Response``, or has
the ``httpx.TransportError`` thrown into it) or a ``Pause`` to be slept; it returns its typed
result. ``Client`` drives it with blocking calls, ``AsyncClient`` with awaits: the requests, the
retries, the session's tokens and the compare-and-set loop are written here once, for both.
"""

import copy
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import httpx
import orjson

from kvstore import __version__
from kvstore.client import protocol
from kvstore.client.batch import Compare, Op, is_write
from kvstore.client.errors import ClientError, NotFound, PreconditionFailed, Unavailable, WriteOutcomeUnknown
from kvstore.client.protocol import Version
from kvstore.client.results import CounterValue, Entry, OpResult, Page, TxnResult, Written
from kvstore.client.retries import RetryPolicy
from kvstore.client.session import ReadAfterTokens

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Pause:
    seconds: float


Step = httpx.Request | Pause
Operation = Generator[Step, httpx.Response | None, T]
Value = bytes | str
UPDATE_ATTEMPTS = 16


class Operations:
    """Where the server is, how to authenticate, how long to wait and when to retry; and, for a
    session, its read-after tokens."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None,
        timeout: httpx.Timeout,
        retry: RetryPolicy,
    ) -> None:
        self.url = httpx.URL(url)
        self.base_path = self.url.raw_path.split(b"?", 1)[0].rstrip(b"/")  # a proxy may serve kvstore below a path
        self.headers = {"User-Agent": f"kvstore-client/{__version__}"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.timeout = timeout
        self.retry = retry
        self.tokens: ReadAfterTokens | None = None

    def __repr__(self) -> str:  # never the token
        return f"{type(self).__name__}({str(self.url)!r}, session={self.tokens is not None})"

    def session(self) -> "Operations":
        """The same server and settings, with read-after tokens of its own."""
        session = copy.copy(self)
        session.tokens = ReadAfterTokens()
        return session

    def get(self, key: str, *, strong: bool = False) -> Operation[Entry]:
        """The key's live value, version and expiry; ``NotFound`` when it has none.

        From a replica when the shard has one in rotation, unless ``strong`` (the primary); in a
        session, never older than the session's own writes."""
        headers = {"Consistency": "strong"} if strong else self._read_after()
        response = yield from self._exchange(self._request("GET", protocol.key_path(key), headers=headers), write=False)
        return protocol.entry_from(key, response)

    def put(
        self,
        key: str,
        value: Value,
        *,
        ttl: float | str | None = None,
        if_match: Version | None = None,
        if_absent: bool = False,
    ) -> Operation[Written]:
        """Store ``value`` (str is stored as UTF-8) under ``key``, persistent or expiring after
        ``ttl`` seconds (millisecond precision); only if the live version is ``if_match``, or only
        if there is no live value (``if_absent``): else ``PreconditionFailed``."""
        if if_match is not None and if_absent:
            raise ValueError("if_match and if_absent exclude each other")
        headers = {"If-None-Match": "*"} if if_absent else {}
        if if_match is not None:
            headers["If-Match"] = protocol.if_match(if_match)
        params = {} if ttl is None else {"ttl": protocol.ttl_param(ttl)}
        content = value.encode() if isinstance(value, str) else value
        request = self._request("PUT", protocol.key_path(key), params=params, headers=headers, content=content)
        return protocol.written_from((yield from self._write(request)))

    def delete(self, key: str, *, if_match: Version | None = None) -> Operation[bool]:
        """Delete the key: True, or False when it had no live value (``PreconditionFailed`` with
        ``if_match``)."""
        headers = {} if if_match is None else {"If-Match": protocol.if_match(if_match)}
        try:
            yield from self._write(self._request("DELETE", protocol.key_path(key), headers=headers))
        except NotFound:
            return False
        return True

    def expire(self, key: str, ttl: float | str, *, if_match: Version | None = None) -> Operation[Written]:
        """Expire the key ``ttl`` seconds from now, value untouched; ``NotFound`` when it is not live."""
        return (yield from self._touch(key, {"ttl": protocol.ttl_param(ttl)}, if_match))

    def persist(self, key: str, *, if_match: Version | None = None) -> Operation[Written]:
        """Remove the key's expiry, value untouched; ``NotFound`` when it is not live."""
        return (yield from self._touch(key, {"persist": "true"}, if_match))

    def incr(self, key: str, by: int = 1) -> Operation[CounterValue]:
        """Add ``by`` (may be negative) to the key's decimal integer value, atomically on the server;
        a key with no live value counts from 0. ``Conflict`` when the value is not an integer or the
        sum would leave the signed 64-bit range. The expiry is kept."""
        request = self._request("PATCH", protocol.key_path(key), params={"incr": str(by)})
        return protocol.counter_from((yield from self._write(request)))

    def ttl(self, key: str) -> Operation[float | None]:
        """Seconds the key has left (by this machine's clock), None when persistent; ``NotFound``
        when it is not live."""
        response = yield from self._exchange(
            self._request("HEAD", protocol.key_path(key), headers=self._read_after()), write=False
        )
        return protocol.seconds_left(protocol.expires_at_from(response))

    def update(
        self, key: str, change: Callable[[bytes | None], Value], *, ttl: float | None = None
    ) -> Operation[Written]:
        """Replace the key's value with ``change(current)`` (None when it has none), atomically:
        read it from the primary, write back only if its version is still the one read, and try
        again when another writer came between. ``change`` may be called several times; the new
        value gets ``ttl`` as ``put`` gives it. ``PreconditionFailed`` after many lost races."""
        for attempt in range(1, UPDATE_ATTEMPTS + 1):
            try:
                current: Entry | None = yield from self.get(key, strong=True)
            except NotFound:
                current = None
            value = change(None if current is None else current.value)
            try:
                if current is None:
                    return (yield from self.put(key, value, ttl=ttl, if_absent=True))
                return (yield from self.put(key, value, ttl=ttl, if_match=current.version))
            except PreconditionFailed:
                ceiling = min(self.retry.max_backoff_s, self.retry.backoff_s * 2 ** (attempt - 1))
                yield Pause(self.retry.random.uniform(0, ceiling))
        raise PreconditionFailed(f"update of {key!r}: another writer won {UPDATE_ATTEMPTS} times in a row", status=412)

    def list_page(
        self,
        prefix: str = "",
        *,
        start_after: str | None = None,
        reverse: bool = False,
        values: bool = False,
        page_size: int | None = None,
        strong: bool = False,
        cursor: str | None = None,
    ) -> Operation[Page]:
        """One page of live keys starting with ``prefix``, in byte order (``reverse``: descending),
        after ``start_after``; with ``values``, their values too. ``cursor`` (a page's) continues a
        listing, which then keeps its prefix, position and direction. ``list`` follows the cursors."""
        if cursor is not None:
            params = {"cursor": cursor}
        else:
            params = {"prefix": prefix} if prefix else {}
            if start_after is not None:
                params["start_after"] = start_after
            if reverse:
                params["reverse"] = "true"
        if values:
            params["values"] = "true"
        if page_size is not None:
            params["limit"] = str(page_size)
        headers = {"Consistency": "strong"} if strong else self._read_after()
        request = self._request("GET", protocol.LIST_PATH, params=params, headers=headers)
        return protocol.page_from((yield from self._exchange(request, write=False)))

    def batch(self, ops: Sequence[Op]) -> Operation[list[OpResult]]:
        """Many keys' ``Get``, ``Put``, ``Delete`` and ``Incr`` in one request, each answered as its
        single-key request would be, in order, with its error in its result rather than raised (a
        batch is not atomic: one op failing stops none of the others). Retried as a whole only when
        it was certainly not applied, or when it only reads."""
        if not ops:
            return []
        content = orjson.dumps({"ops": [op.document() for op in ops]})
        headers = {"Content-Type": "application/json", **self._read_after()}
        request = self._request("POST", protocol.BATCH_PATH, headers=headers, content=content)
        keyed = _keyed(ops)
        answered: list[list[OpResult]] = []

        def tokens_of(response: httpx.Response) -> list[str]:
            results, tokens = protocol.batch_from(response, keyed)
            answered.append(results)
            return tokens

        yield from self._send(request, writes=any(writes for _, writes in keyed), tokens_of=tokens_of)
        return answered[0]

    def txn(
        self, compare: Sequence[Compare] = (), success: Sequence[Op] = (), failure: Sequence[Op] = ()
    ) -> Operation[TxnResult]:
        """etcd's transaction on keys of one shard: when every ``compare`` holds the ``success`` ops
        run, else the ``failure`` ops, in one database transaction. A failing op (a precondition, a
        counter) rolls the whole branch back and raises its error (``problem`` names the branch and
        op); keys on several shards raise ``CrossShard`` (give them a common hash tag)."""
        document = {
            "compare": [condition.document() for condition in compare],
            "success": [op.document() for op in success],
            "failure": [op.document() for op in failure],
        }
        request = self._request(
            "POST", protocol.TXN_PATH, headers={"Content-Type": "application/json"}, content=orjson.dumps(document)
        )
        branches = _keyed(success), _keyed(failure)
        answered: list[TxnResult] = []

        def tokens_of(response: httpx.Response) -> list[str]:
            result, tokens = protocol.txn_from(response, *branches)
            answered.append(result)
            return tokens

        writes = any(is_write(op) for op in (*success, *failure))
        yield from self._send(request, writes=writes, tokens_of=tokens_of)
        return answered[0]

    def _touch(self, key: str, params: dict[str, str], version: Version | None) -> Operation[Written]:
        headers = {} if version is None else {"If-Match": protocol.if_match(version)}
        return protocol.written_from(
            (yield from self._write(self._request("PATCH", protocol.key_path(key), params=params, headers=headers)))
        )

    def _read_after(self) -> dict[str, str]:
        header = None if self.tokens is None else self.tokens.header()
        return {} if header is None else {protocol.READ_AFTER: header}

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
    ) -> httpx.Request:
        return httpx.Request(
            method,
            self.url.copy_with(raw_path=self.base_path + path.encode()),
            params=params or None,
            headers={**self.headers, **(headers or {})},
            content=content,
            extensions={"timeout": self.timeout.as_dict()},
        )

    def _send(
        self, request: httpx.Request, *, writes: bool, tokens_of: Callable[[httpx.Response], list[str]]
    ) -> Operation[httpx.Response]:
        """A request that may read or write: ``_write`` when it writes, else a read (its answer
        still goes through ``tokens_of``)."""
        if writes:
            return (yield from self._write(request, tokens_of))
        response = yield from self._exchange(request, write=False)
        tokens_of(response)
        return response

    def _write(
        self, request: httpx.Request, tokens_of: Callable[[httpx.Response], list[str]] = protocol.read_after_of
    ) -> Operation[httpx.Response]:
        """A write, with its read-after tokens (``tokens_of`` its answer) kept in a session, and,
        when its outcome is unknown, the session's reads of its shard sent to the primary."""
        started = None if self.tokens is None else self.tokens.begin_write()
        try:
            response = yield from self._exchange(request, write=True)
        except WriteOutcomeUnknown as error:
            if self.tokens is not None:
                self.tokens.lose_track(error.shard)
            raise
        tokens = tokens_of(response)
        if self.tokens is not None and started is not None:
            for token in dict.fromkeys(tokens):  # a batch's ops of one statement share theirs
                self.tokens.record(token, started)
        return response

    def _exchange(self, request: httpx.Request, *, write: bool) -> Operation[httpx.Response]:
        """Send ``request`` until it gets an answer under 400, retrying only what was not applied:
        a read on any ``Unavailable``, a write only when it never reached a database."""
        attempt = 1
        while True:
            try:
                response = yield request
                assert response is not None
            except httpx.TransportError as error:
                failure: ClientError = protocol.transport_failure(error, write=write)
            else:
                if response.status_code < 400:
                    return response
                failure = protocol.error_from(response, write=write)
            if not isinstance(failure, Unavailable) or isinstance(failure, WriteOutcomeUnknown):
                raise failure
            delay_s = self.retry.delay_s(attempt, failure.retry_after_s)
            if delay_s is None:
                raise failure
            yield Pause(delay_s)
            attempt += 1


def _keyed(ops: Sequence[Op]) -> list[tuple[str, bool]]:
    return [(op.key, is_write(op)) for op in ops]
