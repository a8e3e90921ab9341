"""The world generator: a small ProgressiveGAN trained on the world's village scenes
(houses with doors and windows, trees, grass, sky), as the paper's ProGANs are each
trained on one LSUN class.

Shipped in ``weights/world/generator/``: ``config.json`` (architecture, training
hyper-parameters and what the run did) and ``params/`` (an orbax checkpoint of
the exponential-moving-average generator weights). Trained by
``scripts/train_world_generator.py``; measured by ``scripts/measure_world_generator.py``.

``layer4`` is the 8x8 layer dissected in the paper's generator experiments.
"""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxdissect.data.source import ZSource
from jaxdissect.models.proggan import ProgressiveGenerator
from jaxdissect.world.weights import WEIGHTS_DIR, load_params, read_config

#: ``[z_dim, 4x4 depth, 8x8 depth (layer3, layer4), 16x16 depth, 32x32 depth]``
WORLD_GENERATOR_SIZES = (128, 128, 128, 32, 16)

#: the world generator's architecture: 32x32 output, 128 units at layer4 (8x8)
WorldGenerator = functools.partial(ProgressiveGenerator, sizes=WORLD_GENERATOR_SIZES)

DEFAULT_DIR = WEIGHTS_DIR / "generator"


def load_generator(directory: str | Path | None = None):
    """Return ``(model, params)`` of the generator saved in ``directory``
    (default: the shipped ``weights/world/generator``).

    ``model.apply({"params": params}, z [b, z_dim])`` gives images ``[b, R, R, 3]``
    roughly in [-1, 1]; ``generate`` maps them to [0, 1].
    """
    config = read_config(DEFAULT_DIR if directory is None else directory)
    model = ProgressiveGenerator(sizes=tuple(config["sizes"]))
    abstract = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, model.z_dim)))["params"])
    return model, load_params(DEFAULT_DIR if directory is None else directory, abstract)


def to_images(out):
    """Output -> images in [0, 1], clipped: the world segmenter's colour rule names
    colours of pixels in [0, 1] (the reference segments ProGAN output unclipped)."""
    return jnp.clip((out + 1.0) * 0.5, 0.0, 1.0)


def spec(directory: str | Path | None = None):
    """The world generator as a :class:`~jaxdissect.spec.ModelSpec` (``layer4``, 8x8)."""
    from jaxdissect.models import proggan
    model, params = load_generator(directory)
    return proggan.spec(model, params, name="world-generator" if directory is None
                        else str(directory)).replace(to_images=to_images)


@functools.partial(jax.jit, static_argnums=0)
def _generate(model, params, z):
    return to_images(model.apply({"params": params}, z))


def generate(model, params, z) -> jax.Array:
    """``z [b, z_dim]`` -> images ``[b, R, R, 3]`` float32 in [0, 1] (output mapped from
    [-1, 1] and clipped, as the reference does before segmenting)."""
    z = jnp.asarray(z, jnp.float32)
    if z.ndim != 2 or z.shape[1] != model.z_dim:
        raise ValueError(f"z must be [batch, {model.z_dim}], got shape {z.shape}")
    return _generate(model, params, z)


def sample_z(model, num: int, seed: int = 1, start: int = 0) -> np.ndarray:
    """Latents ``[num, z_dim]``: examples ``start .. start+num`` of ``ZSource(seed)``."""
    return ZSource(start + num, model.z_dim, seed).batch(start, start + num)["z"]
