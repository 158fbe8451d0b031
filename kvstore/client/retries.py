"""When to try a request again, and after how long (pure: the caller sleeps).

Exponential backoff with full jitter, never shorter than the server's ``Retry-After``. Which
failures may be retried is decided by the caller (``protocol.py``): only those where the request
was not applied.
"""

from dataclasses import dataclass, field
from random import Random


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` in all (1: never retry); a wait of up to ``backoff_s * 2**retry``, at most
    ``max_backoff_s``; a ``Retry-After`` longer than ``max_retry_after_s`` is not waited for (the
    error is raised with it, for the caller to decide)."""

    attempts: int = 3
    backoff_s: float = 0.05
    max_backoff_s: float = 2.0
    max_retry_after_s: float = 5.0
    random: Random = field(default_factory=Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.backoff_s < 0 or self.max_backoff_s < 0 or self.max_retry_after_s < 0:
            raise ValueError("backoff_s, max_backoff_s and max_retry_after_s must not be negative")

    def delay_s(self, attempt: int, retry_after_s: float | None) -> float | None:
        """The wait before try ``attempt + 1`` after try ``attempt`` (1-based) failed; None: give up."""
        if attempt >= self.attempts:
            return None
        if retry_after_s is not None and retry_after_s > self.max_retry_after_s:
            return None
        backoff = self.random.uniform(0, min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)))
        return max(backoff, retry_after_s or 0.0)


NO_RETRIES = RetryPolicy(attempts=1)
