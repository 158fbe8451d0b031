"""The database servers the harness can run, by the kvstore engine (``backends/registry.py``) they serve.

An engine with local servers (for tests, benchmarks and ``kvstore cluster``) has one entry here;
``kvstore cluster``'s choices, ``make test``'s check for binaries and the suite read this table.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from kvstore.cluster.binaries import find_mariadb_binaries, find_postgres_binaries
from kvstore.cluster.instance import DatabaseInstance
from kvstore.cluster.mariadb import MariaDBInstance
from kvstore.cluster.postgres import PostgresInstance


@dataclass(frozen=True)
class ServerKind:
    engine: str
    instance: type[DatabaseInstance]
    find_binaries: Callable[[], object]
    """Raises ``MissingBinaries``, naming the packages to install, when the server is not installed."""


SERVERS: Mapping[str, ServerKind] = {
    kind.engine: kind
    for kind in (
        ServerKind("postgres", PostgresInstance, find_postgres_binaries),
        ServerKind("mysql", MariaDBInstance, find_mariadb_binaries),
    )
}
