"""Batches read ahead of the step: the same batches in the same order, errors where
the loop would raise them, and loading overlapping compute in a sweep."""

import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdissect.runtime import sweep
from jaxdissect.runtime.prefetch import Prefetcher
from tests.runtime.test_sweep import Sums


def test_batches_come_in_order_and_errors_where_the_loop_raises():
    ranges = [(i, i + 3) for i in range(0, 30, 3)]
    got = [(r, b) for r, b in Prefetcher(lambda a, b: list(range(a, b)), ranges,
                                         put=tuple, depth=3)]
    assert got == [(r, tuple(range(*r))) for r in ranges]

    def read(a, b):
        if a == 9:
            raise RuntimeError("bad batch 9")
        return a
    seen = []
    with pytest.raises(RuntimeError, match="bad batch 9"):
        for _, b in Prefetcher(read, ranges):
            seen.append(b)
    assert seen == [0, 3, 6]
    with pytest.raises(ValueError, match="depth"):
        Prefetcher(read, ranges, depth=0)


def test_leaving_early_stops_the_reader():
    reads = []
    prefetch = Prefetcher(lambda a, b: reads.append(a) or a, [(i, i) for i in range(100)],
                          depth=2)
    for _, b in prefetch:
        if b == 1:
            break
    prefetch.close()
    assert len(reads) <= 5  # two consumed, at most depth (+1 being read) ahead
    assert not any(t.name == "jaxdissect-prefetch" and t.is_alive()
                   for t in threading.enumerate())


class SlowSource:
    """Each batch takes ``delay`` seconds to read (like decoding images)."""

    seg_labels = class_names = None

    def __init__(self, n, delay):
        self.num_examples, self.delay, self.loading = n, delay, 0.0

    def batch(self, start, stop):
        t = time.perf_counter()
        time.sleep(self.delay)
        x = np.arange(start, stop, dtype=np.int32)[:, None] * np.ones(3, np.int32)
        self.loading += time.perf_counter() - t
        return {"x": x}


def test_loading_overlaps_compute():
    """Loading and computing each take about 0.25 s a batch (the step waits in a host
    callback, the source sleeps: neither needs a core): 8 batches run in well under
    the sum of the two."""
    delay, batches, batch_size = 0.25, 8, 4
    computing = []

    def wait(x):
        t = time.perf_counter()
        time.sleep(delay)
        computing.append(time.perf_counter() - t)
        return x

    def step(stat, batch):
        x = jax.pure_callback(wait, jax.ShapeDtypeStruct(batch["x"].shape, jnp.int32),
                              batch["x"])
        return stat.update(x, batch["valid"])

    source = SlowSource(batches * batch_size, delay)
    t = time.perf_counter()
    out = sweep.sweep(step, Sums.empty(3), source, batch_size=batch_size, progress=False,
                      devices=jax.local_devices()[:1])
    elapsed = time.perf_counter() - t
    n = source.num_examples
    assert int(out.count) == n and list(out.total) == [n * (n - 1) // 2] * 3
    total = source.loading + sum(computing)
    assert len(computing) == batches and total >= 2 * batches * delay * 0.95
    assert elapsed < 0.75 * total, (elapsed, source.loading, sum(computing))
