"""What both clients share around the operations: the pool's limits, the timeout, how a method looks."""

import inspect
import typing
from collections.abc import Callable
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8080"
# Below the server's keep-alive (uvicorn: 5 s), so the client never sends on a connection the
# server is closing: for a write that would be an unknown outcome.
KEEPALIVE_EXPIRY_S = 2.0


def timeout_of(timeout_s: float | httpx.Timeout) -> httpx.Timeout:
    return timeout_s if isinstance(timeout_s, httpx.Timeout) else httpx.Timeout(timeout_s)


def limits(max_connections: int) -> httpx.Limits:
    return httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections, keepalive_expiry=KEEPALIVE_EXPIRY_S
    )


def present_as(method: Callable[..., Any], operation: Callable[..., Any], owner: str) -> None:
    """Give a client method its operation's name, docstring and signature, returning what the
    operation's generator returns (for ``help()`` and editors)."""
    method.__name__ = operation.__name__
    method.__qualname__ = f"{owner}.{operation.__name__}"
    method.__doc__ = operation.__doc__
    signature = inspect.signature(operation)
    result = typing.get_args(signature.return_annotation)[2]
    method.__signature__ = signature.replace(return_annotation=result)  # type: ignore[attr-defined]
