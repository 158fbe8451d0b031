"""The admin commands as an operator runs them: `ring`, `shards status`, `kv`, in real processes."""

import asyncio
import json
import os
import random
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from kvstore.backends.base import SCHEMA_VERSION
from kvstore.cluster.ports import free_port
from tests.support import rawdb
from tests.support.fleet import new_shards
from tests.support.server import ServerProcess

TOKEN = "admin-cli-test-token-0123456789"


def kvstore(*args: str, stdin: bytes = b"", env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "kvstore", *args],
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


def write_yaml(path: Path, document: object) -> Path:
    path.write_text(yaml.safe_dump(document))
    return path


def sqlite_shards(count: int, **weights: int) -> list[dict[str, object]]:
    return [
        {"name": f"s{i}", "backend": "sqlite", "primary": f"s{i}.db", "weight": weights.get(f"s{i}", 1)}
        for i in range(count)
    ]


def test_ring_show_lists_every_shard_with_its_share(tmp_path: Path) -> None:
    config = write_yaml(tmp_path / "shards.yaml", {"shards": sqlite_shards(3, s2=2)})
    shown = kvstore("ring", "show", "--config", str(config), "--json")
    assert shown.returncode == 0, shown.stderr
    document = json.loads(shown.stdout)
    assert [(s["name"], s["weight"], s["vnodes"]) for s in document["shards"]] == [
        ("s0", 1, 256),
        ("s1", 1, 256),
        ("s2", 2, 512),
    ]
    assert sum(s["share"] for s in document["shards"]) == pytest.approx(1.0)
    assert document["shards"][2]["share"] == pytest.approx(0.5, abs=0.05)
    human = kvstore("ring", "show", "--config", str(config)).stdout.decode().splitlines()
    assert human[0].split() == ["SHARD", "BACKEND", "WEIGHT", "VNODES", "SHARE"]
    assert human[3].split()[:4] == ["s2", "sqlite", "2", "512"]


def test_ring_diff_computes_what_moves_and_a_sample_agrees(tmp_path: Path) -> None:
    old = write_yaml(tmp_path / "old.yaml", {"shards": sqlite_shards(4)})
    new = write_yaml(tmp_path / "new.yaml", {"shards": sqlite_shards(5)})
    result = kvstore("ring", "diff", str(old), str(new), "--sample", "100000", "--json")
    assert result.returncode == 0, result.stderr
    diff = json.loads(result.stdout)
    assert 0.15 <= diff["moved_fraction"] <= 0.25
    assert {move["to"] for move in diff["moves"]} == {"s4"}
    assert sum(move["fraction"] for move in diff["moves"]) == pytest.approx(diff["moved_fraction"])
    assert diff["sample"]["keys"] == 100_000
    assert abs(diff["sample"]["moved_fraction"] - diff["moved_fraction"]) < 0.01
    assert sum(move["sampled_keys"] for move in diff["moves"]) == diff["sample"]["moved"]
    assert diff["shares"]["s4"]["before"] is None
    assert diff["shares"]["s4"]["after"] == pytest.approx(diff["moved_fraction"])

    human = kvstore("ring", "diff", str(old), str(new)).stdout.decode()
    assert f"moved: {diff['moved_fraction'] * 100:.2f}% of the key space" in human
    same = kvstore("ring", "diff", str(old), str(old), "--json")
    assert json.loads(same.stdout)["moves"] == [] and json.loads(same.stdout)["moved_fraction"] == 0


def test_ring_errors_are_one_line_and_help_has_an_example(tmp_path: Path) -> None:
    old = write_yaml(tmp_path / "old.yaml", {"shards": sqlite_shards(2)})
    missing = kvstore("ring", "diff", str(old), str(tmp_path / "nope.yaml"))
    assert missing.returncode != 0
    assert missing.stderr.decode().strip().splitlines() == [
        f"Error: config error: {tmp_path / 'nope.yaml'}: cannot read config: No such file or directory"
    ]
    bad = write_yaml(tmp_path / "bad.yaml", {"shards": [{"name": "s0", "backend": "sqlite", "weight": 0}]})
    invalid = kvstore("ring", "show", "--config", str(bad))
    assert invalid.returncode != 0 and len(invalid.stderr.decode().strip().splitlines()) == 1
    for command in (["ring", "show"], ["ring", "diff"], ["shards", "status"], ["kv", "put"]):
        assert "Example:" in kvstore(*command, "--help").stdout.decode(), command


def load_rows(path: Path, persistent: int, live: int, expired: int, deleted: int) -> None:
    """Rows as PUTs and DELETEs leave them, each with an expiry carrying a random sweep slot."""
    now_ms, rng = int(time.time() * 1000), random.Random(5)
    ttls = [2**63 - 1] * persistent + [now_ms + 3_600_000] * live + [now_ms - 1] * expired + [-1] * deleted
    rows = [
        (f"{path.stem}-{i}", ttl, None if ttl == 2**63 - 1 else rng.randrange(1 << 62)) for i, ttl in enumerate(ttls)
    ]
    with sqlite3.connect(path) as db:
        db.executemany("INSERT INTO store (key, value, ttl, version, sweep_slot) VALUES (?, x'00', ?, 1, ?)", rows)


def test_shards_status_counts_live_dead_and_expiring_rows(tmp_path: Path) -> None:
    config = write_yaml(tmp_path / "shards.yaml", {"shards": sqlite_shards(2)})
    assert kvstore("shards", "init", "--config", str(config)).returncode == 0
    load_rows(tmp_path / "s0.db", persistent=10, live=20, expired=15, deleted=5)  # < 100 expiring: all seen
    load_rows(tmp_path / "s1.db", persistent=300, live=400, expired=200, deleted=100)  # dead scaled from a sample
    result = kvstore("shards", "status", "--config", str(config), "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["ok"] is True
    s0, s1 = document["shards"]
    assert s0["primary"] == {"reachable": True, "error": None} and s0["replicas"] == []
    assert s0["schema_version"] == SCHEMA_VERSION
    assert s0["share"] + s1["share"] == pytest.approx(1.0)
    rows0 = s0["rows"]
    assert (rows0["total"], rows0["live"], rows0["dead"], rows0["with_expiry"]) == (50, 30, 20, 40)
    assert set(rows0["methods"].values()) == {"exact"}
    rows1 = s1["rows"]
    assert (rows1["total"], rows1["with_expiry"]) == (1000, 700)
    assert rows1["methods"] == {"total": "exact", "live": "estimate", "with_expiry": "exact", "dead": "sample"}
    assert 100 <= rows1["sample"]["rows"] <= 500  # 5 random windows of 100 among 700 rows may overlap
    assert abs(rows1["dead"] - 300) <= 120, rows1  # over 4 standard deviations of the sample
    assert rows1["live"] == 1000 - rows1["dead"]

    human = kvstore("shards", "status", "--config", str(config)).stdout.decode().splitlines()
    assert " ".join(human[0].split()) == "SHARD BACKEND WEIGHT SHARE PRIMARY SCHEMA ROWS LIVE DEAD WITH EXPIRY DEAD %"
    assert human[1].split()[4:] == ["up", str(SCHEMA_VERSION), "50", "30", "20", "40", "50%"]
    assert human[2].split()[6] == "1,000" and human[2].split()[8].startswith("~")
    assert any(line.startswith("~ estimate:") for line in human)


def test_shards_status_reports_the_other_shards_when_one_is_unreachable(tmp_path: Path) -> None:
    dead = f"postgresql://kvstore@127.0.0.1:{free_port()}/kvstore"
    shards = [
        {"name": "s0", "backend": "sqlite", "primary": "s0.db"},
        {"name": "s1", "backend": "postgres", "primary": dead},
    ]
    config = write_yaml(tmp_path / "shards.yaml", {"server": {"connect_timeout_s": 0.5}, "shards": shards})
    assert kvstore("shards", "init", "--config", str(config)).returncode != 0  # s1 is unreachable
    started = time.monotonic()
    result = kvstore("shards", "status", "--config", str(config), "--json")
    assert time.monotonic() - started < 10
    assert result.returncode != 0
    document = json.loads(result.stdout)
    assert document["ok"] is False
    s0, s1 = document["shards"]
    assert s0["ok"] and s0["rows"]["total"] == 0
    assert not s1["ok"] and s1["primary"]["reachable"] is False
    assert "shard s1: primary: cannot connect" in s1["primary"]["error"]
    stderr = result.stderr.decode()
    assert "s1: FAILED: shard s1: primary: cannot connect" in stderr
    assert stderr.strip().splitlines()[-1] == "Error: 1 shard(s) failed: s1"
    human = kvstore("shards", "status", "--config", str(config)).stdout.decode().splitlines()
    assert human[2].split()[:5] == ["s1", "postgres", "1", human[2].split()[3], "DOWN"]


@pytest.fixture(scope="module")
def kv_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("kv")
    document = {
        "shards": sqlite_shards(2),
        "auth": {"tokens": [{"name": "cli", "token": TOKEN, "scope": "write"}]},
    }
    process = ServerProcess(write_yaml(directory / "shards.yaml", document)).start()
    yield process
    process.stop()


def test_kv_round_trip_through_a_real_server(kv_server: ServerProcess) -> None:
    env = {"KVSTORE_URL": kv_server.url, "KVSTORE_TOKEN": TOKEN}

    def kv(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
        return kvstore("kv", *args, stdin=stdin, env=env)

    key = "dir/../odd key?.%"  # '/' kept, the rest percent-encoded, dot segments not collapsed
    put = kv("put", key, "--value", "hello", "--ttl", "30")
    assert put.returncode == 0, put.stderr
    written = json.loads(put.stdout)
    assert written["key"] == key and written["expires_at"] is not None
    assert kv("get", key).stdout == b"hello"
    remaining = float(kv("ttl", key).stdout)
    assert 25 < remaining <= 30

    value = bytes(range(256)) * 4 + b"\x00\r\n"
    created = kv("put", "bin/blob", "--create-only", stdin=value)
    assert created.returncode == 0, created.stderr
    again = kv("put", "bin/blob", "--create-only", stdin=b"other")
    assert again.returncode == 1
    assert again.stderr.decode().startswith("412 ")
    strong = kv("get", "bin/blob", "--strong")
    assert strong.returncode == 0 and strong.stdout == value
    assert kv("ttl", "bin/blob").stdout.decode().strip() == "persistent"

    version = json.loads(created.stdout)["version"]
    assert kv("put", "bin/blob", "--if-match", "1", "--value", "x").returncode == 1
    assert kv("put", "bin/blob", "--if-match", str(version), "--value", "x").returncode == 0
    assert kv("get", "bin/blob").stdout == b"x"

    assert kv("delete", key).returncode == 0
    missing = kv("get", key)
    assert (missing.returncode, missing.stdout, missing.stderr.decode().strip()) == (1, b"", "not found")
    assert kv("delete", key).returncode == 1
    assert kv("ttl", key).returncode == 1

    assert kv("list", "bin/").stdout == b"bin/blob\n"
    assert (kv("incr", "n").stdout, kv("incr", "n", "--by", "-3").stdout) == (b"1\n", b"-2\n")
    not_a_number = kv("incr", "bin/blob")
    assert not_a_number.returncode == 1 and not_a_number.stderr.decode().startswith("409 ")
    listed = [json.loads(line) for line in kv("list", "--json", "--reverse").stdout.splitlines()]
    assert [entry["key"] for entry in listed] == ["n", "bin/blob"]

    stored = kv("mput", "m/1=one", "m/2=two", "--ttl", "60")
    assert stored.returncode == 0, stored.stderr
    assert [json.loads(line)["status"] for line in stored.stdout.splitlines()] == [201, 201]
    fetched = [json.loads(line) for line in kv("mget", "m/1", "m/2", "m/3").stdout.splitlines()]
    assert [(entry["key"], entry["status"], entry.get("value_b64")) for entry in fetched] == [
        ("m/1", 200, "b25l"),
        ("m/2", 200, "dHdv"),
        ("m/3", 404, None),
    ]
    assert kv("mput", "no-separator").returncode == 2


def test_kv_errors_name_the_status_and_detail(kv_server: ServerProcess) -> None:
    unauthorized = kvstore("kv", "get", "x", "--url", kv_server.url, env={"KVSTORE_TOKEN": ""})
    assert unauthorized.returncode == 2
    assert unauthorized.stderr.decode().startswith("401 ")
    bad_ttl = kvstore("kv", "put", "x", "--value", "v", "--ttl", "1.23456", "--url", kv_server.url, "--token", TOKEN)
    assert bad_ttl.returncode == 2
    assert bad_ttl.stderr.decode().strip().startswith("400 ttl must have at most 3 decimals")
    nobody = kvstore("kv", "get", "x", "--url", f"http://127.0.0.1:{free_port()}")
    assert nobody.returncode == 2 and "cannot reach" in nobody.stderr.decode()


def test_shards_status_counts_a_fresh_postgres_shard_exactly(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    (shard,) = new_shards("s", "postgres", 1, tmp_path, request)
    config = write_yaml(tmp_path / "shards.yaml", {"shards": [shard.spec()]})
    assert kvstore("shards", "init", "--config", str(config)).returncode == 0
    now_ms = int(time.time() * 1000)
    rows = [(f"k{i}", b"v", now_ms - 1 if i % 2 else 2**63 - 1, 1, i if i % 2 else None) for i in range(50)]
    asyncio.run(rawdb.insert_rows("postgres", shard.location, rows))  # never analyzed
    result = kvstore("shards", "status", "--config", str(config), "--json")
    assert result.returncode == 0, result.stderr
    counts = json.loads(result.stdout)["shards"][0]["rows"]
    assert (counts["total"], counts["live"], counts["dead"], counts["with_expiry"]) == (50, 25, 25, 25)
    assert set(counts["methods"].values()) == {"exact"}
    human = kvstore("shards", "status", "--config", str(config)).stdout.decode().splitlines()
    assert human[1].split()[6:10] == ["50", "25", "25", "25"] and not any(line.startswith("?") for line in human)


def test_ring_show_falls_back_to_the_config_when_no_shard_answers(tmp_path: Path) -> None:
    dead = f"postgresql://kvstore@127.0.0.1:{free_port()}/kvstore"
    shards = [{"name": "s0", "backend": "postgres", "primary": dead, "weight": 3}]
    config = write_yaml(tmp_path / "shards.yaml", {"server": {"connect_timeout_s": 0.5}, "shards": shards})
    started = time.monotonic()
    shown = kvstore("ring", "show", "--config", str(config), "--json")
    assert shown.returncode == 0 and time.monotonic() - started < 10, shown.stderr
    stderr = shown.stderr.decode()
    assert "warning: no shard answered (shard s0: primary: cannot connect" in stderr, stderr
    assert "showing the config's ring" in stderr
    document = json.loads(shown.stdout)
    assert (document["epoch"], [(s["name"], s["vnodes"]) for s in document["shards"]]) == (0, [("s0", 768)])
