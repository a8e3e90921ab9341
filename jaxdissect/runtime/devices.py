"""Data-parallel tallies: the one place that shards a step over local devices.

A tally step is written for one shard: ``update(stat, batch, *replicated) -> stat``
adds that shard's examples to a statistic. ``ShardedTally`` runs it under
``jax.shard_map`` with the batch split along axis 0 over ``jax.local_devices()``,
each device adding its slice to its own statistic (no collectives, so no device
ever waits for another inside a step); ``result`` folds the per-device statistics
with their associative ``merge`` in device order. Because every statistic here is
exact and its merge associative, the result is identical for any device count.

Batches are padded to a fixed size (``pad_batch``) with a ``valid`` mask, so a
run compiles each step once whatever the last batch's size.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxdissect.stats import select

AXIS = "data"


@struct.dataclass
class Joint:
    """Several statistics tallied in one step; ``merge`` merges each."""

    parts: tuple

    def merge(self, other: "Joint") -> "Joint":
        return Joint(tuple(a.merge(b) for a, b in zip(self.parts, other.parts)))


@jax.jit
def fold(stacked: Any) -> Any:
    """Merges a stack of statistics (leading axis: device or process) in order:
    ``((s[0].merge(s[1])).merge(s[2]))...``. Compiled once per stack shape."""
    count = jax.tree_util.tree_leaves(stacked)[0].shape[0]
    total = jax.tree_util.tree_map(lambda x: x[0], stacked)
    for i in range(1, count):
        total = total.merge(jax.tree_util.tree_map(lambda x, i=i: x[i], stacked))
    return total


def local_devices(devices: Sequence[jax.Device] | None = None) -> list[jax.Device]:
    devices = list(jax.local_devices() if devices is None else devices)
    if not devices:
        raise ValueError("no devices to run on")
    return devices


def padded_size(batch_size: int, num_devices: int) -> int:
    """``batch_size`` rounded up to a multiple of the device count."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    return -(-batch_size // num_devices) * num_devices


def pad_batch(batch: dict[str, np.ndarray], size: int) -> tuple[dict[str, np.ndarray],
                                                                 np.ndarray]:
    """Pads every array along axis 0 to ``size`` by repeating its last example;
    returns the padded batch and ``valid`` ``[size]`` bool."""
    lengths = {k: len(v) for k, v in batch.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"batch arrays disagree on batch size: {lengths}")
    b = next(iter(lengths.values()))
    if not 0 < b <= size:
        raise ValueError(f"batch of {b} examples does not fit padded size {size}")
    out = {k: np.concatenate([v, np.repeat(v[-1:], size - b, axis=0)]) if b < size else v
           for k, v in batch.items()}
    return out, np.arange(size) < b


class ShardedTally:
    """A tally step over local devices with no communication between them.

    ``update(stat, batch, *replicated) -> stat`` adds one shard's examples to a
    statistic; ``empty`` is the statistic with nothing added. The running state
    is a stack of per-device statistics (leading axis = device): ``init(state)``
    puts ``state`` on device 0 and ``empty`` on the others, ``step`` adds a batch
    (split along axis 0, device i taking the i-th slice) to each device's own
    statistic, and ``result`` folds the stack with ``merge`` in device order.
    Every statistic here is exact with an associative ``merge``, so the result
    is identical for any device count, and no step waits on another device.
    """

    def __init__(self, update: Callable[..., Any], empty: Any,
                 devices: Sequence[jax.Device] | None = None):
        self.devices = local_devices(devices)
        self.empty = empty
        self.mesh = Mesh(np.array(self.devices), (AXIS,))
        count = len(self.devices)

        def local(stacked, batch, replicated):
            one = jax.tree_util.tree_map(lambda x: x[0], stacked)
            out = update(one, batch, *replicated)
            return jax.tree_util.tree_map(lambda x: x[None], out)

        sharded = jax.shard_map(local, mesh=self.mesh, in_specs=(P(AXIS), P(AXIS), P()),
                                out_specs=P(AXIS), check_vma=False)
        self._step = jax.jit(sharded)
        #: placements of a batch (split over devices) and of replicated arguments
        self.split = NamedSharding(self.mesh, P(AXIS))
        self.whole = NamedSharding(self.mesh, P())
        self._count = count

    def init(self, state: Any) -> Any:
        """The stacked state with ``state`` on device 0 and ``empty`` elsewhere."""
        stacked = jax.tree_util.tree_map(
            lambda s, e: np.stack([np.asarray(s)] + [np.asarray(e)] * (self._count - 1)),
            state, self.empty)
        return jax.device_put(stacked, self.split)

    def put(self, batch: Any) -> Any:
        """``batch`` placed as the step takes it (split over the devices); callable
        from any thread, so the next batch can be transferred while a step runs."""
        return jax.device_put(batch, self.split)

    def __call__(self, stacked: Any, batch: Any, *replicated) -> Any:
        leading = {np.shape(x)[0] for x in jax.tree_util.tree_leaves(batch)}
        if len(leading) != 1 or next(iter(leading)) % self._count:
            raise ValueError(f"batch leading sizes {sorted(leading)} must agree and divide "
                             f"over {self._count} devices")
        # Fixed placements, so every call's inputs look alike and the step compiles once.
        replicated = jax.device_put(replicated, self.whole)
        with self._kernels():
            return self._step(stacked, jax.device_put(batch, self.split), replicated)

    def _kernels(self):
        """Several CPU devices in one step: device-side kernels only (see
        ``stats.select.device_kernel_only``)."""
        if self._count > 1 and any(d.platform == "cpu" for d in self.devices):
            return select.device_kernel_only()
        return contextlib.nullcontext()

    def result(self, stacked: Any) -> Any:
        """The merged statistic (on the host's default device)."""
        if self._count == 1:
            return jax.tree_util.tree_map(lambda x: jnp.asarray(np.asarray(x)[0]), stacked)
        return fold(jax.device_get(stacked))


def sharded_tally(update: Callable[..., Any], empty: Any,
                  devices: Sequence[jax.Device] | None = None) -> ShardedTally:
    """``ShardedTally(update, empty, devices)``: ``init`` / step / ``result``."""
    return ShardedTally(update, empty, devices)
