"""The ``/v1/kv/{key}`` resource: GET, HEAD, PUT, PATCH, DELETE, on the lean path.

No Request or Response objects: the handler reads the scope, the headers ``front.py`` collected
in its one pass, and the body from ``receive``, and returns a :class:`~kvstore.http.reply.Reply`.
It only translates between HTTP and :class:`~kvstore.store.KeyValueStore`; errors are raised as
our own exceptions and rendered as problem+json by the front.
"""

from dataclasses import dataclass
from urllib.parse import parse_qsl

import orjson
from starlette.types import Receive, Scope

from kvstore.backends.base import Row
from kvstore.conditions import Precondition, format_etag, none_match, parse_if_match, parse_preconditions
from kvstore.errors import InvalidRequest, ValueTooLarge
from kvstore.http import reply
from kvstore.http.endpoints import KEY_PREFIX
from kvstore.http.reply import RawHeaders, Reply
from kvstore.keys import parse_increment, parse_key, parse_ttl_ms
from kvstore.store import KeyValueStore, WriteResult

READ_AFTER_HEADER = "Kv-Read-After"
_PREFIX_BYTES = KEY_PREFIX.encode()
_NOT_FOUND_DETAIL = "no live value for this key (missing, expired or deleted)"
_PATCH_BODY_DETAIL = (
    "PATCH takes no body: it changes only the expiry (?ttl=SECONDS or ?persist=true) and leaves the value "
    "untouched; to change the value, PUT it"
)
_NO_PARAMS = frozenset[str]()
_GET_PARAMS = frozenset({"consistency", "after"})
_PUT_PARAMS = frozenset({"ttl"})
_PATCH_PARAMS = frozenset({"ttl", "persist", "incr"})


class ClientGone(Exception):
    """The client disconnected before its request body arrived: there is nobody to answer."""


@dataclass(slots=True)
class RequestHeaders:
    """The request headers admission and the key routes read, collected in one pass (first wins)."""

    size: int = 0
    request_id: bytes | None = None
    authorization: bytes | None = None
    content_length: bytes | None = None
    if_match: str | None = None
    if_none_match: str | None = None
    consistency: str | None = None
    read_after: str | None = None

    @classmethod
    def scan(cls, raw: RawHeaders) -> "RequestHeaders":
        found = cls()
        size = 0
        for name, value in raw:
            size += len(name) + len(value)
            if name == b"x-request-id":
                found.request_id = found.request_id or value
            elif name == b"authorization":
                found.authorization = found.authorization or value
            elif name == b"content-length":
                found.content_length = found.content_length or value
            elif name == b"if-match":
                found.if_match = found.if_match or value.decode("latin-1")
            elif name == b"if-none-match":
                found.if_none_match = found.if_none_match or value.decode("latin-1")
            elif name == b"consistency":
                found.consistency = found.consistency or value.decode("latin-1")
            elif name == b"kv-read-after":
                found.read_after = found.read_after or value.decode("latin-1")
        found.size = size
        return found


def key_from(scope: Scope, prefix: bytes = _PREFIX_BYTES) -> str:
    """The key after ``prefix``, decoded strictly from the raw path so invalid UTF-8 is refused, not replaced."""
    raw: bytes = scope.get("raw_path") or scope["path"].encode()
    raw = raw.split(b"?", 1)[0]
    encoded = raw[len(prefix) :] if raw.startswith(prefix) else raw
    if not encoded:
        raise InvalidRequest("key is empty; to list keys, GET /v1/kv?prefix=…")
    return parse_key(encoded)


def query(scope: Scope, allowed: frozenset[str]) -> dict[str, str]:
    """Query parameters, refusing unknown or repeated ones (a typo must not pass silently)."""
    params: dict[str, str] = {}
    if not scope["query_string"]:  # the common case: nothing to parse
        return params
    try:
        pairs = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise InvalidRequest("a query parameter is not valid UTF-8 after percent-decoding") from None
    for name, value in pairs:
        if name not in allowed:
            expected = ", ".join(sorted(allowed)) or "none"
            raise InvalidRequest(f"unknown query parameter {name[:40]!r} for {scope['method']}; allowed: {expected}")
        if name in params:
            raise InvalidRequest(f"query parameter {name!r} given more than once")
        params[name] = value
    return params


def wants_strong(params: dict[str, str], headers: RequestHeaders) -> bool:
    """Whether a read asked for the primary: ``?consistency=`` or the ``Consistency`` header."""
    consistency = params.get("consistency") or headers.consistency or "eventual"
    if consistency not in ("strong", "eventual"):
        raise InvalidRequest("consistency must be 'strong' or 'eventual'")
    return consistency == "strong"


def write_preconditions(headers: RequestHeaders, method: str, *, allow_absent: bool) -> Precondition:
    precondition = parse_preconditions(headers.if_match, headers.if_none_match)
    if precondition.require_absent and not allow_absent:
        raise InvalidRequest(f"If-None-Match is not supported on {method}")
    return precondition


async def read_value(receive: Receive, declared: bytes | None, limit: int) -> bytes:
    """The request body, refused as soon as it is known to exceed ``limit`` bytes."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ValueTooLarge(f"value is {declared.decode()} bytes; the maximum is {limit}")
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        if chunk:
            body = chunk if not body else body + chunk
            if len(body) > limit:
                raise ValueTooLarge(f"value is over the maximum of {limit} bytes")
        if not message.get("more_body", False):
            return body


async def has_body(receive: Receive) -> bool:
    """Whether the request carries a body, known from its first non-empty chunk (the rest is not read)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        if message.get("body"):
            return True
        if not message.get("more_body", False):
            return False


def row_headers(row: Row) -> RawHeaders:
    headers = [(b"etag", format_etag(row.version).encode())]
    if row.expires_at_ms is not None:
        headers.append((b"expires-at", str(row.expires_at_ms).encode()))
    return headers


def written(key: str, result: WriteResult, status: int, *, counter: bool = False) -> Reply:
    """The JSON answer to a write; a counter's also carries its new value, as a number."""
    row = result.row
    assert row is not None
    headers = row_headers(row)
    if result.read_after is not None:
        headers.append((b"kv-read-after", result.read_after.encode()))
    document: dict[str, object] = {"key": key, "version": row.version, "expires_at": row.expires_at_ms}
    if counter:
        document["value"] = int(row.value or b"0")
    body = orjson.dumps(document)
    return Reply(status, headers, body, reply.JSON)


def not_found() -> Reply:
    return reply.problem(404, _NOT_FOUND_DETAIL)


class KeyRoute:
    """One handler for every method on a key, dispatching on the method (admitted by the front)."""

    def __init__(self, store: KeyValueStore, max_value_bytes: int) -> None:
        self.store = store
        self.max_value_bytes = max_value_bytes

    async def handle(self, scope: Scope, receive: Receive, headers: RequestHeaders) -> Reply:
        key = key_from(scope)
        method = scope["method"]
        if method in ("GET", "HEAD"):
            return await self.get(scope, key, headers)
        if method == "PUT":
            return await self.put(scope, receive, key, headers)
        if method == "PATCH":
            return await self.patch(scope, receive, key, headers)
        return await self.delete(scope, key, headers)

    async def get(self, scope: Scope, key: str, headers: RequestHeaders) -> Reply:
        params = query(scope, _GET_PARAMS)
        strong = wants_strong(params, headers)
        if_match = parse_if_match(headers.if_match)
        # RFC 9110 13.1.1: If-Match is judged against the current version, which is the primary's.
        strong = strong or if_match.is_conditional
        row = await self.store.get(key, strong=strong, read_after=params.get("after") or headers.read_after)
        if not if_match.holds(None if row is None else row.version):
            raise if_match.failure()
        if row is None:
            return not_found()
        if none_match(headers.if_none_match, row.version):
            return Reply(304, row_headers(row))
        return Reply(200, row_headers(row), row.value or b"", reply.OCTET_STREAM)

    async def put(self, scope: Scope, receive: Receive, key: str, headers: RequestHeaders) -> Reply:
        params = query(scope, _PUT_PARAMS)
        ttl_ms = parse_ttl_ms(params["ttl"]) if "ttl" in params else None
        precondition = write_preconditions(headers, "PUT", allow_absent=True)
        value = await read_value(receive, headers.content_length, self.max_value_bytes)
        result = await self.store.put(key, value, ttl_ms, precondition)
        return written(key, result, 201 if result.created else 200)

    async def patch(self, scope: Scope, receive: Receive, key: str, headers: RequestHeaders) -> Reply:
        params = query(scope, _PATCH_PARAMS)
        if len(params.keys() & _PATCH_PARAMS) != 1:
            raise InvalidRequest("PATCH takes exactly one of ?ttl=SECONDS, ?persist=true or ?incr=N")
        if "incr" in params:
            return await self.incr(receive, key, parse_increment(params["incr"]), headers)
        if "persist" in params and params["persist"] != "true":
            raise InvalidRequest("persist must be 'true'")
        ttl_ms = parse_ttl_ms(params["ttl"]) if "ttl" in params else None
        precondition = write_preconditions(headers, "PATCH", allow_absent=False)
        # Refused, not ignored: a client sending a value here believes it is being stored.
        if await has_body(receive):
            raise InvalidRequest(_PATCH_BODY_DETAIL)
        result = await self.store.touch(key, ttl_ms, precondition)
        return not_found() if result is None else written(key, result, 200)

    async def incr(self, receive: Receive, key: str, by: int, headers: RequestHeaders) -> Reply:
        if headers.if_match is not None or headers.if_none_match is not None:
            raise InvalidRequest("PATCH ?incr takes no If-Match or If-None-Match: an increment applies to any value")
        if await has_body(receive):
            raise InvalidRequest("PATCH ?incr=N takes no body: N is the increment")
        return written(key, await self.store.incr(key, by), 200, counter=True)

    async def delete(self, scope: Scope, key: str, headers: RequestHeaders) -> Reply:
        query(scope, _NO_PARAMS)
        precondition = write_preconditions(headers, "DELETE", allow_absent=False)
        result = await self.store.delete(key, precondition)
        if result is None:
            return not_found()
        after = [] if result.read_after is None else [(b"kv-read-after", result.read_after.encode())]
        return Reply(204, after)
