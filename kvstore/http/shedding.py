"""Load shedding: a bounded number of in-flight key requests per worker, then an immediate 503.

A queue without a bound turns overload into timeouts for everyone; refusing at once keeps the
requests that are admitted fast and tells clients when to come back. Probes and metrics are
never shed, so an overloaded worker still reports itself.
"""

from starlette.types import ASGIApp, Receive, Scope, Send

from kvstore import metrics
from kvstore.http.problems import problem

_SHED_PREFIX = "/v1/"


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
