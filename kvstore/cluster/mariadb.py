"""A local MariaDB server, and replicas of it, for tests, benchmarks and ``kvstore cluster``.

Every program gets ``--no-defaults`` (always as its first argument, where MariaDB
requires it) so that /etc/mysql and ~/.my.cnf cannot change our servers. The
superuser is ``root`` with no password over the unix socket in ``data_dir``;
kvstore itself connects over TCP as ``kvstore``/``kvstore``.
"""

import os
import pwd
from pathlib import Path
from typing import ClassVar

from kvstore.cluster.binaries import MariaDBBinaries, find_mariadb_binaries
from kvstore.cluster.instance import (
    APP_DATABASE,
    APP_PASSWORD,
    APP_USER,
    DatabaseInstance,
    InstanceError,
    wait_until,
)
from kvstore.cluster.lag import ReplicationLag

_INSTALL_DB_TIMEOUT_S = 120
_STATUS_TIMEOUT_S = 10
_REPLICATING_TIMEOUT_S = 30
# '%' is what remote clients match; '127.0.0.1' makes local TCP logins match
# this account even if the grant tables ever gain an anonymous ''@'localhost'.
_APP_HOSTS = ("%", "127.0.0.1")


class MariaDBInstance(DatabaseInstance):
    """A MariaDB server in ``data_dir`` listening on 127.0.0.1:``port``.

    The binlog is on (ROW format) and ``server_id`` settable, so that a
    ``MariaDBReplica`` can follow it. ``durable=True`` syncs the InnoDB log and
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

    def _tmpdir_option(self) -> str:
        """Temp files in ``data_dir``, not the shared /tmp.

        A starting mariadbd (mariadb-install-db starts one) deletes every ``#sql*``
        file in its tmpdir, including the temp tables of other servers that use the
        same one: four installs in parallel in /tmp failed one time in eight here.
        """
        return f"--tmpdir={self.data_dir}"

    def _initialize(self) -> None:
        self._run(
            [
                str(self._binaries.install_db),
                "--no-defaults",
                f"--datadir={self.data_dir}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
                self._tmpdir_option(),
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
            self._tmpdir_option(),
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


class MariaDBReplica(MariaDBInstance):
    """A read-only replica of ``primary`` through MariaDB's binlog replication with GTIDs.

    It starts from an empty install and replays the primary's binlog from its first
    event, which creates the ``kvstore`` database and users (the bootstrap statements
    say IF NOT EXISTS). So the replica writes no transaction of its own: every GTID in
    it comes from the primary, and ``--gtid-strict-mode`` stops replication loudly if
    someone writes to the replica and makes the histories diverge. ``--read-only``
    guards against such mistakes, though the ``kvstore`` user may bypass it.
    """

    init_needs_running_primary: ClassVar[bool] = False
    """``init()`` is a plain install; only ``start()`` needs the primary."""

    def __init__(
        self, data_dir: Path | str, port: int, *, primary: MariaDBInstance, durable: bool = True, server_id: int = 2
    ) -> None:
        super().__init__(data_dir, port, durable=durable, server_id=server_id)
        if server_id == primary.server_id:
            raise InstanceError(f"{self}: server_id {server_id} is the primary's; replication needs distinct ids")
        self.primary = primary

    def _server_command(self) -> list[str]:
        # log-slave-updates: the replica's binlog holds the primary's transactions,
        # so it can itself be promoted or followed.
        return [*super()._server_command(), "--log-slave-updates", "--read-only", "--gtid-strict-mode=ON"]

    def _bootstrap(self) -> None:
        """Point replication at the primary (on the first start) and wait until both threads run.

        On later starts the server resumes replication by itself from its saved state.
        """
        if not self._slave_status():
            # CONNECT_RETRY=1: the default retries a lost primary only once a minute.
            self.sql(
                f"CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={self.primary.port}, "
                f"MASTER_USER='{APP_USER}', MASTER_PASSWORD='{APP_PASSWORD}', "
                "MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1"
            )
        self.sql("START SLAVE")
        if not wait_until(lambda: _state(self._slave_status()) == "running", _REPLICATING_TIMEOUT_S):
            status = self._slave_status()
            error = _last_error(status)
            raise InstanceError(
                f"{self}: replication not running after {_REPLICATING_TIMEOUT_S}s ({_state(status)})"
                + (f": {error}" if error else "")
            )

    def lag(self) -> ReplicationLag:
        """``Seconds_Behind_Master``, and the primary's binlog GTIDs this replica has not applied yet."""
        status = self._slave_status()
        if not status:
            raise InstanceError(f"{self}: replication is not configured")
        applied = self.sql("SELECT @@gtid_slave_pos")
        written = self.primary.sql("SELECT @@gtid_binlog_pos")
        seconds = status["Seconds_Behind_Master"]
        return ReplicationLag(
            state=_state(status),
            seconds_behind=None if seconds == "NULL" else float(seconds),
            primary_position=written,
            replica_position=applied,
            transactions_behind=_gtid_distance(written, applied),
            last_error=_last_error(status),
        )

    def wait_caught_up(self, timeout_s: float = 30) -> None:
        """Wait until this replica has applied every transaction the primary had binlogged when called."""
        target = self.primary.sql("SELECT @@gtid_binlog_pos")
        # MASTER_GTID_WAIT returns 0 once applied, -1 on timeout.
        if self.sql(f"SELECT MASTER_GTID_WAIT('{target}', {timeout_s})", timeout_s=timeout_s + 10) != "0":
            applied = self.sql("SELECT @@gtid_slave_pos")
            raise InstanceError(f"{self}: applied up to {applied or 'nothing'} only, not {target}, after {timeout_s}s")

    def _slave_status(self) -> dict[str, str]:
        """``SHOW SLAVE STATUS`` by column name; {} when replication was never configured."""
        output = self._run(
            [str(self._binaries.client), *self._root_client_options(), "--batch", "--execute=SHOW SLAVE STATUS"],
            timeout_s=_STATUS_TIMEOUT_S,
        )
        lines = output.splitlines()
        if len(lines) < 2:
            return {}
        return dict(zip(lines[0].split("\t"), lines[1].split("\t"), strict=True))


def _state(status: dict[str, str]) -> str:
    """Replication state in a word: running when both threads run, else what each one does."""
    io, sql = status.get("Slave_IO_Running", "-"), status.get("Slave_SQL_Running", "-")
    return "running" if io == sql == "Yes" else f"io {io}, sql {sql}"


def _last_error(status: dict[str, str]) -> str | None:
    """The replication threads' last errors, if any (they stay until replication restarts)."""
    errors = [f"{name}: {status[name]}" for name in ("Last_IO_Error", "Last_SQL_Error") if status.get(name)]
    return "; ".join(errors) or None


def _gtid_distance(ahead: str, behind: str) -> int:
    """Transactions in GTID position ``ahead`` that position ``behind`` lacks, domain by domain.

    Sequence numbers grow within a replication domain whichever server wrote them.
    """

    def sequence_numbers(position: str) -> dict[str, int]:
        gtids = (gtid.strip().split("-") for gtid in position.split(",") if gtid.strip())
        return {domain: int(sequence) for domain, _server_id, sequence in gtids}

    applied = sequence_numbers(behind)
    return sum(max(0, sequence - applied.get(domain, 0)) for domain, sequence in sequence_numbers(ahead).items())
