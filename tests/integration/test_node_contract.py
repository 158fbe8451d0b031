"""The backend contract: every ``Node`` method as its docstring promises, on SQLite, PostgreSQL and MariaDB.

Each test takes the ``node`` fixture (tests/conftest.py: an open primary on a fresh, empty database of
each engine, schema created) and drives ``kvstore.backends.base.Node`` directly, so a difference between
engines shows here, named, and not as a stray HTTP status in a server test. Where the contract is about
what is stored (a tombstone's ``ttl``, a sweep slot), the table is read with plain SQL. A new method's
contract is one more test function taking ``node``.
"""

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from kvstore.backends import Node, PoolSettings, create_node
from kvstore.backends.base import PERSISTENT_TTL, SCHEMA_VERSION, SOFT_DELETED_TTL, Row, StoredRow
from kvstore.cluster.ports import free_port
from kvstore.errors import ShardUnavailable
from kvstore.reshard.migration import CopyCursor
from tests.support import rawdb

UNUSUAL_KEYS = ["a b", "ключ", "x\ny", "Key", "key", "key ", "tab\there", "emoji 🙂", "ümlaut", "a/b?c=d&e#f"]
LONGEST_KEYS = ["k" * 255, "ключ" * 63 + "клю", "🙂" * 255]  # 255 characters, up to 1,020 bytes of UTF-8
VALUES = [b"", b"\x00", b"a\x00b\x00", bytes(range(256)) * 4, "ünïcødé".encode(), b"\xff" * 70_000]
LONG_AGO_MS = 1_000_000  # 1970: expired on any clock
CONCURRENT_WRITERS = 12


def now_ms() -> int:
    return int(time.time() * 1000)


def hour_from_now_ms() -> int:
    return now_ms() + 3_600_000


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


async def expired(node: Node, key: str, value: bytes = b"old") -> Row:
    """A row written with a 1 ms TTL, dead by the time this returns."""
    row = await node.create(key, value, 1)
    assert row is not None
    await asyncio.sleep(0.02)
    return row


# get / put


async def test_get_of_a_key_never_written_is_none(node: Node) -> None:
    assert await node.get("nobody") is None


async def test_put_creates_then_replaces_with_a_higher_version(node: Node) -> None:
    first, created = await node.put("k", b"one", None)
    assert created
    second, created_again = await node.put("k", b"two", None)
    assert not created_again
    assert second.version > first.version
    got = await node.get("k")
    assert got == Row(second.version, None, b"two"), "get returns the value and the version put reported"


async def test_put_with_a_ttl_expires_on_the_database_clock(node: Node) -> None:
    before = now_ms()
    row, _ = await node.put("short", b"v", 300)
    after = now_ms()
    # The database computes now + ttl; its clock is this machine's, within a second's slack.
    assert row.expires_at_ms is not None and before + 300 - 1000 <= row.expires_at_ms <= after + 300 + 1000
    live = await node.get("short")
    assert live is not None and live.expires_at_ms == row.expires_at_ms
    [found] = await node.fetch_rows(["short"])
    assert found.ttl == row.expires_at_ms and found.live, "the stored ttl is the absolute expiry"
    await asyncio.sleep((row.expires_at_ms + 50 - now_ms()) / 1000)
    assert await node.get("short") is None
    [found] = await node.fetch_rows(["short"])
    assert not found.live, "dead by the database's own verdict, still stored until purged"


async def test_persistent_rows_store_max_bigint_and_no_sweep_slot(
    node: Node, backend: str, fresh_location: str
) -> None:
    row, _ = await node.put("forever", b"v", None)
    assert row.expires_at_ms is None
    assert await stored(backend, fresh_location, "forever") == (b"v", PERSISTENT_TTL, row.version, None)
    assert await node.sample_expiring(20) == [], "a persistent row is never sampled"


async def test_put_over_an_expired_or_deleted_row_creates_it_anew(node: Node) -> None:
    old = await expired(node, "phoenix")
    row, created = await node.put("phoenix", b"again", None)
    assert created and row.version > old.version
    assert await node.soft_delete("phoenix", None)
    row_after_delete, created = await node.put("phoenix", b"once more", None)
    assert created and row_after_delete.version > row.version


# replace / create / touch / soft_delete


async def test_replace_overwrites_a_live_row_only(node: Node) -> None:
    assert await node.replace("absent", b"v", None, None) is None
    assert await node.fetch_rows(["absent"]) == [], "replace never creates a row"
    created = await node.create("k", b"one", None)
    assert created is not None
    replaced = await node.replace("k", b"two", 60_000, None)
    assert replaced is not None and replaced.version > created.version and replaced.expires_at_ms is not None
    assert await node.get("k") == Row(replaced.version, replaced.expires_at_ms, b"two")


async def test_replace_with_if_version_needs_the_current_version(node: Node) -> None:
    created = await node.create("k", b"one", None)
    assert created is not None
    assert await node.replace("k", b"stale", None, created.version - 1) is None
    assert await node.replace("k", b"stale", None, created.version + 1) is None
    assert (await node.get("k")).value == b"one"  # type: ignore[union-attr]
    replaced = await node.replace("k", b"two", None, created.version)
    assert replaced is not None and replaced.version > created.version
    assert await node.replace("k", b"three", None, created.version) is None, "that version is gone"
    assert (await node.get("k")).value == b"two"  # type: ignore[union-attr]


async def test_create_writes_only_where_no_live_row_exists(node: Node) -> None:
    first = await node.create("k", b"one", None)
    assert first is not None
    assert await node.create("k", b"two", None) is None
    assert (await node.get("k")).value == b"one"  # type: ignore[union-attr]
    assert await node.soft_delete("k", None)
    again = await node.create("k", b"three", None)
    assert again is not None and again.version > first.version
    assert await node.get("k") == Row(again.version, None, b"three")


async def test_touch_changes_the_expiry_and_keeps_the_value(node: Node, backend: str, fresh_location: str) -> None:
    assert await node.touch("absent", 60_000, None) is None
    created = await node.create("k", b"kept", None)
    assert created is not None
    touched = await node.touch("k", 60_000, None)
    assert touched is not None and touched.expires_at_ms is not None and touched.version > created.version
    value, ttl, _, slot = await stored(backend, fresh_location, "k")  # type: ignore[misc]
    assert (value, ttl) == (b"kept", touched.expires_at_ms) and slot is not None, "expiring: in the sample space"
    persisted = await node.touch("k", None, None)
    assert persisted is not None and persisted.expires_at_ms is None and persisted.version > touched.version
    assert await stored(backend, fresh_location, "k") == (b"kept", PERSISTENT_TTL, persisted.version, None)
    assert await node.get("k") == Row(persisted.version, None, b"kept")


async def test_touch_with_if_version_needs_the_current_version(node: Node) -> None:
    created = await node.create("k", b"v", None)
    assert created is not None
    assert await node.touch("k", 60_000, created.version + 1) is None
    assert (await node.get("k")).expires_at_ms is None  # type: ignore[union-attr]
    touched = await node.touch("k", 60_000, created.version)
    assert touched is not None and touched.expires_at_ms is not None


async def test_soft_delete_leaves_a_tombstone_with_ttl_minus_one(node: Node, backend: str, fresh_location: str) -> None:
    created = await node.create("doomed", b"v", None)
    assert created is not None
    assert await node.soft_delete("doomed", None)
    value, ttl, version, slot = await stored(backend, fresh_location, "doomed")  # type: ignore[misc]
    assert (value, ttl) == (b"v", SOFT_DELETED_TTL) and version > created.version
    assert slot is not None, "a soft-deleted row is in the sweeper's sample space"
    assert await node.get("doomed") is None
    assert not await node.soft_delete("doomed", None), "a tombstone is not live: nothing to delete"
    assert not await node.soft_delete("absent", None)


async def test_soft_delete_with_if_version_needs_the_current_version(node: Node) -> None:
    created = await node.create("k", b"v", None)
    assert created is not None
    assert not await node.soft_delete("k", created.version + 1)
    assert await node.get("k") is not None
    assert await node.soft_delete("k", created.version)
    assert await node.get("k") is None


async def test_an_expired_row_behaves_as_absent(node: Node) -> None:
    old = await expired(node, "gone")
    assert await node.get("gone") is None
    assert await node.replace("gone", b"x", None, None) is None
    assert await node.replace("gone", b"x", None, old.version) is None, "its version no longer matches"
    assert await node.touch("gone", 60_000, None) is None
    assert not await node.soft_delete("gone", None)
    assert not await node.soft_delete("gone", old.version)
    assert await node.get("gone") is None, "none of those revived it"
    created = await node.create("gone", b"new", None)
    assert created is not None and created.version > old.version


async def test_versions_never_repeat_across_delete_purge_and_recreate(node: Node) -> None:
    """No ABA: an old ETag must never match a later incarnation of the key, even after a hard delete."""
    seen: list[int] = []
    for _ in range(3):
        row, created = await node.put("k", b"v", None)
        assert created
        replaced = await node.replace("k", b"w", None, None)
        assert replaced is not None
        assert await node.soft_delete("k", None)
        [tombstone] = await node.fetch_rows(["k"])
        assert await node.purge(["k"]) == 1
        assert await node.fetch_rows(["k"]) == [], "purged: no row at all"
        seen += [row.version, replaced.version, tombstone.version]
    again = await node.create("k", b"v", None)
    assert again is not None
    assert await node.remove(["k"]) == 1
    last = await node.create("k", b"v", None)
    assert last is not None
    seen += [again.version, last.version]
    assert seen == sorted(seen) and len(set(seen)) == len(seen), seen


async def test_concurrent_conditional_writers_of_one_version_have_one_winner(node: Node) -> None:
    created = await node.create("k", b"start", None)
    assert created is not None
    version = created.version
    for _ in range(3):
        rows = await asyncio.gather(*(node.replace("k", b"w%d" % i, None, version) for i in range(CONCURRENT_WRITERS)))
        winners = [(i, row) for i, row in enumerate(rows) if row is not None]
        assert len(winners) == 1, f"{len(winners)} writers of version {version} succeeded"
        index, row = winners[0]
        assert await node.get("k") == Row(row.version, None, b"w%d" % index)
        version = row.version
    outcomes = await asyncio.gather(
        *(node.touch("k", 60_000, version) for _ in range(CONCURRENT_WRITERS // 2)),
        *(node.soft_delete("k", version) for _ in range(CONCURRENT_WRITERS // 2)),
    )
    assert sum(1 for outcome in outcomes if outcome not in (None, False)) == 1


async def test_concurrent_creators_have_one_winner(node: Node) -> None:
    for round_number in range(3):
        key = f"k{round_number}"
        rows = await asyncio.gather(*(node.create(key, b"%d" % i, None) for i in range(CONCURRENT_WRITERS)))
        assert sum(1 for row in rows if row is not None) == 1
        puts = await asyncio.gather(*(node.put(key, b"p%d" % i, None) for i in range(CONCURRENT_WRITERS)))
        assert not any(created for _, created in puts), "the key was live for every put"
        versions = [row.version for row, _ in puts]
        assert len(set(versions)) == len(versions), "every write got its own version"


# keys and values


async def test_unusual_keys_are_distinct_and_byte_exact(node: Node) -> None:
    keys = UNUSUAL_KEYS + LONGEST_KEYS
    for key in keys:
        _, created = await node.put(key, key.encode(), None)
        assert created, f"{key!r} collided with another key"
    for key in keys:
        got = await node.get(key)
        assert got is not None and got.value == key.encode(), key
    for near_miss in ("KEY", "key  ", "клю", "k" * 254):
        assert await node.get(near_miss) is None, near_miss
    assert await node.scan_keys("", 100) == sorted(keys), "byte order: case and trailing spaces significant"


@pytest.mark.parametrize("value", VALUES, ids=["empty", "nul", "embedded-nul", "all-bytes", "utf8", "70KB"])
async def test_values_are_binary_safe(node: Node, value: bytes) -> None:
    await node.put("k", value, None)
    got = await node.get("k")
    assert got is not None and type(got.value) is bytes and got.value == value
    replaced = await node.replace("k", value + b"\x00", None, None)
    assert replaced is not None and (await node.get("k")).value == value + b"\x00"  # type: ignore[union-attr]


# sample_expiring / purge / scan_keys (the sweeper's)


async def test_sample_expiring_returns_rows_with_an_expiry_or_deleted(node: Node) -> None:
    for i in range(10):
        await node.put(f"persistent{i}", b"v", None)
        await node.put(f"expiring{i}", b"v", 3_600_000)
    for i in range(5):
        await expired(node, f"expired{i}")
        await node.create(f"deleted{i}", b"v", None)
        assert await node.soft_delete(f"deleted{i}", None)

    sampled = await node.sample_expiring(100)
    assert len(sampled) == len(dict(sampled)) == 20, "each expiring or dead row once, wrapping around"
    assert dict(sampled) == {
        **{f"expiring{i}": False for i in range(10)},
        **{f"expired{i}": True for i in range(5)},
        **{f"deleted{i}": True for i in range(5)},
    }
    for count in (1, 7):
        sample = await node.sample_expiring(count)
        assert len(sample) == count and all(not key.startswith("persistent") for key, _ in sample)


async def test_purge_deletes_only_rows_dead_now(node: Node, backend: str, fresh_location: str) -> None:
    await node.put("persistent", b"v", None)
    await node.put("expiring", b"v", 3_600_000)
    await expired(node, "expired")
    await node.create("deleted", b"v", None)
    assert await node.soft_delete("deleted", None)

    assert await node.purge(["persistent", "expiring", "expired", "deleted", "absent"]) == 2
    assert sorted(row.key for row in await node.fetch_rows(["persistent", "expiring", "expired", "deleted"])) == [
        "expiring",
        "persistent",
    ]
    assert await node.purge([]) == 0
    assert await count_rows(backend, fresh_location) == 2


async def test_purge_spares_a_key_written_again_after_it_was_sampled(node: Node) -> None:
    await expired(node, "phoenix")
    assert await node.sample_expiring(20) == [("phoenix", True)]
    await node.create("phoenix", b"new", None)  # re-PUT between the sample and the delete
    assert await node.purge(["phoenix"]) == 0
    row = await node.get("phoenix")
    assert row is not None and row.value == b"new"
    assert await node.sample_expiring(20) == [], "a persistent row leaves the sample space"


async def test_scan_keys_pages_through_every_row_in_key_order(node: Node) -> None:
    await node.put("b-persistent", b"v", None)
    await node.put("d-expiring", b"v", 3_600_000)
    await expired(node, "a-expired")
    await node.create("c-deleted", b"v", None)
    assert await node.soft_delete("c-deleted", None)
    for i in range(20):
        await node.put(f"e{i:02d}", b"v", None)
    everything = ["a-expired", "b-persistent", "c-deleted", "d-expiring", *(f"e{i:02d}" for i in range(20))]

    pages, after = [], ""
    while page := await node.scan_keys(after, 5):
        assert len(page) <= 5 and all(key > after for key in page)
        pages.append(page)
        after = page[-1]
    assert [key for page in pages for key in page] == everything, "dead rows too: full sweeps purge them"
    assert await node.scan_keys("b-persistent", 2) == ["c-deleted", "d-expiring"], "``after`` is excluded"


# fetch_rows / scan_rows / import_rows / remove (resharding's)


async def test_list_range_walks_keys_in_byte_order_both_ways_dead_rows_included(node: Node) -> None:
    # Byte order of the UTF-8: "Z" < "a" < "é" (0xC3 0xA9) < "🙂" (0xF0 …), whatever the locale.
    keys = ["a", "a/1", "a/2", "a/3", "Z", "é", "🙂", "ab"]
    for key in keys:
        await node.put(key, key.encode() * 3, None)
    await node.soft_delete("a/2", None)
    await node.put("a/3", b"gone", 1)
    await asyncio.sleep(0.01)
    in_order = sorted(keys, key=lambda key: key.encode())
    everything = await node.list_range("", None, descending=False, limit=100)
    assert [row.key for row in everything] == in_order
    assert {row.key: row.live for row in everything} == {key: key not in ("a/2", "a/3") for key in keys}
    assert {row.key: row.size for row in everything if row.live}["é"] == len("é".encode()) * 3
    backwards = await node.list_range("", None, descending=True, limit=100)
    assert [row.key for row in backwards] == in_order[::-1]
    # [start, stop), and the limit counts dead rows too.
    assert [row.key for row in await node.list_range("a/", "a0", descending=False, limit=100)] == ["a/1", "a/2", "a/3"]
    assert [row.key for row in await node.list_range("a/", "a0", descending=True, limit=2)] == ["a/3", "a/2"]
    assert [row.key for row in await node.list_range("a/2", None, descending=False, limit=2)] == ["a/2", "a/3"]
    live = await node.list_range("a/1", "a/2", descending=False, limit=5)
    assert [(row.key, row.live, row.size) for row in live] == [("a/1", True, 9)]


async def test_incr_counts_from_zero_keeps_expiry_and_refuses_non_integers(node: Node) -> None:
    first = await node.incr("n", 5)
    assert first is not None and first.value == b"5" and first.expires_at_ms is None
    second = await node.incr("n", -12)
    assert second is not None and second.value == b"-7" and second.version > first.version
    assert await node.get("n") == Row(second.version, None, b"-7")
    # A live row keeps its expiry; a dead one (deleted, expired) starts again from 0, persistent.
    await node.put("ttl", b"40", 60_000)
    kept = await node.incr("ttl", 2)
    assert kept is not None and kept.value == b"42" and kept.expires_at_ms is not None
    await node.put("gone", b"99", None)
    await node.soft_delete("gone", None)
    assert await node.incr("gone", 1) == Row((await node.get("gone")).version, None, b"1")  # type: ignore[union-attr]
    await node.put("old", b"99", 1)
    await asyncio.sleep(0.01)
    restarted = await node.incr("old", 3)
    assert restarted is not None and (restarted.value, restarted.expires_at_ms) == (b"3", None)
    # Not integers (Redis's rule), and sums outside the signed 64-bit range: refused, row unchanged.
    for value in [b"", b"abc", b"1.5", b" 1", b"1 ", b"+1", b"007", b"-0", b"\xff1", b"99999999999999999999"]:
        await node.put("bad", value, None)
        before = await node.get("bad")
        assert await node.incr("bad", 1) is None, value
        assert await node.get("bad") == before, value
    await node.put("top", str(2**63 - 2).encode(), None)
    assert (await node.incr("top", 1)) is not None and await node.incr("top", 1) is None
    assert (await node.get("top")).value == str(2**63 - 1).encode()  # type: ignore[union-attr]
    await node.put("bottom", str(-(2**63)).encode(), None)
    assert await node.incr("bottom", -1) is None and (await node.incr("bottom", 2**63 - 1)).value == b"-1"  # type: ignore[union-attr]


async def test_concurrent_increments_are_each_applied_once(node: Node) -> None:
    await asyncio.gather(*(node.incr("hits", 1) for _ in range(CONCURRENT_WRITERS * 10)))
    assert (await node.get("hits")).value == str(CONCURRENT_WRITERS * 10).encode()  # type: ignore[union-attr]


async def test_a_transaction_commits_at_the_end_and_rolls_back_on_error(node: Node) -> None:
    async with node.transaction() as tx:
        await tx.put("a", b"1", None)
        assert (await tx.get("a")).value == b"1"  # type: ignore[union-attr]  # its own writes
        await tx.incr("n", 2)
    assert (await node.get("a")).value == b"1" and (await node.get("n")).value == b"2"  # type: ignore[union-attr]
    with pytest.raises(RuntimeError):
        async with node.transaction() as tx:
            await tx.put("a", b"2", None)
            await tx.soft_delete("n", None)
            raise RuntimeError("abandon")
    assert (await node.get("a")).value == b"1" and (await node.get("n")).value == b"2"  # type: ignore[union-attr]


async def test_lock_rows_locks_present_and_missing_keys_which_stay_absent(node: Node) -> None:
    await node.put("here", b"v", None)
    async with node.transaction() as tx:
        rows = await tx.lock_rows(["missing", "here"])
        assert [(row.key, row.live) for row in rows] == [("here", True), ("missing", False)]
    assert await node.get("missing") is None
    assert await node.create("missing", b"new", None) is not None  # the placeholder is a tombstone


async def test_locked_rows_serialize_read_modify_write_transactions(node: Node) -> None:
    await node.put("balance", b"0", None)

    async def add_one() -> None:
        async with node.transaction() as tx:
            [row] = await tx.lock_rows(["balance"])
            await asyncio.sleep(0)  # give another transaction every chance to interleave
            await tx.put("balance", str(int(row.value) + 1).encode(), None)

    await asyncio.gather(*(add_one() for _ in range(CONCURRENT_WRITERS)))
    assert (await node.get("balance")).value == str(CONCURRENT_WRITERS).encode()  # type: ignore[union-attr]


async def test_fetch_rows_returns_live_and_dead_rows_as_stored(node: Node) -> None:
    persistent = await node.create("persistent", b"\x00\xffbinary\x00", None)
    expiring = await node.create("expiring", b"soon", 3_600_000)
    deleted = await node.create("deleted", b"gone", None)
    assert persistent and expiring and deleted
    assert await node.soft_delete("deleted", None)
    dead = await expired(node, "expired")

    rows = by_key(await node.fetch_rows(["persistent", "expiring", "deleted", "expired", "absent", "also-absent"]))

    assert set(rows) == {"persistent", "expiring", "deleted", "expired"}
    assert rows["persistent"] == StoredRow(
        "persistent", b"\x00\xffbinary\x00", PERSISTENT_TTL, persistent.version, True
    )
    assert rows["expiring"] == StoredRow("expiring", b"soon", expiring.expires_at_ms, expiring.version, True)  # type: ignore[arg-type]
    assert rows["expired"] == StoredRow("expired", b"old", dead.expires_at_ms, dead.version, False)  # type: ignore[arg-type]
    tombstone = rows["deleted"]
    assert (tombstone.value, tombstone.ttl, tombstone.live) == (b"gone", SOFT_DELETED_TTL, False)
    assert tombstone.version > deleted.version
    assert all(type(row.value) is bytes for row in rows.values())
    assert await node.fetch_rows([]) == []
    assert await node.fetch_rows(["nobody", "nothing"]) == []


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


async def test_unusual_keys_survive_scan_fetch_import_and_remove(node: Node) -> None:
    values = {key: f"value of {key!r}".encode() for key in UNUSUAL_KEYS}
    for key, value in values.items():
        await node.put(key, value, None)

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


async def test_concurrent_state_updates_of_one_epoch_have_one_winner(node: Node) -> None:
    assert await node.write_state("ring", "r", 1, None)
    outcomes = await asyncio.gather(*(node.write_state("ring", f"w{i}", 2, 1) for i in range(CONCURRENT_WRITERS)))
    assert outcomes.count(True) == 1
    assert await node.read_state("ring") == (2, f"w{outcomes.index(True)}")


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


# sweeper_lock: tests/integration/test_sweeper.py; table_stats: tests/integration/test_table_stats.py


# open / close / ping / connections_in_use


def unreachable_location(backend: str, tmp_path: Path) -> str:
    """Somewhere no database answers: a SQLite file under a regular file, or a port nothing listens on."""
    if backend == "sqlite":
        blocker = tmp_path / "not-a-directory"
        blocker.write_bytes(b"")
        return str(blocker / "shard.db")
    scheme = "postgresql" if backend == "postgres" else "mysql"
    return f"{scheme}://kv@127.0.0.1:{free_port()}/kv"


async def test_open_of_an_unreachable_database_raises_shard_unavailable(backend: str, tmp_path: Path) -> None:
    node = create_node(backend, "t", "primary", unreachable_location(backend, tmp_path), PoolSettings(1, 2, 2.0, 10.0))
    try:
        with pytest.raises(ShardUnavailable, match=r"^shard t: primary: "):
            await node.open()
    finally:
        await node.close(1.0)


async def test_connections_are_back_in_the_pool_after_each_call(node: Node) -> None:
    await node.ping()
    await asyncio.gather(*(node.put(f"k{i}", b"v", None) for i in range(8)), *(node.get("k0") for _ in range(8)))
    await node.replace("absent", b"v", None, None)
    assert node.connections_in_use() == 0


# ensure_schema


async def test_ensure_schema_is_idempotent_and_keeps_the_rows(node: Node) -> None:
    await node.put("survivor", b"kept", None)
    await node.ensure_schema()
    await node.ping()
    assert (await node.get("survivor")).value == b"kept"  # type: ignore[union-attr]
    assert (await node.table_stats()).schema_version == SCHEMA_VERSION


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
        assert await rawdb.execute(backend, fresh_location, version) == [(str(SCHEMA_VERSION),)]
        assert await upgraded.read_state("ring") is None
        assert await upgraded.write_state("ring", "r", 1, None)
        assert await upgraded.read_state("ring") == (1, "r")
        assert (await upgraded.get("survivor")).value == b"kept"  # type: ignore[union-attr]
        assert (await upgraded.table_stats()).schema_version == SCHEMA_VERSION
        await upgraded.ensure_schema()  # idempotent once upgraded
        assert await rawdb.execute(backend, fresh_location, version) == [(str(SCHEMA_VERSION),)]
    finally:
        await upgraded.close(5.0)
