"""Real PostgreSQL and MariaDB servers on free local ports, for tests and benchmarks.

Each instance owns a data directory and a port, runs detached from the caller,
and can be stopped from another process given just ``(data_dir, port)``::

    with PostgresInstance.temporary(durable=False) as pg:
        connect(pg.dsn())

Replicas (``PostgresStandby``, ``MariaDBReplica``) follow a primary through the
database's own replication; ``LocalCluster`` runs shards of primaries and replicas
under one directory, as ``kvstore cluster`` does.
"""

from kvstore.cluster.binaries import (
    MariaDBBinaries,
    MissingBinaries,
    PostgresBinaries,
    find_mariadb_binaries,
    find_postgres_binaries,
)
from kvstore.cluster.instance import DatabaseInstance, InstanceError
from kvstore.cluster.lag import ReplicationLag
from kvstore.cluster.layout import ClusterError, ClusterLayout, Member
from kvstore.cluster.local import LocalCluster, MemberStatus, Replica
from kvstore.cluster.mariadb import MariaDBInstance, MariaDBReplica
from kvstore.cluster.ports import free_port
from kvstore.cluster.postgres import PostgresInstance, PostgresStandby

__all__ = [
    "ClusterError",
    "ClusterLayout",
    "DatabaseInstance",
    "InstanceError",
    "LocalCluster",
    "MariaDBBinaries",
    "MariaDBInstance",
    "MariaDBReplica",
    "Member",
    "MemberStatus",
    "MissingBinaries",
    "PostgresBinaries",
    "PostgresInstance",
    "PostgresStandby",
    "Replica",
    "ReplicationLag",
    "find_mariadb_binaries",
    "find_postgres_binaries",
    "free_port",
]
