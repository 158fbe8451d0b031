"""``POST /v1/batch``: many keys' operations in one request, each answered as its own request.

The body is ``{"ops": [{"op": "get" | "put" | "delete" | "incr", "key": …, …}, …]}``, at most
``MAX_OPS`` ops and ``MAX_BODY_BYTES`` of JSON. Each op is validated and answered exactly like its
single-key request (status, version, expiry, value, problem details), in order; an op that is
invalid or fails does not stop the others. Not atomic across ops (``/v1/txn`` is). A batch of
reads needs the ``read`` scope, one with any write ``write``.

Op fields (an unknown or misplaced field is that op's 400):

- ``get``: ``key``
- ``put``: ``key``, ``value_b64`` (default empty), ``ttl`` (seconds, a number or a string),
  ``if_match`` (an ETag such as ``"\\"17…\\""``, a version number, or ``"*"``),
  ``if_none_match`` (``"*"``)
- ``delete``: ``key``, ``if_match``
- ``incr``: ``key``, ``by`` (a signed 64-bit integer, default 1)
"""

import base64
import binascii
import logging
from http import HTTPStatus
from typing import Any

import orjson
from starlette.types import Receive, Scope

from kvstore.conditions import Precondition, parse_preconditions
from kvstore.config import ApiToken
from kvstore.errors import InvalidRequest, KvError, ShardError, ValueTooLarge, WriteOutcomeUnknown
from kvstore.http import auth, reply
from kvstore.http.endpoints import WRITE
from kvstore.http.kv import RequestHeaders, query, read_value, wants_strong
from kvstore.http.problems import status_for
from kvstore.http.reply import Reply
from kvstore.keys import check_increment, parse_ttl_ms, validate_key
from kvstore.operations import DeleteOp, GetOp, IncrOp, Op, Outcome, PutOp, is_write
from kvstore.store import KeyValueStore

MAX_OPS = 1000
MAX_BODY_BYTES = 16 * 1024 * 1024
_PARAMS = frozenset({"consistency", "after"})
_FIELDS = {
    "get": frozenset({"op", "key"}),
    "put": frozenset({"op", "key", "value_b64", "ttl", "if_match", "if_none_match"}),
    "delete": frozenset({"op", "key", "if_match"}),
    "incr": frozenset({"op", "key", "by"}),
}
Parsed = Op | KvError  # an op, or why it is refused (its answer, without running)
log = logging.getLogger("kvstore.server")


class BatchRoute:
    def __init__(self, store: KeyValueStore, max_value_bytes: int, tokens: tuple[ApiToken, ...]) -> None:
        self.store = store
        self.max_value_bytes = max_value_bytes
        self.tokens = tokens

    async def handle(self, scope: Scope, receive: Receive, headers: RequestHeaders) -> Reply:
        params = query(scope, _PARAMS)
        strong = wants_strong(params, headers)
        document = await read_json(receive, headers)
        raw_ops = document.get("ops")
        if set(document) != {"ops"} or not isinstance(raw_ops, list):
            raise InvalidRequest('the body must be a JSON object {"ops": [...]}')
        if not 1 <= len(raw_ops) <= MAX_OPS:
            raise InvalidRequest(f"a batch has 1 to {MAX_OPS} ops, this one {len(raw_ops)}")
        parsed = [parse_op(raw, self.max_value_bytes) for raw in raw_ops]
        if self.tokens and any(not isinstance(op, KvError) and is_write(op) for op in parsed):
            refused = auth.refusal(headers.authorization, WRITE, self.tokens)
            if refused is not None:
                return refused
        ops = [op for op in parsed if not isinstance(op, KvError)]
        outcomes = iter(
            await self.store.batch(ops, strong=strong, read_after=params.get("after") or headers.read_after)
        )
        results = [
            render_outcome(op, Outcome(error=op) if isinstance(op, KvError) else next(outcomes), raw)
            for op, raw in zip(parsed, raw_ops, strict=True)
        ]
        return Reply(200, [], orjson.dumps({"results": results}), reply.JSON)


async def read_json(receive: Receive, headers: RequestHeaders) -> dict[str, Any]:
    """The request body as a JSON object, refused at ``MAX_BODY_BYTES``."""
    try:
        body = await read_value(receive, headers.content_length, MAX_BODY_BYTES)
    except ValueTooLarge:
        raise ValueTooLarge(f"the body is over {MAX_BODY_BYTES} bytes; split the ops") from None
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise InvalidRequest(f"the body is not JSON: {error}") from None
    if not isinstance(document, dict):
        raise InvalidRequest("the body must be a JSON object")
    return document


def parse_op(raw: object, max_value_bytes: int) -> Parsed:
    """One op, validated as its single-key request would be; the error instead of raising it."""
    try:
        return op_from_json(raw, max_value_bytes)
    except KvError as error:
        return error


def op_from_json(raw: object, max_value_bytes: int) -> Op:
    if not isinstance(raw, dict):
        raise InvalidRequest('each op is a JSON object such as {"op": "get", "key": "k"}')
    kind = raw.get("op")
    if kind not in _FIELDS:
        raise InvalidRequest(f"op must be one of {', '.join(_FIELDS)}, got {str(kind)[:40]!r}")
    unknown = sorted(set(raw) - _FIELDS[kind])
    if unknown:
        raise InvalidRequest(
            f"{unknown[0]!r} is not a field of a {kind} op; it takes {', '.join(sorted(_FIELDS[kind]))}"
        )
    key = raw.get("key")
    if not isinstance(key, str):
        raise InvalidRequest("key must be a string")
    validate_key(key)
    if kind == "get":
        return GetOp(key)
    if kind == "incr":
        by = raw.get("by", 1)
        if not isinstance(by, int) or isinstance(by, bool):
            raise InvalidRequest("by must be an integer")
        return IncrOp(key, check_increment(by))
    precondition = _precondition(raw.get("if_match"), raw.get("if_none_match"))
    if kind == "delete":
        return DeleteOp(key, precondition)
    return PutOp(key, _value(raw.get("value_b64", ""), max_value_bytes), _ttl(raw.get("ttl")), precondition)


def _value(encoded: object, max_value_bytes: int) -> bytes:
    if not isinstance(encoded, str):
        raise InvalidRequest("value_b64 must be a base64 string")
    try:
        value = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("value_b64 is not valid base64") from None
    if len(value) > max_value_bytes:
        raise ValueTooLarge(f"value is {len(value)} bytes; the maximum is {max_value_bytes}")
    return value


def _ttl(ttl: object) -> int | None:
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, int | float | str):
        raise InvalidRequest("ttl must be a number of seconds")
    return parse_ttl_ms(ttl if isinstance(ttl, str) else repr(ttl))


def _precondition(if_match: object, if_none_match: object) -> Precondition:
    if isinstance(if_match, int) and not isinstance(if_match, bool):
        if if_none_match is not None:
            raise InvalidRequest("if_match and if_none_match cannot both hold")
        return Precondition(if_version=if_match)
    if not (if_match is None or isinstance(if_match, str)) or not (
        if_none_match is None or isinstance(if_none_match, str)
    ):
        raise InvalidRequest("if_match is an ETag string, a version number or '*'; if_none_match is '*'")
    return parse_preconditions(if_match, if_none_match)


def render_outcome(op: Parsed, outcome: Outcome, raw: object) -> dict[str, object]:
    """An op's answer as its single-key request would give it: status, and the key's state."""
    key = raw.get("key") if isinstance(raw, dict) else None
    if outcome.error is not None:
        return _failed(key, outcome.error)
    if (isinstance(op, GetOp) and outcome.row is None) or (isinstance(op, DeleteOp) and not outcome.found):
        return _failed(key, None)
    result: dict[str, object] = {"status": _status(op, outcome), "key": key}
    row = outcome.row
    if row is not None:
        result |= {"version": row.version, "expires_at": row.expires_at_ms}
        if isinstance(op, GetOp):
            result["value_b64"] = base64.b64encode(row.value or b"").decode()
        elif isinstance(op, IncrOp):
            result["value"] = int(row.value or b"0")
    if outcome.read_after is not None:
        result["read_after"] = outcome.read_after
    return result


def _status(op: Parsed, outcome: Outcome) -> int:
    if isinstance(op, PutOp):
        return 201 if outcome.created else 200
    return 204 if isinstance(op, DeleteOp) else 200


def _failed(key: object, error: BaseException | None) -> dict[str, object]:
    """A failed op: None is "no live value for this key", the 404 of its single-key request."""
    if error is None:
        status, detail = 404, "no live value for this key (missing, expired or deleted)"
    elif isinstance(error, KvError):
        status, detail = status_for(error), str(error)
    else:
        log.error("unhandled error in a batch op", exc_info=error)
        status, detail = 500, "internal error; see the server log for this request id"
    problem: dict[str, object] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if isinstance(error, ShardError):
        problem["shard"] = error.shard
    if isinstance(error, WriteOutcomeUnknown):
        problem["write_outcome"] = "unknown"  # as on a single-key 503: never to be repeated blindly
    return {"status": status, "key": key, "error": problem}
