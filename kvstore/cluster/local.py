"""A replicated cluster of real local servers: N shards, each one primary with R replicas.

Replication is the databases' own: PostgreSQL streaming replication (standbys cloned
with ``pg_basebackup``), MariaDB binlog replication with GTIDs. ``create()`` records
the layout in DIR/cluster.json before any server starts, so ``LocalCluster.load(DIR)``
in another process (``kvstore cluster status``, ``down``) finds every server by its
PID, even after an ``up`` that died halfway::

    cluster = LocalCluster.create("postgres", "c", shards=2, replicas=1, durable=False)
    cluster.up()                 # servers, replication, schema, then c/shards.yaml
    cluster.status()
    cluster.down(remove=True)
"""

import asyncio
import itertools
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kvstore.cluster.instance import DatabaseInstance, InstanceError
from kvstore.cluster.lag import ReplicationLag
from kvstore.cluster.layout import STATE_FILE, ClusterError, ClusterLayout, Member
from kvstore.cluster.mariadb import MariaDBInstance, MariaDBReplica
from kvstore.cluster.ports import free_port, port_is_free
from kvstore.cluster.postgres import PostgresInstance, PostgresStandby
from kvstore.cluster.servers import SERVERS
from kvstore.config import Settings, parse_settings
from kvstore.router import Router

logger = logging.getLogger(__name__)

Replica = PostgresStandby | MariaDBReplica
Progress = Callable[[str], None]
"""Receives one line per finished step, e.g. "s0/primary: started on :5432 (0.3s)"."""

_POOL_CLOSE_TIMEOUT_S = 5.0
_CONFIG_HEADER = "# Written by `kvstore cluster up`: one shard per primary, with its replicas.\n"


def _ignore(_line: str) -> None:
    """The default progress: say nothing."""


@dataclass(frozen=True)
class MemberStatus:
    """What ``status()`` saw of one server; ``problem`` says why a replica's lag is unknown."""

    member: Member
    pid: int | None
    replication: ReplicationLag | None = None
    problem: str | None = None

    @property
    def running(self) -> bool:
        return self.pid is not None

    def to_json(self) -> dict[str, Any]:
        member = self.member
        return {
            "name": member.name,
            "shard": member.shard,
            "role": member.role,
            "port": member.port,
            "data_dir": str(member.data_dir),
            "pid": self.pid,
            "running": self.running,
            "replication": None if self.replication is None else self.replication.to_json(),
            "problem": self.problem,
        }


class LocalCluster:
    """The servers of a ``ClusterLayout``, by member name ("s0/primary", "s0/replica1", ...)."""

    def __init__(self, layout: ClusterLayout) -> None:
        self.layout = layout
        self.instances = _instances(layout)

    @classmethod
    def create(
        cls,
        backend: str,
        root: Path | str,
        *,
        shards: int = 1,
        replicas: int = 1,
        base_port: int | None = None,
        durable: bool = True,
    ) -> "LocalCluster":
        """Plan a cluster in ``root`` (a new or empty directory) and record it there; start nothing.

        Ports are ``base_port``, ``base_port + 1``, ... in layout order, or free ports.
        """
        root = Path(root)
        if backend in SERVERS:
            SERVERS[backend].find_binaries()
        if (root / STATE_FILE).exists():
            raise ClusterError(
                f"{root}: already holds a cluster; to replace it: kvstore cluster down --dir {root} --remove"
            )
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise ClusterError(f"{root}: exists and is not an empty directory")
        ports = _pick_ports(shards * (1 + replicas), base_port)
        layout = ClusterLayout.plan(backend, root, shards=shards, replicas=replicas, ports=ports, durable=durable)
        root.mkdir(parents=True, exist_ok=True)
        _write_atomically(layout.state_path, layout.to_json())
        return cls(layout)

    @classmethod
    def load(cls, root: Path | str) -> "LocalCluster":
        """The cluster recorded in ``root`` by ``create()``, running or not."""
        path = Path(root) / STATE_FILE
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise ClusterError(f"{root}: no cluster here (no {STATE_FILE})") from None
        except OSError as error:
            raise ClusterError(f"{path}: cannot read: {error.strerror}") from None
        return cls(ClusterLayout.from_json(Path(root), text))

    @property
    def primaries(self) -> list[str]:
        return [member.name for member in self.layout.members if member.role == "primary"]

    @property
    def replicas(self) -> list[str]:
        return [member.name for member in self.layout.members if member.role == "replica"]

    @property
    def config_path(self) -> Path:
        """The shards.yaml that ``up()`` writes for ``kvstore serve``."""
        return self.layout.config_path

    def replica(self, name: str) -> Replica:
        """The replica server ``name`` (e.g. "s0/replica1"), to measure its lag or wait for it."""
        instance = self.instances[name]
        if not isinstance(instance, Replica):
            raise ClusterError(f"{name}: not a replica")
        return instance

    def settings(self) -> Settings:
        """kvstore settings for this cluster: shards s0..sN-1, each a primary DSN and its replicas' DSNs."""
        return parse_settings(self._config_document(), environ={}, base_dir=self.layout.root)

    # -- lifecycle -------------------------------------------------------------

    def up(self, progress: Progress = _ignore, timeout_s: float = 60) -> None:
        """Start every server, wait until each replica replicates, create the schema, write shards.yaml.

        Primaries start first: a PostgreSQL standby is a copy of its running primary.
        The rest runs in parallel. Servers already initialised or running are left as
        they are. On failure everything is stopped and the error raised; the files stay,
        for their logs. ``timeout_s`` bounds each server's start. Blocking: call it from
        synchronous code, as it runs an event loop of its own to create the schema.
        """
        began = time.monotonic()
        early = [name for name, instance in self.instances.items() if not _needs_running_primary(instance)]
        try:
            _in_parallel(lambda name: self._init(name, progress), early)
            _in_parallel(lambda name: self._start(name, progress, timeout_s), self.primaries)
            _in_parallel(lambda name: self._init_and_start(name, progress, timeout_s), self.replicas)
            asyncio.run(self._create_schema(progress))
            _in_parallel(lambda name: self._catch_up(name, progress, timeout_s), self.replicas)
            _write_atomically(
                self.config_path, _CONFIG_HEADER + yaml.safe_dump(self._config_document(), sort_keys=False)
            )
        except BaseException:
            try:
                self.down(progress)
            except InstanceError as error:  # the first failure is the one to report
                logger.warning("after a failed start, could not stop everything: %s", error)
            raise
        shards = len(self.primaries)
        progress(
            f"up in {time.monotonic() - began:.1f}s: {shards} shard(s) x (1 primary + "
            f"{len(self.replicas) // shards} replica(s)), {self.layout.backend}; config: {self.config_path}"
        )

    def status(self) -> list[MemberStatus]:
        """Each server's PID and, for a running replica, how far it is behind."""
        return [self._status(member) for member in self.layout.members]

    def down(self, progress: Progress = _ignore, *, remove: bool = False) -> None:
        """Stop every server by PID, replicas first; ``remove`` then deletes the directory."""
        for names in (self.replicas, self.primaries):
            _in_parallel(lambda name: self._stop(name, progress), names)
        if remove:
            shutil.rmtree(self.layout.root)
            progress(f"removed {self.layout.root}")

    # -- steps -----------------------------------------------------------------

    def _init(self, name: str, progress: Progress) -> None:
        instance = self.instances[name]
        if instance.is_initialized():
            return
        began = time.monotonic()
        instance.init()
        done = f"cloned from {_primary_name(name)}" if _needs_running_primary(instance) else "initialised"
        progress(f"{name}: {done} ({time.monotonic() - began:.1f}s)")

    def _start(self, name: str, progress: Progress, timeout_s: float) -> None:
        instance = self.instances[name]
        if instance.is_running():
            progress(f"{name}: already running on :{instance.port}")
            return
        began = time.monotonic()
        instance.start(timeout_s)
        done = f"replicating from {_primary_name(name)}" if isinstance(instance, Replica) else "started"
        progress(f"{name}: {done} on :{instance.port} ({time.monotonic() - began:.1f}s)")

    def _init_and_start(self, name: str, progress: Progress, timeout_s: float) -> None:
        self._init(name, progress)
        self._start(name, progress, timeout_s)

    async def _create_schema(self, progress: Progress) -> None:
        """Create kvstore's tables on each primary, as ``kvstore shards init`` does; replicas get them replicated."""
        router = Router(self.settings())
        try:
            outcomes = await router.init_schemas()
        finally:
            await router.close(_POOL_CLOSE_TIMEOUT_S)
        for name, error in outcomes.items():
            if error is not None:
                primary = self.instances[f"{name}/primary"]
                raise InstanceError(f"{primary}: cannot create the kvstore schema: {error}\n{primary.log_excerpt()}")
            progress(f"{name}: schema ok")

    def _catch_up(self, name: str, progress: Progress, timeout_s: float) -> None:
        self.replica(name).wait_caught_up(timeout_s)
        progress(f"{name}: caught up with {_primary_name(name)}")

    def _stop(self, name: str, progress: Progress) -> None:
        instance = self.instances[name]
        pid = instance.pid()
        if pid is None:
            return
        instance.stop()
        progress(f"{name}: stopped (pid {pid})")

    def _status(self, member: Member) -> MemberStatus:
        instance = self.instances[member.name]
        pid = instance.pid()
        if pid is None or not isinstance(instance, Replica):
            return MemberStatus(member, pid)
        try:
            return MemberStatus(member, pid, replication=instance.lag())
        except InstanceError as error:
            return MemberStatus(member, pid, problem=" ".join(str(error).split()))

    def _config_document(self) -> dict[str, Any]:
        shards = [
            {
                "name": shard,
                "backend": self.layout.backend,
                "primary": self.instances[primary.name].dsn(),
                "replicas": [self.instances[replica.name].dsn() for replica in replicas],
                "weight": 1,
            }
            for shard, (primary, *replicas) in self.layout.shards().items()
        ]
        return {"shards": shards}


def _instances(layout: ClusterLayout) -> dict[str, DatabaseInstance]:
    """One server object per member; MariaDB server ids are unique across the cluster."""
    server_ids = itertools.count(1)
    instances: dict[str, DatabaseInstance] = {}
    for primary_member, *replica_members in layout.shards().values():
        primary: PostgresInstance | MariaDBInstance
        replicas: list[DatabaseInstance]
        if layout.backend == "postgres":
            primary = PostgresInstance(
                primary_member.data_dir, primary_member.port, durable=layout.durable, owned_dir=layout.root
            )
            replicas = [
                PostgresStandby(
                    m.data_dir,
                    m.port,
                    primary=primary,
                    slot=m.name.replace("/", "_"),
                    durable=layout.durable,
                    owned_dir=layout.root,
                )
                for m in replica_members
            ]
        else:
            primary = MariaDBInstance(
                primary_member.data_dir, primary_member.port, durable=layout.durable, server_id=next(server_ids)
            )
            replicas = [
                MariaDBReplica(m.data_dir, m.port, primary=primary, durable=layout.durable, server_id=next(server_ids))
                for m in replica_members
            ]
        instances[primary_member.name] = primary
        instances.update((m.name, replica) for m, replica in zip(replica_members, replicas, strict=True))
    return instances


def _primary_name(name: str) -> str:
    """The primary of a replica's shard: s0/primary for s0/replica1."""
    return f"{name.split('/')[0]}/primary"


def _needs_running_primary(instance: DatabaseInstance) -> bool:
    return isinstance(instance, Replica) and instance.init_needs_running_primary


def _pick_ports(count: int, base_port: int | None) -> list[int]:
    """``count`` consecutive ports from ``base_port``, checked free now, or ``count`` distinct free ports."""
    if base_port is None:
        ports: list[int] = []
        while len(ports) < count:
            if (port := free_port()) not in ports:
                ports.append(port)
        return ports
    ports = list(range(base_port, base_port + count))
    if ports and ports[-1] > 65535:
        raise ClusterError(f"base port {base_port}: {count} servers would need ports beyond 65535")
    busy = [port for port in ports if not port_is_free(port)]
    if busy:
        raise ClusterError(
            f"base port {base_port}: port {busy[0]} is in use (the cluster needs {base_port}-{ports[-1]})"
        )
    return ports


def _in_parallel(action: Callable[[str], None], names: Sequence[str]) -> None:
    """Run ``action`` for every member name at once; once all have finished, raise the first failure.

    A server's error gets the member's name in front: "s0/replica1: ..." says more
    than a data directory and a port.
    """
    if not names:
        return
    with ThreadPoolExecutor(len(names)) as pool:
        futures = [pool.submit(action, name) for name in names]
    for name, future in zip(names, futures, strict=True):
        error = future.exception()
        if isinstance(error, InstanceError):
            raise InstanceError(f"{name}: {error}") from error
        if error is not None:
            raise error


def _write_atomically(path: Path, text: str) -> None:
    """Write via a temp file and rename, so a reader never sees half a file."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)
