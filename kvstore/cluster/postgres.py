"""A local PostgreSQL server for tests, benchmarks and ``kvstore cluster``.

``initdb`` and ``postgres`` refuse to run as root. When we are root they run as
the ``postgres`` OS user instead (``subprocess`` switches uid/gid itself, so the
PID we hold is the postmaster's and not a wrapper's); the data directory is
handed to that user, and every directory above it must be traversable by it.
"""

import os
import pwd
import signal
from pathlib import Path
from typing import Any

from kvstore.cluster.binaries import PostgresBinaries, find_postgres_binaries
from kvstore.cluster.instance import APP_DATABASE, APP_USER, DatabaseInstance, InstanceError

SUPERUSER = "postgres"
_OS_USER = "postgres"
_INITDB_TIMEOUT_S = 120

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

    def __init__(self, data_dir: Path | str, port: int, *, durable: bool = True) -> None:
        super().__init__(data_dir, port)
        self.durable = durable

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
        if os.geteuid() != 0:
            return {}
        try:
            account = pwd.getpwnam(_OS_USER)
        except KeyError:
            raise InstanceError(
                f"{self}: PostgreSQL refuses to run as root and there is no {_OS_USER!r} OS user to run it as"
            ) from None
        return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}

    def _initialize(self) -> None:
        options = self._spawn_options()
        if options:
            os.chown(self.data_dir, options["user"], options["group"])
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
        try:
            self._run(command, timeout_s=_INITDB_TIMEOUT_S, cwd=self.data_dir, **options)
        except InstanceError as exc:
            if not options:
                raise
            raise InstanceError(
                f"{exc}\n(initdb ran as OS user {_OS_USER!r}: it needs to traverse "
                f"every directory above {self.data_dir})"
            ) from exc
        (self.data_dir / "pg_hba.conf").write_text(_PG_HBA)
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
            "hot_standby": "on",
            # start() sends the server's stderr to log_path; a logging collector
            # would miss the errors that stop the server before it starts.
            "logging_collector": "off",
            "log_destination": "'stderr'",
        }
        if not self.durable:
            settings |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
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


def _quote(value: str) -> str:
    """Quote a postgresql.conf string value."""
    return "'" + value.replace("'", "''") + "'"
