"""Run one step for many cluster members at once."""

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from kvstore.cluster.instance import InstanceError


def in_parallel(action: Callable[[str], None], names: Sequence[str]) -> None:
    """Run ``action`` for every member name at once; once all have finished, raise the first failure.

    A server's error gets the member's name in front: "s0/replica1: ..." says more
    than a data directory and a port.
    """
    if not names:
        return
    with ThreadPoolExecutor(len(names)) as pool:
        futures = [pool.submit(action, name) for name in names]
    for name, future in zip(names, futures, strict=True):
        error = future.exception()
        if isinstance(error, InstanceError) and not str(error).startswith(f"{name}: "):
            raise InstanceError(f"{name}: {error}") from error
        if error is not None:
            raise error
