"""Shards under an HA manager, for ``kvstore cluster up --ha``: Patroni for PostgreSQL, Galera for MariaDB.

Each shard is 3 members whose roles the HA manager decides at run time, so the shards.yaml written
for them names every member: the shard's ``primary`` is a multi-host DSN (PostgreSQL:
``target_session_attrs=read-write``, so a connection lands on whichever member leads; Galera: the
nodes in order, a front end writing to the first that answers), and each member is a replica
entry (PostgreSQL: ``target_session_attrs=standby``, so the leader's own entry stays out of
rotation).
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kvstore.cluster.etcd import EtcdServer, find_etcd
from kvstore.cluster.galera import GaleraNode, find_galera
from kvstore.cluster.instance import APP_DATABASE, APP_PASSWORD, APP_USER, DatabaseInstance, InstanceError, wait_until
from kvstore.cluster.layout import ClusterError, ClusterLayout, Member
from kvstore.cluster.parallel import in_parallel
from kvstore.cluster.patroni import PatroniMember, create_app_user, find_patroni

Progress = Callable[[str], None]
_SYNC_STANDBY_TIMEOUT_S = 60
_JOIN_ATTEMPTS = 2


@dataclass(frozen=True)
class HaRole:
    """What the HA manager says of a member: its role (leader, sync_standby, replica), state and lag."""

    role: str
    state: str
    lag: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"role": self.role, "state": self.state, "lag": self.lag}


_NO_ROLE = HaRole("", "")


_MANAGERS = {"postgres": "Patroni", "mysql": "Galera"}


def ha_manager(backend: str) -> str:
    """The HA manager that runs ``backend``'s shards."""
    return _MANAGERS[backend]


def find_ha_binaries(backend: str) -> None:
    """Raise ``MissingBinaries``, naming the packages, when the HA manager of ``backend`` is not installed."""
    if backend not in _MANAGERS:
        raise ClusterError(f"--ha: no HA manager for {backend}; expected one of {', '.join(_MANAGERS)}")
    if backend == "postgres":
        find_patroni()
        find_etcd()
    else:
        find_galera()


def ha_instances(layout: ClusterLayout) -> dict[str, DatabaseInstance]:
    """The store (if any) and every member of an HA layout, by member name."""
    instances: dict[str, DatabaseInstance] = {}
    store = layout.store
    etcd = None if store is None else EtcdServer(store.data_dir, store.port, peer_port=store.service_ports[0])
    if store is not None and etcd is not None:
        instances[store.name] = etcd
    server_ids = iter(range(1, 1 + len(layout.members)))
    for shard, members in layout.shards().items():
        peers = [f"127.0.0.1:{member.service_ports[0]}" for member in members]
        for member in members:
            if layout.backend == "mysql":
                group, ist, sst = member.service_ports
                instances[member.name] = GaleraNode(
                    member.data_dir,
                    member.port,
                    cluster_name=shard,
                    node_name=_member_name(member),
                    ports=(group, ist, sst),
                    peers=peers,
                    durable=layout.durable,
                    server_id=next(server_ids),
                    owned_dir=layout.root,
                )
                continue
            if etcd is None:
                raise InstanceError(f"{layout.root}: a PostgreSQL HA cluster needs its etcd")
            instances[member.name] = PatroniMember(
                member.data_dir,
                member.port,
                api_port=member.service_ports[0],
                scope=shard,
                name=_member_name(member),
                etcd_url=etcd.url,
                durable=layout.durable,
                owned_dir=layout.root,
            )
    return instances


def start_ha(
    layout: ClusterLayout, instances: dict[str, DatabaseInstance], start: Callable[[str], None], progress: Progress
) -> None:
    """Start the store, then every shard at once: its first member bootstraps, the others join it.

    ``start(name)`` initialises and starts one member (``LocalCluster``'s step, with its progress line).
    """
    if layout.store is not None:
        start(layout.store.name)
    shards = list(layout.shards())
    start_shard = _start_patroni_shard if layout.backend == "postgres" else _start_galera_shard
    in_parallel(lambda shard: start_shard(layout, instances, shard, start, progress), shards)


def ha_roles(layout: ClusterLayout, instances: dict[str, DatabaseInstance]) -> dict[str, HaRole]:
    """Each running member's role as its HA manager reports it (members it cannot reach: absent).

    Galera has no leader: the *writer* is the first synced node in the shard's order, the one
    front ends send writes to; the others are *synced* (or joining, donor, …).
    """
    return _galera_roles(layout, instances) if layout.backend == "mysql" else _patroni_roles(layout, instances)


def _patroni_roles(layout: ClusterLayout, instances: dict[str, DatabaseInstance]) -> dict[str, HaRole]:
    """What Patroni's ``GET /cluster`` says, asked of the first member of each shard that answers."""
    roles: dict[str, HaRole] = {}
    for shard, members in layout.shards().items():
        for member in members:
            patroni = instances[member.name]
            if not isinstance(patroni, PatroniMember) or not patroni.is_running():
                continue
            try:
                state = patroni.cluster_state()
            except InstanceError:
                continue
            for seen in state.get("members", []):
                lag = seen.get("lag")
                roles[f"{shard}/{seen['name']}"] = HaRole(
                    role=str(seen.get("role", "")),
                    state=str(seen.get("state", "")),
                    lag="" if lag is None else f"{lag} B" if isinstance(lag, int) else str(lag),
                )
            break
    return roles


def leader(layout: ClusterLayout, instances: dict[str, DatabaseInstance], shard: str) -> DatabaseInstance:
    """The member that takes ``shard``'s writes now: Patroni's leader, Galera's writer."""
    roles = ha_roles(layout, instances)
    for member in layout.shards()[shard]:
        if member.name in roles and roles[member.name].role in ("leader", "writer"):
            return instances[member.name]
    raise InstanceError(f"{shard}: no leader (roles: {roles})")


def ha_shards_document(layout: ClusterLayout, instances: dict[str, DatabaseInstance]) -> list[dict[str, Any]]:
    """The shards of shards.yaml: a multi-host primary, and every member as a replica."""
    shards = []
    for shard, members in layout.shards().items():
        hosts = ",".join(f"127.0.0.1:{member.port}" for member in members)
        if layout.backend == "postgres":
            primary = f"postgresql://{APP_USER}@{hosts}/{APP_DATABASE}?target_session_attrs=read-write"
            replicas = [f"{instances[member.name].dsn()}?target_session_attrs=standby" for member in members]
        else:
            primary = f"mysql://{APP_USER}:{APP_PASSWORD}@{hosts}/{APP_DATABASE}"
            replicas = [instances[member.name].dsn() for member in members]
        shards.append({"name": shard, "backend": layout.backend, "primary": primary, "replicas": replicas, "weight": 1})
    return shards


def _galera_roles(layout: ClusterLayout, instances: dict[str, DatabaseInstance]) -> dict[str, HaRole]:
    roles: dict[str, HaRole] = {}
    for members in layout.shards().values():
        writer_found = False
        for member in members:
            node = instances[member.name]
            if not isinstance(node, GaleraNode) or not node.is_running():
                continue
            state = node.state()
            writer = state == "Synced" and not writer_found
            writer_found = writer_found or writer
            role = "writer" if writer else "synced" if state == "Synced" else "joining"
            roles[member.name] = HaRole(role=role, state=state or "not answering")
    return roles


def _start_galera_shard(
    layout: ClusterLayout,
    instances: dict[str, DatabaseInstance],
    shard: str,
    start: Callable[[str], None],
    progress: Progress,
) -> None:
    """The first node bootstraps a new cluster (a node started before rejoins); the others join it."""
    first, *others = layout.shards()[shard]
    node = instances[first.name]
    assert isinstance(node, GaleraNode)
    node.bootstrapping = not node.is_initialized()
    try:
        start(first.name)
    finally:
        node.bootstrapping = False
    began = time.monotonic()
    in_parallel(lambda name: _join_galera(name, start, progress), [member.name for member in others])
    progress(f"{shard}: {1 + len(others)} nodes synced ({time.monotonic() - began:.1f}s)")


def _join_galera(name: str, start: Callable[[str], None], progress: Progress) -> None:
    """Start a joiner, once more if it gives up: on a loaded machine a joiner can miss the primary
    view within ``pc.wait_prim_timeout`` while its twin's state transfer keeps the donor busy
    (``wsrep::connect() failed: 7``); the second attempt finds the donor free."""
    for attempt in range(1, _JOIN_ATTEMPTS + 1):
        try:
            start(name)
            return
        except InstanceError as exc:
            if attempt == _JOIN_ATTEMPTS:
                raise
            progress(f"{name}: did not join ({str(exc).splitlines()[0]}); trying again")


def _start_patroni_shard(
    layout: ClusterLayout,
    instances: dict[str, DatabaseInstance],
    shard: str,
    start: Callable[[str], None],
    progress: Progress,
) -> None:
    first, *others = layout.shards()[shard]
    start(first.name)
    in_parallel(start, [member.name for member in others])
    began = time.monotonic()

    def has_sync_standby() -> bool:
        roles = ha_roles(layout, instances)
        return any(roles.get(member.name, _NO_ROLE).role == "sync_standby" for member in layout.shards()[shard])

    if not wait_until(has_sync_standby, _SYNC_STANDBY_TIMEOUT_S):
        raise InstanceError(f"{shard}: Patroni named no synchronous standby in {_SYNC_STANDBY_TIMEOUT_S}s")
    first_leader = leader(layout, instances, shard)
    assert isinstance(first_leader, PatroniMember)
    create_app_user(first_leader)
    progress(f"{shard}: leader and synchronous standby in place ({time.monotonic() - began:.1f}s)")


def _member_name(member: Member) -> str:
    return member.name.split("/", 1)[1]
