"""Data-parallel tallies: the one place that shards a step over local devices.

A tally step is written for one shard: ``update(stat, batch, *replicated) -> stat``
adds that shard's examples to a statistic. ``sharded_tally`` runs it under
``jax.shard_map`` with the batch split along axis 0 over ``jax.local_devices()``:
device 0 adds its slice to the running state, every other device to an empty
statistic; the per-device results are all-gathered and folded with their
associative ``merge`` in device order (device i holds the i-th slice of the batch).
Because every statistic here is exact and its merge associative, the result is
identical for any device count, and on one device a step is just ``update``.

Batches are padded to a fixed size (``pad_batch``) with a ``valid`` mask, so a
run compiles each step once whatever the last batch's size.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "data"


@struct.dataclass
class Joint:
    """Several statistics tallied in one step; ``merge`` merges each."""

    parts: tuple

    def merge(self, other: "Joint") -> "Joint":
        return Joint(tuple(a.merge(b) for a, b in zip(self.parts, other.parts)))


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


def sharded_tally(update: Callable[..., Any], empty: Any,
                  devices: Sequence[jax.Device] | None = None) -> Callable[..., Any]:
    """Returns ``step(state, batch, *replicated) -> state``, compiled once per shape.

    ``update(stat, batch, *replicated)`` adds a batch to a statistic; ``empty`` is
    the statistic with nothing added (same structure and shapes as ``state``).
    ``batch`` is a pytree of arrays whose leading axis (divisible by the device
    count) is split over devices; ``replicated`` arguments (thresholds, prefixes)
    are given whole to every device.
    """
    devices = local_devices(devices)
    mesh = Mesh(np.array(devices), (AXIS,))
    count = len(devices)

    def local(state, batch, replicated):
        if count == 1:
            return update(state, batch, *replicated)
        first = jax.lax.axis_index(AXIS) == 0
        start = jax.tree_util.tree_map(lambda s, e: jnp.where(first, s, e), state, empty)
        gathered = jax.lax.all_gather(update(start, batch, *replicated), AXIS)
        total = jax.tree_util.tree_map(lambda x: x[0], gathered)
        for i in range(1, count):
            total = total.merge(jax.tree_util.tree_map(lambda x, i=i: x[i], gathered))
        return total

    sharded = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(AXIS), P()), out_specs=P(),
                            check_vma=False)
    compiled = jax.jit(sharded)
    split, whole = NamedSharding(mesh, P(AXIS)), NamedSharding(mesh, P())

    def step(state, batch, *replicated):
        leading = {np.shape(x)[0] for x in jax.tree_util.tree_leaves(batch)}
        if len(leading) != 1 or next(iter(leading)) % count:
            raise ValueError(f"batch leading sizes {sorted(leading)} must agree and divide "
                             f"over {count} devices")
        # Fixed placements, so the first call's inputs do not differ from later
        # calls' and the step compiles once.
        state, replicated = jax.device_put((state, replicated), whole)
        return compiled(state, jax.device_put(batch, split), replicated)

    return step
