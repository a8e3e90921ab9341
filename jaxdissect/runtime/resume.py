"""Running sums over an image source that survive a killed run.

``ResumableSum`` accumulates named integer/float arrays batch by batch and saves
them, with the position reached, to an ``.npz`` keyed by a hash of the arguments
that made them. Re-running with the same arguments resumes after the last saved
batch (or returns at once when the pass was finished); different arguments start
afresh. Saves are atomic (write then rename), so a kill never leaves a torn file.
"""

from __future__ import annotations

import hashlib
import json
import os
import time

import numpy as np
from tqdm.auto import tqdm

from jaxdissect.data.source import ImageSource, iterate


def arg_hash(key) -> str:
    """A stable hash of nested dicts/lists/scalars/arrays."""
    h = hashlib.sha256()

    def feed(x):
        if isinstance(x, dict):
            for k in sorted(x):
                h.update(repr(k).encode())
                feed(x[k])
        elif isinstance(x, (list, tuple)):
            h.update(b"[")
            for v in x:
                feed(v)
            h.update(b"]")
        elif isinstance(x, np.ndarray) or hasattr(x, "__array__"):
            a = np.ascontiguousarray(np.asarray(x))
            h.update(f"{a.dtype}{a.shape}".encode())
            h.update(a.tobytes())
        else:
            h.update(json.dumps(x, default=str).encode())

    feed(key)
    return h.hexdigest()[:16]


def save_npz_atomic(path: str, **arrays) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


class ResumableSum:
    """Sums of named arrays over the batches of a source, resumable from ``cachefile``."""

    def __init__(self, cachefile: str | None, key, init: dict[str, np.ndarray],
                 save_every_s: float = 5.0):
        self.cachefile, self.hash = cachefile, arg_hash(key)
        self.sums = {k: np.array(v) for k, v in init.items()}
        self.next = 0
        self.done = False
        self.save_every_s = save_every_s
        self._last_save = time.monotonic()
        if cachefile and os.path.exists(cachefile):
            with np.load(cachefile) as f:
                if str(f["_hash"]) == self.hash and set(init) <= set(f.files):
                    self.sums = {k: f[k] for k in init}
                    self.next, self.done = int(f["_next"]), bool(f["_done"])

    def batches(self, source: ImageSource, batch_size: int, desc: str = "",
                progress: bool = True):
        """Yield ``(start, batch)`` for the batches not yet summed."""
        if self.done:
            return
        n = source.num_examples
        bar = tqdm(total=n, initial=self.next, desc=desc, unit="img", disable=not progress,
                   leave=False)
        try:
            for start, batch in iterate(source, batch_size, start=self.next):
                yield start, batch
                bar.update(min(batch_size, n - start))
        finally:
            bar.close()
        self.done = True
        self._save()

    def add(self, start: int, batch_stop: int, **values) -> None:
        if start != self.next:
            raise RuntimeError(f"batch at {start} added out of order (expected {self.next})")
        for k, v in values.items():
            self.sums[k] = self.sums[k] + np.asarray(v, self.sums[k].dtype)
        self.next = batch_stop
        if time.monotonic() - self._last_save >= self.save_every_s:
            self._save()

    def _save(self) -> None:
        if self.cachefile:
            save_npz_atomic(self.cachefile, _hash=np.array(self.hash), _next=np.array(self.next),
                            _done=np.array(self.done), **self.sums)
        self._last_save = time.monotonic()

    def result(self) -> dict[str, np.ndarray]:
        return dict(self.sums)
