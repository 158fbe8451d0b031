"""The front door: admission and dispatch for every request, in one pass over its headers.

::

    request ─► RequestHeaders.scan (one pass) ─► endpoint table lookup
            ─► admission: 431 headers too large · 404 · 405 · 401/403 auth · 503 shed
            ─► the data endpoints (/v1/kv/{key}: KeyRoute, the hot path; listing, …):
               their Route, no Request/Response objects
            ─► anything else: the Starlette app (probes, metrics, OpenAPI)
            ─► X-Request-ID on the answer, metrics, access log

Pure ASGI, so a key request costs no middleware stack, routing regex or per-request objects
beyond what it needs. Load shedding: a queue without a bound turns overload into timeouts for
everyone; refusing at once keeps the admitted requests fast and tells clients when to come back.
"""

import itertools
import logging
import os
import re
import time
from collections.abc import Mapping
from typing import Any, Protocol

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kvstore import metrics
from kvstore.config import ApiToken
from kvstore.errors import KvError, ShardError
from kvstore.http import auth, reply
from kvstore.http.endpoints import Endpoint, find
from kvstore.http.kv import ClientGone, RequestHeaders
from kvstore.http.problems import error_reply, method_not_allowed, no_endpoint
from kvstore.http.reply import Reply, send_reply
from kvstore.logs import request_id

MAX_HEADER_BYTES = 16 * 1024
# What proxies and clients send (UUIDs, "my-req-123", "trace:span"), nothing that could break a log line.
_SANE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
# A request id is this process's random prefix and a counter: unique like a uuid4 (32 hex digits)
# without a getrandom() call and a UUID object per request.
_ID_PREFIX = os.urandom(8).hex()
_id_counter = itertools.count(1)
_CLIENT_GONE = 499  # the status metrics and the access log give a request whose client left
access_log = logging.getLogger("kvstore.access")
log = logging.getLogger("kvstore.server")


def request_id_of(headers: RequestHeaders) -> bytes:
    """The client's id when it sent a sane one, else a new one."""
    if headers.request_id is not None and _SANE_REQUEST_ID.fullmatch(headers.request_id):
        return headers.request_id
    return f"{_ID_PREFIX}{next(_id_counter):016x}".encode()


class Route(Protocol):
    """A data endpoint's handler: the admitted request in, the answer out (errors raised)."""

    async def handle(self, scope: Scope, receive: Receive, headers: RequestHeaders) -> Reply: ...


class Front:
    def __init__(
        self,
        app: ASGIApp,
        routes: Mapping[Endpoint, Route],
        *,
        tokens: tuple[ApiToken, ...],
        max_in_flight: int,
        retry_after_s: int,
        log_requests: bool,
    ) -> None:
        self.app = app
        self.routes = routes
        self.tokens = tokens
        self.max_in_flight = max_in_flight
        self.retry_after_s = retry_after_s
        self.log_requests = log_requests
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = RequestHeaders.scan(scope["headers"])
        rid = request_id_of(headers)
        context = request_id.set(rid.decode())
        method = scope["method"]
        endpoint = find(scope["path"])
        op = "other" if endpoint is None else endpoint.label(method)
        status = 500
        try:
            refused = self._refusal(endpoint, method, headers)
            if refused is not None:
                status = refused.status
                await send_reply(send, refused, rid)
            elif endpoint is not None and (route := self.routes.get(endpoint)) is not None:
                status = await self._serve(route, scope, receive, send, headers, rid, op)
            else:
                status = await self._delegate(scope, receive, send, rid)
        except Exception:
            # Starlette has already answered 500 (problem+json); log it here, where the request
            # id is still known, and do not hand it on to uvicorn to be logged a second time.
            log.exception("unhandled error", extra={"op": op})
        finally:
            elapsed = time.perf_counter() - started
            metrics.record_request(op, status, elapsed)
            if self.log_requests:
                extra: dict[str, Any] = {"op": op, "status": status, "duration_ms": round(elapsed * 1000, 3)}
                access_log.info("request", extra=extra)
            request_id.reset(context)

    def _refusal(self, endpoint: Endpoint | None, method: str, headers: RequestHeaders) -> Reply | None:
        """The answer for a request that may not go further, or None to admit it."""
        if headers.size > MAX_HEADER_BYTES:
            # uvicorn's httptools parser has no cap of its own: headers this large were already
            # read; this keeps them from going further. A proxy in front caps them earlier.
            return reply.problem(431, f"request headers exceed {MAX_HEADER_BYTES} bytes")
        if endpoint is None:
            return no_endpoint()
        if method not in endpoint.scopes:
            return method_not_allowed(method, endpoint.methods)
        needed = endpoint.scopes[method]
        if self.tokens and needed is not None:
            refused = auth.refusal(headers.authorization, needed, self.tokens)
            if refused is not None:
                return refused
        if endpoint.shed and self.in_flight >= self.max_in_flight:
            metrics.SHED_REQUESTS.inc()
            detail = f"overloaded: {self.in_flight} requests in flight in this worker"
            return reply.problem(503, detail, [(b"retry-after", str(self.retry_after_s).encode())])
        return None

    async def _serve(
        self, route: Route, scope: Scope, receive: Receive, send: Send, headers: RequestHeaders, rid: bytes, op: str
    ) -> int:
        self.in_flight += 1
        try:
            answer = await route.handle(scope, receive, headers)
        except KvError as error:
            if isinstance(error, ShardError):
                log.warning(
                    "shard error", extra={"shard": error.shard, "error": error.detail, "kind": type(error).__name__}
                )
            answer = error_reply(error, self.retry_after_s)
        except ClientGone:
            return _CLIENT_GONE
        except Exception:
            log.exception("unhandled error", extra={"op": op})
            answer = reply.problem(500, "internal error; see the server log for this request id")
        finally:
            self.in_flight -= 1
        await send_reply(send, answer, rid, head=scope["method"] == "HEAD")
        return answer.status

    async def _delegate(self, scope: Scope, receive: Receive, send: Send, rid: bytes) -> int:
        """Hand the request to Starlette, adding the request id to its answer."""
        status = 500
        header = (b"x-request-id", rid)

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        await self.app(scope, receive, send_with_id)
        return status
