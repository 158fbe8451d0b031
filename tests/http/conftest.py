"""One app for the tier, in this process, on two SQLite shards in a temp dir (tests/support/asgi.py)."""

from collections.abc import AsyncIterator

import httpx
import pytest

from kvstore.config import Settings
from tests.support.asgi import serving, sqlite_settings


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return sqlite_settings(tmp_path_factory.mktemp("http-shards"))


@pytest.fixture(scope="session")
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(settings) as client:
        yield client
