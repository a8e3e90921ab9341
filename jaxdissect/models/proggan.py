"""Progressive GAN generator in Flax with the reference's layout.

Layout (netdissect ``experiment/proggan.py``): ``sizes = [z_dim, d4, d8, d16, ...]``
gives the channel depth at each resolution. ``layer1`` maps the z vector (as a
1x1 map) to 4x4 by a 4x4 convolution with padding 3; ``layer2`` is a 3x3 conv;
then each further resolution is a pair ``(upsample x2 nearest + 3x3 conv,
3x3 conv)``; ``output_RxR`` is a 1x1 conv to RGB. Every block is
pixel norm -> conv (no bias) -> equalised-learning-rate weight scale + bias ->
LeakyReLU(0.2) (no activation on the output block). The weight scale
``gain / sqrt(in_channels)`` is a constant of the architecture (gain ``sqrt(2)/k``
for a ``k x k`` conv, 1 for the output), applied at run time as in the
reference, so parameters are the raw stored weights.

State dicts (:data:`ARCHITECTURE`, ``proggan``; ``sizes`` read from the shapes):
``layerN.conv.weight``, ``layerN.wscale.b``, ``output_RxR.conv.weight``,
``output_RxR.wscale.b``; older files name them ``features.N.*`` and ``output.*``
(:func:`rename_old_keys`).
"""

from __future__ import annotations

import functools
import itertools
import math
import re
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdissect.checkpoints.architectures import Architecture, register
from jaxdissect.checkpoints.convert import CheckpointMismatch, dim_of, torch_name_table

# Published architectures by output resolution (as in the reference).
SIZES_BY_RESOLUTION = {
    8: (512, 512, 512),
    16: (512, 512, 512, 512),
    32: (512, 512, 512, 512, 256),
    64: (512, 512, 512, 512, 256, 128),
    128: (512, 512, 512, 512, 256, 128, 64),
    256: (512, 512, 512, 512, 256, 128, 64, 32),
    1024: (512, 512, 512, 512, 512, 256, 128, 64, 32, 16),
}


def pixel_norm(x: jnp.ndarray, eps: float = 1e-8) -> jnp.ndarray:
    """Normalise each position's feature vector (last axis) to unit RMS."""
    return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + eps)


def upsample_nearest2(x: jnp.ndarray) -> jnp.ndarray:
    """``[b, h, w, c] -> [b, 2h, 2w, c]`` by nearest-neighbour repetition."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def output_resolution(sizes: Sequence[int]) -> int:
    """Output side length for ``sizes``: 4 at ``len(sizes) == 2``, doubling after."""
    return 4 * 2 ** (len(sizes) - 2)


def progan_layer_names(sizes: Sequence[int]) -> tuple[str, ...]:
    """``layer1 ... layerN, output_RxR`` with ``N = 2 * (len(sizes) - 1)``."""
    if len(sizes) < 2:
        raise ValueError(f"sizes needs at least [z_dim, depth_4x4]; got {list(sizes)}")
    r = output_resolution(sizes)
    n = 2 * (len(sizes) - 1)
    return tuple(f"layer{i}" for i in range(1, n + 1)) + (f"output_{r}x{r}",)


class WScaleConv(nn.Module):
    """Pixel norm, optional x2 upsampling, bias-free conv times ``gain/sqrt(fan_in)``,
    plus bias; NHWC. Parameters ``kernel [k, k, in, out]`` and ``bias [out]``."""

    features: int
    kernel_size: int
    padding: int
    gain: float
    upsample: bool = False
    leaky: bool = False    # LeakyReLU(0.2) after (every block but the output)

    @nn.compact
    def __call__(self, x):
        k = self.kernel_size
        kernel = self.param("kernel", nn.initializers.normal(1.0),
                            (k, k, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        x = pixel_norm(x)
        if self.upsample:
            x = upsample_nearest2(x)
        pad = ((self.padding, self.padding), (self.padding, self.padding))
        y = jax.lax.conv_general_dilated(x, kernel.astype(x.dtype), (1, 1), pad,
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        y = y * (self.gain / math.sqrt(x.shape[-1])) + bias.reshape(1, 1, 1, -1)
        return nn.leaky_relu(y, negative_slope=0.2) if self.leaky else y


class ProgressiveGenerator(nn.Module):
    """``model.apply({"params": p}, z) -> image [b, R, R, 3]``, unclamped, roughly in
    [-1, 1]. ``z``: ``[b, z_dim]`` with ``z_dim = sizes[0]``. Each research-named
    layer (``layer1`` ... ``layerN`` post-LeakyReLU, ``output_RxR``) is a submodule
    whose output is that activation, for :mod:`jaxdissect.taps`."""

    sizes: Sequence[int] = SIZES_BY_RESOLUTION[256]

    @property
    def layer_names(self) -> tuple[str, ...]:
        return progan_layer_names(self.sizes)

    @property
    def z_dim(self) -> int:
        return self.sizes[0]

    @property
    def resolution(self) -> int:
        return output_resolution(self.sizes)

    @nn.compact
    def __call__(self, z: jnp.ndarray):
        names = self.layer_names
        sizes = tuple(self.sizes)
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must be [batch, {self.z_dim}]; got shape {z.shape}")
        h = z.reshape(z.shape[0], 1, 1, z.shape[1])
        h = WScaleConv(sizes[1], 4, 3, math.sqrt(2) / 4, leaky=True, name=names[0])(h)
        h = WScaleConv(sizes[1], 3, 1, math.sqrt(2) / 3, leaky=True, name=names[1])(h)
        i = 2
        for so in sizes[2:]:
            h = WScaleConv(so, 3, 1, math.sqrt(2) / 3, upsample=True, leaky=True,
                           name=names[i])(h)
            h = WScaleConv(so, 3, 1, math.sqrt(2) / 3, leaky=True, name=names[i + 1])(h)
            i += 2
        return WScaleConv(3, 1, 0, 1.0, name=names[-1])(h)


def spec(model: ProgressiveGenerator, params, *, name: str = "proggan"):
    """A :class:`~jaxdissect.spec.ModelSpec` for a ProGAN generator: layers
    ``layer1`` ... ``output_RxR``, ``layer4`` by default, images ``(out + 1) / 2``
    unclipped as the reference segments them."""
    from jaxdissect.spec import ModelSpec, progan_images
    names = model.layer_names
    return ModelSpec.from_linen(model, params, kind="generator", name=name,
                                layers={n: n for n in names},
                                default_layer="layer4" if "layer4" in names else names[0],
                                z_dim=model.z_dim, to_images=progan_images)


def ProgressiveGeneratorFor(resolution: int):  # noqa: N802 - a class-like factory
    """The published architecture for ``resolution`` (8 ... 256, or 1024)."""
    if resolution not in SIZES_BY_RESOLUTION:
        raise ValueError(f"no published ProGAN at resolution {resolution}; "
                         f"known: {sorted(SIZES_BY_RESOLUTION)}")
    return functools.partial(ProgressiveGenerator, sizes=SIZES_BY_RESOLUTION[resolution])


# ---------------------------------------------------------------- state dicts

def rename_old_keys(state_dict) -> dict:
    """Map the older naming (``features.N.*``, ``output.*``) to ``layerN+1.*``,
    ``output_RxR.*``; other keys are kept (so the strict check reports them)."""
    if "features.0.conv.weight" not in state_dict:
        return dict(state_dict)
    out = {}
    n = 0
    while f"features.{n}.conv.weight" in state_dict:
        n += 1
    r = 4 * 2 ** ((n - 1) // 2)
    for key, v in state_dict.items():
        m = re.fullmatch(r"features\.(\d+)\.(.*)", key)
        if m:
            out[f"layer{int(m.group(1)) + 1}.{m.group(2)}"] = v
        elif key.startswith("output."):
            out[f"output_{r}x{r}." + key[len("output."):]] = v
        else:
            out[key] = v
    return out


def read_sizes(state_dict) -> tuple[int, ...]:
    """``sizes`` ``[z_dim, d4, d8, ...]`` read from a (renamed) state dict."""
    sizes = []
    for i in itertools.count():
        key = f"layer{i + 1}.conv.weight"
        if key not in state_dict:
            break
        if i == 0:
            sizes.append(dim_of(state_dict, key, 1, 4))
        if i % 2 == 0:
            sizes.append(dim_of(state_dict, key, 0, 4))
    if len(sizes) < 2:
        raise CheckpointMismatch(
            "not a ProGAN generator checkpoint: no key 'layer1.conv.weight' "
            f"(found keys like {sorted(state_dict)[:4]})")
    return tuple(sizes)


#: Flax leaf -> (the reference's leaf name, transform)
LEAVES = {"kernel": ("conv.weight", "conv"), "bias": ("wscale.b", "copy")}

ARCHITECTURE = register(Architecture(
    name="proggan", what="Progressive GAN generator (the reference's names)",
    build=lambda config: ProgressiveGenerator(sizes=tuple(config["sizes"])),
    signatures=(("layer1.conv.weight", "layer1.wscale.b"), ("features.0.conv.weight",)),
    normalise=rename_old_keys, read_config=lambda sd: {"sizes": read_sizes(sd)},
    table=lambda sd, config, shapes: torch_name_table(shapes, leaves=LEAVES),
    example_input=lambda config: (1, config["sizes"][0]),
    spec=lambda model, variables, *, name, class_names=None: spec(model, variables,
                                                                  name=name),
    tree="params"))
