"""Where the servers of a local cluster live: N shards, each 1 primary + R replicas.

::

    DIR/
      cluster.json    this layout, so that `kvstore cluster status|down` work from any process
      shards.yaml     kvstore's config for the cluster
      s0/primary/     data directory (and server log) of shard s0's primary
      s0/replica1/    ... of its first replica
      s1/primary/     ...

With ``ha`` (``kvstore cluster up --ha``), every shard is 3 members managed by an HA manager, roles
decided at run time (Patroni: leader, sync standby, replica; Galera: all writable), and
PostgreSQL clusters share one etcd::

    DIR/etcd/         Patroni's store (PostgreSQL only)
    DIR/s0/node1/     member 1 of shard s0 (Patroni: patroni.yml, logs, pgdata/)
    DIR/s0/node2/     ...

Planning and (de)serialising are pure: nothing here touches a server, a port or a file.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvstore.cluster.servers import SERVERS

STATE_FILE = "cluster.json"
CONFIG_FILE = "shards.yaml"
_STATE_FORMAT = 1
HA_MEMBERS = 3
# Ports of one HA member beyond the database's own: Patroni's REST API; Galera's group
# communication, incremental and full state transfer. And of the HA store (etcd: client, peer).
_HA_SERVICE_PORTS = {"postgres": 1, "mysql": 3}
_HA_STORE_PORTS = {"postgres": 2}
STORE = "etcd"
# A primary has max_wal_senders = 10, and cloning a standby takes two of them
# (the base backup and its WAL stream); standbys are cloned in parallel.
_MAX_POSTGRES_REPLICAS = 5


class ClusterError(RuntimeError):
    """A local cluster cannot be planned, found or read (its servers raise ``InstanceError``)."""


@dataclass(frozen=True)
class Member:
    """One server of the cluster, e.g. ``s0/replica1``: role "replica" of shard "s0"."""

    name: str
    shard: str
    role: str
    data_dir: Path
    port: int
    service_ports: tuple[int, ...] = ()
    """Ports of its own beyond ``port`` (an HA member's or the store's; see ``_HA_SERVICE_PORTS``)."""


@dataclass(frozen=True)
class ClusterLayout:
    """Every server of a cluster in a fixed order: s0/primary, s0/replica1, ..., s1/primary, ...

    With ``ha``: the store first (if the engine's HA manager needs one), then s0/node1, s0/node2, ...
    """

    backend: str
    root: Path
    durable: bool
    members: tuple[Member, ...]
    ha: bool = False

    @classmethod
    def ports_needed(cls, backend: str, *, shards: int, replicas: int, ha: bool) -> int:
        if not ha:
            return shards * (1 + replicas)
        return _HA_STORE_PORTS.get(backend, 0) + shards * HA_MEMBERS * (1 + _HA_SERVICE_PORTS[backend])

    @classmethod
    def plan_ha(cls, backend: str, root: Path, *, shards: int, ports: Sequence[int], durable: bool) -> "ClusterLayout":
        """Name and place every server of an HA cluster: ``ports`` as many as ``ports_needed`` says."""
        if backend not in _HA_SERVICE_PORTS:
            raise ClusterError(f"backend: unknown backend {backend!r}; expected one of {', '.join(_HA_SERVICE_PORTS)}")
        if shards < 1:
            raise ClusterError("shards: must be at least 1")
        size = cls.ports_needed(backend, shards=shards, replicas=0, ha=True)
        if len(ports) != size or len(set(ports)) != size:
            raise ClusterError(f"ports: need {size} distinct ports, got {list(ports)}")
        root = root.resolve()
        free = iter(ports)
        members = []
        if backend in _HA_STORE_PORTS:
            port, *service = (next(free) for _ in range(_HA_STORE_PORTS[backend]))
            members.append(Member(STORE, "", "store", root / STORE, port, tuple(service)))
        for index in range(shards):
            for number in range(1, HA_MEMBERS + 1):
                port, *service = (next(free) for _ in range(1 + _HA_SERVICE_PORTS[backend]))
                shard = f"s{index}"
                members.append(
                    Member(
                        f"{shard}/node{number}", shard, "member", root / shard / f"node{number}", port, tuple(service)
                    )
                )
        return cls(backend, root, durable, tuple(members), ha=True)

    @classmethod
    def plan(
        cls, backend: str, root: Path, *, shards: int, replicas: int, ports: Sequence[int], durable: bool
    ) -> "ClusterLayout":
        """Name and place every server; ``ports`` holds one distinct port per server, in layout order."""
        if backend not in SERVERS:
            raise ClusterError(f"backend: unknown backend {backend!r}; expected one of {', '.join(SERVERS)}")
        if shards < 1:
            raise ClusterError("shards: must be at least 1")
        if replicas < 0:
            raise ClusterError("replicas: must be at least 0")
        if backend == "postgres" and replicas > _MAX_POSTGRES_REPLICAS:
            raise ClusterError(
                f"replicas: at most {_MAX_POSTGRES_REPLICAS} per shard for postgres "
                "(max_wal_senders = 10, and cloning a standby takes two)"
            )
        size = shards * (1 + replicas)
        if len(ports) != size or len(set(ports)) != size:
            raise ClusterError(f"ports: need {size} distinct ports, got {list(ports)}")
        roles = ["primary", *(f"replica{number}" for number in range(1, replicas + 1))]
        places = [(f"s{index}", role) for index in range(shards) for role in roles]
        root = root.resolve()
        members = tuple(
            Member(
                name=f"{shard}/{role}",
                shard=shard,
                role="primary" if role == "primary" else "replica",
                data_dir=root / shard / role,
                port=port,
            )
            for (shard, role), port in zip(places, ports, strict=True)
        )
        return cls(backend, root, durable, members)

    @property
    def state_path(self) -> Path:
        return self.root / STATE_FILE

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def store(self) -> Member | None:
        """The HA manager's store (etcd), when it has one."""
        return next((member for member in self.members if member.role == "store"), None)

    def shards(self) -> dict[str, tuple[Member, ...]]:
        """Each shard's members, primary first (the store belongs to none)."""
        names = dict.fromkeys(member.shard for member in self.members if member.role != "store")
        return {shard: tuple(member for member in self.members if member.shard == shard) for shard in names}

    def to_json(self) -> str:
        members = [
            {"name": m.name, "shard": m.shard, "role": m.role, "data_dir": str(m.data_dir), "port": m.port}
            | ({"service_ports": list(m.service_ports)} if m.service_ports else {})
            for m in self.members
        ]
        document = {"format": _STATE_FORMAT, "backend": self.backend, "durable": self.durable, "instances": members}
        if self.ha:
            document["ha"] = True
        return json.dumps(document, indent=2) + "\n"

    @classmethod
    def from_json(cls, root: Path, text: str) -> "ClusterLayout":
        """Read what ``to_json`` wrote; ``root`` is the directory the file was found in."""
        where = root / STATE_FILE
        try:
            document: dict[str, Any] = json.loads(text)
            if document.get("format") != _STATE_FORMAT:
                raise ValueError(f"format {document.get('format')!r}, expected {_STATE_FORMAT}")
            members = tuple(
                Member(
                    str(m["name"]),
                    str(m["shard"]),
                    str(m["role"]),
                    Path(m["data_dir"]),
                    int(m["port"]),
                    tuple(int(port) for port in m.get("service_ports", ())),
                )
                for m in document["instances"]
            )
            ha = bool(document.get("ha", False))
            layout = cls(str(document["backend"]), root.resolve(), bool(document["durable"]), members, ha=ha)
        except (AttributeError, KeyError, TypeError, ValueError) as error:
            raise ClusterError(f"{where}: not a cluster state file ({type(error).__name__}: {error})") from None
        roles_ok = all(
            [member.role for member in group] == _expected_roles(len(group), ha) for group in layout.shards().values()
        )
        if layout.backend not in SERVERS or not members or not roles_ok:
            raise ClusterError(f"{where}: not a cluster state file (bad backend, or not a primary first in each shard)")
        return layout


def _expected_roles(size: int, ha: bool) -> list[str]:
    return ["member"] * size if ha else ["primary"] + ["replica"] * (size - 1)
