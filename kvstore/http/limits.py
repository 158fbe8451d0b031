"""Bounded resources: header size per request, in-flight requests per worker.

Load shedding: a queue without a bound turns overload into timeouts for everyone; refusing at
once keeps the admitted requests fast and tells clients when to come back. Probes and metrics
are never shed, so an overloaded worker still reports itself.
"""

from starlette.types import ASGIApp, Receive, Scope, Send

from kvstore import metrics
from kvstore.http.problems import problem

_SHED_PREFIX = "/v1/"


MAX_HEADER_BYTES = 16 * 1024


class HeaderLimit:
    """431 for requests whose headers total more than 16 KiB, before anything reads their body.

    uvicorn's httptools parser has no cap of its own, so headers this large were already read;
    this keeps them from going further. A proxy in front (or ``--http h11``) caps them earlier.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and sum(len(n) + len(v) for n, v in scope["headers"]) > MAX_HEADER_BYTES:
            detail = f"request headers exceed {MAX_HEADER_BYTES} bytes"
            await problem(431, detail)(scope, receive, send)
            return
        await self.app(scope, receive, send)


class LoadShedder:
    def __init__(self, app: ASGIApp, max_in_flight: int, retry_after_s: int) -> None:
        self.app = app
        self.max_in_flight = max_in_flight
        self.retry_after = {"Retry-After": str(retry_after_s)}
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(_SHED_PREFIX):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_in_flight:
            metrics.SHED_REQUESTS.inc()
            detail = f"overloaded: {self.in_flight} requests in flight in this worker"
            await problem(503, detail, headers=self.retry_after)(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
