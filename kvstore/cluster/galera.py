"""MariaDB Galera: per shard 3 nodes that certify every write together (Debian ``galera-4``, MariaDB 10.11).

Every node takes writes, but a front end writes to one node at a time (the first of the shard's
DSN that answers), so concurrent writes never meet in certification. The first node bootstraps
the cluster (``--wsrep-new-cluster``) and creates the kvstore user; the others join it by a full
state transfer (``rsync``, whose script comes with Debian's ``mariadb-server``). A node that died
rejoins the others by itself when started again.

Group-communication timeouts are tuned for a local cluster: a node that stops answering is
suspected after ``evs.suspect_timeout`` and evicted, after which the others commit again.
"""

import os
from pathlib import Path

from kvstore.cluster.access import OsUser, grant_traverse, server_user_as_root
from kvstore.cluster.binaries import MissingBinaries
from kvstore.cluster.instance import InstanceError, wait_until
from kvstore.cluster.mariadb import MariaDBInstance

PROVIDER = Path("/usr/lib/galera/libgalera_smm.so")
_OS_USER = "mysql"
_SST_SCRIPT = Path("/usr/bin/wsrep_sst_rsync")
_SYNCED_TIMEOUT_S = 60
# Local cluster timing: Galera's defaults (suspect 5 s, inactive 15 s) would stall writes for
# seconds longer after a node dies.
_PROVIDER_TIMING = (
    "evs.keepalive_period=PT0.5S; evs.inactive_check_period=PT0.5S; evs.suspect_timeout=PT2S;"
    " evs.inactive_timeout=PT4S; evs.install_timeout=PT3S; gmcast.peer_timeout=PT2S; pc.wait_prim_timeout=PT10S"
)


def find_galera() -> Path:
    missing = [str(path) for path in (PROVIDER, _SST_SCRIPT) if not path.is_file()]
    if missing:
        raise MissingBinaries(
            f"Galera not found ({', '.join(missing)})."
            " Install it, e.g. `apt-get install galera-4 mariadb-server rsync`."
        )
    return PROVIDER


class GaleraNode(MariaDBInstance):
    """One node of the Galera cluster ``cluster_name``; ``ports`` = (group communication, IST, SST)."""

    def __init__(
        self,
        data_dir: Path | str,
        port: int,
        *,
        cluster_name: str,
        node_name: str,
        ports: tuple[int, int, int],
        peers: list[str],
        durable: bool = True,
        server_id: int = 1,
        owned_dir: Path | str | None = None,
    ) -> None:
        super().__init__(data_dir, port, durable=durable, server_id=server_id)
        self.owned_dir = self.data_dir if owned_dir is None else Path(owned_dir).resolve()
        self.cluster_name = cluster_name
        self.node_name = node_name
        self.group_port, self.ist_port, self.sst_port = ports
        self.peers = peers  # every node's group address, host:port
        self.bootstrapping = False

    def _os_user(self) -> OsUser | None:
        """As root, the server runs as the ``mysql`` OS user: the rsync daemon of a state transfer
        runs as the server does, and a root one would drop to ``nobody``, who cannot write here."""
        missing = f"{self}: no {_OS_USER!r} OS user to run Galera as (it comes with mariadb-server)"
        return server_user_as_root(_OS_USER, missing)

    def _as_user(self) -> list[str]:
        user = self._os_user()
        return [] if user is None else [f"--user={user.name}"]

    def _initialize(self) -> None:
        user = self._os_user()
        if user is not None:
            grant_traverse(self.owned_dir, self.data_dir, user)
            os.chown(self.data_dir, user.uid, user.gid)
        super()._initialize()

    def bootstrap(self, timeout_s: float) -> None:
        """Start as the first node of a new cluster (once, by ``kvstore cluster up``)."""
        self.bootstrapping = True
        try:
            self.start(timeout_s)
        finally:
            self.bootstrapping = False

    def _server_command(self) -> list[str]:
        address = "gcomm://" if self.bootstrapping else "gcomm://" + ",".join(self.peers)
        return [
            *super()._server_command(),
            "--wsrep-on=ON",
            f"--wsrep-provider={find_galera()}",
            f"--wsrep-cluster-name={self.cluster_name}",
            f"--wsrep-cluster-address={address}",
            f"--wsrep-node-name={self.node_name}",
            f"--wsrep-node-address=127.0.0.1:{self.group_port}",
            f"--wsrep-sst-receive-address=127.0.0.1:{self.sst_port}",
            "--wsrep-sst-method=rsync",
            f"--wsrep-provider-options=gmcast.listen_addr=tcp://127.0.0.1:{self.group_port};"
            f" ist.recv_addr=127.0.0.1:{self.ist_port}; {_PROVIDER_TIMING}",
            # Galera certifies row events and needs interleaved auto-increment locks.
            "--innodb-autoinc-lock-mode=2",
            "--log-slave-updates",
            *(["--wsrep-new-cluster"] if self.bootstrapping else []),
        ]

    def _bootstrap(self) -> None:
        """The first node creates the kvstore user (Galera replicates it); a joiner waits until it is synced."""
        if not wait_until(lambda: self.state() == "Synced", _SYNCED_TIMEOUT_S):
            raise InstanceError(
                f"{self}: not synced with the cluster after {_SYNCED_TIMEOUT_S}s (state: {self.state()})"
            )
        if self.bootstrapping:
            super()._bootstrap()

    def state(self) -> str:
        """``wsrep_local_state_comment``: Synced, Joining, Donor/Desynced, … ("" when it does not answer)."""
        try:
            return self.sql(
                "SELECT variable_value FROM information_schema.global_status"
                " WHERE variable_name = 'WSREP_LOCAL_STATE_COMMENT'"
            )
        except InstanceError:
            return ""

    def cluster_size(self) -> int:
        value = self.sql(
            "SELECT variable_value FROM information_schema.global_status WHERE variable_name = 'WSREP_CLUSTER_SIZE'"
        )
        return int(value or 0)
