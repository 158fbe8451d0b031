"""RFC 9457 problem details: every error the API returns, in one table."""

from collections.abc import Mapping
from http import HTTPStatus

import orjson
from starlette.exceptions import HTTPException
from starlette.responses import Response

from kvstore.errors import InvalidRequest, KvError, PreconditionFailed, SchemaError, ShardError, ValueTooLarge

PROBLEM_JSON = "application/problem+json"

# Most specific first: the first class an error is an instance of decides its status.
STATUS_BY_ERROR: tuple[tuple[type[KvError], int], ...] = (
    (ValueTooLarge, 413),
    (InvalidRequest, 400),
    (PreconditionFailed, 412),
    (ShardError, 503),
    (SchemaError, 503),
)


def status_for(error: KvError) -> int:
    for error_class, status in STATUS_BY_ERROR:
        if isinstance(error, error_class):
            return status
    return 500


def problem(
    status: int,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    **extensions: object,
) -> Response:
    """A problem+json response; ``title`` is the status phrase, as ``type: about:blank`` requires."""
    body = {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status, "detail": detail}
    body.update(extensions)
    return Response(orjson.dumps(body), status_code=status, headers=headers, media_type=PROBLEM_JSON)


def routing_error(error: HTTPException, method: str) -> Response:
    """Starlette's routing errors (no such path, method not allowed) with a detail to act on."""
    detail = error.detail
    headers = error.headers or {}
    if error.status_code == 404:
        detail = "no endpoint at this path: keys are at /v1/kv/{key}; see /openapi.json"
    elif error.status_code == 405 and "Allow" in headers:
        detail = f"{method} is not allowed here; allowed: {headers['Allow']}"
    return problem(error.status_code, detail, headers=error.headers)


def error_response(error: KvError, retry_after_s: int) -> Response:
    status = status_for(error)
    headers = {"Retry-After": str(retry_after_s)} if status == 503 else None
    extensions: dict[str, object] = {}
    if isinstance(error, ShardError):
        extensions["shard"] = error.shard
    return problem(status, str(error), headers=headers, **extensions)
