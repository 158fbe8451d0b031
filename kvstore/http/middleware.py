"""Per-request bookkeeping as plain ASGI middleware: request id, metrics, access log.

Plain ASGI (not BaseHTTPMiddleware) so the hot path pays for no extra task or body copy.
"""

import itertools
import logging
import os
import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kvstore import metrics
from kvstore.logs import request_id

_KV_PREFIX = "/v1/kv/"
_NAMED_ROUTES = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json"})
_KV_METHODS = frozenset({"GET", "HEAD", "PUT", "PATCH", "DELETE"})
_REQUEST_ID_HEADER = b"x-request-id"
# What proxies and clients send (UUIDs, "my-req-123", "trace:span"), nothing that could break a log line.
_SANE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
# A request id is this process's random prefix and a counter: unique like a uuid4 (32 hex digits)
# without a getrandom() call and a UUID object per request.
_ID_PREFIX = os.urandom(8).hex()
_id_counter = itertools.count(1)
access_log = logging.getLogger("kvstore.access")
log = logging.getLogger("kvstore.server")


def operation(method: str, path: str) -> str:
    """A bounded label for a request: the KV method, a named route, or "other"."""
    if path.startswith(_KV_PREFIX):
        return method.lower() if method in _KV_METHODS else "other"
    return path.lstrip("/") if path in _NAMED_ROUTES else "other"


def _incoming_request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == _REQUEST_ID_HEADER and _SANE_REQUEST_ID.fullmatch(value):
            return str(value.decode())
    return f"{_ID_PREFIX}{next(_id_counter):016x}"


class RequestContext:
    def __init__(self, app: ASGIApp, log_requests: bool) -> None:
        self.app = app
        self.log_requests = log_requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        rid = _incoming_request_id(scope)
        token = request_id.set(rid)
        status = 500
        header = (_REQUEST_ID_HEADER, rid.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # Starlette has already answered 500 (problem+json); log it here, where the request
            # id is still known, and do not hand it on to uvicorn to be logged a second time.
            log.exception("unhandled error", extra={"op": operation(scope["method"], scope["path"])})
        finally:
            elapsed = time.perf_counter() - started
            op = operation(scope["method"], scope["path"])
            metrics.record_request(op, status, elapsed)
            if self.log_requests:
                extra: dict[str, Any] = {"op": op, "status": status, "duration_ms": round(elapsed * 1000, 3)}
                access_log.info("request", extra=extra)
            request_id.reset(token)
