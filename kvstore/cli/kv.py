"""``kvstore kv …``: a small client of the HTTP API, for shells and scripts.

Exit status: 0 done; 1 the key is not live (404) or a precondition failed (412); 2 any
other error (bad request, auth, server or shard unavailable, no connection).
"""

import asyncio
import contextlib
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, NoReturn, TypeVar
from urllib.parse import quote

import click
import httpx

_KEY_PREFIX = "/v1/kv/"
_TIMEOUT_S = 30.0
EXIT_NO = 1
EXIT_ERROR = 2
F = TypeVar("F", bound=Callable[..., Any])


class Client:
    """Where the server is and how to authenticate; one request per command."""

    def __init__(self, url: str, token: str | None) -> None:
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def request(
        self,
        method: str,
        key: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        try:
            return asyncio.run(self._request(method, key, params or {}, headers or {}, content))
        except httpx.HTTPError as error:
            fail(EXIT_ERROR, f"cannot reach {self.url}: {type(error).__name__}: {error}")

    async def _request(
        self, method: str, key: str, params: Mapping[str, str], headers: Mapping[str, str], content: bytes | None
    ) -> httpx.Response:
        async with httpx.AsyncClient(timeout=_TIMEOUT_S) as client:
            return await client.request(
                method, self.url + key_path(key), params=params, headers={**self.headers, **headers}, content=content
            )


def key_path(key: str) -> str:
    """``/v1/kv/`` + the key percent-encoded, ``/`` kept.

    Dots are encoded too: an HTTP client removes ``.`` and ``..`` path segments, which would
    silently address another key.
    """
    return _KEY_PREFIX + quote(key, safe="/").replace(".", "%2E")


def fail(status: int, message: str) -> NoReturn:
    click.echo(message, err=True)
    sys.exit(status)


def check(response: httpx.Response, *expected: int) -> None:
    """Exit with ``status detail`` on stderr unless the answer is one of ``expected``."""
    if response.status_code in expected:
        return
    if response.status_code == 404:
        fail(EXIT_NO, "not found")
    detail = response.reason_phrase
    if response.headers.get("content-type", "").startswith("application/problem+json"):
        with contextlib.suppress(ValueError):
            body = response.json()
            detail = str(body.get("detail", detail)) if isinstance(body, dict) else detail
    fail(EXIT_NO if response.status_code == 412 else EXIT_ERROR, f"{response.status_code} {detail}")


def etag(value: str) -> str:
    """An ETag as ``If-Match`` wants it: quoted, unless it is ``*`` or already quoted."""
    return value if value == "*" or value.startswith('"') else f'"{value}"'


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

    Exit status: 0 done, 1 not found or precondition failed, 2 any other error.
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
    response = Client(url, token).request("GET", key, params={"consistency": "strong"} if strong else None)
    check(response, 200)
    stdout = sys.stdout.buffer
    stdout.write(response.content)
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
    headers = {"If-None-Match": "*"} if create_only else {}
    if if_match is not None:
        headers["If-Match"] = etag(if_match)
    response = Client(url, token).request(
        "PUT", key, params=None if ttl is None else {"ttl": ttl}, headers=headers, content=body
    )
    check(response, 200, 201)
    click.echo(response.text)


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
    headers = {} if if_match is None else {"If-Match": etag(if_match)}
    check(Client(url, token).request("DELETE", key, headers=headers), 204)


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
    response = Client(url, token).request("HEAD", key)
    check(response, 200)
    expires_at = response.headers.get("Expires-At")
    if expires_at is None:
        click.echo("persistent")
        return
    remaining_ms = max(int(expires_at) - int(time.time() * 1000), 0)
    click.echo(f"{remaining_ms / 1000:.3f}")
