"""Reading batches ahead of the step that consumes them.

``Prefetcher(read, ranges, put, depth)`` iterates ``((start, stop), put(read(start,
stop)))`` over ``ranges`` in order, reading (decoding, padding) and placing (``put``:
e.g. ``jax.device_put`` onto the step's devices) up to ``depth`` batches ahead on
one background thread, so that loading batch ``k + 1`` overlaps the compiled step
computing batch ``k``. The ranges, their order and the batches are exactly those of
the plain loop; only the time at which they are read changes. An exception raised
reading a range is raised by the iteration at that range, as the loop would; the
background thread stops when the iteration ends or ``close()`` is called (it reads
at most ``depth`` batches that are never used).
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Iterable

_DONE = object()


class Prefetcher:
    def __init__(self, read: Callable[[int, int], Any], ranges: Iterable[tuple[int, int]],
                 put: Callable[[Any], Any] | None = None, depth: int = 2):
        if depth < 1:
            raise ValueError(f"prefetch depth must be at least 1, got {depth}")
        self._read, self._put = read, put or (lambda batch: batch)
        self._ranges = list(ranges)
        self._queue: queue.Queue = queue.Queue(depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="jaxdissect-prefetch",
                                        daemon=True)
        self._thread.start()

    def _offer(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _work(self):
        for r in self._ranges:
            try:
                item = (r, self._put(self._read(*r)), None)
            except BaseException as err:  # handed to the consumer, raised there
                self._offer((r, None, err))
                return
            if not self._offer(item):
                return
        self._offer(_DONE)

    def __iter__(self):
        try:
            while True:
                item = self._queue.get()
                if item is _DONE:
                    return
                r, batch, err = item
                if err is not None:
                    raise err
                yield r, batch
        finally:
            self.close()

    def close(self) -> None:
        """Stops the background thread (and waits for it)."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
