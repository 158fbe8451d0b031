"""The HTTP API in the client's terms, without I/O: paths, headers and query values out; typed
results and errors (``errors.py``) in."""

import base64
import binascii
import contextlib
import email.utils
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from kvstore.client.errors import (
    BadRequest,
    ClientError,
    Conflict,
    CrossShard,
    Forbidden,
    NotFound,
    PreconditionFailed,
    ServerError,
    Unauthorized,
    Unavailable,
    ValueTooLarge,
    WriteOutcomeUnknown,
)
from kvstore.client.results import CounterValue, Entry, Item, OpResult, Page, TxnResult, Written, format_etag

KEY_PREFIX = "/v1/kv/"
LIST_PATH = "/v1/kv"
BATCH_PATH = "/v1/batch"
TXN_PATH = "/v1/txn"
READ_AFTER = "Kv-Read-After"
_ERRORS_BY_STATUS: dict[int, type[ClientError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    412: PreconditionFailed,
    413: ValueTooLarge,
    422: CrossShard,
}
_UNAVAILABLE = frozenset({502, 503, 504})
# Raised before a byte of the request left this process: never applied, so always safe to retry.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)

Version = int | str


def key_path(key: str) -> str:
    """``/v1/kv/`` + the key percent-encoded, ``/`` kept.

    Dots are encoded too: an HTTP client removes ``.`` and ``..`` path segments, which would
    silently address another key.
    """
    if not key:
        raise ValueError("a key is 1 to 255 characters")
    return KEY_PREFIX + quote(key, safe="/").replace(".", "%2E")


def if_match(version: Version) -> str:
    """``If-Match`` for a version (an int, an ETag as the server sent it, or ``*``: any live value)."""
    if isinstance(version, int):
        return format_etag(version)
    return version if version == "*" or version.startswith('"') else f'"{version}"'


def ttl_param(ttl_s: float | str) -> str:
    """Seconds as the server takes them: a number is rounded to milliseconds (the server refuses more
    than 3 decimals); text is sent as written, for the server to judge (the CLI's ``--ttl``)."""
    if isinstance(ttl_s, str):
        return ttl_s
    if ttl_s <= 0:
        raise ValueError(f"ttl must be positive, not {ttl_s!r}")
    text = f"{ttl_s:.3f}".rstrip("0").rstrip(".")
    if text == "0":
        raise ValueError(f"ttl {ttl_s!r} rounds to 0 milliseconds")
    return text


def entry_from(key: str, response: httpx.Response) -> Entry:
    return Entry(key, response.content, version_from(response), expires_at_from(response))


def written_from(response: httpx.Response) -> Written:
    body = _json(response)
    try:
        return Written(str(body["key"]), int(body["version"]), body["expires_at"], response.status_code == 201)
    except (KeyError, TypeError, ValueError):
        raise _unexpected(response) from None


def counter_from(response: httpx.Response) -> CounterValue:
    body = _json(response)
    try:
        return CounterValue(str(body["key"]), int(body["value"]), int(body["version"]), body["expires_at"])
    except (KeyError, TypeError, ValueError):
        raise _unexpected(response) from None


def page_from(response: httpx.Response) -> Page:
    body = _json(response)
    try:
        items = [
            Item(
                str(item["key"]),
                int(item["version"]),
                item["expires_at"],
                None if "value_b64" not in item else base64.b64decode(item["value_b64"], validate=True),
            )
            for item in body["items"]
        ]
        cursor = body["next"]
    except (KeyError, TypeError, ValueError, binascii.Error):
        raise _unexpected(response) from None
    return Page(items, cursor if isinstance(cursor, str) else None)


def batch_from(response: httpx.Response, ops: Sequence[tuple[str, bool]]) -> tuple[list[OpResult], list[str]]:
    """Each op's result, in order, and the read-after tokens of the ops that wrote; ``ops`` are
    the batch's ``(key, writes)``."""
    body = _json(response)
    try:
        return _results(body["results"], ops, response.headers.get("x-request-id"))
    except (KeyError, TypeError, ValueError, binascii.Error):
        raise _unexpected(response) from None


def txn_from(
    response: httpx.Response, success: Sequence[tuple[str, bool]], failure: Sequence[tuple[str, bool]]
) -> tuple[TxnResult, list[str]]:
    """The branch a txn ran and its ops' results, and the read-after tokens of its writes."""
    body = _json(response)
    try:
        succeeded = body["succeeded"]
        if not isinstance(succeeded, bool):
            raise TypeError
        results, tokens = _results(
            body["results"], success if succeeded else failure, response.headers.get("x-request-id")
        )
    except (KeyError, TypeError, ValueError, binascii.Error):
        raise _unexpected(response) from None
    return TxnResult(succeeded, results), tokens


def _results(
    answers: list[Any], ops: Sequence[tuple[str, bool]], request_id: str | None
) -> tuple[list[OpResult], list[str]]:
    if len(answers) != len(ops):
        raise ValueError("one result per op")
    results = [_op_result(answer, op, request_id) for answer, op in zip(answers, ops, strict=True)]
    tokens = [answer["read_after"] for answer in answers if isinstance(answer.get("read_after"), str)]
    return results, tokens


def _op_result(answer: Mapping[str, Any], op: tuple[str, bool], request_id: str | None) -> OpResult:
    (key, writes), status = op, int(answer["status"])
    if "error" in answer:
        return OpResult(status, key, error=problem_error(status, answer["error"], write=writes, request_id=request_id))
    value: bytes | int | None = None
    if "value_b64" in answer:
        value = base64.b64decode(answer["value_b64"], validate=True)
    elif "value" in answer:
        value = int(answer["value"])
    version = answer.get("version")
    return OpResult(status, key, None if version is None else int(version), answer.get("expires_at"), value)


def read_after_of(response: httpx.Response) -> list[str]:
    """A single-key write's read-after token (shards with replicas send one)."""
    token = response.headers.get(READ_AFTER)
    return [] if token is None else [token]


def version_from(response: httpx.Response) -> int:
    etag = response.headers.get("etag", "")
    try:
        return int(etag.strip('"'))
    except ValueError:
        raise _unexpected(response, f"no version in ETag {etag[:40]!r}") from None


def expires_at_from(response: httpx.Response) -> int | None:
    expires_at = response.headers.get("expires-at")
    return None if expires_at is None else int(expires_at)


def seconds_left(expires_at_ms: int | None) -> float | None:
    """What an expiry leaves, by this machine's clock; None: persistent."""
    if expires_at_ms is None:
        return None
    return max(expires_at_ms - time.time() * 1000, 0.0) / 1000


def error_from(response: httpx.Response, *, write: bool) -> ClientError:
    """The error for an answer of 400 or more. A 502/504 to a write came from a proxy that lost the
    server's answer: its outcome is unknown. A 503 from kvstore says so itself when it is."""
    return problem_error(
        response.status_code,
        _problem(response),
        write=write,
        reason=response.reason_phrase,
        retry_after=response.headers.get("retry-after"),
        request_id=response.headers.get("x-request-id"),
    )


def problem_error(
    status: int,
    problem: Mapping[str, Any],
    *,
    write: bool,
    reason: str = "",
    retry_after: str | None = None,
    request_id: str | None = None,
) -> ClientError:
    """The error for ``status`` and its problem document (a response's, or a batch op's)."""
    detail = str(problem.get("detail") or reason or status)
    context: dict[str, Any] = {"status": status, "problem": problem, "request_id": request_id}
    if status in _UNAVAILABLE:
        unknown = problem.get("write_outcome") == "unknown" or (write and status != 503)
        kind = WriteOutcomeUnknown if unknown else Unavailable
        return kind(detail, retry_after_s=retry_after_s(retry_after), **context)
    return _ERRORS_BY_STATUS.get(status, ServerError)(detail, **context)


def transport_failure(error: httpx.TransportError, *, write: bool) -> Unavailable:
    """No answer: a write that may have left this process has an unknown outcome."""
    cause = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    if write and not isinstance(error, _NOT_SENT):
        return WriteOutcomeUnknown(
            f"the connection failed after the write was sent; it may have been applied ({cause})"
        )
    return Unavailable(f"no answer from the server ({cause})")


def retry_after_s(value: str | None) -> float | None:
    """``Retry-After`` as seconds from now: delay-seconds or an HTTP date (RFC 9110 10.2.3)."""
    if value is None:
        return None
    if value.strip().isdigit():
        return float(value)
    with contextlib.suppress(TypeError, ValueError):
        return max(email.utils.parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    return None


def _problem(response: httpx.Response) -> Mapping[str, Any]:
    if not response.headers.get("content-type", "").startswith("application/problem+json"):
        return {}
    with contextlib.suppress(ValueError):
        document = orjson.loads(response.content)
        if isinstance(document, dict):
            return document
    return {}


def _json(response: httpx.Response) -> Any:
    try:
        return orjson.loads(response.content)
    except ValueError:
        raise _unexpected(response) from None


def _unexpected(response: httpx.Response, detail: str = "an answer this client does not understand") -> ServerError:
    return ServerError(detail, status=response.status_code, request_id=response.headers.get("x-request-id"))
