"""Decoding a batch's images on parallel worker threads.

Pillow releases the GIL while it decodes and resizes, and NumPy while it converts,
so threads decode in parallel on every core without copying pixels between
processes. ``map_ordered(fn, items, workers)`` is ``[fn(x) for x in items]`` on up to
``workers`` threads (a pool kept per count), in order; an exception from ``fn`` is
raised as it would be by the loop (the first failing item's). ``default_workers()``:
``$JAXDISSECT_DATA_WORKERS`` if set, else the cores this process may use (at most 16).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")

ENV = "JAXDISSECT_DATA_WORKERS"
_POOLS: dict[int, ThreadPoolExecutor] = {}
_LOCK = threading.Lock()


def default_workers() -> int:
    """``$JAXDISSECT_DATA_WORKERS``, else the usable cores (1 to 16)."""
    value = os.environ.get(ENV)
    if value is not None:
        return check_workers(int(value) if value.strip().isdigit() else value)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    return max(1, min(16, cores))


def check_workers(workers) -> int:
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ValueError(f"data workers must be a positive integer, got {workers!r}")
    return workers


def map_ordered(fn: Callable[[T], R], items: Sequence[T], workers: int) -> list[R]:
    """``[fn(x) for x in items]`` computed on up to ``workers`` threads."""
    if workers <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    with _LOCK:
        pool = _POOLS.get(workers)
        if pool is None:
            pool = _POOLS[workers] = ThreadPoolExecutor(workers,
                                                        thread_name_prefix="jaxdissect-data")
    return list(pool.map(fn, items))
