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


async def insert_rows(backend: str, location: str, rows: list[tuple[str, bytes, int, int, int | None]]) -> None:
    """Bulk-load ``(key, value, ttl, version, sweep_slot)`` rows, as PUTs would have left them."""
    sql = "INSERT INTO store (key, value, ttl, version, sweep_slot) VALUES (?, ?, ?, ?, ?)"
    if backend == "sqlite":
        with sqlite3.connect(location, isolation_level=None) as connection:
            connection.execute("BEGIN")
            connection.executemany(sql, rows)
            connection.execute("COMMIT")
    elif backend == "postgres":
        connection = await asyncpg.connect(location)
        try:
            await connection.copy_records_to_table("store", records=rows)
        finally:
            await connection.close()
    else:
        connection = await aiomysql.connect(autocommit=True, **connect_arguments(location))
        try:
            async with connection.cursor() as cursor:
                mysql = sql.replace("?", "%s").replace("key", "`key`")
                for start in range(0, len(rows), 5000):
                    await cursor.executemany(mysql, rows[start : start + 5000])
        finally:
            connection.close()
