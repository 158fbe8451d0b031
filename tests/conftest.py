"""Real databases for the suite: PostgreSQL and MariaDB instances it starts itself.

Each backend gets two shards. Servers are started once per session in temp dirs on free
ports and stopped at the end. When the server binaries are missing the integration tests
fail under ``CI=true`` (a skipped test is not a pass) and are skipped, visibly, elsewhere.
"""

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from kvstore.cluster import MariaDBInstance, MissingBinaries, PostgresInstance
from kvstore.cluster.binaries import find_mariadb_binaries, find_postgres_binaries
from kvstore.cluster.instance import DatabaseInstance
from tests.support.server import ServerProcess, write_config

BACKENDS = ("sqlite", "postgres", "mysql")
SHARDS_PER_BACKEND = 2


def require(find_binaries: Callable[[], Any]) -> None:
    try:
        find_binaries()
    except MissingBinaries as error:
        if os.environ.get("CI"):
            pytest.fail(f"CI=true and database binaries are missing: {error}")
        pytest.skip(f"database binaries missing (this fails under CI=true): {error}")


def start_instances(kind: type[DatabaseInstance], count: int) -> list[DatabaseInstance]:
    instances = [kind.temporary(durable=False) for _ in range(count)]  # type: ignore[call-arg]
    with ThreadPoolExecutor(count) as pool:
        list(pool.map(lambda instance: instance.__enter__(), instances))
    return instances


@pytest.fixture(scope="session")
def postgres_instances() -> Iterator[list[DatabaseInstance]]:
    require(find_postgres_binaries)
    instances = start_instances(PostgresInstance, SHARDS_PER_BACKEND)
    yield instances
    for instance in instances:
        instance.cleanup()


@pytest.fixture(scope="session")
def mariadb_instances() -> Iterator[list[DatabaseInstance]]:
    require(find_mariadb_binaries)
    instances = start_instances(MariaDBInstance, SHARDS_PER_BACKEND)
    yield instances
    for instance in instances:
        instance.cleanup()


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def shard_locations(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> list[str]:
    """Where each of the backend's shards lives: SQLite files, or the instances' DSNs."""
    if backend == "sqlite":
        directory = tmp_path_factory.mktemp("sqlite")
        return [str(directory / f"s{i}.db") for i in range(SHARDS_PER_BACKEND)]
    fixture = "postgres_instances" if backend == "postgres" else "mariadb_instances"
    return [instance.dsn() for instance in request.getfixturevalue(fixture)]


@pytest.fixture(scope="session")
def config_file(backend: str, shard_locations: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp(f"config-{backend}") / "shards.yaml"
    return write_config(path, backend, shard_locations, request_timeout_s=3, max_value_bytes=65536)


@pytest.fixture(scope="session")
def server(config_file: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(config_file).start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def other_server(config_file: Path) -> Iterator[ServerProcess]:
    """A second front end on the same shards."""
    process = ServerProcess(config_file).start()
    yield process
    process.stop()
