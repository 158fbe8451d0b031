"""``kvstore kv …``: the Python client (``kvstore.client``) for shells and scripts.

Exit status: 0 done; 1 the key is not live (404), a precondition failed (412) or the value
does not allow the operation (409: incr of a non-integer); 2 any other error (bad request, auth,
server or shard unavailable, no connection).
"""

import base64
import itertools
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

import click
import orjson

from kvstore.client import Client, ClientError, Conflict, Get, NotFound, OpResult, PreconditionFailed, Put, Written

EXIT_NO = 1
EXIT_ERROR = 2
F = TypeVar("F", bound=Callable[..., Any])


def fail(status: int, message: str) -> NoReturn:
    click.echo(message, err=True)
    sys.exit(status)


@contextmanager
def connected(url: str, token: str | None) -> Iterator[Client]:
    """A client for one command; its errors become the exit status and ``status detail`` on stderr."""
    try:
        with Client(url, token=token, timeout_s=30.0) as client:
            yield client
    except NotFound:
        fail(EXIT_NO, "not found")
    except (PreconditionFailed, Conflict) as error:
        fail(EXIT_NO, str(error))
    except ClientError as error:
        fail(EXIT_ERROR, str(error) if error.status is not None else f"cannot reach {url}: {error.detail}")


def echo_written(written: Written) -> None:
    """The write's outcome as the server reports it: ``{"key", "version", "expires_at"}``."""
    document = {"key": written.key, "version": written.version, "expires_at": written.expires_at_ms}
    click.echo(orjson.dumps(document).decode())


def server_options(function: F) -> F:
    """``--url`` and ``--token``, shared by every ``kv`` command."""
    function = click.option(
        "--token", envvar="KVSTORE_TOKEN", default=None, help="Bearer token (better: $KVSTORE_TOKEN, kept out of ps)."
    )(function)
    return click.option(
        "--url",
        envvar="KVSTORE_URL",
        default="http://127.0.0.1:8080",
        show_default=True,
        help="The server (also $KVSTORE_URL).",
    )(function)


@click.group()
def kv() -> None:
    """Read and write keys through a running server's HTTP API.

    Exit status: 0 done, 1 not found, precondition failed or conflict, 2 any other error.
    """


@kv.command("get")
@click.argument("key")
@click.option("--strong", is_flag=True, help="Read from the shard's primary, never a replica.")
@server_options
def get(key: str, strong: bool, url: str, token: str | None) -> None:
    """Write KEY's value to stdout, byte for byte.

    \b
    Example:
      kvstore kv get greeting
      kvstore kv get images/logo.png --strong > logo.png
    """
    with connected(url, token) as client:
        entry = client.get(key, strong=strong)
    stdout = sys.stdout.buffer
    stdout.write(entry.value)
    stdout.flush()


@kv.command("put")
@click.argument("key")
@click.option("--value", default=None, help="The value as text (UTF-8); without it the value is read from stdin.")
@click.option("--ttl", default=None, metavar="SECONDS", help="Expire after SECONDS (up to 3 decimals).")
@click.option("--if-match", "if_match", default=None, metavar="ETAG", help="Only if the live value has this ETag.")
@click.option("--create-only", is_flag=True, help="Only if KEY has no live value.")
@server_options
def put(
    key: str, value: str | None, ttl: str | None, if_match: str | None, create_only: bool, url: str, token: str | None
) -> None:
    """Store a value under KEY and print the server's answer (key, version, expires_at).

    \b
    Example:
      kvstore kv put greeting --value hello --ttl 30
      kvstore kv put images/logo.png --create-only < logo.png
    """
    if if_match is not None and create_only:
        raise click.UsageError("--if-match and --create-only exclude each other")
    if value is None:
        stdin = sys.stdin.buffer
        if stdin.isatty():
            raise click.UsageError("give the value with --value or on stdin")
        body = stdin.read()
    else:
        body = value.encode()
    with connected(url, token) as client:
        written = client.put(key, body, ttl=ttl, if_match=if_match, if_absent=create_only)
    echo_written(written)


@kv.command("delete")
@click.argument("key")
@click.option("--if-match", "if_match", default=None, metavar="ETAG", help="Only if the live value has this ETag.")
@server_options
def delete(key: str, if_match: str | None, url: str, token: str | None) -> None:
    """Delete KEY (exit status 1 when it has no live value).

    \b
    Example:
      kvstore kv delete greeting
    """
    with connected(url, token) as client:
        deleted = client.delete(key, if_match=if_match)
    if not deleted:
        fail(EXIT_NO, "not found")


@kv.command("incr")
@click.argument("key")
@click.option("--by", type=int, default=1, show_default=True, help="The increment (may be negative).")
@server_options
def incr(key: str, by: int, url: str, token: str | None) -> None:
    """Add to KEY's integer value (from 0 when it has none) and print the new value.

    \b
    Example:
      kvstore kv incr visits
      kvstore kv incr stock/apples --by -3
    """
    with connected(url, token) as client:
        click.echo(client.incr(key, by).value)


@kv.command("list")
@click.argument("prefix", default="")
@click.option("--reverse", is_flag=True, help="Descending byte order.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most this many keys.")
@click.option("--json", "as_json", is_flag=True, help='One JSON object per line: {"key", "version", "expires_at"}.')
@server_options
def list_keys(prefix: str, reverse: bool, limit: int | None, as_json: bool, url: str, token: str | None) -> None:
    """Print the live keys starting with PREFIX, in byte order, one per line.

    Keys may contain newlines: use --json to read them back unambiguously.

    \b
    Example:
      kvstore kv list users/ --limit 20
      kvstore kv list --reverse --json
    """
    with connected(url, token) as client:
        for item in itertools.islice(client.list(prefix, reverse=reverse), limit):
            if as_json:
                document = {"key": item.key, "version": item.version, "expires_at": item.expires_at_ms}
                click.echo(orjson.dumps(document).decode())
            else:
                click.echo(item.key)


@kv.command("mget")
@click.argument("keys", nargs=-1, required=True)
@server_options
def mget(keys: tuple[str, ...], url: str, token: str | None) -> None:
    """Read many KEYS in one request (POST /v1/batch): one JSON line per key, in order,
    {"key", "status", "version", "expires_at", "value_b64"}; a key with no live value has status 404.

    \b
    Example:
      kvstore kv mget users/1 users/2 users/3
    """
    with connected(url, token) as client:
        results = client.batch([Get(key) for key in keys])
    echo_results(results)


@kv.command("mput")
@click.argument("pairs", nargs=-1, required=True, metavar="KEY=VALUE...")
@click.option("--ttl", default=None, metavar="SECONDS", help="Each key expires after SECONDS.")
@server_options
def mput(pairs: tuple[str, ...], ttl: str | None, url: str, token: str | None) -> None:
    """Store many KEY=VALUE pairs (values as text) in one request (POST /v1/batch), not atomically:
    one JSON line per pair, {"key", "status", "version", "expires_at"}. Exit status 2 when any failed.

    \b
    Example:
      kvstore kv mput users/1=ada users/2=grace --ttl 3600
    """
    puts = []
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="KEY=VALUE")
        puts.append(Put(key, value, ttl=ttl))
    with connected(url, token) as client:
        results = client.batch(puts)
    echo_results(results)
    if any(result.error is not None for result in results):
        sys.exit(EXIT_ERROR)


def echo_results(results: list[OpResult]) -> None:
    for result in results:
        document: dict[str, Any] = {"key": result.key, "status": result.status}
        if result.error is None:
            document |= {"version": result.version, "expires_at": result.expires_at_ms}
            if isinstance(result.value, bytes):
                document["value_b64"] = base64.b64encode(result.value).decode()
        else:
            document["error"] = str(result.error)
        click.echo(orjson.dumps(document).decode())


@kv.command("ttl")
@click.argument("key")
@server_options
def ttl(key: str, url: str, token: str | None) -> None:
    """Print the seconds KEY has left, or "persistent".

    Computed from the server's Expires-At and this machine's clock.

    \b
    Example:
      kvstore kv ttl greeting
    """
    with connected(url, token) as client:
        remaining = client.ttl(key)
    click.echo("persistent" if remaining is None else f"{remaining:.3f}")
