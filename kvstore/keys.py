"""Key and TTL parsing: the pure rules for what a client may send.

Keys arrive percent-encoded in the URL path. They are decoded to bytes first and then
strictly as UTF-8, so invalid UTF-8 is refused instead of being silently replaced.
"""

import re
from urllib.parse import unquote_to_bytes

from kvstore.errors import InvalidRequest

MAX_KEY_CHARS = 255
# A TTL is capped at 100 years so that now + ttl always fits a signed 64-bit column
# and stays far below the "persistent" sentinel.
MAX_TTL_S = 100 * 365 * 24 * 3600
MAX_TTL_MS = MAX_TTL_S * 1000
TTL_DECIMALS = 3  # millisecond precision
_TTL_PATTERN = re.compile(r"(\d+)(?:\.(\d+))?")


def parse_key(encoded: bytes | str) -> str:
    """Decode a percent-encoded key and check it is 1..255 characters of UTF-8 without NUL."""
    raw = unquote_to_bytes(encoded)
    try:
        key = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest("key is not valid UTF-8 after percent-decoding") from None
    return validate_key(key)


def validate_key(key: str) -> str:
    """Check a decoded key; NUL is refused because PostgreSQL text cannot hold it."""
    if not key:
        raise InvalidRequest("key is empty")
    if len(key) > MAX_KEY_CHARS:
        raise InvalidRequest(f"key is {len(key)} characters long; the maximum is {MAX_KEY_CHARS}")
    if "\x00" in key:
        raise InvalidRequest("key contains a NUL character")
    return key


def parse_ttl_ms(text: str) -> int:
    """Parse a TTL in decimal seconds with at most millisecond precision into milliseconds.

    The digits are counted before any is converted, so an absurdly long number gets the
    100-year message rather than costing a huge integer conversion.
    """
    match = _TTL_PATTERN.fullmatch(text)
    if match is None:
        raise InvalidRequest(f"ttl must be a positive number of decimal seconds, got {text[:40]!r}")
    whole, fraction = match.group(1).lstrip("0"), match.group(2) or ""
    if len(fraction) > TTL_DECIMALS:
        raise InvalidRequest(f"ttl must have at most {TTL_DECIMALS} decimals (milliseconds), got {text[:40]!r}")
    if len(whole) > len(str(MAX_TTL_S)):
        raise _ttl_too_long()
    ttl_ms = int(whole or "0") * 1000 + int(fraction.ljust(TTL_DECIMALS, "0"))
    if ttl_ms <= 0:
        raise InvalidRequest("ttl must be greater than 0")
    if ttl_ms > MAX_TTL_MS:
        raise _ttl_too_long()
    return ttl_ms


def _ttl_too_long() -> InvalidRequest:
    return InvalidRequest(f"ttl must be at most {MAX_TTL_S} seconds (100 years)")


_INCREMENT = re.compile(r"-?[0-9]{1,19}")


def parse_increment(text: str) -> int:
    """A counter's increment: a signed 64-bit decimal integer."""
    if _INCREMENT.fullmatch(text) is None:
        raise InvalidRequest(f"incr must be a signed 64-bit decimal integer, got {text[:40]!r}")
    return check_increment(int(text))


def check_increment(by: int) -> int:
    if not -(2**63) <= by < 2**63:
        raise InvalidRequest(f"incr must fit a signed 64-bit integer, got {by}")
    return by
