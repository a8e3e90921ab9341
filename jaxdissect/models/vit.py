"""Vision Transformer in the torchvision layout (``torchvision.models.vit_b_16`` ...).

Layout: ``conv_proj`` (patch x patch convolution, stride patch) turns a 224x224 image
into a 14x14 grid of 768-d patch tokens (ViT-B/16); the learnt ``class_token`` is put
first, ``encoder.pos_embedding`` added, then ``encoder.layers.encoder_layer_0`` ..
``_11`` (pre-norm blocks: ``ln_1`` -> multi-head ``self_attention`` -> residual,
``ln_2`` -> ``mlp`` (``0`` linear, exact GELU, ``3`` linear) -> residual),
``encoder.ln``, and ``heads.head`` on the class token. LayerNorm epsilon 1e-6. The
parameter tree mirrors the state dict (``encoder/layers/encoder_layer_3/mlp/0/weight``);
linear weights stay ``[out, in]`` as PyTorch stores them, ``in_proj_weight`` is
``[3 * hidden, hidden]`` (query, key, value rows).

Research layers, with their module paths:

* ``encoder_layer_0`` .. ``encoder_layer_{depth-1}``
  (``encoder/layers/encoder_layer_i``) and ``ln`` (``encoder/ln``): tokens
  ``[b, 1 + grid*grid, hidden]``, the class token first. Dissected as a spatial map:
  :func:`tokens_to_map` drops the class token and lays the patch tokens on their grid,
  ``[b, 14, 14, 768]``.
* ``head`` (``heads/head``): logits ``[b, num_classes]``.

State dicts (:data:`ARCHITECTURE`, ``vit``; patch, width, depth, MLP width, classes and
image size read from the shapes, heads from the width, :data:`HEADS`): torchvision's
names (and its older ``mlp.linear_1``/``linear_2``), and timm's class-token ViTs
(``patch_embed.proj``, ``cls_token``, ``pos_embed``, ``blocks.i.norm1``/``attn.qkv``/
``attn.proj``/``norm2``/``mlp.fc1``/``mlp.fc2``, ``norm``, ``head``: the same network,
renamed by :func:`normalise_state_dict`), from ``.pth`` or ``.safetensors``.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdissect.checkpoints.architectures import Architecture, register
from jaxdissect.checkpoints.convert import CheckpointMismatch, dim_of, rename_keys
from jaxdissect.models.vgg16 import LinearOI

LN_EPS = 1e-6


def layer_norm(name: str) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=LN_EPS, name=name)


class SelfAttention(nn.Module):
    """PyTorch ``nn.MultiheadAttention(hidden, heads, batch_first=True)`` on ``x`` as
    query, key and value: ``[b, n, hidden] -> [b, n, hidden]``."""

    heads: int

    @nn.compact
    def __call__(self, x):
        b, n, d = x.shape
        if d % self.heads:
            raise ValueError(f"hidden size {d} is not divisible by {self.heads} heads")
        w = self.param("in_proj_weight", nn.initializers.lecun_normal(in_axis=1, out_axis=0),
                       (3 * d, d))
        bias = self.param("in_proj_bias", nn.initializers.zeros, (3 * d,))
        qkv = jnp.einsum("bnd,ed->bne", x, w.astype(x.dtype)) + bias.reshape(1, 1, 3 * d)
        q, k, v = (t.reshape(b, n, self.heads, d // self.heads)
                   for t in jnp.split(qkv, 3, axis=-1))
        logits = jnp.einsum("bqhc,bkhc->bhqk", q, k) / jnp.sqrt(d // self.heads).astype(x.dtype)
        out = jnp.einsum("bhqk,bkhc->bqhc", jax.nn.softmax(logits, axis=-1), v)
        return LinearOI(d, name="out_proj")(out.reshape(b, n, d))


class MLP(nn.Module):
    """``0`` linear -> exact GELU -> ``3`` linear (torchvision's ``MLPBlock`` indices)."""

    mlp_dim: int

    @nn.compact
    def __call__(self, x):
        h = nn.gelu(LinearOI(self.mlp_dim, name="0")(x), approximate=False)
        return LinearOI(x.shape[-1], name="3")(h)


class EncoderBlock(nn.Module):
    """Pre-norm transformer block: ``[b, n, hidden] -> [b, n, hidden]``."""

    heads: int
    mlp_dim: int

    @nn.compact
    def __call__(self, x):
        x = x + SelfAttention(self.heads, name="self_attention")(layer_norm("ln_1")(x))
        return x + MLP(self.mlp_dim, name="mlp")(layer_norm("ln_2")(x))


class Layers(nn.Module):
    """``encoder_layer_0`` .. ``encoder_layer_{depth-1}`` in sequence."""

    depth: int
    heads: int
    mlp_dim: int

    @nn.compact
    def __call__(self, x):
        for i in range(self.depth):
            x = EncoderBlock(self.heads, self.mlp_dim, name=f"encoder_layer_{i}")(x)
        return x


class Encoder(nn.Module):
    """Adds ``pos_embedding`` ``[1, n, hidden]``, runs ``layers``, then ``ln``."""

    depth: int
    heads: int
    mlp_dim: int

    @nn.compact
    def __call__(self, x):
        pos = self.param("pos_embedding", nn.initializers.normal(0.02), (1,) + x.shape[1:])
        x = x + pos.astype(x.dtype)
        x = Layers(self.depth, self.heads, self.mlp_dim, name="layers")(x)
        return layer_norm("ln")(x)


class Heads(nn.Module):
    """``head``: the classifier on the class token, ``[b, hidden] -> [b, classes]``."""

    num_classes: int

    @nn.compact
    def __call__(self, x):
        return LinearOI(self.num_classes, name="head")(x)


class ViT(nn.Module):
    """``model.apply({"params": p}, x)``: ``x [b, image, image, 3]`` ImageNet-normalised
    -> logits ``[b, num_classes]``. Defaults are ViT-B/16."""

    patch: int = 16
    hidden: int = 768
    depth: int = 12
    heads: int = 12
    mlp_dim: int = 3072
    num_classes: int = 1000
    image_size: int = 224

    @nn.compact
    def __call__(self, x):
        if x.shape[1:3] != (self.image_size, self.image_size):
            raise ValueError(f"this ViT takes {self.image_size}x{self.image_size} images "
                             f"(its position embedding is fixed), got {x.shape[1:3]}")
        x = nn.Conv(self.hidden, (self.patch, self.patch), strides=self.patch,
                    padding="VALID", name="conv_proj")(x)
        b = x.shape[0]
        x = x.reshape(b, -1, self.hidden)  # row-major patches, as torchvision's flatten(2)
        cls = self.param("class_token", nn.initializers.zeros, (1, 1, self.hidden))
        x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (b, 1, self.hidden)), x],
                            axis=1)
        x = Encoder(self.depth, self.heads, self.mlp_dim, name="encoder")(x)
        return Heads(self.num_classes, name="heads")(x[:, 0])

    @property
    def grid(self) -> int:
        return self.image_size // self.patch

    @property
    def layer_paths(self) -> dict[str, str]:
        """Research name -> module path, input first."""
        paths = {f"encoder_layer_{i}": f"encoder/layers/encoder_layer_{i}"
                 for i in range(self.depth)}
        return {**paths, "ln": "encoder/ln", "head": "heads/head"}


ViT_B_16 = functools.partial(ViT, patch=16, hidden=768, depth=12, heads=12, mlp_dim=3072)
ViT_B_32 = functools.partial(ViT, patch=32, hidden=768, depth=12, heads=12, mlp_dim=3072)
ViT_L_16 = functools.partial(ViT, patch=16, hidden=1024, depth=24, heads=16, mlp_dim=4096)


def tokens_to_map(tokens, grid: int):
    """``[b, 1 + grid*grid, c]`` tokens -> ``[b, grid, grid, c]`` patch map (the class
    token, which belongs to no position, is dropped)."""
    b, n, c = tokens.shape
    if n != 1 + grid * grid:
        raise ValueError(f"expected 1 + {grid}x{grid} tokens, got {n}")
    return tokens[:, 1:].reshape(b, grid, grid, c)


def spec(model: ViT, variables, *, name: str = "vit", class_names=None,
         resize: str = "resize-crop", upsample: str = "plain"):
    """A :class:`~jaxdissect.spec.ModelSpec` for a ViT: ``encoder_layer_i`` and ``ln``
    dissected as their patch-token grid (:func:`tokens_to_map`, class token dropped),
    the last encoder layer by default; ``head`` one value per image (a 1x1 map).
    ImageNet normalisation (torchvision's). Plain upsampling puts each token at its
    patch's centre, which is where the ``patch x patch`` geometry puts it too."""
    from jaxdissect.models.vgg16 import preprocess
    from jaxdissect.spec import ModelSpec
    paths = model.layer_paths
    tokens = [n for n in paths if n != "head"]
    patch = ((model.patch, model.patch, 0),)
    return ModelSpec.from_linen(
        model, variables, kind="classifier", name=name, layers=paths,
        default_layer=f"encoder_layer_{model.depth - 1}",
        input_size=(model.image_size, model.image_size), preprocess=preprocess,
        resize=resize, class_names=None if class_names is None else tuple(class_names),
        geometry={**{n: patch for n in tokens}, "head": patch + ((model.grid, 1, 0),)},
        upsample=upsample,
        to_map={n: functools.partial(tokens_to_map, grid=model.grid) for n in tokens})


# ---------------------------------------------------------------- state dicts

#: widths -> attention heads (not recorded in the weights): torchvision's ViT-B/L/H and
#: timm's tiny and small (64-wide heads, but ViT-H's are 80 wide)
HEADS = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16}

#: timm's names (and torchvision < 0.13's MLP names) -> torchvision's, in order
RENAMES = (
    (r"^cls_token$", "class_token"),
    (r"^pos_embed$", "encoder.pos_embedding"),
    (r"^patch_embed\.proj\.", "conv_proj."),
    (r"^blocks\.(\d+)\.", r"encoder.layers.encoder_layer_\1."),
    (r"\.norm1\.", ".ln_1."),
    (r"\.norm2\.", ".ln_2."),
    (r"\.attn\.qkv\.(weight|bias)$", r".self_attention.in_proj_\1"),
    (r"\.attn\.proj\.", ".self_attention.out_proj."),
    (r"\.mlp\.(fc1|linear_1)\.", ".mlp.0."),
    (r"\.mlp\.(fc2|linear_2)\.", ".mlp.3."),
    (r"^norm\.", "encoder.ln."),
    (r"^head\.", "heads.head."),
)


def normalise_state_dict(state_dict) -> dict:
    """timm's and older torchvision names -> torchvision's (:data:`RENAMES`)."""
    return rename_keys(state_dict, RENAMES)


def read_config(state_dict) -> dict:
    """``ViT`` constructor arguments read from a state dict in torchvision's names."""
    for key in ("conv_proj.weight", "encoder.pos_embedding", "heads.head.weight",
                "encoder.layers.encoder_layer_0.mlp.0.weight"):
        if key not in state_dict:
            raise CheckpointMismatch(f"not a torchvision or timm ViT checkpoint: no key "
                                     f"{key!r} (found keys like {sorted(state_dict)[:4]})")
    hidden = dim_of(state_dict, "conv_proj.weight", 0, 4)
    patch = dim_of(state_dict, "conv_proj.weight", 2, 4)
    depth = 0
    while f"encoder.layers.encoder_layer_{depth}.ln_1.weight" in state_dict:
        depth += 1
    tokens = dim_of(state_dict, "encoder.pos_embedding", 1, 3)
    grid = round((tokens - 1) ** 0.5)
    if grid * grid + 1 != tokens:
        raise CheckpointMismatch(f"encoder.pos_embedding has {tokens} tokens, not 1 + a "
                                 f"square grid")
    if hidden not in HEADS:
        raise CheckpointMismatch(f"ViT width {hidden}: the number of attention heads is not "
                                 f"in the weights and is known only for the widths "
                                 f"{sorted(HEADS)}")
    return dict(patch=patch, hidden=hidden, depth=depth, heads=HEADS[hidden],
                mlp_dim=dim_of(state_dict, "encoder.layers.encoder_layer_0.mlp.0.weight", 0, 2),
                num_classes=dim_of(state_dict, "heads.head.weight", 0, 2),
                image_size=grid * patch)


ARCHITECTURE = register(Architecture(
    name="vit", what="Vision Transformer (torchvision's or timm's class-token ViT names)",
    build=lambda config: ViT(**config),
    signatures=(("conv_proj.weight", "encoder.pos_embedding"),
                ("patch_embed.proj.weight", "pos_embed", "blocks.0.attn.qkv.weight")),
    normalise=normalise_state_dict, read_config=read_config,
    example_input=lambda config: (1, config["image_size"], config["image_size"], 3),
    spec=lambda model, variables, *, name, class_names=None: spec(
        model, variables, name=name, class_names=class_names)))
