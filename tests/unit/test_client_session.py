"""A session's read-after tokens (kvstore/client/session.py): the newest per shard, by order alone."""

from kvstore.client.session import ReadAfterTokens
from kvstore.positions import encode_read_after, position_for


def sent(tokens: ReadAfterTokens, shard: str) -> str | None:
    header = tokens.header()
    return None if header is None else position_for(shard, header)


def test_a_later_write_replaces_the_shards_token_and_shards_are_kept_apart() -> None:
    tokens = ReadAfterTokens()
    assert tokens.header() is None
    for shard, position in [("s0", "1"), ("s1", "5"), ("s0", "2")]:
        tokens.record(encode_read_after(shard, position), tokens.begin_write())
    assert (sent(tokens, "s0"), sent(tokens, "s1"), sent(tokens, "s2")) == ("2", "5", None)


def test_overlapping_writes_on_a_shard_leave_no_token_until_a_later_write() -> None:
    tokens = ReadAfterTokens()
    first, second = tokens.begin_write(), tokens.begin_write()
    tokens.record(encode_read_after("s0", "second"), second)
    third = tokens.begin_write()  # after `second` finished, while `first` is still out
    tokens.record(encode_read_after("s0", "first"), first)
    assert sent(tokens, "s0") is None, "either may be the later position: reads there go to the primary"
    tokens.record(encode_read_after("s0", "third"), third)
    assert sent(tokens, "s0") is None, "`third` overlapped `first`: still unknown"
    tokens.record(encode_read_after("s0", "after all"), tokens.begin_write())
    assert sent(tokens, "s0") == "after all"


def test_writes_on_other_shards_do_not_overlap_each_other() -> None:
    tokens = ReadAfterTokens()
    a, b = tokens.begin_write(), tokens.begin_write()
    tokens.record(encode_read_after("s1", "b"), b)
    tokens.record(encode_read_after("s0", "a"), a)
    assert (sent(tokens, "s0"), sent(tokens, "s1")) == ("a", "b")


def test_a_write_of_unknown_outcome_sends_its_shards_reads_to_the_primary() -> None:
    tokens = ReadAfterTokens()
    for shard in ("s0", "s1"):
        tokens.record(encode_read_after(shard, "1"), tokens.begin_write())
    tokens.lose_track("s0")
    assert (sent(tokens, "s0"), sent(tokens, "s1")) == (None, "1")
    tokens.lose_track(None)  # shard not known (the connection broke): every shard held
    assert tokens.header() is None
    tokens.record(encode_read_after("s1", "2"), tokens.begin_write())
    assert sent(tokens, "s1") == "2"
