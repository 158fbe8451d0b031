"""``Client``: the blocking client, driving the shared operations with ``httpx.Client``."""

import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Concatenate, ParamSpec, TypeVar

import httpx

from kvstore.client.operations import Operation, Operations, Pause
from kvstore.client.results import Item
from kvstore.client.retries import RetryPolicy
from kvstore.client.transport import DEFAULT_URL, limits, present_as, timeout_of

P = ParamSpec("P")
T = TypeVar("T")


def _blocking(operation: Callable[Concatenate[Operations, P], Operation[T]]) -> Callable[Concatenate["Client", P], T]:
    def method(self: "Client", /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._run(operation(self._operations, *args, **kwargs))

    present_as(method, operation, "Client")
    return method


class Client:
    """A kvstore server over HTTP, with a pool of keep-alive connections (thread-safe).

    ``timeout_s`` bounds each attempt (connect, each read and write); ``retry`` says how often and
    how long to retry what may be retried. Use it as a context manager, or ``close()`` it.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        token: str | None = None,
        timeout_s: float | httpx.Timeout = 10.0,
        retry: RetryPolicy | None = None,
        max_connections: int = 100,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._operations = Operations(url, token=token, timeout=timeout_of(timeout_s), retry=retry or RetryPolicy())
        self._http = httpx.Client(limits=limits(max_connections), transport=transport)
        self._owns_http = True

    def __repr__(self) -> str:
        return f"Client({self._operations!r})"

    def session(self) -> "Client":
        """A view of this client that reads its own writes, also from replicas; it shares the
        connection pool, and closing it leaves the pool to this client."""
        session = object.__new__(Client)
        session._operations = self._operations.session()
        session._http = self._http
        session._owns_http = False
        return session

    get = _blocking(Operations.get)
    put = _blocking(Operations.put)
    delete = _blocking(Operations.delete)
    expire = _blocking(Operations.expire)
    persist = _blocking(Operations.persist)
    ttl = _blocking(Operations.ttl)
    update = _blocking(Operations.update)
    incr = _blocking(Operations.incr)
    batch = _blocking(Operations.batch)
    txn = _blocking(Operations.txn)
    list_page = _blocking(Operations.list_page)

    def list(
        self,
        prefix: str = "",
        *,
        start_after: str | None = None,
        reverse: bool = False,
        values: bool = False,
        page_size: int | None = None,
        strong: bool = False,
    ) -> Iterator[Item]:
        """Every live key starting with ``prefix`` in byte order (``reverse``: descending), after
        ``start_after``, with values when asked: pages fetched as the iteration reaches them."""
        page = self.list_page(
            prefix, start_after=start_after, reverse=reverse, values=values, page_size=page_size, strong=strong
        )
        yield from page.items
        while page.cursor is not None:
            page = self.list_page(cursor=page.cursor, values=values, page_size=page_size, strong=strong)
            yield from page.items

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def _run(self, operation: Operation[T]) -> T:
        try:
            step = next(operation)
            while True:
                if isinstance(step, Pause):
                    time.sleep(step.seconds)
                    step = operation.send(None)
                    continue
                try:
                    response = self._http.send(step)
                except httpx.TransportError as error:
                    step = operation.throw(error)
                else:
                    step = operation.send(response)
        except StopIteration as finished:
            return finished.value  # type: ignore[no-any-return]
