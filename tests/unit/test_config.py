from pathlib import Path
from typing import Any

import pytest
import yaml

from kvstore.backends.dsn import dsn_hosts
from kvstore.config import load_settings, parse_settings, write_shards
from kvstore.errors import ConfigError

BASE = Path("/etc/kvstore")


def parse(document: Any, environ: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return parse_settings(document, environ or {}, base_dir=BASE)


def shard(**fields: Any) -> dict[str, Any]:
    return {"name": "s0", "backend": "sqlite", "primary": "data/s0.db"} | fields


def test_repo_default_config_is_two_sqlite_shards() -> None:
    settings = load_settings(Path(__file__).parents[2] / "shards.yaml", environ={})
    assert [(s.name, s.backend) for s in settings.shards] == [("s0", "sqlite"), ("s1", "sqlite")]
    assert settings.server.port == 8080
    assert settings.server.max_value_bytes == 1024 * 1024


def test_sqlite_paths_are_relative_to_the_config_file() -> None:
    assert parse({"shards": [shard()]}).shards[0].primary == "/etc/kvstore/data/s0.db"


def test_dsns_interpolate_environment_variables_and_stay_out_of_reprs() -> None:
    document = {"shards": [shard(backend="postgres", primary="postgresql://kv:${PGPASS}@db:5432/kv", replicas=[])]}
    settings = parse(document, {"PGPASS": "s3cret"})
    assert settings.shards[0].primary == "postgresql://kv:s3cret@db:5432/kv"
    assert "s3cret" not in repr(settings)


def test_interpolation_default_and_missing_variable() -> None:
    document = {"shards": [shard(primary="${DB_FILE:-fallback.db}")]}
    assert parse(document).shards[0].primary == "/etc/kvstore/fallback.db"
    with pytest.raises(ConfigError, match=r"shards\[0\]\.primary: environment variable NOPE is not set"):
        parse({"shards": [shard(primary="${NOPE}")]})


def test_precedence_defaults_file_environment_flags() -> None:
    document = {"server": {"port": 9000, "workers": 2}, "shards": [shard()]}
    settings = parse(document, {"KVSTORE_PORT": "9100"})
    assert (settings.server.port, settings.server.workers, settings.server.host) == (9100, 2, "127.0.0.1")
    assert settings.with_server(port=9200, host=None).server.port == 9200


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({}, "shards: no shards configured"),
        ({"shards": []}, "shards: no shards configured"),
        ({"shards": [shard(backend="oracle")]}, r"shards\[0\]\.backend: unknown backend 'oracle'"),
        ({"shards": [shard(), shard()]}, r"shards\[1\]\.name: duplicate shard name 's0'"),
        ({"shards": [shard(backend="postgres", primary="mysql://x@h/db")]}, r"shards\[0\]\.primary: bad DSN"),
        ({"shards": [shard(backend="mysql", primary="mysql://u:p@host:3306")]}, "no database name"),
        ({"shards": [shard(backend="postgres", primary="postgresql://h:notaport/db")]}, "bad DSN"),
        ({"shards": [shard(backend="mysql", primary="mysql://u:p@h/db?ssl=maybe")]}, "ssl must be"),
        ({"shards": [shard(backend="postgres", primary="postgresql://u@h1:5432,h2:99999/db")]}, "bad DSN: port"),
        ({"shards": [shard(backend="postgres", primary="postgresql://u@h1:5432,:5433/db")]}, "bad DSN: no host"),
        ({"shards": [shard(), shard(name="s1", replicas=["x.db"])]}, r"shards\[1\]\.replicas: sqlite"),
        ({"shards": [shard(weight=0)]}, r"shards\[0\]\.weight: must be at least 1"),
        ({"shards": [shard(primary=":memory:")]}, "plain file path"),
        ({"shards": [shard(colour="blue")]}, r"shards\[0\]\.colour: unknown setting"),
        ({"server": {"port": "http"}, "shards": [shard()]}, "server.port: expected a int"),
        (
            {"server": {"request_timeout_s": 0}, "shards": [shard()]},
            "server.request_timeout_s: must be greater",
        ),
        ({"server": {"pool_min_size": 20}, "shards": [shard()]}, "server.pool_min_size"),
        ({"server": {"prot": 1}, "shards": [shard()]}, "server.prot: unknown setting"),
        ([1, 2], "config: must be a mapping"),
    ],
)
def test_bad_config_names_the_field(document: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse(document)


def test_a_shard_under_an_ha_manager_names_every_member() -> None:
    primary = "postgresql://kv@db1:5432,db2:5432,db3/kv?target_session_attrs=read-write"
    galera = "mysql://kv:pw@n1:3306,n2:3307,n3/kv"
    settings = parse(
        {
            "shards": [
                shard(backend="postgres", primary=primary, replicas=["postgresql://kv@db2/kv"]),
                shard(name="s1", backend="mysql", primary=galera),
            ]
        }
    )
    assert [s.primary for s in settings.shards] == [primary, galera]
    assert dsn_hosts(primary) == [("db1", 5432), ("db2", 5432), ("db3", None)]
    assert dsn_hosts(galera) == [("n1", 3306), ("n2", 3307), ("n3", None)]
    assert dsn_hosts("postgresql://[::1]:5432/kv") == [("::1", 5432)]


def test_a_retired_setting_is_accepted_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """An upgrade keeps a config valid: ``ring_lease_s`` went with fencing and only draws a warning."""
    settings = parse({"shards": [shard()], "server": {"ring_lease_s": 2.0, "request_timeout_s": 3}})
    assert settings.server.request_timeout_s == 3
    assert "server.ring_lease_s is no longer used" in caplog.text


def test_bad_environment_override_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"server\.port"):
        parse({"shards": [shard()]}, {"KVSTORE_PORT": "eighty"})


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_settings(tmp_path / "missing.yaml", environ={})
    broken = tmp_path / "broken.yaml"
    broken.write_text("shards: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(broken, environ={})


def test_config_file_from_environment(tmp_path: Path) -> None:
    path = tmp_path / "kv.yaml"
    path.write_text(yaml.safe_dump({"shards": [shard()]}))
    settings = load_settings(None, environ={"KVSTORE_CONFIG": str(path)})
    assert settings.shards[0].primary == str(tmp_path / "data/s0.db")


def test_auth_tokens_are_kept_as_digests() -> None:
    document = {
        "shards": [shard()],
        "auth": {
            "tokens": [
                {"name": "app", "token": "${APP_TOKEN}", "scope": "write"},
                {"name": "ops", "token_sha256": "ab" * 32, "scope": "admin"},
            ]
        },
    }
    settings = parse(document, {"APP_TOKEN": "a-very-long-secret-token"})
    assert [(t.name, t.scope) for t in settings.tokens] == [("app", "write"), ("ops", "admin")]
    assert settings.tokens[1].sha256 == bytes.fromhex("ab" * 32)
    assert "a-very-long-secret-token" not in repr(settings)


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ({"name": "a", "token": "short", "scope": "read"}, "at least 16"),
        ({"name": "a", "token_sha256": "xyz", "scope": "read"}, "64 hexadecimal"),
        ({"name": "a", "token": "x" * 20, "scope": "root"}, "scope: must be one of"),
        ({"name": "a", "scope": "read"}, "exactly one of token"),
        ({"name": "a", "token": "x" * 20, "token_sha256": "ab" * 32, "scope": "read"}, "exactly one of token"),
    ],
)
def test_bad_tokens_name_the_field(token: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse({"shards": [shard()], "auth": {"tokens": [token]}})


def test_sweeper_settings_and_their_checks() -> None:
    settings = parse({"shards": [shard()], "sweeper": {"keys_per_sample": 50}}, {"KVSTORE_SWEEPER_ENABLED": "false"})
    assert (settings.sweeper.keys_per_sample, settings.sweeper.enabled) == (50, False)
    with pytest.raises(ConfigError, match=r"sweeper\.stale_threshold"):
        parse({"shards": [shard()], "sweeper": {"stale_threshold": 1.5}})
    with pytest.raises(ConfigError, match=r"sweeper\.cycle_budget_ms"):
        parse({"shards": [shard()], "sweeper": {"cycle_budget_ms": 200, "tick_ms": 100}})


def test_shard_specs_for_the_ring_record_keep_secrets_as_references() -> None:
    """What a ring record carries: names and weights as front ends route by them, DSNs as written."""
    document = {
        "shards": [
            {
                "name": "${NAME}",
                "backend": "postgres",
                "primary": "postgresql://kv:${PGPASSWORD}@db0/kv",
                "weight": "${W}",
            },
            {"name": "s1", "backend": "sqlite", "primary": "data/s1.db"},
        ]
    }
    settings = parse_settings(document, {"NAME": "s0", "PGPASSWORD": "hunter2", "W": "2"}, Path("/srv/kv"))
    assert settings.shard_specs == (
        {"name": "s0", "backend": "postgres", "weight": 2, "primary": "postgresql://kv:${PGPASSWORD}@db0/kv"},
        {"name": "s1", "backend": "sqlite", "weight": 1, "primary": "/srv/kv/data/s1.db"},
    )
    assert "hunter2" not in repr(settings.shard_specs)


def test_write_shards_keeps_other_settings_and_dsns_as_written(tmp_path: Path) -> None:
    path = tmp_path / "shards.yaml"
    mine = {"name": "s0", "backend": "postgres", "primary": "postgresql://kv:${PGPASSWORD}@db0/kv"}
    path.write_text(yaml.safe_dump({"server": {"port": 9000}, "auth": {"tokens": []}, "shards": [mine]}))
    path.chmod(0o600)
    from_record = [
        {"name": "s0", "backend": "postgres", "primary": "postgresql://kv:${PGPASSWORD}@elsewhere/kv", "weight": 2},
        {"name": "s1", "backend": "mysql", "primary": "mysql://kv:${MYSQL_PASSWORD}@db1/kv", "weight": 1},
    ]
    write_shards(path, from_record)
    document = yaml.safe_load(path.read_text())
    assert document["server"] == {"port": 9000} and document["auth"] == {"tokens": []}
    assert document["shards"] == [mine | {"weight": 2}, from_record[1]]  # its own DSN for a shard it knew
    assert path.stat().st_mode & 0o777 == 0o600
    assert "${PGPASSWORD}" in path.read_text()
    assert [s.name for s in load_settings(path, {"PGPASSWORD": "p", "MYSQL_PASSWORD": "m"}).shards] == ["s0", "s1"]
