"""RFC 9457 problem details: every error the API returns, in one table."""

from collections.abc import Mapping

from starlette.exceptions import HTTPException
from starlette.responses import Response

from kvstore.errors import (
    Conflict,
    CrossShard,
    InvalidRequest,
    KvError,
    PreconditionFailed,
    SchemaError,
    ShardError,
    ValueTooLarge,
    WriteOutcomeUnknown,
)
from kvstore.http import reply
from kvstore.http.reply import Reply
from kvstore.operations import OpFailed

PROBLEM_JSON = reply.PROBLEM_JSON.decode()
NO_ENDPOINT = "no endpoint at this path: keys are at /v1/kv/{key}; see /openapi.json"

# Most specific first: the first class an error is an instance of decides its status.
STATUS_BY_ERROR: tuple[tuple[type[KvError], int], ...] = (
    (ValueTooLarge, 413),
    (InvalidRequest, 400),
    (PreconditionFailed, 412),
    (Conflict, 409),
    (CrossShard, 422),
    (ShardError, 503),
    (SchemaError, 503),
)


def status_for(error: KvError) -> int:
    if isinstance(error, OpFailed):  # a transaction's failed op: the status its own request would get
        return status_for(error.error)
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
    """A problem+json Starlette response, for the endpoints Starlette serves."""
    body = reply.problem_document(status, detail, extensions)
    return Response(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def no_endpoint() -> Reply:
    return reply.problem(404, NO_ENDPOINT)


def method_not_allowed(method: str, allowed: tuple[str, ...]) -> Reply:
    allow = ", ".join(allowed)
    return reply.problem(405, f"{method} is not allowed here; allowed: {allow}", [(b"allow", allow.encode())])


def routing_error(error: HTTPException) -> Response:
    """Starlette's own routing errors (a path the endpoint table knows but Starlette does not)."""
    return problem(error.status_code, NO_ENDPOINT if error.status_code == 404 else error.detail, headers=error.headers)


def error_reply(error: KvError, retry_after_s: int) -> Reply:
    status = status_for(error)
    headers = [(b"retry-after", str(retry_after_s).encode())] if status == 503 else []
    if isinstance(error, WriteOutcomeUnknown):
        # Machine-readable, so that a client never repeats a write that may have been applied.
        return reply.problem(status, str(error), headers, shard=error.shard, write_outcome="unknown")
    if isinstance(error, ShardError):
        return reply.problem(status, str(error), headers, shard=error.shard)
    if isinstance(error, CrossShard):
        return reply.problem(status, str(error), headers, shards=error.shards)
    if isinstance(error, OpFailed):
        return reply.problem(status, str(error), headers, branch=error.branch, op=error.index)
    return reply.problem(status, str(error), headers)
