"""The web console at /ui in a real browser (headless Chromium driven by Playwright) against real
`kvstore serve` processes on two SQLite shards: the key browser (prefix search, paging through
cursors, a binary value in hex, TTL countdown, owning shard), keys and values made of markup that
must stay text, the token prompt, and the cluster page. Screenshots are kept (path printed at the end).
"""

import contextlib
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from kvstore.config import load_settings
from kvstore.reshard.migration import CopyCursor, cursor_name
from kvstore.ring_record import Phase, RingRecord
from tests.support import fleet
from tests.support.browser import expect, launch, screenshot_directory
from tests.support.server import ServerProcess, write_config

READER = "console-reader-0123456789"
PAGE_KEYS = [f"console/{index:04d}" for index in range(45)]  # three pages of 20: 20, 20, 5
BINARY_KEY, BINARY_VALUE = "console/binary", bytes(range(256))
TTL_KEY = "console/ttl"
# Keys and values a careless console would turn into markup: each must show as text and run nothing.
HOSTILE_KEY = "xss/<img src=x onerror=alert(1)>"
HOSTILE_VALUE = b"<script>alert(2)</script><img src=x onerror=alert(3)>\"'&amp;"
TIMEOUT_MS = 10_000
NO_FIGURE = "\N{EN DASH}"  # what the console shows where there is no figure yet


@pytest.fixture(scope="module")
def screenshots(request: pytest.FixtureRequest) -> Iterator[Path]:
    directory = screenshot_directory()
    yield directory
    taken = sorted(path.name for path in directory.glob("*.png"))
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print(f"\nconsole screenshots ({', '.join(taken) or 'none'}) kept in {directory}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from launch()


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("console")
    config = write_config(directory / "shards.yaml", "sqlite", [str(directory / "s0.db"), str(directory / "s1.db")])
    server = ServerProcess(config).start()
    try:
        with httpx.Client(base_url=server.url) as client:
            for key in PAGE_KEYS:
                assert client.put(f"/v1/kv/{quote(key, safe='')}", content=f"value of {key}".encode()).is_success
            assert client.put(f"/v1/kv/{BINARY_KEY}", content=BINARY_VALUE).is_success
            assert client.put(f"/v1/kv/{TTL_KEY}?ttl=3600", content=b"short-lived").is_success
            assert client.put(f"/v1/kv/{quote(HOSTILE_KEY, safe='')}", content=HOSTILE_VALUE).is_success
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def secured_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("console-secured")
    config = write_config(directory / "shards.yaml", "sqlite", [str(directory / "s0.db")])
    document = config.read_text() + f"auth:\n  tokens:\n    - {{name: reader, token: {READER}, scope: read}}\n"
    config.write_text(document)
    server = ServerProcess(config).start()
    yield server
    server.stop()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh tab that fails the test on any dialog (alert) and collects console errors."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    tab = context.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    tab.dialogs = []
    tab.errors = []
    tab.on("dialog", lambda dialog: (tab.dialogs.append(dialog.message), dialog.dismiss()))
    tab.on("console", lambda message: tab.errors.append(message.text) if message.type == "error" else None)
    tab.on("pageerror", lambda error: tab.errors.append(str(error)))
    yield tab
    context.close()


def keys_shown(page: Any) -> list[str]:
    return [str(key) for key in page.locator("#keys-body tr").evaluate_all("rows => rows.map(r => r.dataset.key)")]


def owner(server: ServerProcess, key: str) -> str:
    return load_settings(server.config).ring().owner(key)


def test_key_browser_searches_pages_and_opens_a_binary_value(
    page: Any, open_server: ServerProcess, screenshots: Path
) -> None:
    page.goto(open_server.url + "/ui#keys")
    page.fill("#prefix", "console/0")
    page.select_option("#limit", "20")
    page.click("#search")
    expect(page.locator("#page-info")).to_have_text("page 1, 20 key(s)")
    assert keys_shown(page) == PAGE_KEYS[:20]
    page.click("#next-page")
    expect(page.locator("#page-info")).to_have_text("page 2, 20 key(s)")
    assert keys_shown(page) == PAGE_KEYS[20:40]
    page.click("#next-page")
    expect(page.locator("#page-info")).to_have_text("page 3, 5 key(s)")
    assert keys_shown(page) == PAGE_KEYS[40:]
    expect(page.locator("#next-page")).to_be_disabled()  # the last page has no next cursor
    page.click("#previous-page")
    expect(page.locator("#page-info")).to_have_text("page 2, 20 key(s)")
    assert keys_shown(page) == PAGE_KEYS[20:40]

    page.check("#reverse")
    page.fill("#prefix", "console/")
    page.click("#search")
    expect(page.locator("#page-info")).to_have_text("page 1, 20 key(s)")
    assert keys_shown(page)[:3] == [TTL_KEY, BINARY_KEY, PAGE_KEYS[-1]], "byte order, reversed"

    page.click(f"#keys-body tr[data-key='{BINARY_KEY}'] button.key")
    expect(page.locator("#detail-value")).to_have_class("hex")
    assert page.text_content("#detail-key") == BINARY_KEY
    assert page.text_content("#detail-size") == "256 B (256 bytes)"
    assert page.text_content("#detail-shard") == owner(open_server, BINARY_KEY)
    dump = page.text_content("#detail-value")
    assert dump.splitlines()[0] == "00000000  00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f  |................|"
    assert dump.splitlines()[4] == "00000040  40 41 42 43 44 45 46 47 48 49 4a 4b 4c 4d 4e 4f  |@ABCDEFGHIJKLMNO|"
    assert page.text_content("#detail-note") == "", "hex chosen by itself: nothing to explain"
    page.click("#view-text")
    assert page.text_content("#detail-note") == "not UTF-8 text: shown as hex"
    page.screenshot(path=str(screenshots / "console-keys-binary.png"))

    page.click(f"#keys-body tr[data-key='{TTL_KEY}'] button.key")
    expect(page.locator("#detail-value")).to_have_text("short-lived")
    first = page.text_content("#detail-ttl")
    assert re.fullmatch(r"(59m \d+s|1h)", first), first
    expect(page.locator("#detail-ttl")).not_to_have_text(first, timeout=3000)  # it counts down
    assert page.text_content("#detail-shard") == owner(open_server, TTL_KEY)
    assert page.text_content(f"#keys-body tr[data-key='{PAGE_KEYS[-1]}'] .ttl") == "persistent"
    assert page.dialogs == [] and page.errors == []


def test_markup_in_keys_and_values_stays_text(page: Any, open_server: ServerProcess, screenshots: Path) -> None:
    page.goto(open_server.url + "/ui#keys")
    page.fill("#prefix", "xss/")
    page.click("#search")
    expect(page.locator("#page-info")).to_have_text("page 1, 1 key(s)")
    button = page.locator("#keys-body button.key")
    assert button.text_content() == HOSTILE_KEY
    button.click()
    expect(page.locator("#detail-value")).to_have_class("text")
    assert page.text_content("#detail-key") == HOSTILE_KEY
    assert page.text_content("#detail-value") == HOSTILE_VALUE.decode()
    assert page.locator("main img, main script").count() == 0, "no element was made from the data"
    page.wait_for_timeout(300)  # an injected onerror handler would have fired by now
    page.screenshot(path=str(screenshots / "console-markup-as-text.png"))
    assert page.dialogs == [] and page.errors == []


def test_cluster_page_shows_shards_ring_and_request_rates(
    page: Any, open_server: ServerProcess, screenshots: Path
) -> None:
    page.goto(open_server.url + "/ui#cluster")
    page.locator("#shards-body tr[data-shard='s1']").wait_for()
    cells = [page.locator(f"#shards-body tr[data-shard='{name}'] td") for name in ("s0", "s1")]
    for shard_cells in cells:
        assert shard_cells.nth(1).text_content() == "sqlite" and shard_cells.nth(2).text_content() == "up"
    shares = [float(shard_cells.nth(3).text_content().strip().rstrip("%")) for shard_cells in cells]
    assert sum(shares) == pytest.approx(100, abs=0.2)
    rows = sum(int(shard_cells.nth(4).text_content().replace(",", "")) for shard_cells in cells)
    assert rows == len(PAGE_KEYS) + 3
    expect(page.locator("#rows-note")).to_have_text(re.compile(r"^Rows counted \d+s ago "))
    assert page.text_content("#ring-summary") == "Ring epoch 0, phase stable; no migration in progress"
    assert page.text_content("#replicas-body") == "no replicas configured"
    # Rates need two polls; the console's own polling is counted as the "v1/status" op.
    status_rate = page.locator("#requests-body tr[data-op='v1/status'] td").nth(1)
    expect(status_rate).to_have_text(re.compile(r"^[0-9.]+$"), timeout=8000)
    assert float(status_rate.text_content()) > 0
    page.screenshot(path=str(screenshots / "console-cluster.png"), full_page=True)
    assert page.dialogs == [] and page.errors == []


def test_with_tokens_configured_the_console_asks_for_one(
    page: Any, secured_server: ServerProcess, screenshots: Path
) -> None:
    page.goto(secured_server.url + "/ui#cluster")
    page.locator("#token-panel").wait_for()
    assert page.is_hidden("#cluster-page")
    page.fill("#token-input", "not-the-right-token-0000")
    page.click("#token-panel button[type=submit]")
    expect(page.locator("#token-error")).to_have_text("That token was not accepted.")
    page.screenshot(path=str(screenshots / "console-token-prompt.png"))
    page.fill("#token-input", READER)
    page.click("#token-panel button[type=submit]")
    page.locator("#shards-body tr[data-shard='s0']").wait_for()
    assert page.evaluate("sessionStorage.getItem('kvstore.token')") == READER
    page.reload()
    page.locator("#shards-body tr[data-shard='s0']").wait_for()
    assert page.is_hidden("#token-panel"), "the token is kept for the tab"
    page.click("#forget-token")
    page.locator("#token-panel").wait_for()
    # Only the expected 401s reach the browser's console (as failed resource loads), nothing else.
    assert all("401" in error for error in page.errors), page.errors
    assert page.dialogs == []


def test_cluster_page_shows_a_migrations_progress(
    page: Any, tmp_path: Path, request: pytest.FixtureRequest, screenshots: Path
) -> None:
    """A reshard caught while copying: the ring record and a copier cursor written to the shards as
    `kvstore reshard` writes them (s1's weight doubles, so keys move from s0 to s1)."""
    shards = fleet.new_shards("s", "sqlite", 2, tmp_path, request)
    server = ServerProcess(fleet.write_config(tmp_path / "shards.yaml", shards)).start()
    try:
        with httpx.Client(base_url=server.url) as client:
            for index in range(60):
                assert client.put(f"/v1/kv/moving-{index}", content=b"v").is_success
        source_rows = sum(1 for index in range(60) if fleet.ring(shards).owner(f"moving-{index}") == "s0")
        old = tuple({**shard.spec(), "weight": 1} for shard in shards)
        new = (old[0], {**old[1], "weight": 2})
        record = RingRecord(1, Phase.COPYING, new, 256, previous=old, migration="m-demo")
        now = time.time()
        cursor = CopyCursor(after="moving-3", scanned=12, copied=5, started_at=now - 4, updated_at=now)
        for shard in shards:  # straight into SQLite: Playwright's sync API holds this thread's event loop
            with sqlite3.connect(shard.location) as db:
                db.execute("INSERT INTO kvstore_state (name, epoch, value) VALUES ('ring', 1, ?)", (record.encode(),))
                if shard.name == "s0":
                    db.execute(
                        "INSERT INTO kvstore_state (name, epoch, value) VALUES (?, 1, ?)",
                        (cursor_name(record), cursor.encode()),
                    )

        deadline = time.monotonic() + 10
        while httpx.get(server.url + "/readyz").json()["ring"]["phase"] != "copying":  # the front end follows
            assert time.monotonic() < deadline, "the front end did not follow the ring record"
            time.sleep(0.05)
        page.goto(server.url + "/ui#cluster")
        expect(page.locator("#ring-summary")).to_have_text("Ring epoch 1, phase copying; migration m-demo")
        rows = page.locator("#migration-body tr")
        expect(rows).to_have_count(2)
        s0 = [rows.nth(0).locator("td").nth(index).text_content() for index in range(6)]
        assert s0[0] == "s0" and s0[2:5] == ["12", "5", "3.0 rows/s"]
        assert s0[1].strip() == f"{12 / source_rows * 100:.0f}%"
        assert s0[5] == f"{round((source_rows - 12) / 3)}s"
        s1 = [rows.nth(1).locator("td").nth(index).text_content() for index in range(6)]
        assert s1[0] == "s1" and s1[2:6] == ["0", "0", NO_FIGURE, NO_FIGURE]
        page.screenshot(path=str(screenshots / "console-cluster-migration.png"), full_page=True)
        assert page.dialogs == [] and page.errors == []
    finally:
        server.stop()
