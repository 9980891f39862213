"""Bounded-thread fan-out for per-file repository requests, and one request run in the
background while the caller does something else."""
from __future__ import annotations

import contextlib
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator, List, TypeVar

from envpipe_agent.repository.base import TRANSFER_THREADS

Item = TypeVar("Item")
Result = TypeVar("Result")


def parallel_map(function: Callable[[Item], Result], items: Iterable[Item],
                 threads: int = TRANSFER_THREADS) -> List[Result]:
    """``[function(item) for item in items]`` on up to ``threads`` threads, in order.

    The first exception is re-raised after the work not yet started is cancelled, so a
    failing transfer stops the rest instead of running on to the end.
    """
    items = list(items)
    if len(items) <= 1:
        return [function(item) for item in items]
    executor = ThreadPoolExecutor(max_workers=min(threads, len(items)))
    try:
        return list(executor.map(function, items))
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


@contextlib.contextmanager
def background(threads: int = 1) -> Iterator[Callable[..., "Future[Any]"]]:
    """For the block, ``submit(function, *args)``: runs the call on a background thread
    (up to ``threads`` at once) while the block goes on, and returns its Future (a
    listing while the source is hashed, a delete while files are copied). Leaving the
    block waits for every call to end, whatever ends the block."""
    with ThreadPoolExecutor(max_workers=threads) as executor:
        yield executor.submit
