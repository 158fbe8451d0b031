"""The reshard steps one by one, as an admin runs them: a copier killed half-way, an abort,
`verify` catching a planted key, and steps refused when they are out of order."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from kvstore.backends.base import PERSISTENT_TTL
from kvstore.cluster.ports import free_port
from kvstore.config import load_settings
from kvstore.ring_record import Phase, RingRecord
from tests.support import rawdb
from tests.support.fleet import Shard, kvstore, new_shards, placement, ring, write_config
from tests.support.server import ServerProcess

Stored = tuple[bytes, int, int]  # value, ttl, version


async def load_rows(shards: list[Shard], count: int) -> dict[str, Stored]:
    """``count`` rows written straight into their owners' tables, half of them expiring in an hour."""
    owners = ring(shards)
    expires = int(time.time() * 1000) + 3_600_000
    rows: dict[str, Stored] = {
        f"row-{index:05d}": (f"value-{index}".encode(), expires if index % 2 else PERSISTENT_TTL, 1_000_000 + index)
        for index in range(count)
    }
    for shard in shards:
        mine = [
            (key, value, ttl, version, None if ttl == PERSISTENT_TTL else index)
            for index, (key, (value, ttl, version)) in enumerate(rows.items())
            if owners.owner(key) == shard.name
        ]
        await rawdb.insert_rows(shard.backend, shard.location, mine)
    return rows


async def stored_rows(shards: list[Shard]) -> dict[str, list[tuple[str, Stored]]]:
    """Every row of every shard: key -> [(shard, (value, ttl, version))]."""
    found: dict[str, list[tuple[str, Stored]]] = {}
    for shard in shards:
        for key, value, ttl, version in await rawdb.execute(
            shard.backend, shard.location, "SELECT key, value, ttl, version FROM store"
        ):
            name = key.decode() if isinstance(key, bytes) else key
            found.setdefault(name, []).append((shard.name, (bytes(value), int(ttl), int(version))))
    return found


def copy_cursor(shard: Shard) -> dict[str, object] | None:
    rows = asyncio.run(
        rawdb.execute(shard.backend, shard.location, "SELECT value FROM kvstore_state WHERE name LIKE 'copy:%'")
    )
    return json.loads(rows[0][0]) if rows else None


def test_a_copier_killed_half_way_finishes_on_rerun(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    old = new_shards("s", "postgres", 2, tmp_path, request)
    new = [*old, *new_shards("s", "postgres", 1, tmp_path, request, start=2)]
    config, target = write_config(tmp_path / "old.yaml", old), write_config(tmp_path / "new.yaml", new)
    assert kvstore("shards", "init", "--config", str(config)).returncode == 0
    rows = asyncio.run(load_rows(old, 6000))
    started = kvstore("reshard", "start", "--config", str(config), "--to", str(target))
    assert started.returncode == 0, started.stderr

    command = [sys.executable, "-m", "kvstore", "reshard", "copy", "--config", str(config), "--batch-size", "50"]
    copier = subprocess.Popen([*command, "--rows-per-second", "1000"], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while (cursor := copy_cursor(old[0])) is None or int(cursor["scanned"]) < 500:  # type: ignore[call-overload]
            assert copier.poll() is None and time.monotonic() < deadline, "the copier ended before it was killed"
            time.sleep(0.05)
        os.kill(copier.pid, signal.SIGKILL)
    finally:
        copier.wait()
    assert copy_cursor(old[0])["done"] is False  # type: ignore[index]

    status = kvstore("reshard", "status", "--config", str(config), "--json")
    document = json.loads(status.stdout)
    assert document["phase"] == "copying" and not document["sources"][0]["done"]
    refused = kvstore("reshard", "cutover", "--config", str(config))
    assert refused.returncode == 1 and "copy is not finished on s0" in refused.stderr

    for step in ("copy", "cutover", "cleanup"):
        result = kvstore("reshard", step, "--config", str(config))
        assert result.returncode == 0, f"{step}: {result.stderr}"
    verified = kvstore("verify", "--config", str(config), "--json")
    assert verified.returncode == 0 and json.loads(verified.stdout)["clean"], verified.stdout

    # Every row exactly once, on its new owner, with its value, ttl and version.
    after = asyncio.run(stored_rows(new))
    owners = ring(new)
    assert after == {key: [(owners.owner(key), stored)] for key, stored in rows.items()}

    # With the old config, `shards status` reports the ring in force, which has the third shard.
    status = kvstore("shards", "status", "--config", str(config), "--json")
    shares = {shard["name"]: shard["share"] for shard in json.loads(status.stdout)["shards"]}
    assert status.returncode == 0 and shares.keys() == {"s0", "s1", "s2"}, status.stderr
    assert shares == pytest.approx(owners.shares())


def test_verify_finds_a_key_planted_on_the_wrong_shard(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    shards = new_shards("s", "sqlite", 2, tmp_path, request)
    config = write_config(tmp_path / "shards.yaml", shards)
    assert kvstore("shards", "init", "--config", str(config)).returncode == 0
    asyncio.run(load_rows(shards, 200))
    clean = kvstore("verify", "--config", str(config))
    assert clean.returncode == 0 and "CLEAN" in clean.stdout and "200 live rows" in clean.stdout

    owners = ring(shards)
    planted = next(f"planted-{n}" for n in range(100) if owners.owner(f"planted-{n}") == "s0")
    asyncio.run(rawdb.insert_rows("sqlite", shards[1].location, [(planted, b"x", PERSISTENT_TTL, 1, None)]))

    found = kvstore("verify", "--config", str(config), "--json")
    assert found.returncode == 1
    report = json.loads(found.stdout)
    assert (report["clean"], report["misplaced"], report["in_place"]) == (False, 1, 200)
    assert report["examples"] == [
        {"key": planted, "shard": "s1", "owner": "s0", "detail": "misplaced: no read routes here"}
    ]
    human = kvstore("verify", "--config", str(config))
    assert human.returncode == 1 and "NOT CLEAN" in human.stdout and planted in human.stdout


def wait_for_phase(client: httpx.Client, phase: str) -> None:
    """Until the front end routes by a ring record in ``phase`` (it polls every 0.2 s here)."""
    deadline = time.monotonic() + 10
    while client.get("/readyz").json()["ring"]["phase"] != phase:
        assert time.monotonic() < deadline, f"the front end did not follow the ring record to {phase}"
        time.sleep(0.05)


def test_abort_returns_to_the_old_ring_with_every_write(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    old = new_shards("s", "sqlite", 2, tmp_path, request)
    new = [*old, *new_shards("s", "sqlite", 1, tmp_path, request, start=2)]
    config, target = write_config(tmp_path / "old.yaml", old), write_config(tmp_path / "new.yaml", new)
    front_end = ServerProcess(config).start()
    try:
        with httpx.Client(base_url=front_end.url, timeout=10) as client:
            keys = [f"k{n}" for n in range(300)]
            for key in keys:
                assert client.put(f"/v1/kv/{key}", content=b"before").status_code == 201
            started = kvstore("reshard", "start", "--config", str(config), "--to", str(target))
            assert started.returncode == 0, started.stderr
            wait_for_phase(client, "copying")
            status = client.get("/v1/status").json()  # the console's view of the migration, before the copier runs
            assert status["ring"]["phase"] == "copying" and status["migration"]["phase"] == "copying"
            assert [shard["name"] for shard in status["shards"]] == ["s0", "s1", "s2"]
            sources = status["migration"]["sources"]
            assert [(source["shard"], source["scanned"], source["done"]) for source in sources] == [
                ("s0", 0, False),
                ("s1", 0, False),
            ]
            assert sum(source["rows_estimate"] for source in sources) == len(keys)

            old_ring, new_ring = ring(old), ring(new)
            moving = [key for key in keys if old_ring.owner(key) != new_ring.owner(key)]
            assert len(moving) >= 40
            changed, deleted = moving[:20], moving[20:40]
            born = [key for key in (f"new{n}" for n in range(200)) if old_ring.owner(key) != new_ring.owner(key)][:20]
            for key in changed + born:
                assert client.put(f"/v1/kv/{key}", content=b"during").status_code in (200, 201)
            for key in deleted:
                assert client.delete(f"/v1/kv/{key}").status_code == 204
            assert asyncio.run(placement(new[2:])), "the writes went to the new shard"

            aborted = kvstore("reshard", "abort", "--config", str(config), "--json")
            assert aborted.returncode == 0, aborted.stderr
            assert json.loads(aborted.stdout)["phase"] == "stable"
            assert json.loads(aborted.stdout)["shards"] == ["s0", "s1"]
            wait_for_phase(client, "stable")

            for key in keys + born:
                response = client.get(f"/v1/kv/{key}")
                if key in deleted:
                    assert response.status_code == 404, key
                else:
                    expected = b"during" if key in changed or key in born else b"before"
                    assert (response.status_code, response.content) == (200, expected), key
            assert client.put(f"/v1/kv/{changed[0]}", content=b"after").status_code == 200
    finally:
        front_end.stop()
    assert asyncio.run(stored_rows(new[2:])) == {}, "rows were left on the abandoned shard"
    verified = kvstore("verify", "--config", str(config))
    assert verified.returncode == 0, verified.stdout


def test_a_phase_that_pauses_writes_names_itself(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Ring records written straight to the shards: s1's weight doubles, so some keys move s0 -> s1."""
    shards = new_shards("s", "sqlite", 2, tmp_path, request)
    config = write_config(tmp_path / "shards.yaml", shards)
    assert kvstore("shards", "init", "--config", str(config)).returncode == 0
    old = tuple({**shard.spec(), "weight": 1} for shard in shards)
    new = (old[0], {**old[1], "weight": 2})

    def publish(epoch: int, phase: Phase) -> None:
        record = RingRecord(epoch, phase, new, 256, previous=old, migration="m").encode()
        for shard in shards:
            asyncio.run(rawdb.execute(shard.backend, shard.location, "DELETE FROM kvstore_state WHERE name = 'ring'"))
            sql = "INSERT INTO kvstore_state (name, epoch, value) VALUES ('ring', ?, ?)"
            asyncio.run(rawdb.execute(shard.backend, shard.location, sql, epoch, record))

    record = RingRecord(1, Phase.PREPARING, new, 256, previous=old)
    old_ring, new_ring = record.previous_ring(), record.ring()
    assert old_ring is not None
    keys = [f"k{n}" for n in range(200)]
    moving = next(key for key in keys if old_ring.owner(key) != new_ring.owner(key))
    staying = next(key for key in keys if old_ring.owner(key) == new_ring.owner(key))
    front_end = ServerProcess(config).start()
    try:
        with httpx.Client(base_url=front_end.url, timeout=10) as client:
            for epoch, phase, says in (
                (1, Phase.PREPARING, "the reshard prepares"),
                (2, Phase.ABORTING, "moves it back"),
            ):
                publish(epoch, phase)
                wait_for_phase(client, phase.value)
                refused = client.put(f"/v1/kv/{moving}", content=b"v")
                assert refused.status_code == 503 and "retry-after" in refused.headers
                detail = refused.json()["detail"]
                assert "writes to this key are paused" in detail and f"(phase {phase.value})" in detail, detail
                assert says in detail, detail
                assert client.put(f"/v1/kv/{staying}", content=b"v").status_code in (200, 201)
    finally:
        front_end.stop()


def test_steps_out_of_order_are_refused_with_a_reason(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    shards = new_shards("s", "sqlite", 2, tmp_path, request)
    more = [*shards, *new_shards("s", "sqlite", 1, tmp_path, request, start=2)]
    config, target = write_config(tmp_path / "old.yaml", shards), write_config(tmp_path / "new.yaml", more)
    assert kvstore("shards", "init", "--config", str(config)).returncode == 0

    def refused(*args: str) -> str:
        result = kvstore("reshard", *args, "--config", str(config))
        assert result.returncode == 1, result.stdout
        return result.stderr

    assert "no migration is in progress" in refused("copy")
    assert "the migration is stable, not copying" in refused("cutover")
    assert "nothing would move" in refused("start", "--to", str(config))
    assert kvstore("reshard", "start", "--config", str(config), "--to", str(target)).returncode == 0
    assert "a migration is already copying" in refused("start", "--to", str(target))
    assert "not switched" in refused("cleanup")
    # `ring locate` names both owners of a moving key, and routes a tagged key by its tag.
    moving = next(key for key in (f"{{t{n}}}/k" for n in range(1000)) if ring(more).owner(key) == "s2")
    located = kvstore("ring", "locate", moving, "--config", str(config), "--json")
    assert located.returncode == 0, located.stderr
    assert json.loads(located.stdout) | {"epoch": 0} == {
        "key": moving,
        "hash_tag": moving[1 : moving.index("}")],
        "epoch": 0,
        "phase": "copying",
        "owner": "s2",
        "previous_owner": ring(shards).owner(moving),
    }
    human = kvstore("ring", "locate", moving, "--config", str(config)).stdout
    assert "owner:    s2 (new ring: serves reads and writes)" in human and "previous: s" in human
    refused_key = kvstore("ring", "locate", "a" * 256, "--config", str(config))
    assert refused_key.returncode == 2 and "256 characters long" in refused_key.stderr
    assert kvstore("reshard", "abort", "--config", str(config)).returncode == 0


def test_an_unreachable_shard_is_named(tmp_path: Path) -> None:
    down = Shard("pg9", "postgres", f"postgresql://kvstore@127.0.0.1:{free_port()}/kvstore")
    config = write_config(tmp_path / "shards.yaml", [down])
    for command in (("reshard", "status"), ("verify",)):
        started = time.monotonic()
        result = kvstore(*command, "--config", str(config))
        assert result.returncode == 1
        assert "shard pg9 unreachable" in result.stderr and "Traceback" not in result.stderr
        assert time.monotonic() - started < 15


def test_run_resumes_a_migration_the_single_steps_left_half_way(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """From SQLite to MariaDB, so rows also cross engines through the backend interface."""
    old = new_shards("s", "sqlite", 2, tmp_path, request)
    new = new_shards("m", "mysql", 2, tmp_path, request)
    other = [*old, *new_shards("x", "sqlite", 1, tmp_path, request)]
    config, target = write_config(tmp_path / "old.yaml", old), write_config(tmp_path / "new.yaml", new)
    assert kvstore("shards", "init", "--config", str(config)).returncode == 0
    rows = asyncio.run(load_rows(old, 500))
    for step in (("start", "--to", str(target)), ("copy",), ("cutover",)):
        assert kvstore("reshard", *step, "--config", str(config)).returncode == 0, step

    elsewhere = kvstore(
        "reshard", "run", "--config", str(config), "--to", str(write_config(tmp_path / "x.yaml", other))
    )
    assert elsewhere.returncode == 1 and "a migration to another ring is switched" in elsewhere.stderr
    resumed = kvstore("reshard", "run", "--config", str(config), "--to", str(target), "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["phase"] == "stable"
    owners = ring(new)
    assert asyncio.run(stored_rows(new)) == {key: [(owners.owner(key), stored)] for key, stored in rows.items()}
    assert asyncio.run(stored_rows(old)) == {}, "cleanup emptied the SQLite shards"


STALE = "describes a ring the shards no longer use"


def test_admin_commands_follow_the_ring_record_when_the_config_is_stale(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    old = new_shards("s", "sqlite", 2, tmp_path, request)
    new = [*old, *new_shards("s", "sqlite", 1, tmp_path, request, start=2)]
    config, target = write_config(tmp_path / "old.yaml", old), write_config(tmp_path / "new.yaml", new)
    assert kvstore("shards", "init", "--config", str(config)).returncode == 0
    asyncio.run(load_rows(old, 300))
    ran = kvstore("reshard", "run", "--config", str(config), "--to", str(target))
    assert ran.returncode == 0, ran.stderr
    assert f"{config} still describes the old ring; update it to shards s0 (weight 1), s1 (weight 1), s2" in ran.stderr
    assert "s2" not in config.read_text(), "without --write-config the file is left alone"

    expired = int(time.time() * 1000) - 1
    dead = [(f"dead-{n}", b"x", expired, 1, n) for n in range(50)]
    asyncio.run(rawdb.insert_rows("sqlite", new[2].location, dead))

    swept = kvstore("sweep", "--config", str(config), "--full")
    assert swept.returncode == 0, swept.stderr
    assert STALE in swept.stderr and "update it to shards s0 (weight 1), s1 (weight 1), s2 (weight 1)" in swept.stderr
    assert [line.split(":")[0] for line in swept.stdout.splitlines()] == ["s0", "s1", "s2"]
    assert "s2: scanned" in swept.stdout and "deleted 50" in swept.stdout
    assert asyncio.run(rawdb.execute("sqlite", new[2].location, "SELECT COUNT(*) FROM store WHERE ttl <= ?", expired))[
        0
    ] == (0,)
    only = kvstore("sweep", "--config", str(config), "--shard", "s2")
    assert only.returncode == 0 and only.stdout.startswith("s2: sampled"), only.stderr
    unknown = kvstore("sweep", "--config", str(config), "--shard", "s9")
    assert unknown.returncode == 1 and "unknown shard 's9'; the ring in force has s0, s1, s2" in unknown.stderr

    shown = kvstore("ring", "show", "--config", str(config), "--json")
    assert shown.returncode == 0 and STALE in shown.stderr, shown.stderr
    document = json.loads(shown.stdout)
    assert [s["name"] for s in document["shards"]] == ["s0", "s1", "s2"] and document["phase"] == "stable"
    assert {s["name"]: s["share"] for s in document["shards"]} == pytest.approx(ring(new).shares())
    human = kvstore("ring", "show", "--config", str(config))
    assert human.stdout.splitlines()[3].split()[:2] == ["s2", "sqlite"]

    # Run again with --write-config: nothing moves, and the file gets the new shards, other settings kept.
    written = kvstore("reshard", "run", "--config", str(config), "--to", str(target), "--write-config")
    assert written.returncode == 0, written.stderr
    assert "nothing to move" in written.stderr and "wrote shards s0 (weight 1), s1 (weight 1), s2" in written.stderr
    rewritten, wanted = yaml.safe_load(config.read_text()), yaml.safe_load(target.read_text())
    assert rewritten.pop("shards")[:2] == wanted.pop("shards")[:2] and rewritten == wanted
    assert load_settings(config).shard_specs == load_settings(target).shard_specs
    quiet = kvstore("ring", "show", "--config", str(config))
    assert quiet.returncode == 0 and quiet.stderr == ""
