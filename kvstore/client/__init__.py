"""The Python client of kvstore's HTTP API, blocking (``Client``) and asyncio (``AsyncClient``).

::

    Client / AsyncClient      sync.py / aio.py: an httpx pool, sleeping or awaiting
            │ drive
    Operations                operations.py: every operation once, as a generator of steps
            │ (requests out, responses in; retries, session tokens, compare-and-set)
    protocol · errors · results · retries · session     pure: the API in the client's terms

    with Client("http://127.0.0.1:8080", token=...) as kv:
        kv.put("greeting", "hello", ttl=30)
        kv.get("greeting").value      # b"hello"
"""

from kvstore.client.aio import AsyncClient
from kvstore.client.batch import Compare, Delete, Get, Incr, Put
from kvstore.client.errors import (
    BadRequest,
    ClientError,
    Conflict,
    CrossShard,
    Forbidden,
    NotFound,
    PreconditionFailed,
    ServerError,
    Unauthorized,
    Unavailable,
    ValueTooLarge,
    WriteOutcomeUnknown,
)
from kvstore.client.results import CounterValue, Entry, Item, OpResult, Page, TxnResult, Written
from kvstore.client.retries import NO_RETRIES, RetryPolicy
from kvstore.client.sync import Client

__all__ = [
    "NO_RETRIES",
    "AsyncClient",
    "BadRequest",
    "Client",
    "ClientError",
    "Compare",
    "Conflict",
    "CounterValue",
    "CrossShard",
    "Delete",
    "Entry",
    "Forbidden",
    "Get",
    "Incr",
    "Item",
    "NotFound",
    "OpResult",
    "Page",
    "PreconditionFailed",
    "Put",
    "RetryPolicy",
    "ServerError",
    "TxnResult",
    "Unauthorized",
    "Unavailable",
    "ValueTooLarge",
    "WriteOutcomeUnknown",
    "Written",
]
