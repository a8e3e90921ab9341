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


class ZSource:
    """Latent samples ``z ~ N(0, 1)`` of a generator, deterministic per index:
    example ``i`` depends only on ``(seed, i)``, as in the reference's z dataset
    (10,000 samples, seed 1, in the paper)."""

    seg_labels = None
    class_names = None

    def __init__(self, num_examples: int = 10_000, z_dim: int = 512, seed: int = 1):
        if num_examples <= 0 or z_dim <= 0:
            raise ValueError("ZSource needs positive num_examples and z_dim")
        self.num_examples, self.z_dim, self.seed = num_examples, z_dim, seed

    def identity(self) -> dict:
        """What the samples depend on (for content-keyed caches)."""
        return {"source": "z", "num_examples": self.num_examples, "z_dim": self.z_dim,
                "seed": self.seed, "sampler": "default_rng([seed, i]).standard_normal"}

    def batch(self, start: int, stop: int) -> dict[str, np.ndarray]:
        if not 0 <= start <= stop <= self.num_examples:
            raise IndexError(f"range [{start}, {stop}) outside 0..{self.num_examples}")
        z = np.stack([np.random.default_rng([self.seed, i]).standard_normal(self.z_dim)
                      for i in range(start, stop)]) if stop > start else \
            np.zeros((0, self.z_dim))
        return {"z": z.astype(np.float32)}
