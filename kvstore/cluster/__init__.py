"""Real PostgreSQL and MariaDB servers on free local ports, for tests and benchmarks.

Each instance owns a data directory and a port, runs detached from the caller,
and can be stopped from another process given just ``(data_dir, port)``::

    with PostgresInstance.temporary(durable=False) as pg:
        connect(pg.dsn())
"""

from kvstore.cluster.binaries import (
    MariaDBBinaries,
    MissingBinaries,
    PostgresBinaries,
    find_mariadb_binaries,
    find_postgres_binaries,
)
from kvstore.cluster.instance import DatabaseInstance, InstanceError
from kvstore.cluster.mariadb import MariaDBInstance
from kvstore.cluster.ports import free_port
from kvstore.cluster.postgres import PostgresInstance

__all__ = [
    "DatabaseInstance",
    "InstanceError",
    "MariaDBBinaries",
    "MariaDBInstance",
    "MissingBinaries",
    "PostgresBinaries",
    "PostgresInstance",
    "find_mariadb_binaries",
    "find_postgres_binaries",
    "free_port",
]
