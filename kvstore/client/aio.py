"""``AsyncClient``: the asyncio client, driving the shared operations with ``httpx.AsyncClient``."""

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar

import httpx

from kvstore.client.operations import Operation, Operations, Pause
from kvstore.client.results import Item
from kvstore.client.retries import RetryPolicy
from kvstore.client.transport import DEFAULT_URL, limits, present_as, timeout_of

P = ParamSpec("P")
T = TypeVar("T")


def _awaitable(
    operation: Callable[Concatenate[Operations, P], Operation[T]],
) -> Callable[Concatenate["AsyncClient", P], Coroutine[Any, Any, T]]:
    async def method(self: "AsyncClient", /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._run(operation(self._operations, *args, **kwargs))

    present_as(method, operation, "AsyncClient")
    return method


class AsyncClient:
    """``Client`` for asyncio: the same operations, awaited; one pool per client, for one event loop."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        token: str | None = None,
        timeout_s: float | httpx.Timeout = 10.0,
        retry: RetryPolicy | None = None,
        max_connections: int = 100,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._operations = Operations(url, token=token, timeout=timeout_of(timeout_s), retry=retry or RetryPolicy())
        self._http = httpx.AsyncClient(limits=limits(max_connections), transport=transport)
        self._owns_http = True

    def __repr__(self) -> str:
        return f"AsyncClient({self._operations!r})"

    def session(self) -> "AsyncClient":
        """A view of this client that reads its own writes, also from replicas (see ``Client.session``)."""
        session = object.__new__(AsyncClient)
        session._operations = self._operations.session()
        session._http = self._http
        session._owns_http = False
        return session

    get = _awaitable(Operations.get)
    put = _awaitable(Operations.put)
    delete = _awaitable(Operations.delete)
    expire = _awaitable(Operations.expire)
    persist = _awaitable(Operations.persist)
    ttl = _awaitable(Operations.ttl)
    update = _awaitable(Operations.update)
    incr = _awaitable(Operations.incr)
    batch = _awaitable(Operations.batch)
    txn = _awaitable(Operations.txn)
    list_page = _awaitable(Operations.list_page)

    async def list(
        self,
        prefix: str = "",
        *,
        start_after: str | None = None,
        reverse: bool = False,
        values: bool = False,
        page_size: int | None = None,
        strong: bool = False,
    ) -> AsyncIterator[Item]:
        """``Client.list`` for asyncio: ``async for item in kv.list("users/")``."""
        page = await self.list_page(
            prefix, start_after=start_after, reverse=reverse, values=values, page_size=page_size, strong=strong
        )
        for item in page.items:
            yield item
        while page.cursor is not None:
            page = await self.list_page(cursor=page.cursor, values=values, page_size=page_size, strong=strong)
            for item in page.items:
                yield item

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _run(self, operation: Operation[T]) -> T:
        try:
            step = next(operation)
            while True:
                if isinstance(step, Pause):
                    await asyncio.sleep(step.seconds)
                    step = operation.send(None)
                    continue
                try:
                    response = await self._http.send(step)
                except httpx.TransportError as error:
                    step = operation.throw(error)
                else:
                    step = operation.send(response)
        except StopIteration as finished:
            return finished.value  # type: ignore[no-any-return]
