"""The front end inside the test process: the app built from settings on SQLite files, its lifespan
run around a block as uvicorn runs it, and an httpx client whose transport calls the app directly.

No server, no port, no subprocess: a request costs a function call, and an exception in the app
fails the test with its own traceback instead of a 500 in a log file. Synchronous callers
(hypothesis's stateful rules) get the same app on an event loop of their own, advanced by each request.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
from starlette.types import ASGIApp, Message

from kvstore.config import Settings, parse_settings
from kvstore.http.app import create_app
from tests.support.server import config_document

BASE_URL = "http://kvstore.test"
# As the subprocess tests' servers: an eager sweeper underneath, small limits that tests can reach.
EAGER_SWEEPER = {"tick_ms": 10, "cycle_budget_ms": 5}
TEST_SERVER = {"request_timeout_s": 3, "max_value_bytes": 65536}


def sqlite_settings(
    directory: Path,
    shards: int = 2,
    sweeper: dict[str, Any] = EAGER_SWEEPER,
    auth: dict[str, Any] | None = None,
    **server: Any,
) -> Settings:
    """Settings for ``shards`` SQLite shards (s0, s1, ...) in ``directory``; ``server`` overrides TEST_SERVER."""
    locations = [str(directory / f"s{index}.db") for index in range(shards)]
    document = config_document("sqlite", locations, sweeper=sweeper, **{**TEST_SERVER, **server})
    if auth is not None:
        document["auth"] = auth
    return parse_settings(document, environ={}, base_dir=directory)


def backend_settings(backend: str, locations: list[str], directory: Path) -> Settings:
    """Settings for shards of ``backend`` at ``locations`` (SQLite: in ``directory``, whatever was given)."""
    if backend == "sqlite":
        return sqlite_settings(directory, len(locations))
    document = config_document(backend, locations, sweeper=EAGER_SWEEPER, **TEST_SERVER)
    return parse_settings(document, environ={}, base_dir=directory)


@contextlib.asynccontextmanager
async def lifespan(app: ASGIApp) -> AsyncIterator[None]:
    """Start-up before the block, shutdown after it, over the ASGI lifespan protocol; a failed
    start-up raises the app's own exception."""
    to_app: asyncio.Queue[Message] = asyncio.Queue()
    from_app: asyncio.Queue[Message] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    task: asyncio.Future[None] = asyncio.ensure_future(app(scope, to_app.get, from_app.put))
    await to_app.put({"type": "lifespan.startup"})
    if (await from_app.get())["type"] != "lifespan.startup.complete":
        await task  # Starlette re-raises the start-up failure here
        raise RuntimeError("lifespan start-up failed")
    try:
        yield
    finally:
        await to_app.put({"type": "lifespan.shutdown"})
        await from_app.get()
        await task


@contextlib.asynccontextmanager
async def app_transport(settings: Settings) -> AsyncIterator[httpx.ASGITransport]:
    """An httpx transport into a started app built from ``settings``; the app is shut down afterwards."""
    app = create_app(settings)
    async with lifespan(app):
        yield httpx.ASGITransport(app)


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a started app built from ``settings``; the app is shut down afterwards."""
    async with (
        app_transport(settings) as transport,
        httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client,
    ):
        yield client


class _BlockingTransport(httpx.BaseTransport):
    """httpx's ASGI transport for a synchronous client: each request runs to its end on ``runner``'s loop."""

    def __init__(self, app: ASGIApp, runner: asyncio.Runner) -> None:
        self.transport = httpx.ASGITransport(app)
        self.runner = runner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        async def exchange() -> httpx.Response:
            response = await self.transport.handle_async_request(request)
            body = await response.aread()
            return httpx.Response(response.status_code, headers=response.headers, content=body, request=request)

        return self.runner.run(exchange())


@contextlib.contextmanager
def serving_blocking(settings: Settings) -> Iterator[httpx.Client]:
    """``serving`` for synchronous callers: a plain ``httpx.Client``; the app's loop runs only during requests."""
    app = create_app(settings)
    with asyncio.Runner() as runner:
        started = lifespan(app)
        runner.run(started.__aenter__())
        try:
            with httpx.Client(transport=_BlockingTransport(app, runner), base_url=BASE_URL) as client:
                yield client
        finally:
            runner.run(started.__aexit__(None, None, None))
