"""The migration steps' pure parts: the copier's cursor."""

from kvstore.reshard.migration import CopyCursor


def test_copy_cursor_round_trips() -> None:
    cursor = CopyCursor(
        after="user/ключ 42", scanned=1500, copied=37, done=True, started_at=1700000000.25, updated_at=1700000099.5
    )
    assert CopyCursor.decode(cursor.encode()) == cursor
    fresh = CopyCursor()
    assert CopyCursor.decode(fresh.encode()) == fresh
