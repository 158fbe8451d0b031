"""A local MariaDB server for tests, benchmarks and ``kvstore cluster``.

Every program gets ``--no-defaults`` (always as its first argument, where MariaDB
requires it) so that /etc/mysql and ~/.my.cnf cannot change our servers. The
superuser is ``root`` with no password over the unix socket in ``data_dir``;
kvstore itself connects over TCP as ``kvstore``/``kvstore``.
"""

import os
import pwd
from pathlib import Path

from kvstore.cluster.binaries import MariaDBBinaries, find_mariadb_binaries
from kvstore.cluster.instance import (
    APP_DATABASE,
    APP_PASSWORD,
    APP_USER,
    DatabaseInstance,
)

_INSTALL_DB_TIMEOUT_S = 120
# '%' is what remote clients match; '127.0.0.1' makes local TCP logins match
# this account even if the grant tables ever gain an anonymous ''@'localhost'.
_APP_HOSTS = ("%", "127.0.0.1")


class MariaDBInstance(DatabaseInstance):
    """A MariaDB server in ``data_dir`` listening on 127.0.0.1:``port``.

    The binlog is on (ROW format) and ``server_id`` settable, so instances can
    later be wired into replication. ``durable=True`` syncs the InnoDB log and
    the binlog on every commit; ``durable=False`` syncs neither (fast tests).
    Server settings are command-line options, applied at every ``start()``.
    """

    backend = "mysql"
    _temp_prefix = "kvstore-mariadb-"

    def __init__(self, data_dir: Path | str, port: int, *, durable: bool = True, server_id: int = 1) -> None:
        super().__init__(data_dir, port)
        self.durable = durable
        self.server_id = server_id

    @property
    def log_path(self) -> Path:
        return self.data_dir / "mariadb.log"

    @property
    def pid_path(self) -> Path:
        return self.data_dir / "mariadbd.pid"

    @property
    def socket_path(self) -> Path:
        """Unix socket the superuser connects through."""
        return self.data_dir / "mysqld.sock"

    def is_initialized(self) -> bool:
        return (self.data_dir / "mysql").is_dir()

    def dsn(self, database: str = APP_DATABASE) -> str:
        return f"mysql://{APP_USER}:{APP_PASSWORD}@127.0.0.1:{self.port}/{database}"

    @property
    def _binaries(self) -> MariaDBBinaries:
        return find_mariadb_binaries()

    def _as_user(self) -> list[str]:
        """``--user`` for the server-side programs: they refuse root unless told."""
        return [f"--user={pwd.getpwuid(0).pw_name}"] if os.geteuid() == 0 else []

    def _initialize(self) -> None:
        self._run(
            [
                str(self._binaries.install_db),
                "--no-defaults",
                f"--datadir={self.data_dir}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
                *self._as_user(),
            ],
            timeout_s=_INSTALL_DB_TIMEOUT_S,
            cwd=self.data_dir,
        )

    def _server_command(self) -> list[str]:
        flush_log, sync_binlog = ("1", "1") if self.durable else ("2", "0")
        return [
            str(self._binaries.mariadbd),
            "--no-defaults",
            f"--datadir={self.data_dir}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            f"--socket={self.socket_path}",
            f"--pid-file={self.pid_path}",
            f"--log-error={self.log_path}",
            "--skip-name-resolve",
            f"--server-id={self.server_id}",
            # Explicit names: the defaults derive from the hostname.
            "--log-bin=mariadb-bin",
            "--relay-log=mariadb-relay-bin",
            "--binlog-format=ROW",
            "--innodb-buffer-pool-size=64M",
            "--max-connections=300",
            # --no-defaults also drops Debian's utf8mb4 default; the compiled-in
            # one is latin1. Use the distribution's setting.
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_general_ci",
            f"--innodb-flush-log-at-trx-commit={flush_log}",
            f"--sync-binlog={sync_binlog}",
            *self._as_user(),
        ]

    def _root_client_options(self) -> list[str]:
        return [
            "--no-defaults",
            "--protocol=SOCKET",
            f"--socket={self.socket_path}",
            "--user=root",
            "--connect-timeout=5",
        ]

    def _ping_command(self) -> list[str]:
        return [str(self._binaries.admin), *self._root_client_options(), "ping"]

    def _sql_command(self, statement: str) -> list[str]:
        return [
            str(self._binaries.client),
            *self._root_client_options(),
            "--batch",
            "--skip-column-names",
            f"--execute={statement}",
        ]

    def _bootstrap(self) -> None:
        self.sql(f"CREATE DATABASE IF NOT EXISTS `{APP_DATABASE}`")
        for host in _APP_HOSTS:
            account = f"'{APP_USER}'@'{host}'"
            self.sql(f"CREATE USER IF NOT EXISTS {account} IDENTIFIED BY '{APP_PASSWORD}'")
            # ALL on *.* includes what replication needs: REPLICATION SLAVE,
            # BINLOG MONITOR (ex REPLICATION CLIENT), SLAVE MONITOR and SUPER.
            self.sql(f"GRANT ALL PRIVILEGES ON *.* TO {account}")
