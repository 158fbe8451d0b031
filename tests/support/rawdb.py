"""Direct SQL on a shard, under the API, for asserting what really is in the table."""

import sqlite3
from typing import Any

import aiomysql
import asyncpg

from kvstore.backends.mysql import connect_arguments


async def execute(backend: str, location: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run one statement with ``?`` placeholders and return its rows."""
    if backend == "sqlite":
        with sqlite3.connect(location, isolation_level=None) as connection:
            return [tuple(row) for row in connection.execute(sql, params).fetchall()]
    if backend == "postgres":
        numbered = sql.split("?")
        sql = numbered[0] + "".join(f"${i}{part}" for i, part in enumerate(numbered[1:], start=1))
        connection = await asyncpg.connect(location)
        try:
            return [tuple(row) for row in await connection.fetch(sql, *params)]
        finally:
            await connection.close()
    connection = await aiomysql.connect(autocommit=True, **connect_arguments(location))
    try:
        async with connection.cursor() as cursor:
            await cursor.execute(sql.replace("?", "%s").replace("key", "`key`"), params)
            return [tuple(row) for row in await cursor.fetchall()]
    finally:
        connection.close()
