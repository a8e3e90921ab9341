"""The one sweep driver: a statistic tallied over a data source on every local
device of every process, resumable, merged exactly.

The statistic protocol (every statistic in ``jaxdissect.stats`` follows it;
``runtime.devices.Joint`` combines several into one):

    Stat.empty(...)             -> stat   nothing tallied (fixed shapes)
    stat.update(..., valid)     -> stat   pure, jit-able: adds a batch's examples
                                          whose ``valid`` flag is set
    stat.merge(other)           -> stat   combines two tallies of disjoint data;
                                          associative, so any split of the data
                                          over batches, devices and processes
                                          gives the same result
    stat.compute(...)           -> NumPy  the readout (on the host)

A statistic is an immutable pytree (``flax.struct.dataclass``) of arrays whose
leaves keep their shapes through ``update`` and ``merge``.

``sweep(step, empty, source, batch_size=...)`` runs::

    for each batch of this process's slice of ``source``:
        stat = step(stat, batch, *replicated)

where ``step`` adds one batch to the statistic (calling ``update`` of its parts),
``batch`` is ``source.batch(start, stop)`` plus ``"index"`` ``[b]`` int32 (global
example indices) and ``"valid"`` ``[b]`` bool, padded to a fixed size so ``step``
compiles once (the padding repeats the last example with ``valid`` False).
``replicated`` (model weights, thresholds, a stack of edits ...) are arguments of
the compiled step, copied to every device, never constants folded into it. A sweep
over a stack of edits is just a step that ``vmap``s over the stack inside: the
driver does not care what the step computes.

Layout:
  * processes (``jax.distributed``, see ``runtime.hosts``): process ``i`` of ``P``
    reads only examples ``[n i // P, n (i+1) // P)`` (``process_slice``);
  * devices: each batch is split over ``jax.local_devices()``, each device adding
    its share to its own statistic with no collectives (``devices.ShardedTally``),
    folded with ``merge`` in device order;
  * once at the end, the processes' statistics are gathered
    (``multihost_utils.process_allgather``) and folded in process order, so every
    process returns the identical statistic.

Input: a background thread reads (``source.batch``), pads and places the next
batches on the devices while the step computes the current one
(``runtime.prefetch``); the batches and their order are those of the plain loop.

Resume: with ``cache_dir`` and ``key``, each process saves its (device-merged)
statistic and the position reached every ``checkpoint_every`` batches and at the
end of its slice, atomically, to its own file (named by ``key``, the step's name and
the batch/device/process layout); a re-run with the same arguments continues from
there (a finished slice is not read again); a checkpoint in another format or of
another structure is never read: the sweep is recomputed and the file replaced.
``key`` must hold everything the numbers depend on (``cache.content_key`` of the
weights' fingerprint, the data's identity and every setting): the driver cannot see
inside ``step``.

Exactness: for given per-example values, the statistic does not depend on the
batch size, device count or process count (merges are exact and associative). A
model's forward pass inside ``step`` may itself round differently with the batch
shape each device sees (XLA's CPU convolutions pick algorithms by shape), which is
why the layout is part of a checkpoint's name.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Sequence

import jax
import numpy as np
from tqdm.auto import tqdm

from jaxdissect.runtime import cache
from jaxdissect.runtime import devices as sharding
from jaxdissect.runtime.prefetch import Prefetcher

Step = Callable[..., Any]


def process_slice(num_examples: int, index: int | None = None,
                  count: int | None = None) -> tuple[int, int]:
    """``[start, stop)``: the contiguous share of ``num_examples`` read by process
    ``index`` of ``count`` (default: this process of ``jax.process_count()``)."""
    index = jax.process_index() if index is None else index
    count = jax.process_count() if count is None else count
    if not 0 <= index < count:
        raise ValueError(f"process index {index} outside 0..{count - 1}")
    return num_examples * index // count, num_examples * (index + 1) // count


def read_batch(source, start: int, stop: int, size: int) -> dict[str, np.ndarray]:
    """``source.batch(start, stop)`` plus ``index`` (int32 global indices), padded to
    ``size`` examples with ``valid`` ``[size]`` bool."""
    data = dict(source.batch(start, stop))
    for k in ("index", "valid"):
        if k in data:
            raise ValueError(f"source batches may not have a {k!r} key (the sweep adds it)")
    data["index"] = np.arange(start, stop, dtype=np.int32)
    padded, valid = sharding.pad_batch(data, size)
    padded["valid"] = valid
    return padded


def first_batch(source, batch_size: int,
                devices: Sequence[jax.Device] | None = None) -> dict[str, np.ndarray]:
    """The padded batch a sweep would start this process with (for shape probes,
    e.g. ``jax.eval_shape``); reads only this process's own slice when it has one."""
    if source.num_examples <= 0:
        raise ValueError("the source has no examples")
    size = sharding.padded_size(batch_size, len(sharding.local_devices(devices)))
    start, stop = process_slice(source.num_examples)
    if start == stop:
        start, stop = 0, 1
    return read_batch(source, start, min(start + batch_size, stop), size)


def checkpoint_path(cache_dir: str, name: str, key: str, batch_size: int,
                    num_devices: int) -> str:
    """This process's checkpoint file for sweep ``name`` under ``key``."""
    index, count = jax.process_index(), jax.process_count()
    layout = cache.content_key(key, name, batch=batch_size, devices=num_devices,
                               process=index, processes=count)
    suffix = f"-p{index}of{count}" if count > 1 else ""
    return os.path.join(cache_dir, f"{name}-{layout}{suffix}.npz")


def merge_processes(stat: Any) -> Any:
    """The merge of every process's ``stat`` in process order (identical in every
    process); ``stat`` itself when there is one process. Every process must call it."""
    if jax.process_count() == 1:
        return stat
    from jax.experimental import multihost_utils
    host = jax.tree_util.tree_map(np.asarray, stat)
    gathered = multihost_utils.process_allgather(host)  # leading axis: process
    return sharding.fold(gathered)


def sweep(step: Step, empty: Any, source, *, batch_size: int, replicated: tuple = (),
          name: str = "sweep", key: str | None = None, cache_dir: str | None = None,
          checkpoint_every: int = 20, progress: bool = True, desc: str | None = None,
          devices: Sequence[jax.Device] | None = None) -> Any:
    """Tallies ``step`` over ``source``; returns the merged statistic (see module).

    ``step(stat, batch, *replicated) -> stat``: traced once, written for one
    device's share of a batch (``batch_size`` is rounded up to a multiple of the
    local device count). ``empty``: the statistic with nothing tallied.
    ``name``: the sweep's name (progress bar, checkpoint file). ``key``: a content
    key (``cache.content_key``) naming everything the result depends on; needed
    with ``cache_dir``. ``devices``: local devices to use (default all).
    Raises ValueError on an empty source or non-positive sizes.
    """
    if source.num_examples <= 0:
        raise ValueError("the source has no examples")
    if checkpoint_every <= 0:
        raise ValueError(f"checkpoint_every must be positive, got {checkpoint_every}")
    if cache_dir is not None and key is None:
        raise ValueError("a sweep cached in cache_dir needs a key (cache.content_key of the "
                         "weights, data and settings)")
    devs = sharding.local_devices(devices)
    size = sharding.padded_size(batch_size, len(devs))
    start, stop = process_slice(source.num_examples)
    path = None if cache_dir is None else checkpoint_path(cache_dir, name, key, size,
                                                          len(devs))
    state, offset = empty, start
    if path is not None:
        try:
            loaded = cache.load_tree(path, empty)
        except ValueError as e:   # another format or structure: never read, recomputed
            print(f"warning: recomputing: {e}", file=sys.stderr, flush=True)
            loaded = None
        if loaded is not None:
            state, meta = loaded
            if (meta.get("start"), meta.get("stop")) != (start, stop):
                raise ValueError(f"checkpoint {path} covers examples {meta.get('start')}.."
                                 f"{meta.get('stop')}, not this process's {start}..{stop}; "
                                 "delete it")
            offset = int(meta["offset"])
    if offset < stop:
        state = _run(step, empty, source, state, offset, start, stop, batch_size, size,
                     devs, replicated, path, checkpoint_every, progress, desc or name)
    return merge_processes(state)


def _run(step, empty, source, state, offset, start, stop, batch_size, size, devs,
         replicated, path, every, progress, desc):
    """Tallies examples ``[offset, stop)`` onto ``state``; checkpoints to ``path``."""
    tally = sharding.ShardedTally(step, empty, devs)
    stacked = tally.init(state)
    if jax.process_count() > 1:
        desc = f"{desc} [process {jax.process_index()}]"
    bar = tqdm(total=stop - start, initial=offset - start, desc=desc, unit="ex",
               disable=not progress)
    count, previous = 0, None
    # the next batches are read and placed on the devices while the step computes
    reader = Prefetcher(lambda a, b: read_batch(source, a, b, size),
                        [(i, min(i + batch_size, stop)) for i in range(offset, stop, batch_size)],
                        put=tally.put)
    try:
        for (_, end), batch in reader:
            stacked = tally(stacked, batch, *replicated)
            # At most two steps in flight: without this, asynchronous dispatch lets
            # batches queue up in memory when the source outpaces the step.
            if previous is not None:
                jax.block_until_ready(previous)
            previous = stacked
            bar.update(end - offset)
            offset = end
            count += 1
            if path is not None and (count % every == 0 or offset == stop):
                cache.save_tree(path, tally.result(stacked), offset=offset, start=start,
                                stop=stop)
    finally:
        reader.close()
        bar.close()
    return tally.result(stacked)
