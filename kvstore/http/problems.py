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


def no_endpoint() -> Response:
    return problem(404, "no endpoint at this path: keys are at /v1/kv/{key}; see /openapi.json")


def method_not_allowed(method: str, allow: str) -> Response:
    return problem(405, f"{method} is not allowed here; allowed: {allow}", headers={"Allow": allow})


def routing_error(error: HTTPException, method: str) -> Response:
    """Starlette's routing errors (no such path, method not allowed) with a detail to act on."""
    allow = (error.headers or {}).get("Allow")
    if error.status_code == 404:
        return no_endpoint()
    if error.status_code == 405 and allow is not None:
        return method_not_allowed(method, allow)
    return problem(error.status_code, error.detail, headers=error.headers)


def error_response(error: KvError, retry_after_s: int) -> Response:
    status = status_for(error)
    headers = {"Retry-After": str(retry_after_s)} if status == 503 else None
    extensions: dict[str, object] = {}
    if isinstance(error, ShardError):
        extensions["shard"] = error.shard
    return problem(status, str(error), headers=headers, **extensions)
