"""What resharding asks of a node, on every engine: rows moved as stored, and the state entries.

``fetch_rows``/``scan_rows``/``import_rows``/``remove`` move rows between shards unchanged
(value, ttl, version), tombstones included; ``read_state``/``write_state`` keep the ring record
and copier cursors with compare-and-set on an epoch.
"""

import asyncio
import time
from typing import Any

import pytest

from kvstore.backends import Node, PoolSettings, create_node
from kvstore.backends.base import PERSISTENT_TTL, SOFT_DELETED_TTL, StoredRow
from kvstore.reshard.migration import CopyCursor
from tests.support import rawdb

UNUSUAL_KEYS = ["a b", "ключ", "x\ny", "Key", "key", "key ", "tab\there", "emoji 🙂", "ümlaut", "a/b?c=d&e#f"]


def hour_from_now_ms() -> int:
    return int(time.time() * 1000) + 3_600_000


LONG_AGO_MS = 1_000_000  # 1970: expired on any clock


async def stored(backend: str, location: str, key: str) -> tuple[Any, ...] | None:
    """``(value, ttl, version, sweep_slot)`` straight from the table, or None."""
    rows = await rawdb.execute(
        backend, location, "SELECT value, ttl, version, sweep_slot FROM store WHERE key = ?", key
    )
    assert len(rows) <= 1
    if not rows:
        return None
    value, ttl, version, slot = rows[0]
    return bytes(value), int(ttl), int(version), slot


async def count_rows(backend: str, location: str) -> int:
    return int((await rawdb.execute(backend, location, "SELECT COUNT(*) FROM store"))[0][0])


def by_key(rows: list[StoredRow]) -> dict[str, StoredRow]:
    keyed = {row.key: row for row in rows}
    assert len(keyed) == len(rows), "a key came back twice"
    return keyed


# fetch_rows


async def test_fetch_rows_returns_live_and_dead_rows_as_stored(node: Node) -> None:
    persistent = await node.create("persistent", b"\x00\xffbinary\x00", None)
    expiring = await node.create("expiring", b"soon", 3_600_000)
    deleted = await node.create("deleted", b"gone", None)
    expired = await node.create("expired", b"old", 1)
    assert persistent and expiring and deleted and expired
    assert await node.soft_delete("deleted", None)
    await asyncio.sleep(0.05)

    rows = by_key(await node.fetch_rows(["persistent", "expiring", "deleted", "expired", "absent", "also-absent"]))

    assert set(rows) == {"persistent", "expiring", "deleted", "expired"}
    assert rows["persistent"] == StoredRow(
        "persistent", b"\x00\xffbinary\x00", PERSISTENT_TTL, persistent.version, True
    )
    assert rows["expiring"] == StoredRow("expiring", b"soon", expiring.expires_at_ms, expiring.version, True)  # type: ignore[arg-type]
    assert rows["expired"] == StoredRow("expired", b"old", expired.expires_at_ms, expired.version, False)  # type: ignore[arg-type]
    tombstone = rows["deleted"]
    assert (tombstone.value, tombstone.ttl, tombstone.live) == (b"gone", SOFT_DELETED_TTL, False)
    assert tombstone.version > deleted.version
    assert all(type(row.value) is bytes for row in rows.values())


async def test_fetch_rows_of_absent_keys_is_empty(node: Node) -> None:
    assert await node.fetch_rows([]) == []
    assert await node.fetch_rows(["nobody", "nothing"]) == []


# scan_rows


async def test_scan_rows_pages_through_live_rows_in_key_order(node: Node, backend: str, fresh_location: str) -> None:
    future = hour_from_now_ms()
    table: list[tuple[str, bytes, int, int, int | None]] = []
    live: list[StoredRow] = []
    for index in range(60):
        key, value, version = f"k{index:03d}", f"value {index}".encode(), 1000 + index
        state = index % 4
        if state == 0:
            table.append((key, value, PERSISTENT_TTL, version, None))
            live.append(StoredRow(key, value, PERSISTENT_TTL, version, True))
        elif state == 1:
            table.append((key, value, future, version, 5))
            live.append(StoredRow(key, value, future, version, True))
        elif state == 2:
            table.append((key, value, SOFT_DELETED_TTL, version, 6))
        else:
            table.append((key, value, LONG_AGO_MS, version, 7))
    await rawdb.insert_rows(backend, fresh_location, table[::-1])  # insertion order is not key order

    pages: list[list[StoredRow]] = []
    after = ""
    while page := await node.scan_rows(after, 7):
        assert len(page) <= 7
        assert all(row.key > after for row in page)
        pages.append(page)
        after = page[-1].key
    scanned = [row for page in pages for row in page]

    assert scanned == live
    assert [len(page) for page in pages[:-1]] == [7] * (len(pages) - 1), "only the last page may be short"
    assert await node.scan_rows("k000", 3) == live[1:4], "``after`` itself is excluded"
    assert await node.scan_rows(live[-1].key, 10) == []


# import_rows


async def test_import_without_overwrite_keeps_existing_rows_and_adds_the_rest(
    node: Node, backend: str, fresh_location: str
) -> None:
    await node.create("kept-live", b"original", None)
    await node.create("kept-dead", b"deleted", 60_000)
    assert await node.soft_delete("kept-dead", None)
    before = {key: await stored(backend, fresh_location, key) for key in ("kept-live", "kept-dead")}
    future = hour_from_now_ms()
    incoming = [
        StoredRow("kept-live", b"incoming", future, 1, True),
        StoredRow("kept-dead", b"incoming", PERSISTENT_TTL, 2**62, True),
        StoredRow("new-persistent", b"\x00p\xff", PERSISTENT_TTL, 123, True),
        StoredRow("new-expiring", b"e", future, 456, True),
        StoredRow("new-dead", b"d", SOFT_DELETED_TTL, 789, False),
        StoredRow("new-expired", b"x", LONG_AGO_MS, 1_700_000_000_000_000, False),
    ]

    assert await node.import_rows(incoming, overwrite=False) == 4

    assert {key: await stored(backend, fresh_location, key) for key in before} == before
    for row in incoming[2:]:
        found = await stored(backend, fresh_location, row.key)
        assert found is not None and found[:3] == (row.value, row.ttl, row.version), row.key
    assert await count_rows(backend, fresh_location) == 6
    assert await node.import_rows(incoming, overwrite=False) == 0, "a second run finds every row there"


async def test_import_with_overwrite_replaces_rows_exactly(node: Node, backend: str, fresh_location: str) -> None:
    await node.create("live-becomes-tombstone", b"old", None)
    await node.create("persistent-becomes-expiring", b"old", None)
    await node.create("tombstone-becomes-live", b"old", 60_000)
    assert await node.soft_delete("tombstone-becomes-live", None)
    future = hour_from_now_ms()
    incoming = [
        # Versions lower than the replaced rows': an import is exact, never GREATEST(...).
        StoredRow("live-becomes-tombstone", b"dead now", SOFT_DELETED_TTL, 10, False),
        StoredRow("persistent-becomes-expiring", b"expiring now", future, 11, True),
        StoredRow("tombstone-becomes-live", b"alive again", PERSISTENT_TTL, 12, True),
        StoredRow("brand-new", b"new", future, 13, True),
    ]

    assert await node.import_rows(incoming, overwrite=True) == len(incoming)

    for row in incoming:
        found = await stored(backend, fresh_location, row.key)
        assert found is not None and found[:3] == (row.value, row.ttl, row.version), row.key
    assert by_key(await node.fetch_rows([row.key for row in incoming])) == {
        row.key: StoredRow(row.key, row.value, row.ttl, row.version, row.ttl > 0) for row in incoming
    }
    assert await node.get("live-becomes-tombstone") is None
    assert (await node.get("tombstone-becomes-live")).value == b"alive again"  # type: ignore[union-attr]
    assert await count_rows(backend, fresh_location) == 4


async def test_imported_rows_get_a_sweep_slot_unless_persistent(node: Node, backend: str, fresh_location: str) -> None:
    await node.create("was-expiring", b"v", 60_000)  # has a slot, which an imported persistent row must drop
    future = hour_from_now_ms()
    rows = {
        "persistent": StoredRow("persistent", b"p", PERSISTENT_TTL, 1, True),
        "expiring": StoredRow("expiring", b"e", future, 2, True),
        "expired": StoredRow("expired", b"x", LONG_AGO_MS, 3, False),
        "dead": StoredRow("dead", b"d", SOFT_DELETED_TTL, 4, False),
    }
    await node.import_rows(list(rows.values()), overwrite=False)
    await node.import_rows([StoredRow("was-expiring", b"p", PERSISTENT_TTL, 5, True)], overwrite=True)

    slots = {key: (await stored(backend, fresh_location, key))[3] for key in [*rows, "was-expiring"]}  # type: ignore[index]
    assert slots["persistent"] is None and slots["was-expiring"] is None
    assert all(slots[key] is not None for key in ("expiring", "expired", "dead")), slots
    # The sweeper finds the imported dead rows through that slot.
    sampled = dict(await node.sample_expiring(10))
    assert sampled == {"expiring": False, "expired": True, "dead": True}


async def test_import_of_nothing_writes_nothing(node: Node, backend: str, fresh_location: str) -> None:
    assert await node.import_rows([], overwrite=False) == 0
    assert await node.import_rows([], overwrite=True) == 0
    assert await count_rows(backend, fresh_location) == 0


# remove


async def test_remove_deletes_rows_in_any_state(node: Node, backend: str, fresh_location: str) -> None:
    await rawdb.insert_rows(
        backend,
        fresh_location,
        [
            ("persistent", b"p", PERSISTENT_TTL, 1, None),
            ("expiring", b"e", hour_from_now_ms(), 2, 10),
            ("expired", b"x", LONG_AGO_MS, 3, 11),
            ("dead", b"d", SOFT_DELETED_TTL, 4, 12),
            ("bystander", b"b", PERSISTENT_TTL, 5, None),
        ],
    )

    assert await node.remove(["persistent", "expiring", "expired", "dead", "absent"]) == 4

    keys = await rawdb.execute(backend, fresh_location, "SELECT key FROM store")
    assert [key.decode() if isinstance(key, bytes) else key for (key,) in keys] == ["bystander"]
    assert await node.remove([]) == 0
    assert await node.remove(["persistent"]) == 0


# read_state / write_state


async def test_write_state_is_a_compare_and_set_on_the_epoch(node: Node) -> None:
    assert await node.read_state("ring") is None
    assert await node.write_state("ring", "first", 1, None)
    assert await node.read_state("ring") == (1, "first")

    assert not await node.write_state("ring", "second creation", 9, None), "it exists: no second create"
    assert await node.read_state("ring") == (1, "first")

    assert await node.write_state("ring", "second", 2, 1)
    assert await node.read_state("ring") == (2, "second")

    assert not await node.write_state("ring", "stale", 3, 1), "epoch 1 is gone"
    assert not await node.write_state("ring", "ahead", 6, 5)
    assert await node.read_state("ring") == (2, "second")

    assert not await node.write_state("absent", "v", 2, 1), "an update needs an entry to update"
    assert await node.read_state("absent") is None


async def test_an_update_must_move_the_epoch_forward(node: Node) -> None:
    """So that every successful update changes its row (MySQL reports changed rows, not matched ones)."""
    assert await node.write_state("ring", "same", 1, None)
    for epoch in (1, 0):
        with pytest.raises(ValueError, match="only moves forward"):
            await node.write_state("ring", "same", epoch, 1)
    assert await node.write_state("ring", "same", 2, 1), "an unchanged value at a new epoch is an update"
    assert await node.read_state("ring") == (2, "same")


async def test_state_entries_are_independent(node: Node) -> None:
    assert await node.write_state("ring", "r", 4, None)
    assert await node.write_state("copy:m1", "c", 0, None)
    assert await node.write_state("copy:m1", "c2", 1, 0)
    assert await node.read_state("ring") == (4, "r")
    assert await node.read_state("copy:m1") == (1, "c2")


async def test_large_and_non_ascii_state_values_round_trip(node: Node) -> None:
    entries = ",".join(
        f'{{"name": "s{i}", "dsn": "postgresql://host-{i}/db?x=ключ", "weight": {i}}}' for i in range(300)
    )
    large = f'{{"epoch": 1, "shards": [{entries}]}}'
    assert len(large.encode()) > 20_000
    assert await node.write_state("ring", large, 1, None)
    assert await node.read_state("ring") == (1, large)

    # A copier cursor holds the last key it copied, whatever its characters.
    cursor = CopyCursor(after="emoji 🙂 ключ\nx", scanned=3, copied=2)
    assert await node.write_state("copy:m", cursor.encode(), 0, None)
    found = await node.read_state("copy:m")
    assert found is not None and CopyCursor.decode(found[1]) == cursor


# Schema upgrade


async def test_ensure_schema_upgrades_a_version_1_shard(backend: str, fresh_location: str) -> None:
    pool = PoolSettings(1, 4, 2.0, 10.0)
    first = create_node(backend, "t", "primary", fresh_location, pool)
    await first.open()
    try:
        await first.ensure_schema()
        await first.put("survivor", b"kept", None)
    finally:
        await first.close(5.0)
    await rawdb.execute(backend, fresh_location, "DROP TABLE kvstore_state")
    await rawdb.execute(backend, fresh_location, "UPDATE kvstore_meta SET value = '1' WHERE name = 'schema_version'")
    version = "SELECT value FROM kvstore_meta WHERE name = 'schema_version'"
    assert await rawdb.execute(backend, fresh_location, version) == [("1",)]

    upgraded = create_node(backend, "t", "primary", fresh_location, pool)
    await upgraded.open()
    try:
        await upgraded.ensure_schema()
        assert await rawdb.execute(backend, fresh_location, version) == [("2",)]
        assert await upgraded.read_state("ring") is None
        assert await upgraded.write_state("ring", "r", 1, None)
        assert await upgraded.read_state("ring") == (1, "r")
        assert (await upgraded.get("survivor")).value == b"kept"  # type: ignore[union-attr]
        assert (await upgraded.table_stats()).schema_version == 2
        await upgraded.ensure_schema()  # idempotent once upgraded
        assert await rawdb.execute(backend, fresh_location, version) == [("2",)]
    finally:
        await upgraded.close(5.0)


# Unusual keys


async def test_unusual_keys_survive_scan_fetch_import_and_remove(node: Node) -> None:
    values = {key: f"value of {key!r}".encode() for key in UNUSUAL_KEYS}
    for key, value in values.items():
        _, created = await node.put(key, value, None)
        assert created, f"{key!r} collided with another key"

    scanned = await node.scan_rows("", 100)
    assert [row.key for row in scanned] == sorted(UNUSUAL_KEYS), "byte order, case and spaces significant"
    assert {row.key: row.value for row in scanned} == values
    fetched = by_key(await node.fetch_rows(UNUSUAL_KEYS))
    assert {key: row.value for key, row in fetched.items()} == values
    assert by_key(await node.fetch_rows(["KEY", "key  ", "клю"])) == {}

    assert await node.remove(UNUSUAL_KEYS[:5]) == 5
    assert sorted(row.key for row in await node.scan_rows("", 100)) == sorted(UNUSUAL_KEYS[5:])
    assert await node.import_rows([fetched[key] for key in UNUSUAL_KEYS], overwrite=False) == 5
    assert by_key(await node.fetch_rows(UNUSUAL_KEYS)) == fetched

    changed = [StoredRow(row.key, row.value + b"!", row.ttl, row.version + 1, True) for row in fetched.values()]
    assert await node.import_rows(changed, overwrite=True) == len(changed)
    assert await node.scan_rows("", 100) == sorted(changed, key=lambda row: row.key)
    assert await node.remove(UNUSUAL_KEYS) == len(UNUSUAL_KEYS)
    assert await node.scan_rows("", 100) == []
