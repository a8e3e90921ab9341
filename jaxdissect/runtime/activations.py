"""A layer's activations kept between passes, so that passes after the first do not
run the model again.

When a dissection needs several passes over the data (the radix path: three
threshold passes and an IoU pass), each pass would run the model over every image.
``capture`` runs it once over this process's slice of the data and keeps what the
passes read, the activations ``[n, h, w, u]`` (the model's dtype) and the
segmentation ``[n, K, Hs, Ws]`` (int16 when the labels fit, else int32), in a
``StoredActivations`` source the passes then sweep instead.

Where they are kept (``place``), for ``b`` bytes of activations and segmentation:
  * ``"host"``: in host memory, if ``b`` is at most ``HOST_FRACTION`` of the memory
    the system reports available (``MemAvailable``);
  * ``"disk"``: else in a memory-mapped file in ``directory`` (the results' cache
    folder, else the system's temporary folder), if ``b`` is at most
    ``DISK_FRACTION`` of that file system's free space; the file is deleted when
    the store is;
  * ``None``: else nowhere: every pass runs the model, as without a store.
On an accelerator the stored batches are transferred to the devices while the
previous step computes (``runtime.prefetch``); at a float32 conv5_3's 0.4 MB per
image that is far below a VGG-16 forward's cost per image.

``JAXDISSECT_ACTIVATION_STORE``: ``auto`` (default, the rule above), ``host``,
``disk`` (forced), or ``off`` (never store).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, Callable, Sequence

import jax
import numpy as np

from jaxdissect.runtime import devices as sharding
from jaxdissect.runtime import sweep
from jaxdissect.runtime.prefetch import Prefetcher

ENV = "JAXDISSECT_ACTIVATION_STORE"
CHOICES = ("auto", "host", "disk", "off")
#: the share of available host memory / free disk space a store may take
HOST_FRACTION = 0.5
DISK_FRACTION = 0.5


def available_memory() -> int:
    """Bytes of host memory available (``MemAvailable``), or 0 if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


def store_choice() -> str:
    value = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if value not in CHOICES:
        raise ValueError(f"{ENV}={value!r}: expected one of {', '.join(CHOICES)}")
    return value


def place(nbytes: int, directory: str | None = None) -> str | None:
    """``"host"``, ``"disk"`` or ``None``: where ``nbytes`` of activations go (module)."""
    choice = store_choice()
    if choice in ("off", "host", "disk"):
        return None if choice == "off" else choice
    if nbytes <= HOST_FRACTION * available_memory():
        return "host"
    folder = directory or tempfile.gettempdir()
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return None
    return "disk" if nbytes <= DISK_FRACTION * free else None


def seg_dtype(num_labels: int):
    return np.int16 if num_labels <= np.iinfo(np.int16).max else np.int32


def nbytes(num_examples: int, acts_shape, acts_dtype, seg_shape, num_labels: int) -> int:
    """Bytes a store of ``num_examples`` takes (per-example shapes)."""
    return num_examples * (int(np.prod(acts_shape)) * np.dtype(acts_dtype).itemsize +
                           int(np.prod(seg_shape)) * np.dtype(seg_dtype(num_labels)).itemsize)


class StoredActivations:
    """An ``ImageSource`` of ``acts`` and ``seg`` for examples ``[start, stop)`` (a
    process's slice) of ``inner``; ``batch`` outside the slice is an error."""

    def __init__(self, inner, acts: np.ndarray, seg: np.ndarray, start: int, stop: int,
                 file: str | None = None):
        self.inner, self.acts, self.seg, self.start, self.stop = inner, acts, seg, start, stop
        self.num_examples = inner.num_examples
        self.seg_labels = getattr(inner, "seg_labels", None)
        self.class_names = getattr(inner, "class_names", None)
        self.file = file

    def batch(self, start: int, stop: int) -> dict[str, np.ndarray]:
        if not self.start <= start <= stop <= self.stop:
            raise IndexError(f"range [{start}, {stop}) outside the stored "
                             f"{self.start}..{self.stop}")
        a, b = start - self.start, stop - self.start
        return {"acts": np.asarray(self.acts[a:b]),
                "seg": np.asarray(self.seg[a:b], np.int32)}

    def close(self) -> None:
        """Frees the arrays and deletes the file of a disk store."""
        self.acts = self.seg = None
        if self.file is not None:
            try:
                os.unlink(self.file)
            except OSError:
                pass
            self.file = None


def capture(model: Callable[[dict, Any], tuple[jax.Array, jax.Array]], source, *,
            batch_size: int, params: Any, where: str, num_labels: int,
            directory: str | None = None,
            devices: Sequence[jax.Device] | None = None) -> StoredActivations:
    """Runs ``model(batch, params) -> (acts [b,h,w,u], seg [b,K,Hs,Ws])`` once over
    this process's slice of ``source`` (batches as a sweep pads them, the next read
    while the model computes) and keeps the results at ``where`` (``"host"`` or
    ``"disk"``, a file in ``directory``)."""
    devs = sharding.local_devices(devices)
    size = sharding.padded_size(batch_size, len(devs))
    start, stop = sweep.process_slice(source.num_examples)
    example = sweep.first_batch(source, batch_size, devices)
    fn = jax.jit(lambda batch, p: model({k: v for k, v in batch.items() if k != "valid"}, p))
    acts_s, seg_s = jax.eval_shape(fn, example, params)  # per-example shapes used only
    n = stop - start
    sdtype = seg_dtype(num_labels)
    file = None
    if where == "disk":
        folder = directory or tempfile.gettempdir()
        os.makedirs(folder, exist_ok=True)
        fd, file = tempfile.mkstemp(prefix="activations-", suffix=".bin", dir=folder)
        os.close(fd)
        a_bytes = n * int(np.prod(acts_s.shape[1:])) * np.dtype(acts_s.dtype).itemsize
        total = a_bytes + n * int(np.prod(seg_s.shape[1:])) * np.dtype(sdtype).itemsize
        with open(file, "r+b") as f:
            f.truncate(max(total, 1))
        acts = np.memmap(file, acts_s.dtype, "r+", 0, (n, *acts_s.shape[1:]))
        seg = np.memmap(file, sdtype, "r+", a_bytes, (n, *seg_s.shape[1:]))
    elif where == "host":
        acts = np.empty((n, *acts_s.shape[1:]), acts_s.dtype)
        seg = np.empty((n, *seg_s.shape[1:]), sdtype)
    else:
        raise ValueError(f"where must be 'host' or 'disk', not {where!r}")
    # each device computes its share of a batch, as in the sweeps (same shapes)
    share = size // len(devs)
    ps = [jax.device_put(params, d) for d in devs]

    def put(batch):
        return [jax.device_put({k: v[i * share:(i + 1) * share] for k, v in batch.items()}, d)
                for i, d in enumerate(devs)]

    ranges = [(i, min(i + batch_size, stop)) for i in range(start, stop, batch_size)]
    reader = Prefetcher(lambda a, b: sweep.read_batch(source, a, b, size), ranges, put=put)
    pending = None

    def keep(item):
        (a, b), outs = item
        x = np.concatenate([np.asarray(o[0]) for o in outs])
        s = np.concatenate([np.asarray(o[1]) for o in outs])
        acts[a - start:b - start] = x[:b - a]
        seg[a - start:b - start] = s[:b - a]

    try:
        for r, shares in reader:
            # dispatched; the previous batch is copied out meanwhile
            out = [fn(x, p) for x, p in zip(shares, ps)]
            if pending is not None:
                keep(pending)
            pending = (r, out)
        if pending is not None:
            keep(pending)
    except BaseException:
        if file is not None:
            os.unlink(file)
        raise
    finally:
        reader.close()
    return StoredActivations(source, acts, seg, start, stop, file)
