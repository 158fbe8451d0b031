"""Database backends behind one interface (``base.Node``).

The registry maps a backend name to an import string, so a driver is imported only when a
shard uses it: a SQLite-only deployment never loads asyncpg or aiomysql.
"""

import importlib

from kvstore.backends.base import Node
from kvstore.backends.sql import PoolSettings

_REGISTRY = {
    "sqlite": "kvstore.backends.sqlite:SQLiteNode",
    "postgres": "kvstore.backends.postgres:PostgresNode",
    "mysql": "kvstore.backends.mysql:MySQLNode",
}


def create_node(backend: str, shard: str, role: str, location: str, pool: PoolSettings) -> Node:
    """A node for ``backend`` at ``location`` (a DSN, or a file path for SQLite); not yet open."""
    module_name, class_name = _REGISTRY[backend].split(":")
    node_class = getattr(importlib.import_module(module_name), class_name)
    node: Node = node_class(shard, role, location, pool)
    return node


__all__ = ["Node", "PoolSettings", "create_node"]
