"""Bounded-thread fan-out for per-file repository requests."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, List, TypeVar

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
