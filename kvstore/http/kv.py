"""The ``/v1/kv/{key}`` resource: GET, HEAD, PUT, PATCH, DELETE.

Handlers only translate between HTTP and :class:`~kvstore.store.KeyValueStore`; errors are
raised as our own exceptions and rendered as problem+json by the app's error handlers.
"""

from typing import Any

import orjson
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import Response

from kvstore.backends.base import Row
from kvstore.conditions import Precondition, format_etag, none_match, parse_if_match, parse_preconditions
from kvstore.errors import InvalidRequest, ValueTooLarge
from kvstore.http.problems import problem
from kvstore.keys import parse_key, parse_ttl_ms
from kvstore.store import KeyValueStore, WriteResult

PREFIX = "/v1/kv/"
ROUTE = PREFIX + "{key:key}"
READ_AFTER_HEADER = "Kv-Read-After"
_PREFIX_BYTES = PREFIX.encode()
_NOT_FOUND_DETAIL = "no live value for this key (missing, expired or deleted)"
_PATCH_BODY_DETAIL = (
    "PATCH takes no body: it changes only the expiry (?ttl=SECONDS or ?persist=true) and leaves the value "
    "untouched; to change the value, PUT it"
)


class KeyConvertor(Convertor[str]):
    """Matches every key, newlines included: Starlette's ``path`` convertor (``.*``) stops at them."""

    regex = "[\\s\\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("key", KeyConvertor())


def key_from(request: Request) -> str:
    """The key, decoded strictly from the raw path so invalid UTF-8 is refused, not replaced."""
    raw: bytes = request.scope.get("raw_path") or request.scope["path"].encode()
    raw = raw.split(b"?", 1)[0]
    return parse_key(raw[len(_PREFIX_BYTES) :] if raw.startswith(_PREFIX_BYTES) else raw)


def query(request: Request, allowed: frozenset[str]) -> dict[str, str]:
    """Query parameters, refusing unknown or repeated ones (a typo must not pass silently)."""
    params: dict[str, str] = {}
    if not request.scope["query_string"]:  # the common case: nothing to parse
        return params
    for name, value in request.query_params.multi_items():
        if name not in allowed:
            expected = ", ".join(sorted(allowed)) or "none"
            raise InvalidRequest(f"unknown query parameter {name[:40]!r} for {request.method}; allowed: {expected}")
        if name in params:
            raise InvalidRequest(f"query parameter {name!r} given more than once")
        params[name] = value
    return params


def write_preconditions(request: Request, *, allow_absent: bool) -> Precondition:
    precondition = parse_preconditions(request.headers.get("if-match"), request.headers.get("if-none-match"))
    if precondition.require_absent and not allow_absent:
        raise InvalidRequest(f"If-None-Match is not supported on {request.method}")
    return precondition


async def read_value(request: Request, limit: int) -> bytes:
    """The request body, refused as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ValueTooLarge(f"value is {declared} bytes; the maximum is {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ValueTooLarge(f"value is over the maximum of {limit} bytes")
    return bytes(body)


async def has_body(request: Request) -> bool:
    """Whether the request carries a body, known from its first non-empty chunk (the rest is not read)."""
    async for chunk in request.stream():
        if chunk:
            return True
    return False


def row_headers(row: Row) -> dict[str, str]:
    headers = {"ETag": format_etag(row.version)}
    if row.expires_at_ms is not None:
        headers["Expires-At"] = str(row.expires_at_ms)
    return headers


def read_after_header(result: WriteResult) -> dict[str, str]:
    return {} if result.read_after is None else {READ_AFTER_HEADER: result.read_after}


def written(key: str, result: WriteResult, status: int) -> Response:
    row = result.row
    assert row is not None
    body: dict[str, Any] = {"key": key, "version": row.version, "expires_at": row.expires_at_ms}
    headers = row_headers(row) | read_after_header(result)
    return Response(orjson.dumps(body), status_code=status, headers=headers, media_type="application/json")


def read_options(request: Request, params: dict[str, str]) -> tuple[bool, str | None]:
    """``(strong, read_after)`` from ``?consistency=``/``Consistency:`` and ``?after=``/``Kv-Read-After:``."""
    consistency = params.get("consistency") or request.headers.get("consistency") or "eventual"
    if consistency not in ("strong", "eventual"):
        raise InvalidRequest("consistency must be 'strong' or 'eventual'")
    return consistency == "strong", params.get("after") or request.headers.get(READ_AFTER_HEADER)


def not_found() -> Response:
    return problem(404, _NOT_FOUND_DETAIL)


class KeyValueResource:
    """One endpoint for every method on a key, dispatching on the method."""

    _NO_PARAMS = frozenset[str]()
    _GET_PARAMS = frozenset({"consistency", "after"})
    _PUT_PARAMS = frozenset({"ttl"})
    _PATCH_PARAMS = frozenset({"ttl", "persist"})

    def __init__(self, store: KeyValueStore, max_value_bytes: int) -> None:
        self.store = store
        self.max_value_bytes = max_value_bytes

    async def handle(self, request: Request) -> Response:
        key = key_from(request)
        method = request.method
        if method in ("GET", "HEAD"):
            return await self.get(request, key)
        if method == "PUT":
            return await self.put(request, key)
        if method == "PATCH":
            return await self.patch(request, key)
        return await self.delete(request, key)

    async def get(self, request: Request, key: str) -> Response:
        strong, read_after = read_options(request, query(request, self._GET_PARAMS))
        if_match = parse_if_match(request.headers.get("if-match"))
        # RFC 9110 13.1.1: If-Match is judged against the current version, which is the primary's.
        row = await self.store.get(key, strong=strong or if_match.is_conditional, read_after=read_after)
        if not if_match.holds(None if row is None else row.version):
            raise if_match.failure()
        if row is None:
            return not_found()
        headers = row_headers(row)
        if none_match(request.headers.get("if-none-match"), row.version):
            return Response(status_code=304, headers=headers)
        return Response(row.value, headers=headers, media_type="application/octet-stream")

    async def put(self, request: Request, key: str) -> Response:
        params = query(request, self._PUT_PARAMS)
        ttl_ms = parse_ttl_ms(params["ttl"]) if "ttl" in params else None
        precondition = write_preconditions(request, allow_absent=True)
        value = await read_value(request, self.max_value_bytes)
        result = await self.store.put(key, value, ttl_ms, precondition)
        return written(key, result, 201 if result.created else 200)

    async def patch(self, request: Request, key: str) -> Response:
        params = query(request, self._PATCH_PARAMS)
        if ("ttl" in params) == ("persist" in params):
            raise InvalidRequest("PATCH takes exactly one of ?ttl=SECONDS or ?persist=true")
        if "persist" in params and params["persist"] != "true":
            raise InvalidRequest("persist must be 'true'")
        ttl_ms = parse_ttl_ms(params["ttl"]) if "ttl" in params else None
        precondition = write_preconditions(request, allow_absent=False)
        # Refused, not ignored: a client sending a value here believes it is being stored.
        if await has_body(request):
            raise InvalidRequest(_PATCH_BODY_DETAIL)
        result = await self.store.touch(key, ttl_ms, precondition)
        return not_found() if result is None else written(key, result, 200)

    async def delete(self, request: Request, key: str) -> Response:
        query(request, self._NO_PARAMS)
        precondition = write_preconditions(request, allow_absent=False)
        result = await self.store.delete(key, precondition)
        return not_found() if result is None else Response(status_code=204, headers=read_after_header(result))
