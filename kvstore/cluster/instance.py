"""The lifecycle shared by every local database server the harness runs.

A ``DatabaseInstance`` is just ``(data_dir, port)`` plus the knowledge of how to
initialise, start, probe and talk to one kind of server. All state that must
survive the Python process lives on disk (the server's own PID file), so an
object rebuilt later from the same ``(data_dir, port)`` — e.g. by
``kvstore cluster down`` in another process — can stop the server.

Servers run in their own session (and process group): Ctrl-C in the terminal
or a signal to the test runner does not reach them, and ``kill()`` can take
down the server together with its children in one ``killpg``.
"""

import abc
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self

from kvstore.cluster.ports import free_port

logger = logging.getLogger(__name__)

APP_USER = "kvstore"
APP_PASSWORD = "kvstore"
APP_DATABASE = "kvstore"

_POLL_INTERVAL_S = 0.05
_PROBE_TIMEOUT_S = 5.0
_KILL_TIMEOUT_S = 10.0
_LOG_TAIL_BYTES = 64 * 1024
# Client settings in the environment (PGOPTIONS, PGSSLMODE, MYSQL_PWD, ...) would
# silently change how our CLI clients connect, so they never reach a child process.
_SCRUBBED_ENV_PREFIXES = ("PG", "MYSQL", "MARIADB")


class InstanceError(RuntimeError):
    """A local database server could not be initialised, started, stopped or queried."""


class DatabaseInstance(abc.ABC):
    """One database server process owning ``data_dir`` and listening on 127.0.0.1:``port``."""

    backend: ClassVar[str]
    """"postgres" or "mysql": the kvstore backend this server serves."""

    _temp_prefix: ClassVar[str]
    _stop_signal: ClassVar[signal.Signals] = signal.SIGTERM
    """Signal asking the server for a clean shutdown that does not wait for clients."""
    _writes_pid_file: ClassVar[bool] = True
    """False: the server writes no PID file of its own, so ``start()`` writes ``pid_path`` for it."""

    def __init__(self, data_dir: Path | str, port: int) -> None:
        # Resolved, because the path is matched against the server's command line
        # to recognise its PID, possibly by another process with another cwd.
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self._process: subprocess.Popen[bytes] | None = None
        self._owns_data_dir = False

    @classmethod
    def temporary(cls, **kwargs: Any) -> Self:
        """Create an instance in a fresh temp directory on a free port.

        ``cleanup()`` (or leaving the ``with`` block) stops it and deletes the
        directory. ``kwargs`` go to the constructor (e.g. ``durable=False``).
        """
        data_dir = Path(tempfile.mkdtemp(prefix=cls._temp_prefix))
        try:
            instance = cls(data_dir, free_port(), **kwargs)
        except BaseException:
            data_dir.rmdir()
            raise
        instance._owns_data_dir = True
        return instance

    def __str__(self) -> str:
        return f"{self.backend} instance on 127.0.0.1:{self.port} in {self.data_dir}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(data_dir={str(self.data_dir)!r}, port={self.port})"

    # -- what each server defines ------------------------------------------------

    @property
    @abc.abstractmethod
    def log_path(self) -> Path:
        """File the server writes its log to."""

    @property
    @abc.abstractmethod
    def pid_path(self) -> Path:
        """File the server writes its PID to once it runs."""

    @abc.abstractmethod
    def is_initialized(self) -> bool:
        """Whether ``data_dir`` already holds a database cluster."""

    @abc.abstractmethod
    def dsn(self, database: str = APP_DATABASE) -> str:
        """URL a kvstore backend connects to as the ``kvstore`` user."""

    @abc.abstractmethod
    def _initialize(self) -> None:
        """Create the cluster files in ``data_dir`` (which exists and is empty)."""

    @abc.abstractmethod
    def _server_command(self) -> list[str]:
        """Command line that runs the server in the foreground."""

    @abc.abstractmethod
    def _ping_command(self) -> list[str]:
        """Command that exits 0 once the server accepts connections.

        It must reach our server only (e.g. via the unix socket in ``data_dir``):
        when another server holds the port, ours exits, and a TCP probe would be
        answered by the other one.
        """

    @abc.abstractmethod
    def _sql_command(self, statement: str) -> list[str]:
        """Command that runs ``statement`` as the superuser and prints its rows."""

    @abc.abstractmethod
    def _bootstrap(self) -> None:
        """Create the ``kvstore`` user and database; must be idempotent."""

    def _spawn_options(self) -> dict[str, Any]:
        """Extra ``subprocess`` arguments for server-side programs (e.g. user switch)."""
        return {}

    # -- lifecycle ---------------------------------------------------------------

    def init(self) -> None:
        """Create the data directory and initialise a new cluster in it."""
        if self.is_initialized():
            raise InstanceError(f"{self}: already initialised")
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if any(self.data_dir.iterdir()):
            raise InstanceError(f"{self}: data directory is not empty")
        began = time.monotonic()
        self._initialize()
        logger.info("initialised %s in %.2fs", self, time.monotonic() - began)

    def start(self, timeout_s: float = 30) -> None:
        """Start the server and return once it accepts connections and is bootstrapped.

        On failure the server is killed, so nothing is left behind, and the
        ``InstanceError`` carries the end of the server log.
        """
        if not self.is_initialized():
            raise InstanceError(f"{self}: not initialised; call init() first")
        if self.is_running():
            raise InstanceError(f"{self}: already running (pid {self.pid()})")
        began = time.monotonic()
        with self.log_path.open("ab") as log:
            process = subprocess.Popen(
                self._server_command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                env=_clean_env(),
                start_new_session=True,
                **self._spawn_options(),
            )
        self._process = process
        if not self._writes_pid_file:
            self.pid_path.write_text(f"{process.pid}\n")
        try:
            self._wait_until_ready(process, began + timeout_s)
            self._bootstrap()
        except BaseException as exc:
            self.kill()
            if isinstance(exc, InstanceError):
                raise InstanceError(f"{exc}\n{self.log_excerpt()}") from exc
            raise
        logger.info("started %s (pid %d) in %.2fs", self, process.pid, time.monotonic() - began)

    def stop(self, timeout_s: float = 15) -> None:
        """Shut the server down cleanly; SIGKILL it if it is not gone after ``timeout_s``."""
        pid = self.pid()
        if pid is None:
            return
        group = _own_group(pid)
        began = time.monotonic()
        _signal(pid, self._stop_signal)
        if self._wait_gone(pid, group, began + timeout_s):
            logger.info("stopped %s in %.2fs", self, time.monotonic() - began)
            return
        logger.warning("%s ignored %s for %.0fs; killing it", self, self._stop_signal.name, timeout_s)
        self._kill_pid(pid, group)

    def kill(self) -> None:
        """SIGKILL the server and its children now (crash simulation for fault tests)."""
        pid = self.pid()
        if pid is None:
            return
        self._kill_pid(pid, _own_group(pid))
        logger.info("killed %s", self)

    def cleanup(self) -> None:
        """Stop the server and delete ``data_dir`` with everything in it."""
        self.stop()
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)

    def __enter__(self) -> Self:
        """Initialise and start as needed; a temporary instance is removed if that fails."""
        try:
            if not self.is_initialized():
                self.init()
            if not self.is_running():
                self.start()
        except BaseException:
            self._release()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server; a ``temporary()`` instance also deletes its directory."""
        self._release()

    # -- state -------------------------------------------------------------------

    def pid(self) -> int | None:
        """PID of the running server, or None when it does not run."""
        if self._process is not None:
            if self._process.poll() is None:
                return self._process.pid
            self._process = None  # exited, and poll() reaped it
        try:
            pid = int(self.pid_path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if self._is_our_server(pid) else None

    def is_running(self) -> bool:
        """Whether a server process for ``data_dir`` is alive (not whether it answers)."""
        return self.pid() is not None

    def sql(self, statement: str, *, timeout_s: float = 60) -> str:
        """Run one statement as the superuser via the CLI client; return its output.

        Rows come one per line, columns tab-separated, no headers. Meant for admin
        work (users, replication), not for data.
        """
        return self._run(self._sql_command(statement), timeout_s=timeout_s).rstrip("\n")

    def log_tail(self, lines: int = 30) -> str:
        """Last ``lines`` lines of the server log ("" if there is none yet)."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(max(0, log.seek(0, os.SEEK_END) - _LOG_TAIL_BYTES))
                data = log.read()
        except FileNotFoundError:
            return ""
        return "\n".join(data.decode(errors="replace").splitlines()[-lines:])

    def log_excerpt(self) -> str:
        """The last log lines, framed for inclusion in an error message."""
        return f"--- last lines of {self.log_path} ---\n{self.log_tail() or '(empty)'}"

    # -- helpers -----------------------------------------------------------------

    def _run(self, command: Sequence[str], timeout_s: float, **options: Any) -> str:
        """Run a helper program to completion; raise ``InstanceError`` with its output."""
        try:
            result: subprocess.CompletedProcess[str] = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                env=_clean_env(),
                timeout=timeout_s,
                **options,
            )
        except subprocess.TimeoutExpired as exc:
            raise InstanceError(f"{self}: {Path(command[0]).name} timed out after {timeout_s}s") from exc
        if result.returncode != 0:
            raise InstanceError(
                f"{self}: {Path(command[0]).name} exited with {result.returncode}:\n"
                f"{(result.stderr or result.stdout).strip()}"
            )
        return result.stdout

    def _wait_until_ready(self, process: subprocess.Popen[bytes], deadline: float) -> None:
        """Probe with a real client connection until it succeeds or the server dies."""
        command = self._ping_command()
        while True:
            code = process.poll()
            if code is not None:
                raise InstanceError(f"{self}: server exited with code {code} during startup")
            if _succeeds(command, min(_PROBE_TIMEOUT_S, max(deadline - time.monotonic(), 0.1))):
                return
            if time.monotonic() >= deadline:
                raise InstanceError(f"{self}: server did not accept connections in time")
            time.sleep(_POLL_INTERVAL_S)

    def _kill_pid(self, pid: int, group: int | None) -> None:
        """SIGKILL the server (and its process group when it leads one) and wait for it."""
        if group is not None:
            _signal_group(group, signal.SIGKILL)
        else:
            _signal(pid, signal.SIGKILL)
        if not self._wait_gone(pid, group, time.monotonic() + _KILL_TIMEOUT_S):
            raise InstanceError(f"{self}: pid {pid} survived SIGKILL for {_KILL_TIMEOUT_S}s")

    def _wait_gone(self, pid: int, group: int | None, deadline: float) -> bool:
        """Wait until the server and its process group have fully exited; False on timeout.

        "Fully" matters for restarts: a SIGKILLed mariadbd is a zombie while its
        threads still hold the InnoDB locks, and backends of a killed postmaster
        hold its shared memory; either makes the next server refuse to start.
        """
        while True:
            if not self._pid_alive(pid) and (group is None or not _group_alive(group)):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(_POLL_INTERVAL_S)

    def _pid_alive(self, pid: int) -> bool:
        """Whether ``pid`` still exists; our own child counts until it is reaped."""
        if self._process is not None and self._process.pid == pid:
            if self._process.poll() is None:
                return True
            self._process = None
            return False
        stat = _read_stat(str(pid))
        return stat is not None and _stat_alive(str(pid), stat[0])

    def _is_our_server(self, pid: int) -> bool:
        """Whether ``pid`` is a live process serving ``data_dir`` (Linux: reads /proc).

        A PID file outlives a crash and PIDs get reused, so the command line must
        name our data directory. Zombies have an empty command line: not ours.
        """
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        marker = str(self.data_dir)
        args = raw.decode(errors="replace").split("\0")
        return any(arg == marker or arg.endswith(f"={marker}") for arg in args)

    def _release(self) -> None:
        """Undo ``__enter__``: remove a temporary instance, otherwise just stop it."""
        if self._owns_data_dir:
            self.cleanup()
        else:
            self.stop()


def wait_until(condition: Callable[[], bool], timeout_s: float) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout_s`` has passed (False)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_INTERVAL_S)
    return True


def http_ok_command(url: str) -> list[str]:
    """A readiness probe: a command that exits 0 when ``url`` answers 2xx (the running Python, no curl)."""
    return [sys.executable, "-c", "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)", url]


def _clean_env() -> dict[str, str]:
    """The current environment minus client settings that would redirect our clients."""
    return {key: value for key, value in os.environ.items() if not key.startswith(_SCRUBBED_ENV_PREFIXES)}


def _succeeds(command: list[str], timeout_s: float) -> bool:
    """Whether ``command`` exits 0 within ``timeout_s``."""
    try:
        return (
            subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=_clean_env(),
                timeout=timeout_s,
            ).returncode
            == 0
        )
    except subprocess.TimeoutExpired:
        return False


def _own_group(pid: int) -> int | None:
    """``pid`` if it leads its own process group (as servers we start do), else None."""
    try:
        return pid if os.getpgid(pid) == pid else None
    except ProcessLookupError:
        return None


def _group_alive(pgid: int) -> bool:
    """Whether any process of process group ``pgid`` is still alive (Linux /proc)."""
    for proc_dir in Path("/proc").glob("[0-9]*"):
        stat = _read_stat(proc_dir.name)
        if stat is not None and stat[1] == pgid and _stat_alive(proc_dir.name, stat[0]):
            return True
    return False


def _read_stat(pid: str) -> tuple[str, int] | None:
    """(state, process group) of ``pid`` from /proc, or None if there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the parenthesised command name: state, ppid, pgrp, ...
    state, _ppid, pgrp = text[text.rindex(")") + 2 :].split()[:3]
    return state, int(pgrp)


def _stat_alive(pid: str, state: str) -> bool:
    """Whether a process in ``state`` still runs code or holds resources.

    A zombie thread-group leader can have threads that are still exiting (and
    still hold files, locks and ports); only a lone zombie is really gone.
    """
    if state not in ("Z", "X"):
        return True
    try:
        return len(list(Path(f"/proc/{pid}/task").iterdir())) > 1
    except OSError:
        return False


def _signal(pid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to ``pid``; a process that already exited is fine."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to process group ``pgid``; a group that already exited is fine."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)
