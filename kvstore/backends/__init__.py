"""Database backends behind one interface (``base.Node``); the engines are listed in ``registry.py``."""

from kvstore.backends.base import Node
from kvstore.backends.registry import ENGINES
from kvstore.backends.sql import PoolSettings


def create_node(backend: str, shard: str, role: str, location: str, pool: PoolSettings) -> Node:
    """A node for ``backend`` at ``location`` (a DSN, or a file path for an embedded engine); not yet open."""
    return ENGINES[backend].node_class()(shard, role, location, pool)


__all__ = ["ENGINES", "Node", "PoolSettings", "create_node"]
