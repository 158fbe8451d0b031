"""Every engine a shard can live on, once: its name, its node class and what its locations look like.

The node class is an import string, imported only when a shard uses the engine: a SQLite-only
deployment never loads asyncpg or aiomysql. A new engine (say CockroachDB on the PostgreSQL
driver, as kine does it) is its node module plus one entry here; the config's checks, the CLI's
choices and the test suite's engine list all read this table.
"""

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kvstore.backends.base import Node
    from kvstore.backends.sql import PoolSettings

NodeFactory = Callable[[str, str, str, "PoolSettings"], "Node"]
"""A node class: ``(shard, role, location, pool settings) -> Node``."""


@dataclass(frozen=True)
class Engine:
    name: str
    node: str
    """``module:Class`` of its ``Node``."""
    dsn_schemes: tuple[str, ...] = ()
    """URL schemes of its DSNs; none: an embedded engine, whose location is a file path."""
    replicas: bool = True
    """Whether a shard on it may have read replicas."""
    dsn_needs_database: bool = False
    """Whether its DSNs must name a database (``mysql://…/db``)."""
    dsn_options: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Query options of its DSNs checked when the config is read, with their allowed values."""

    @property
    def embedded(self) -> bool:
        return not self.dsn_schemes

    def node_class(self) -> NodeFactory:
        module_name, class_name = self.node.split(":")
        node_class: NodeFactory = getattr(importlib.import_module(module_name), class_name)
        return node_class


ENGINES: Mapping[str, Engine] = {
    engine.name: engine
    for engine in (
        Engine("sqlite", "kvstore.backends.sqlite:SQLiteNode", replicas=False),
        Engine("postgres", "kvstore.backends.postgres:PostgresNode", dsn_schemes=("postgres", "postgresql")),
        Engine(
            "mysql",
            "kvstore.backends.mysql:MySQLNode",
            dsn_schemes=("mysql", "mariadb"),
            dsn_needs_database=True,
            dsn_options={"ssl": ("disable", "require", "verify")},
        ),
    )
}
