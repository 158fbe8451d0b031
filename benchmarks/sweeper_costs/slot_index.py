"""The sweeper's ``store_sweep_slot`` index, which the experiments drop and rebuild."""

from benchmarks.target import Target, execute
from kvstore.backends import postgres as postgres_backend
from kvstore.backends import sqlite as sqlite_backend

DROP_INDEX = {
    "sqlite": "DROP INDEX store_sweep_slot",
    "postgres": "DROP INDEX store_sweep_slot",
    "mysql": "ALTER TABLE store DROP INDEX store_sweep_slot",
}
CREATE_INDEX = {
    "sqlite": sqlite_backend.DIALECT.indexes[0],
    "postgres": postgres_backend.DIALECT.indexes[0],
    "mysql": "ALTER TABLE store ADD INDEX store_sweep_slot (sweep_slot)",
}
TRUNCATE = {"sqlite": "DELETE FROM store", "postgres": "TRUNCATE store", "mysql": "TRUNCATE TABLE store"}


async def reset(target: Target) -> None:
    """Empty the table and make sure the sweep-slot index exists."""
    await execute(target, TRUNCATE[target.backend])
    if not await has_index(target):
        await execute(target, CREATE_INDEX[target.backend])


async def has_index(target: Target) -> bool:
    if target.backend == "sqlite":
        found = await execute(target, "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'store_sweep_slot'")
    elif target.backend == "postgres":
        found = await execute(target, "SELECT 1 FROM pg_indexes WHERE indexname = 'store_sweep_slot'")
    else:
        found = await execute(target, "SHOW INDEX FROM store WHERE Key_name = 'store_sweep_slot'")
    return bool(found)
