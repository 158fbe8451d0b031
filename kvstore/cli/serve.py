"""``kvstore serve``: the HTTP front end on uvicorn (uvloop + httptools).

The port is bound here, before uvicorn starts a worker: a busy port is one clear error before
any shard is opened, not a failure logged after "Application startup complete".
"""

import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

import click
import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from kvstore import logs
from kvstore.cli.options import config_option, settings_or_exit
from kvstore.config import CONFIG_ENV, config_path


@click.command()
@config_option
@click.option("--host", default=None, help="Interface to bind (default from config: 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port to bind (default from config: 8080).")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Worker processes (default 1).")
@click.option("--ssl-certfile", type=click.Path(exists=True, dir_okay=False), help="Serve HTTPS with this certificate.")
@click.option("--ssl-keyfile", type=click.Path(exists=True, dir_okay=False), help="The certificate's private key.")
def serve(
    config_file: str | None,
    host: str | None,
    port: int | None,
    workers: int | None,
    ssl_certfile: str | None,
    ssl_keyfile: str | None,
) -> None:
    """Serve the key-value API.

    \b
    Example:
      kvstore serve --config shards.yaml --port 8080 --workers 2
      kvstore serve --host 0.0.0.0 --ssl-certfile cert.pem --ssl-keyfile key.pem
    """
    if (ssl_certfile is None) != (ssl_keyfile is None):
        raise click.UsageError("--ssl-certfile and --ssl-keyfile go together")
    settings = settings_or_exit(config_file).with_server(host=host, port=port, workers=workers)
    server = settings.server
    listener = _bind(server.host, server.port)
    logs.configure(server.log_level)  # the supervisor of several workers logs too
    # Workers rebuild the settings from the environment: hand them the file and the flags.
    os.environ[CONFIG_ENV] = str(config_path(config_file).resolve())
    for name, value in (("HOST", host), ("PORT", port), ("WORKERS", workers)):
        if value is not None:
            os.environ[f"KVSTORE_{name}"] = str(value)
    metrics_dir = _multiprocess_metrics_dir() if server.workers > 1 else None
    config = uvicorn.Config(
        "kvstore.http.factory:app_from_environment",
        factory=True,
        host=server.host,
        port=server.port,
        workers=server.workers,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,  # nothing here reads the client's address: no rewrite per request
        timeout_graceful_shutdown=int(server.graceful_shutdown_s),
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
    )
    try:
        started = _run(config, listener)
    finally:
        listener.close()
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    if not started:
        sys.exit(STARTUP_FAILURE)


def _run(config: uvicorn.Config, listener: socket.socket) -> bool:
    """Serve until stopped, as ``uvicorn.run`` would; False when a worker could not start."""
    try:
        if config.workers > 1:
            supervisor = Multiprocess(config, sockets=[listener])
            supervisor.run()
            return all(worker.exitcode != STARTUP_FAILURE for worker in supervisor.processes)
        server = uvicorn.Server(config)
        server.run(sockets=[listener])
        return server.started
    except KeyboardInterrupt:  # Ctrl-C: uvicorn has shut down, then re-raised the signal it handled
        return True


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket's address, bound now and handed to every worker (uvicorn listens on it)."""
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as error:
        listener.close()
        raise click.ClickException(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    listener.set_inheritable(True)
    return listener


def _multiprocess_metrics_dir() -> Path:
    """A fresh directory for prometheus_client's multiprocess mode, set before workers import it."""
    directory = Path(tempfile.mkdtemp(prefix="kvstore-metrics-"))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    return directory
