"""The console's files at /ui (kvstore/http/console.py): served from the package, with a strict
Content-Security-Policy. What the page does is tested in a real browser (tests/e2e/test_console_browser.py)."""

import re

import httpx
import pytest

from kvstore.http.console import console_files


@pytest.mark.parametrize(
    ("path", "media_type"),
    [
        ("/ui", "text/html"),
        ("/ui/", "text/html"),
        ("/ui/index.html", "text/html"),
        ("/ui/console.js", "text/javascript"),
        ("/ui/console.css", "text/css"),
    ],
)
async def test_console_files_carry_a_strict_content_security_policy(
    client: httpx.AsyncClient, path: str, media_type: str
) -> None:
    response = await client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(media_type)
    policy = {
        part.strip().split(" ")[0]: part.strip() for part in response.headers["content-security-policy"].split(";")
    }
    assert policy["default-src"] == "default-src 'self'"
    assert policy["script-src"] == "script-src 'self'" and policy["style-src"] == "style-src 'self'"
    assert policy["frame-ancestors"] == "frame-ancestors 'none'"
    assert "unsafe" not in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_the_page_has_no_inline_script_or_style(client: httpx.AsyncClient) -> None:
    page = (await client.get("/ui")).text
    assert '<script src="/ui/console.js"' in page and '<link rel="stylesheet" href="/ui/console.css"' in page
    assert "<script>" not in page and "<style" not in page and " style=" not in page
    assert not re.search(r"\son[a-z]+\s*=", page, re.IGNORECASE), "no inline event handlers"


@pytest.mark.parametrize("path", ["/ui/missing.js", "/ui/../kvstore/config.py", "/ui/%2e%2e/app.py", "/ui/console/x"])
async def test_only_the_consoles_own_files_are_served(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


def test_the_console_is_three_files_shipped_in_the_package() -> None:
    assert sorted(console_files()) == ["console.css", "console.js", "index.html"]
