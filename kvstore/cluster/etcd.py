"""A local single-member etcd: the store Patroni keeps its leader lock and cluster state in.

One etcd serves every Patroni cluster of a ``kvstore cluster up --backend postgres --ha`` (each
shard under its own scope). It is started from the Debian ``etcd-server`` package's ``etcd``,
listening on 127.0.0.1 only, and writes no PID file of its own.
"""

import shutil
from pathlib import Path

from kvstore.cluster.binaries import MissingBinaries
from kvstore.cluster.instance import DatabaseInstance, InstanceError, http_ok_command

_NAME = "kvstore"


def find_etcd() -> Path:
    found = shutil.which("etcd")
    if found is None:
        raise MissingBinaries("etcd not found on PATH. Install it, e.g. `apt-get install etcd-server`.")
    return Path(found)


class EtcdServer(DatabaseInstance):
    """etcd with its data in ``data_dir``, clients on 127.0.0.1:``port``, peers on ``peer_port``."""

    backend = "etcd"
    _temp_prefix = "kvstore-etcd-"
    _writes_pid_file = False

    def __init__(self, data_dir: Path | str, port: int, *, peer_port: int) -> None:
        super().__init__(data_dir, port)
        self.peer_port = peer_port

    @property
    def log_path(self) -> Path:
        return self.data_dir / "etcd.log"

    @property
    def pid_path(self) -> Path:
        return self.data_dir / "etcd.pid"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def is_initialized(self) -> bool:
        return self.data_dir.is_dir()  # etcd creates its files on first start

    def dsn(self, database: str = "") -> str:
        return self.url

    def _initialize(self) -> None:
        """Nothing: etcd initialises its data directory when it first starts."""

    def _server_command(self) -> list[str]:
        peer = f"http://127.0.0.1:{self.peer_port}"
        return [
            str(find_etcd()),
            f"--name={_NAME}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.url}",
            f"--advertise-client-urls={self.url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster={_NAME}={peer}",
            "--initial-cluster-state=new",
            "--logger=zap",
            "--log-outputs=stderr",
        ]

    def _ping_command(self) -> list[str]:
        return http_ok_command(f"{self.url}/health")

    def _sql_command(self, statement: str) -> list[str]:
        raise InstanceError(f"{self}: etcd runs no SQL")

    def _bootstrap(self) -> None:
        """Nothing to create: Patroni writes its keys itself."""
