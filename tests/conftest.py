"""Real databases for the suite: PostgreSQL and MariaDB instances it starts itself.

Each backend gets two shards. Servers are started once per session in temp dirs on free
ports and stopped at the end. When the server binaries are missing the integration tests
fail under ``CI=true`` (a skipped test is not a pass) and are skipped, visibly, elsewhere.
"""

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from kvstore.backends import ENGINES, Node, PoolSettings, create_node
from kvstore.cluster import MissingBinaries
from kvstore.cluster.instance import DatabaseInstance
from kvstore.cluster.servers import SERVERS
from tests.support.server import ServerProcess, write_config

BACKENDS = tuple(ENGINES)
SHARDS_PER_BACKEND = 2
# The session fixture holding each server engine's shared instances.
INSTANCES_FIXTURE = {"postgres": "postgres_instances", "mysql": "mariadb_instances"}


def unavailable(reason: str) -> None:
    """This machine cannot run the test: a failure under ``CI=true`` (a skipped test is not a pass),
    elsewhere a skip whose reason the run's summary shows."""
    if os.environ.get("CI"):
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(f"{reason} (this fails under CI=true)")


def require(find_binaries: Callable[[], Any]) -> None:
    try:
        find_binaries()
    except MissingBinaries as error:
        unavailable(f"database binaries are missing: {error}")


def start_instances(kind: type[DatabaseInstance], count: int) -> list[DatabaseInstance]:
    instances = [kind.temporary(durable=False) for _ in range(count)]  # type: ignore[call-arg]
    with ThreadPoolExecutor(count) as pool:
        list(pool.map(lambda instance: instance.__enter__(), instances))
    return instances


@contextlib.contextmanager
def dedicated_shards(
    backend: str, directory: Path, **server: Any
) -> Iterator[tuple[list[DatabaseInstance], ServerProcess]]:
    """Two fresh database instances of ``backend`` and a `kvstore serve` on them, for tests that break them."""
    kind = SERVERS[backend]
    require(kind.find_binaries)
    instances = start_instances(kind.instance, SHARDS_PER_BACKEND)
    try:
        config = write_config(directory / "shards.yaml", backend, [instance.dsn() for instance in instances], **server)
        process = ServerProcess(config).start()
        try:
            yield instances, process
        finally:
            process.stop()
    finally:
        for instance in instances:
            instance.cleanup()


def shared_instances(backend: str) -> Iterator[list[DatabaseInstance]]:
    """The session's instances of one engine, one per shard, removed at the end."""
    kind = SERVERS[backend]
    require(kind.find_binaries)
    instances = start_instances(kind.instance, SHARDS_PER_BACKEND)
    yield instances
    for instance in instances:
        instance.cleanup()


@pytest.fixture(scope="session")
def postgres_instances() -> Iterator[list[DatabaseInstance]]:
    yield from shared_instances("postgres")


@pytest.fixture(scope="session")
def mariadb_instances() -> Iterator[list[DatabaseInstance]]:
    yield from shared_instances("mysql")


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def shard_locations(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> list[str]:
    """Where each of the backend's shards lives: SQLite files, or the instances' DSNs."""
    if ENGINES[backend].embedded:
        directory = tmp_path_factory.mktemp(backend)
        return [str(directory / f"s{i}.db") for i in range(SHARDS_PER_BACKEND)]
    return [instance.dsn() for instance in session_instances(backend, request)]


@pytest.fixture
def fresh_location(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of the backend's (a new file, or a new database on a shared instance)."""
    if ENGINES[backend].embedded:
        return str(tmp_path / "fresh.db")
    return empty_database(session_instances(backend, request)[0])


def session_instances(backend: str, request: pytest.FixtureRequest) -> list[DatabaseInstance]:
    """The session's shared server instances of a server engine."""
    instances: list[DatabaseInstance] = request.getfixturevalue(INSTANCES_FIXTURE[backend])
    return instances


def empty_database(instance: DatabaseInstance) -> str:
    """The DSN of a new, empty database on one of the session's server instances."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    instance.sql(f"CREATE DATABASE {name}")
    return str(instance.dsn(database=name))


@pytest.fixture
async def node(backend: str, fresh_location: str) -> AsyncIterator[Node]:
    """An open primary node on a fresh database, schema created."""
    opened = create_node(backend, "t", "primary", fresh_location, PoolSettings(1, 8, 2.0, 10.0))
    await opened.open()
    await opened.ensure_schema()
    yield opened
    await opened.close(5.0)


@pytest.fixture(scope="session")
def config_file(backend: str, shard_locations: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp(f"config-{backend}") / "shards.yaml"
    # An eager sweeper, so that the API tests also run with it working underneath.
    sweeper = {"tick_ms": 10, "cycle_budget_ms": 5}
    return write_config(path, backend, shard_locations, sweeper=sweeper, request_timeout_s=3, max_value_bytes=65536)


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
