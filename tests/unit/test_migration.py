"""The migration steps' pure parts: how long a step waits, the copier's cursor."""

import pytest

from kvstore.config import ServerSettings
from kvstore.reshard.migration import CopyCursor, settle_s


@pytest.mark.parametrize(
    "server",
    [ServerSettings(), ServerSettings(ring_lease_s=7.5, ring_poll_interval_s=0.5, request_timeout_s=30.0)],
    ids=["defaults", "custom"],
)
def test_settle_time_outlasts_lease_poll_and_request_deadline(server: ServerSettings) -> None:
    expected = server.ring_lease_s + server.ring_poll_interval_s + server.request_timeout_s + 1.0
    assert settle_s(server) == pytest.approx(expected)


def test_copy_cursor_round_trips() -> None:
    cursor = CopyCursor(
        after="user/ключ 42", scanned=1500, copied=37, done=True, started_at=1700000000.25, updated_at=1700000099.5
    )
    assert CopyCursor.decode(cursor.encode()) == cursor
    fresh = CopyCursor()
    assert CopyCursor.decode(fresh.encode()) == fresh
