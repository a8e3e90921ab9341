"""The image-source protocol every pipeline reads from.

A source is random-access and deterministic: ``source.batch(start, stop)``
always returns the same examples for the same range, so a killed run resumes at
the batch where it stopped and gives identical results. ``source.identity()``
(optional) describes the data for content-keyed caches.

Batch keys (NumPy arrays; a source provides the ones it has):
  ``image`` ``[b, H, W, 3]`` float32 RGB in [0, 1] (un-normalised; models
            normalise with their own ``preprocess``),
  ``label`` ``[b]`` int32 class index,
  ``seg``   ``[b, K, Hs, Ws]`` int32 ground-truth segmentation (0 = none),
  ``z``     ``[b, z_dim]`` float32 latent samples for generators.
"""

from __future__ import annotations

from typing import Iterator, Protocol, runtime_checkable

import numpy as np

from jaxdissect.labels import LabelSet


@runtime_checkable
class ImageSource(Protocol):
    num_examples: int
    #: vocabulary of ``seg`` if the source has ground-truth segmentation
    seg_labels: LabelSet | None
    #: class names if the source has ``label``
    class_names: tuple[str, ...] | None

    def batch(self, start: int, stop: int) -> dict[str, np.ndarray]: ...

    # Optional, for content-keyed caches (``runtime.fingerprint.data_identity``):
    # ``identity() -> dict``, JSON-able, naming everything the examples depend on
    # (description, count, seed, preprocessing); equal identities, equal examples.


def iterate(source: ImageSource, batch_size: int, start: int = 0,
            stop: int | None = None) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """Yield ``(offset, batch)`` over ``[start, stop)`` in fixed-size batches
    (the last one may be short)."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    stop = source.num_examples if stop is None else min(stop, source.num_examples)
    for i in range(start, stop, batch_size):
        yield i, source.batch(i, min(i + batch_size, stop))


class Prefix:
    """The first ``n`` examples of ``source`` (an ``ImageSource`` itself)."""

    def __init__(self, source: ImageSource, n: int):
        self.inner, self.num_examples = source, min(n, source.num_examples)
        self.seg_labels = getattr(source, "seg_labels", None)
        self.class_names = getattr(source, "class_names", None)

    def identity(self) -> dict:
        from jaxdissect.runtime.fingerprint import data_identity
        return {"prefix": self.num_examples, "of": data_identity(self.inner)}

    def batch(self, start: int, stop: int) -> dict[str, np.ndarray]:
        return self.inner.batch(start, stop)


class ZSource:
    """Latent samples ``z ~ N(0, 1)`` of a generator, exactly the reference's
    ``zdataset.standard_z_sample(num_examples, z_dim, seed)``: the first
    ``num_examples * z_dim`` numbers of ``numpy.random.RandomState(seed)
    .standard_normal``, row-major ``[num_examples, z_dim]``, cast to float32
    (10,000 samples, seed 1, in the paper). Example ``i`` depends only on
    ``(seed, z_dim, i)``: the legacy generator's stream does not depend on how
    many numbers are drawn, so a longer source starts with the same rows."""

    seg_labels = None
    class_names = None

    def __init__(self, num_examples: int = 10_000, z_dim: int = 512, seed: int = 1):
        if num_examples <= 0 or z_dim <= 0:
            raise ValueError("ZSource needs positive num_examples and z_dim")
        self.num_examples, self.z_dim, self.seed = num_examples, z_dim, seed

    def identity(self) -> dict:
        """What the samples depend on (for content-keyed caches)."""
        return {"source": "z", "num_examples": self.num_examples, "z_dim": self.z_dim,
                "seed": self.seed,
                "sampler": "RandomState(seed).standard_normal, row-major [n, z_dim], float32"}

    def batch(self, start: int, stop: int) -> dict[str, np.ndarray]:
        if not 0 <= start <= stop <= self.num_examples:
            raise IndexError(f"range [{start}, {stop}) outside 0..{self.num_examples}")
        flat = standard_normal_prefix(self.seed, self.num_examples * self.z_dim)
        z = flat[start * self.z_dim:stop * self.z_dim].reshape(stop - start, self.z_dim)
        return {"z": z.copy()}


_DRAWS: dict[int, np.ndarray] = {}
_MAX_SEEDS = 4


def standard_normal_prefix(seed: int, count: int) -> np.ndarray:
    """``RandomState(seed).standard_normal(count).astype(float32)``, read-only,
    drawn once per seed and reused (random access by batch would otherwise redraw
    the whole prefix each time: the legacy stream cannot skip ahead). A longer
    request redraws and keeps the longer draw (its start is the same numbers)."""
    seed = int(seed)
    cached = _DRAWS.pop(seed, None)
    if cached is None or len(cached) < count:
        cached = np.random.RandomState(seed).standard_normal(count).astype(np.float32)
        cached.flags.writeable = False
    _DRAWS[seed] = cached  # most recently used last
    while len(_DRAWS) > _MAX_SEEDS:
        del _DRAWS[next(iter(_DRAWS))]
    return cached[:count]
