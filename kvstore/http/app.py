"""The Starlette application: routes, error handlers and the lifespan that owns the pools.

Start-up opens every shard, creates the schema where a shard has none and checks it
everywhere else; a shard that stays unreachable for ``startup_timeout_s`` or has a foreign
schema stops the start with a message naming it. Shutdown flips readiness, then closes the
pools within ``graceful_shutdown_s``.
"""

import asyncio
import contextlib
import gc
import ipaddress
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kvstore import metrics, status
from kvstore.config import Settings
from kvstore.errors import KvError, ShardError
from kvstore.http.batch import BatchRoute
from kvstore.http.cluster import cluster_routes
from kvstore.http.console import console_routes
from kvstore.http.endpoints import BATCH, HEALTHZ, KEYS, LIST, METRICS, OPENAPI, READYZ, TXN
from kvstore.http.front import Front
from kvstore.http.kv import KeyRoute
from kvstore.http.listing import ListRoute
from kvstore.http.openapi import openapi_document
from kvstore.http.problems import problem, routing_error
from kvstore.http.txn import TxnRoute
from kvstore.router import Router
from kvstore.shard import Shard
from kvstore.store import KeyValueStore
from kvstore.sweeper import ShardSweeper

log = logging.getLogger("kvstore.server")
_GAUGE_INTERVAL_S = 1.0


@dataclass
class Lifecycle:
    ready: bool = False
    start_failure_logged: bool = False  # the start-up failed and the log says why, in one line per cause
    background_stop: asyncio.Event = field(default_factory=asyncio.Event)
    background: list[asyncio.Task[None]] = field(default_factory=list)  # sweepers and replica probes
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


async def open_shard(shard: Shard, timeout_s: float) -> None:
    """Open a shard and check its schema, retrying a down database until ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        try:
            await shard.open()
            await shard.primary.ensure_schema()
            return
        except ShardError as error:
            if loop.time() >= deadline:
                raise ShardError(shard.name, f"unreachable at start-up: {error.detail}") from None
            log.warning("shard not reachable yet, retrying", extra={"shard": shard.name, "error": error.detail})
            await shard.close(1.0)
            await asyncio.sleep(0.5)


async def publish_pool_gauges(router: Router) -> None:
    while True:
        for shard in router.shards.values():
            for node in shard.nodes:
                metrics.POOL_IN_USE.labels(shard.name, node.label).set(node.connections_in_use())
        await asyncio.sleep(_GAUGE_INTERVAL_S)


def create_app(settings: Settings) -> ASGIApp:
    server = settings.server
    router = Router(settings, fenced=True)
    store = KeyValueStore(router, server.request_timeout_s)
    lifecycle = Lifecycle()
    openapi_body = orjson.dumps(openapi_document(server.max_value_bytes))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Every shard's opening is awaited, failed or not, so that none opens after the close below.
        outcomes = await asyncio.gather(
            *(open_shard(s, server.startup_timeout_s) for s in router.shards.values()), return_exceptions=True
        )
        failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        if not failures:
            try:
                await router.refresh()  # a ring record on the shards overrides the config's ring
            except KvError as error:
                failures.append(error)
        if failures:
            await router.close(server.graceful_shutdown_s)
            causes = [failure for failure in failures if isinstance(failure, KvError)]
            for cause in causes:
                log.error("start-up failed: %s", cause)
            lifecycle.start_failure_logged = len(causes) == len(failures)  # anything else is a bug: keep its traceback
            raise failures[0]
        lifecycle.tasks.append(asyncio.create_task(publish_pool_gauges(router)))
        stop = lifecycle.background_stop

        async def start_background(shard: Shard) -> None:
            """The shard's sweeper and replica probe: for every shard the router knows, also later ones."""
            if settings.sweeper.enabled:
                guard = router.may_purge(shard.name)
                sweeper = ShardSweeper(shard.name, shard.writer(), settings.sweeper, guard, router.routing)
                lifecycle.background.append(asyncio.create_task(sweeper.run(stop)))
            if shard.replicas is not None:
                probe = shard.replicas.run(stop, server.replica_probe_interval_s)
                lifecycle.background.append(asyncio.create_task(probe))

        for shard in list(router.shards.values()):
            await start_background(shard)
        lifecycle.background.append(asyncio.create_task(router.watch(stop, start_background)))
        # Everything alive now (modules, pools, the app) lives as long as the process: moved out of
        # the collector's reach, full collections stop walking it on every request burst.
        gc.collect()
        gc.freeze()
        lifecycle.ready = True
        log.info(
            "serving",
            extra={
                "listen": f"{server.host}:{server.port}",
                "shards": sorted(router.shards),
                "ring_epoch": router.topology.epoch,
                "auth": bool(settings.tokens),
            },
        )
        if not settings.tokens and not _is_loopback(server.host):
            log.warning(
                "NO ACCESS CONTROL: listening on %s without auth.tokens; anyone who can reach it can read and "
                "write every key",
                server.host,
            )
        try:
            yield
        finally:
            lifecycle.ready = False
            lifecycle.background_stop.set()
            if lifecycle.background:
                _, stuck = await asyncio.wait(lifecycle.background, timeout=server.graceful_shutdown_s)
                for task in stuck:
                    task.cancel()
                await asyncio.gather(*lifecycle.background, return_exceptions=True)
            for task in lifecycle.tasks:
                task.cancel()
            await asyncio.gather(*lifecycle.tasks, return_exceptions=True)
            await router.close(server.graceful_shutdown_s)
            log.info("stopped")

    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    async def readyz(request: Request) -> Response:
        if not lifecycle.ready:
            return problem(503, "not serving (starting or shutting down)", headers={"Retry-After": "1"})
        ready = await status.readiness(router)
        shards = {name: "up" if why is None else f"down: {why}" for name, why in ready.shards.items()}
        # Replicas appear only where there are some, in either answer.
        replicas = {replica.node: replica.summary() for replica in ready.replicas}
        with_replicas: dict[str, object] = {"replicas": replicas} if replicas else {}
        if ready.down:
            detail = f"shard primary unreachable: {', '.join(ready.down)}"
            headers = {"Retry-After": str(server.retry_after_s)}
            return problem(503, detail, headers=headers, shards=shards, **with_replicas)
        ring = {"epoch": ready.epoch, "phase": ready.phase}
        body: dict[str, object] = {"status": ready.state, "shards": shards, **with_replicas, "ring": ring}
        return Response(orjson.dumps(body), media_type="application/json")

    async def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def openapi(request: Request) -> Response:
        return Response(openapi_body, media_type="application/json")

    async def on_http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        return routing_error(error)

    async def on_unexpected(request: Request, error: Exception) -> Response:
        # Logged (with its request id) by the front, which sees the exception next.
        return problem(500, "internal error; see the server log for this request id")

    # The key routes never get here: the front serves them itself (see front.py).
    routes = [
        Route(HEALTHZ.path, healthz, methods=list(HEALTHZ.methods)),
        Route(READYZ.path, readyz, methods=list(READYZ.methods)),
        Route(METRICS.path, metrics_endpoint, methods=list(METRICS.methods)),
        Route(OPENAPI.path, openapi, methods=list(OPENAPI.methods)),
        *cluster_routes(router, server.request_timeout_s),
        *console_routes(),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: on_http_error, Exception: on_unexpected},
    )
    app.router.redirect_slashes = False
    # The front passes the lifespan through to Starlette; only that scope needs the quieting.
    return Front(
        QuietStartFailure(app, lifecycle),
        {
            KEYS: KeyRoute(store, server.max_value_bytes),
            LIST: ListRoute(store),
            BATCH: BatchRoute(store, server.max_value_bytes, settings.tokens),
            TXN: TxnRoute(store, server.max_value_bytes, settings.tokens),
        },
        tokens=settings.tokens,
        max_in_flight=server.max_in_flight,
        retry_after_s=server.retry_after_s,
        log_requests=server.access_log,
    )


class QuietStartFailure:
    """Starlette reports a failed start-up with its traceback, which uvicorn logs as one huge JSON
    line; when the lifespan has already logged the cause in one line, report nothing more."""

    def __init__(self, app: ASGIApp, lifecycle: Lifecycle) -> None:
        self.app = app
        self.lifecycle = lifecycle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def send_quietly(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed" and self.lifecycle.start_failure_logged:
                message = {"type": message["type"], "message": ""}
            await send(message)

        await self.app(scope, receive, send_quietly)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
