"""A local PostgreSQL server, and hot standbys of it, for tests, benchmarks and ``kvstore cluster``.

``initdb`` and ``postgres`` refuse to run as root. When we are root they run as
the ``postgres`` OS user instead (``subprocess`` switches uid/gid itself, so the
PID we hold is the postmaster's and not a wrapper's); the data directory is
handed to that user, and every directory above it must be traversable by it:
kvstore grants that on the directory it was given (``owned_dir``) and below, and
only checks the directories above (``access.py``).
"""

import os
import re
import signal
from pathlib import Path
from typing import Any, ClassVar

from kvstore.cluster.access import OsUser, grant_traverse, server_user_as_root
from kvstore.cluster.binaries import PostgresBinaries, find_postgres_binaries
from kvstore.cluster.instance import APP_DATABASE, APP_USER, DatabaseInstance, InstanceError, wait_until
from kvstore.cluster.lag import ReplicationLag

SUPERUSER = "postgres"
_OS_USER = "postgres"
_INITDB_TIMEOUT_S = 120
_BASEBACKUP_TIMEOUT_S = 300
_STREAMING_TIMEOUT_S = 30
_SLOT_NAME = re.compile(r"[a-z0-9_]{1,63}")

# Test servers only: anything that can reach 127.0.0.1 or the socket is trusted,
# including replication connections for standbys.
_PG_HBA = """\
# Written by kvstore.cluster.
local   all          all                 trust
host    all          all   127.0.0.1/32  trust
local   replication  all                 trust
host    replication  all   127.0.0.1/32  trust
"""


class PostgresInstance(DatabaseInstance):
    """A PostgreSQL server in ``data_dir`` listening on 127.0.0.1:``port``.

    ``durable=False`` turns off fsync, synchronous commit and full-page writes:
    much faster, and a crash of the machine (not of the server) can corrupt it.
    Like every server setting, it is written into ``postgresql.conf`` by ``init()``.
    """

    backend = "postgres"
    _temp_prefix = "kvstore-pg-"
    # SIGINT is PostgreSQL's "fast" shutdown; SIGTERM ("smart") would wait for
    # every client, e.g. a leaked pool, to disconnect first.
    _stop_signal = signal.SIGINT

    def __init__(
        self, data_dir: Path | str, port: int, *, durable: bool = True, owned_dir: Path | str | None = None
    ) -> None:
        """``owned_dir``: the directory kvstore was handed, at or above ``data_dir`` (a cluster's
        ``--dir``), where it may grant the server's OS user search permission; default ``data_dir``."""
        super().__init__(data_dir, port)
        self.durable = durable
        self.owned_dir = self.data_dir if owned_dir is None else Path(owned_dir).resolve()

    @property
    def log_path(self) -> Path:
        return self.data_dir / "postgres.log"

    @property
    def pid_path(self) -> Path:
        return self.data_dir / "postmaster.pid"

    def is_initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file()

    def dsn(self, database: str = APP_DATABASE) -> str:
        return f"postgresql://{APP_USER}@127.0.0.1:{self.port}/{database}"

    @property
    def _binaries(self) -> PostgresBinaries:
        return find_postgres_binaries()

    def _spawn_options(self) -> dict[str, Any]:
        """Run server-side programs as the ``postgres`` OS user when we are root."""
        user = self._os_user()
        return {} if user is None else {"user": user.uid, "group": user.gid, "extra_groups": []}

    def _os_user(self) -> OsUser | None:
        """Who the server-side programs run as: None for ourselves, the ``postgres`` OS user for root."""
        missing = f"{self}: PostgreSQL refuses to run as root and there is no {_OS_USER!r} OS user to run it as"
        return server_user_as_root(_OS_USER, missing)

    def _initialize(self) -> None:
        command = [
            str(self._binaries.initdb),
            f"--pgdata={self.data_dir}",
            "--auth=trust",
            f"--username={SUPERUSER}",
            "--encoding=UTF8",
            "--locale=C",
            "--no-instructions",
        ]
        if not self.durable:
            command.append("--no-sync")
        self._run_into_data_dir(command, _INITDB_TIMEOUT_S)
        (self.data_dir / "pg_hba.conf").write_text(_PG_HBA)
        self._append_settings()

    def _run_into_data_dir(self, command: list[str], timeout_s: float) -> None:
        """Run a program that fills ``data_dir`` (initdb, pg_basebackup) as the server's OS user."""
        user = self._os_user()
        options = self._spawn_options()
        if user is not None:
            grant_traverse(self.owned_dir, self.data_dir, user)
            os.chown(self.data_dir, user.uid, user.gid)
        try:
            self._run(command, timeout_s=timeout_s, cwd=self.data_dir, **options)
        except InstanceError as exc:
            if not options:
                raise
            raise InstanceError(
                f"{exc}\n({Path(command[0]).name} ran as OS user {_OS_USER!r}: it needs to traverse "
                f"every directory above {self.data_dir})"
            ) from exc

    def _append_settings(self) -> None:
        """Append our settings to postgresql.conf, where the last mention of a setting wins."""
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# Written by kvstore.cluster.\n")
            conf.writelines(f"{name} = {value}\n" for name, value in self._settings().items())

    def _settings(self) -> dict[str, str]:
        """postgresql.conf settings: local-only, replication-ready, logging to stderr."""
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": _quote(str(self.data_dir)),
            "max_connections": "200",
            "wal_level": "replica",
            "max_wal_senders": "10",
            # Replicas cloned in parallel each force a checkpoint; without kept WAL one clone's
            # checkpoint can remove a segment the other still has to stream.
            "wal_keep_size": "'256MB'",
            "hot_standby": "on",
            # start() sends the server's stderr to log_path; a logging collector
            # would miss the errors that stop the server before it starts.
            "logging_collector": "off",
            "log_destination": "'stderr'",
        }
        # Both ways explicitly: a standby inherits the postgresql.conf of its primary.
        durability = "on" if self.durable else "off"
        settings |= {"fsync": durability, "synchronous_commit": durability, "full_page_writes": durability}
        return settings

    def _server_command(self) -> list[str]:
        # -p repeats postgresql.conf, so an object rebuilt with another port still
        # gets a server on the port its dsn() names.
        return [str(self._binaries.postgres), "-D", str(self.data_dir), "-p", str(self.port)]

    def _ping_command(self) -> list[str]:
        return self._sql_command("SELECT 1")

    def _sql_command(self, statement: str) -> list[str]:
        # Through the unix socket in data_dir: only our postmaster creates it, so
        # a foreign server squatting on the TCP port cannot answer in its place.
        # The postmaster binds TCP before the socket and gives up if it cannot,
        # so an answer here also means 127.0.0.1:port is ours.
        return [
            str(self._binaries.psql),
            "--no-psqlrc",
            "--quiet",
            "--no-align",
            "--tuples-only",
            "--field-separator=\t",
            "--set=ON_ERROR_STOP=1",
            f"--host={self.data_dir}",
            f"--port={self.port}",
            f"--username={SUPERUSER}",
            "--dbname=postgres",
            f"--command={statement}",
        ]

    def _bootstrap(self) -> None:
        self.sql(
            "DO $$BEGIN "
            f"IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP_USER}') THEN "
            f"CREATE ROLE {APP_USER} LOGIN SUPERUSER; "
            "END IF; END$$"
        )
        if not self.sql(f"SELECT 1 FROM pg_database WHERE datname = '{APP_DATABASE}'"):
            self.sql(f"CREATE DATABASE {APP_DATABASE} OWNER {APP_USER}")


class PostgresStandby(PostgresInstance):
    """A hot standby of ``primary``, fed by PostgreSQL's own streaming replication.

    ``init()`` clones the running primary with ``pg_basebackup --write-recovery-conf``
    through the physical replication slot ``slot``, so the primary keeps the WAL a
    stopped standby still needs. It gets the primary's settings (a standby refuses to
    start with a lower ``max_connections`` and the like), on its own port and socket.
    ``start()`` returns once the primary reports it ``streaming``.
    """

    init_needs_running_primary: ClassVar[bool] = True
    """``init()`` copies the primary, so the primary must run first."""

    def __init__(
        self,
        data_dir: Path | str,
        port: int,
        *,
        primary: PostgresInstance,
        slot: str,
        durable: bool = True,
        owned_dir: Path | str | None = None,
    ) -> None:
        super().__init__(data_dir, port, durable=durable, owned_dir=owned_dir)
        if not _SLOT_NAME.fullmatch(slot):
            raise InstanceError(f"{self}: bad replication slot name {slot!r} (1-63 of a-z, 0-9, _)")
        self.primary = primary
        self.slot = slot

    def _initialize(self) -> None:
        command = [
            str(self._binaries.pg_basebackup),
            "--host=127.0.0.1",
            f"--port={self.primary.port}",
            f"--username={SUPERUSER}",
            f"--pgdata={self.data_dir}",
            "--write-recovery-conf",
            # The default "spread" checkpoint takes minutes on an idle primary.
            "--checkpoint=fast",
            "--wal-method=stream",
            "--create-slot",
            f"--slot={self.slot}",
        ]
        if not self.durable:
            command.append("--no-sync")
        self._run_into_data_dir(command, _BASEBACKUP_TIMEOUT_S)
        # The copy includes the primary's log and its socket lock file, both in data_dir.
        self.log_path.unlink(missing_ok=True)
        for lock in self.data_dir.glob(".s.PGSQL.*.lock"):
            lock.unlink()
        self._append_settings()

    def _settings(self) -> dict[str, str]:
        # Reconnect to a restarted primary within a second rather than five.
        return super()._settings() | {"wal_retrieve_retry_interval": "'1s'"}

    def _bootstrap(self) -> None:
        """Check that the server recovers as a standby and wait until it streams.

        It creates nothing: users, database and schema all come from the primary.
        """
        if self.sql("SELECT pg_is_in_recovery()") != "t":
            raise InstanceError(f"{self}: not in recovery, so not a standby (standby.signal missing?)")
        if not wait_until(lambda: self._sender_state() == "streaming", _STREAMING_TIMEOUT_S):
            raise InstanceError(
                f"{self}: the primary does not report it streaming after {_STREAMING_TIMEOUT_S}s "
                f"(state: {self._sender_state() or 'not connected'})"
            )

    def lag(self) -> ReplicationLag:
        """WAL bytes between the primary's current LSN and this standby's replay LSN, and ``replay_lag``.

        ``now() - pg_last_xact_replay_timestamp()`` would grow forever on an idle
        primary; the LSN distance does not. ``replay_lag`` is NULL when PostgreSQL has no
        recent measurement (after an idle spell): that reads as 0 s when no byte is missing.
        """
        row = self.primary.sql(
            f"SELECT pg_current_wal_lsn(), r.state, EXTRACT(epoch FROM r.replay_lag) FROM pg_replication_slots s "
            f"LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid WHERE s.slot_name = '{self.slot}'"
        )
        if not row:
            raise InstanceError(f"{self}: the primary has no replication slot {self.slot!r}")
        current, state, lag_s = row.split("\t")
        replayed = self.sql("SELECT pg_last_wal_replay_lsn()")
        if not replayed:
            raise InstanceError(f"{self}: not in recovery, so not a standby (promoted?)")
        behind = max(0, _lsn(current) - _lsn(replayed))
        seconds = float(lag_s) if lag_s else (0.0 if behind == 0 else None)
        return ReplicationLag(
            state=state or "not connected",
            seconds_behind=seconds,
            primary_position=current,
            replica_position=replayed,
            bytes_behind=behind,
        )

    def wait_caught_up(self, timeout_s: float = 30) -> None:
        """Wait until this standby has replayed all the WAL the primary had written when called."""
        # The insert position: with synchronous_commit=off the write position can lag a just-committed
        # transaction, and "caught up" would come before the replica has it.
        target = self.primary.sql("SELECT pg_current_wal_insert_lsn()")
        if not wait_until(lambda: self.sql(f"SELECT pg_last_wal_replay_lsn() >= '{target}'") == "t", timeout_s):
            replayed = self.sql("SELECT pg_last_wal_replay_lsn()")
            raise InstanceError(f"{self}: replayed up to {replayed} only, not {target}, after {timeout_s}s")

    def _sender_state(self) -> str:
        """The primary's ``pg_stat_replication.state`` for our slot ("" when not connected)."""
        return self.primary.sql(
            "SELECT r.state FROM pg_stat_replication r JOIN pg_replication_slots s ON s.active_pid = r.pid "
            f"WHERE s.slot_name = '{self.slot}'"
        )


def _lsn(text: str) -> int:
    """A PostgreSQL LSN (``16/B374D848``) as a byte position."""
    high, low = text.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def _quote(value: str) -> str:
    """Quote a postgresql.conf string value."""
    return "'" + value.replace("'", "''") + "'"
