"""What the client raises: one tree, built from the server's problem+json answers.

::

    ClientError                  anything this client raises on purpose; .status, .detail, .problem
    ├── BadRequest               400: a bad key, ttl or parameter (the detail says which)
    │   └── ValueTooLarge        413: over the server's max_value_bytes
    ├── Unauthorized             401: no token, or not one the server knows
    ├── Forbidden                403: the token's scope is too small
    ├── NotFound                 404: no live value (missing, expired or deleted); also a LookupError
    ├── PreconditionFailed       412: If-Match / If-None-Match did not hold
    ├── Conflict                 409: the value does not allow it (incr of a non-integer, overflow)
    ├── CrossShard               422: a txn's keys live on several shards (.shards)
    ├── Unavailable              503, 502, 504, or no connection: try again later (.retry_after_s)
    │   └── WriteOutcomeUnknown  a write was sent and then the answer was lost: it may have been applied
    └── ServerError              any other answer (500, or one this client does not understand)

Only ``Unavailable`` is ever retried, and a ``WriteOutcomeUnknown`` never is.
"""

from collections.abc import Mapping
from typing import Any


class ClientError(Exception):
    """Base of the tree; ``problem`` is the server's problem+json document (empty without one)."""

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        problem: Mapping[str, Any] | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(f"{status} {detail}" if status is not None else detail)
        self.detail = detail
        self.status = status
        self.problem: Mapping[str, Any] = problem or {}
        self.request_id = request_id


class BadRequest(ClientError):
    """The server refused the request as malformed (400)."""


class ValueTooLarge(BadRequest):
    """The value is over the server's ``max_value_bytes`` (413)."""


class Unauthorized(ClientError):
    """No valid bearer token (401)."""


class Forbidden(ClientError):
    """The token's scope does not allow this operation (403)."""


class NotFound(ClientError, LookupError):
    """The key has no live value (404)."""


class PreconditionFailed(ClientError):
    """A conditional request's precondition did not hold (412)."""


class Conflict(ClientError):
    """The key's current value does not allow the operation (409), e.g. an increment of text."""


class CrossShard(ClientError):
    """A transaction's keys live on several shards (422), named in ``shards``; keys with a common
    hash tag (``{user42}/…``) live on one."""

    def __init__(self, detail: str, **context: Any) -> None:
        super().__init__(detail, **context)
        shards = self.problem.get("shards")
        self.shards: list[str] = [str(shard) for shard in shards] if isinstance(shards, list) else []


class Unavailable(ClientError):
    """The server, a shard or the network could not serve the request now; ``retry_after_s`` is the
    server's ``Retry-After`` when it gave one, ``shard`` the shard it named."""

    def __init__(self, detail: str, *, retry_after_s: float | None = None, **context: Any) -> None:
        super().__init__(detail, **context)
        self.retry_after_s = retry_after_s
        shard = self.problem.get("shard")
        self.shard: str | None = shard if isinstance(shard, str) else None


class WriteOutcomeUnknown(Unavailable):
    """A write reached the server (or may have) and its answer was lost: it may have been applied.

    Never retried blindly: read the key to learn what happened, or repeat the write on purpose."""


class ServerError(ClientError):
    """An answer the API does not promise for this request (a 500, or an unparseable body)."""
