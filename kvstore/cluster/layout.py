"""Where the servers of a local cluster live: N shards, each 1 primary + R replicas.

::

    DIR/
      cluster.json    this layout, so that `kvstore cluster status|down` work from any process
      shards.yaml     kvstore's config for the cluster
      s0/primary/     data directory (and server log) of shard s0's primary
      s0/replica1/    ... of its first replica
      s1/primary/     ...

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


@dataclass(frozen=True)
class ClusterLayout:
    """Every server of a cluster in a fixed order: s0/primary, s0/replica1, ..., s1/primary, ..."""

    backend: str
    root: Path
    durable: bool
    members: tuple[Member, ...]

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

    def shards(self) -> dict[str, tuple[Member, ...]]:
        """Each shard's members, primary first."""
        names = dict.fromkeys(member.shard for member in self.members)
        return {shard: tuple(member for member in self.members if member.shard == shard) for shard in names}

    def to_json(self) -> str:
        members = [
            {"name": m.name, "shard": m.shard, "role": m.role, "data_dir": str(m.data_dir), "port": m.port}
            for m in self.members
        ]
        document = {"format": _STATE_FORMAT, "backend": self.backend, "durable": self.durable, "instances": members}
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
                Member(str(m["name"]), str(m["shard"]), str(m["role"]), Path(m["data_dir"]), int(m["port"]))
                for m in document["instances"]
            )
            layout = cls(str(document["backend"]), root.resolve(), bool(document["durable"]), members)
        except (AttributeError, KeyError, TypeError, ValueError) as error:
            raise ClusterError(f"{where}: not a cluster state file ({type(error).__name__}: {error})") from None
        roles_ok = all(
            [member.role for member in group] == ["primary"] + ["replica"] * (len(group) - 1)
            for group in layout.shards().values()
        )
        if layout.backend not in SERVERS or not members or not roles_ok:
            raise ClusterError(f"{where}: not a cluster state file (bad backend, or not a primary first in each shard)")
        return layout
