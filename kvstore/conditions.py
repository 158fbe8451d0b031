"""Conditional-request preconditions (RFC 9110 section 13) and strong ETags.

An ETag is the row's ``version`` in quotes. Versions never repeat for a key (see
``backends/sql.py``), so a strong comparison of ETags is a comparison of versions.
"""

from dataclasses import dataclass

from kvstore.errors import InvalidRequest, PreconditionFailed


@dataclass(frozen=True, slots=True)
class Precondition:
    """What a write requires of the key's current state.

    ``if_version`` set: the live row must have that version (``If-Match: "N"``).
    ``require_live``: some live row must exist (``If-Match: *``).
    ``require_absent``: no live row may exist (``If-None-Match: *``).
    """

    if_version: int | None = None
    require_live: bool = False
    require_absent: bool = False

    @property
    def is_conditional(self) -> bool:
        return self.if_version is not None or self.require_live or self.require_absent

    def holds(self, version: int | None) -> bool:
        """Whether a key whose live version is ``version`` (None: no live value) meets this precondition."""
        if version is None:
            return not (self.require_live or self.if_version is not None)
        return not self.require_absent and self.if_version in (None, version)

    def failure(self) -> PreconditionFailed:
        """The 412 for a key found in a state this precondition excludes, saying which it required."""
        if self.require_absent:
            return PreconditionFailed("the key has a live value (If-None-Match: *)")
        if self.require_live:
            return PreconditionFailed(
                "If-Match: * requires a live value; the key has no live value (missing, expired or deleted)"
            )
        return PreconditionFailed(
            "the key has no live value with the version If-Match names (it changed, or is missing, expired or deleted)"
        )


UNCONDITIONAL = Precondition()


def format_etag(version: int) -> str:
    return f'"{version}"'


def parse_etag(text: str) -> int | None:
    """Return the version a strong ETag names, or None for an ETag that can match nothing.

    A weak ETag (``W/"…"``) never matches under the strong comparison writes require; a
    well-formed opaque tag that is not one of ours cannot match a current version either.
    """
    text = text.strip()
    if text.startswith("W/"):
        return None
    if len(text) < 2 or text[0] != '"' or text[-1] != '"' or '"' in text[1:-1]:
        raise InvalidRequest(f"malformed entity-tag {text[:40]!r}: expected a quoted string")
    body = text[1:-1]
    if not body.isascii() or not body.isdigit() or len(body) > 19:
        return None
    return int(body)


def parse_preconditions(if_match: str | None, if_none_match: str | None) -> Precondition:
    """Build the precondition of a write from its ``If-Match`` and ``If-None-Match`` headers."""
    if if_none_match is not None and if_none_match.strip() != "*":
        raise InvalidRequest("only 'If-None-Match: *' is supported on writes")
    if if_match is not None and if_none_match is not None:
        # RFC 9110 evaluates both: If-Match needs a current representation, If-None-Match: * needs
        # none, so together they can never hold.
        raise PreconditionFailed("If-Match and If-None-Match: * cannot both hold")
    if if_none_match is not None:
        return Precondition(require_absent=True)
    return parse_if_match(if_match)


def parse_if_match(if_match: str | None) -> Precondition:
    """The precondition an ``If-Match`` header sets, on a write or a read."""
    if if_match is None:
        return UNCONDITIONAL
    if if_match.strip() == "*":
        return Precondition(require_live=True)
    tags = [tag for tag in if_match.split(",") if tag.strip()]
    if len(tags) != 1:
        raise InvalidRequest("If-Match must name exactly one entity-tag or '*'")
    version = parse_etag(tags[0])
    # An ETag that cannot be ours still has to fail the write (412), never pass it: -1 is
    # a version no row ever has.
    return Precondition(if_version=-1 if version is None else version)


def none_match(if_none_match: str | None, version: int) -> bool:
    """True when a GET's ``If-None-Match`` lists the current version (answer 304)."""
    if if_none_match is None:
        return False
    if if_none_match.strip() == "*":
        return True
    for tag in if_none_match.split(","):
        if not tag.strip():
            continue
        text = tag.strip().removeprefix("W/")  # GET uses the weak comparison (RFC 9110 13.1.2)
        try:
            if parse_etag(text) == version:
                return True
        except InvalidRequest:
            return False
    return False
