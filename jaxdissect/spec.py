"""``ModelSpec``: everything an experiment needs to know about a model, in one record.

Every experiment and command takes a spec; a model from any codebase becomes
dissectable, ablatable and editable by writing one::

    spec = ModelSpec.from_linen(MyCNN(), variables, kind="classifier",
                                layers={"conv3": "Conv_2"}, input_size=(64, 64),
                                class_names=("cat", "dog"))
    logits, acts = spec.run(spec.params, images01, capture=("conv3",))

A ``torch.nn.Module`` becomes a spec the same way, run as a JAX function
(:mod:`jaxdissect.torch_bridge`; layers are torch module names)::

    spec = ModelSpec.from_torch(torchvision.models.resnet18(), kind="classifier",
                                input_size=(224, 224), layers={"layer4": "layer4"})

* ``run(params, inputs, capture=, edits=, feed=)`` takes what the data gives:
  images ``[b, H, W, 3]`` in [0, 1] for a classifier (``preprocess`` is applied
  inside), latents ``[b, z_dim]`` for a generator; layers by research name
  (``layers`` maps it to a module path) or by module path (see :mod:`jaxdissect.taps`).
* ``maps(layer, acts)``: the layer's activation as ``[b, h, w, units]`` for
  dissection: ``to_map[layer]`` if given (a ViT's patch tokens), NHWC as is, and a
  fully connected ``[b, units]`` layer as a 1x1 map (one value per image: a unit is
  "on" over the whole image where its value passes the threshold).
* ``images(out)``: a generator's output as images in [0, 1] for the segmenter. The
  reference segments ProGAN's ``(out + 1) / 2`` unclipped (the default here).
* ``fingerprint``: a hash of the weight bytes, computed once; caches are keyed by it.
* ``upsample``: ``"plain"`` (stretch the map over the image, the reference's choice
  for VGG-16 and generators) or ``"receptive-field"`` (``geometry[layer]``, the
  ``(kernel, stride, padding)`` chain from the input, as the reference does for
  AlexNet).
* ``resize``: how an image of another size reaches ``input_size``: ``"stretch"`` (the
  whole image, for models trained on whole images such as the world's) or
  ``"resize-crop"`` (resize to ``input_size * 256/224``, centre crop: the Places365
  transform). The commands' data loading applies it to every image source
  (:func:`jaxdissect.data.resize.at_input_size`).
* ``single_unit_tail(spec, layer)``: an architecture's fast path for the ablation sweep
  (optional): ``(params, acts) -> [units, b, classes]``, the logits with each single
  unit of ``layer`` zeroed, or None where it has none (VGG-16 at ``conv5_3``:
  :func:`jaxdissect.models.vgg16.single_unit_tail`).
* ``from_linen`` / ``from_nnx`` take ``apply_kwargs`` (``{"train": False}``) and
  ``output`` (a dict key, tuple index or function picking the logits or images);
  ``from_nnx`` runs an eval-mode copy of the model (see ``docs/flax_models.md``).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping, Sequence

KINDS = ("classifier", "generator")
UPSAMPLE = ("plain", "receptive-field")
RESIZE = ("stretch", "resize-crop")


def _identity(x):
    return x


def progan_images(out):
    """ProGAN output (about [-1, 1]) -> images, ``(out + 1) / 2`` unclipped as the
    reference segments them."""
    return (out + 1.0) * 0.5


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(x, mean, std):
    """``(x - mean) / std`` over the last (channel) axis."""
    import jax.numpy as jnp
    shape = (1,) * (x.ndim - 1) + (-1,)
    return ((x - jnp.asarray(mean, x.dtype).reshape(shape))
            / jnp.asarray(std, x.dtype).reshape(shape))


def nchw_images(out):
    """A torch generator's NCHW output (about [-1, 1]) -> NHWC images, unclipped."""
    import jax.numpy as jnp
    return progan_images(jnp.transpose(out, (0, 2, 3, 1)))


@dataclasses.dataclass(frozen=True, eq=False)
class ModelSpec:
    """A model and how experiments use it (see the module docstring)."""

    call: Callable[..., Any]      # call(params, x, capture=, edits=, feed=) -> (out, acts)
    params: Any
    kind: str
    name: str = "model"
    layers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    default_layer: str | None = None
    input_size: tuple[int, int] | None = None
    z_dim: int | None = None
    preprocess: Callable[[Any], Any] = _identity
    resize: str = "stretch"
    class_names: tuple[str, ...] | None = None
    geometry: Mapping[str, Sequence[tuple[int, int, int]]] = dataclasses.field(
        default_factory=dict)
    upsample: str = "plain"
    to_images: Callable[[Any], Any] = progan_images
    to_map: Mapping[str, Callable[[Any], Any]] = dataclasses.field(default_factory=dict)
    module: Any = None            # the Flax module (NNX graphdef, torch module), for reference
    single_unit_tail: Callable[..., Any] | None = None  # (spec, layer) -> fast path or None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.upsample not in UPSAMPLE:
            raise ValueError(f"upsample must be one of {UPSAMPLE}, got {self.upsample!r}")
        if self.resize not in RESIZE:
            raise ValueError(f"resize must be one of {RESIZE}, got {self.resize!r}")
        if self.kind == "classifier" and self.input_size is None:
            raise ValueError(f"classifier {self.name!r} needs input_size=(H, W)")
        if self.kind == "generator" and self.z_dim is None:
            raise ValueError(f"generator {self.name!r} needs z_dim")
        if self.default_layer is not None and self.default_layer not in self.layers:
            raise ValueError(f"default_layer {self.default_layer!r} is not among the "
                             f"layers {list(self.layers)}")

    # ------------------------------------------------------------ builders

    @classmethod
    def from_linen(cls, module, variables, *, apply_kwargs: Mapping[str, Any] | None = None,
                   output=None, **fields) -> "ModelSpec":
        """A spec for a ``flax.linen`` module. ``variables``: what ``module.apply``
        takes (``{"params": ..., "batch_stats": ...}``), or a bare params tree.
        ``apply_kwargs``: further arguments of every call (``{"train": False}``);
        ``output``: which part of a dict / tuple return is the logits (classifier) or
        the images (generator): a key, an index or a function of the return value."""
        if not (isinstance(variables, Mapping) and "params" in variables):
            variables = {"params": variables}
        from jaxdissect import taps
        from jaxdissect.model_call import call_kwargs, output_selector

        aliases = dict(fields.get("layers", {}))
        kwargs, select = call_kwargs(apply_kwargs), output_selector(output)

        def call(params, x, capture=(), edits=None, feed=None):
            out, acts = taps.run(module.apply, params, x, capture=capture, edits=edits,
                                 feed=feed, aliases=aliases, **kwargs)
            return select(out), acts

        return cls(call=call, params=variables, module=module, **fields)

    @classmethod
    def from_nnx(cls, model, *, apply_kwargs: Mapping[str, Any] | None = None, output=None,
                 eval_mode: bool = True, **fields) -> "ModelSpec":
        """A spec for a ``flax.nnx`` module (split into graph and state; the state is
        ``params``, so weights stay an argument of compiled steps). The spec runs a
        copy of ``model`` in eval mode (``.eval()``: BatchNorm on its running
        statistics, Dropout off; ``model`` itself is left as it was) unless
        ``eval_mode=False``. ``apply_kwargs`` and ``output`` as for ``from_linen``."""
        from jaxdissect import taps
        from jaxdissect.model_call import call_kwargs, nnx_eval_split, output_selector
        graphdef, state = nnx_eval_split(model, eval_mode)
        aliases = dict(fields.get("layers", {}))
        kwargs, select = call_kwargs(apply_kwargs), output_selector(output)

        def call(params, x, capture=(), edits=None, feed=None):
            from flax import nnx
            m = nnx.merge(graphdef, params)
            out, acts = taps.run(m, x, capture=capture, edits=edits, feed=feed, module=m,
                                 aliases=aliases, **kwargs)
            return select(out), acts

        return cls(call=call, params=state, module=graphdef, **fields)

    @classmethod
    def from_torch(cls, module, *, layouts=None, output=None, mean=IMAGENET_MEAN,
                   std=IMAGENET_STD, **fields) -> "ModelSpec":
        """A spec for a ``torch.nn.Module``, run as a JAX function in eval mode
        (:mod:`jaxdissect.torch_bridge`); ``params`` are its parameters and buffers by
        state-dict name. Layers are torch module names (``layer4``, ``blocks.5``) or
        research names mapped to them in ``layers``; ``layouts``: a layer's layout where
        the shape does not tell it (``"nchw"``, ``"nhwc"``, ``"tokens"``, ...);
        ``output``: a key, index or function picking the logits from ``forward``'s return.
        A classifier takes NHWC images in [0, 1], normalised by ``mean`` / ``std`` (or
        ``preprocess=``) and given to the module as NCHW; a generator's NCHW output in
        about [-1, 1] becomes NHWC images in [0, 1] (or ``to_images=``)."""
        from jaxdissect import torch_bridge
        kind = fields.get("kind")
        fields.setdefault("name", type(module).__name__)
        if kind == "classifier":
            fields.setdefault("preprocess", functools.partial(normalize, mean=tuple(mean),
                                                              std=tuple(std)))
        else:
            fields.setdefault("to_images", nchw_images)
        call = torch_bridge.torch_call(module, aliases=fields.get("layers"), layouts=layouts,
                                       image_input=kind == "classifier", output=output)
        fields.setdefault("to_map", torch_bridge.TorchMaps(
            fields.get("input_size") if kind == "classifier" else None,
            torch_bridge.prefix_tokens(module), layouts, fields.get("layers")))
        return cls(call=call, params=torch_bridge.torch_params(module), module=module,
                   **fields)

    # ------------------------------------------------------------- running

    def check_layer(self, layer: str) -> None:
        """A clear error for a layer that is neither a research name nor a module path
        that runs in a forward pass."""
        if layer in self.layers:
            return
        paths = self.module_paths()
        if layer not in paths:
            raise KeyError(f"{self.name} has no layer {layer!r}; layers: {list(self.layers)}; "
                           f"module paths: {paths}")

    def run(self, params, inputs, capture=(), edits=None, feed=None):
        """``(out, acts)`` for data ``inputs`` (images in [0, 1], or latents), with
        taps at research names or module paths; ``acts`` keyed as asked."""
        x = self.preprocess(inputs) if self.kind == "classifier" else inputs
        return self.call(params, x, capture=capture, edits=edits, feed=feed)

    def resume(self, params, layer: str, acts, edits=None):
        """The model's output when ``layer`` outputs ``acts`` (``[b, ...]``), with
        ``edits`` applied (at ``layer`` or later): the layers before ``layer`` get a
        placeholder input and, under ``jit``, are compiled away (``feed``)."""
        placeholder = self.example_input_raw(acts.shape[0], acts.dtype)
        return self.run(params, placeholder, edits=edits, feed={layer: acts})[0]

    def activations(self, params, inputs, layer: str):
        """``layer``'s activation for ``inputs`` (as the model returns it)."""
        return self.run(params, inputs, capture=(layer,))[1][layer]

    def maps(self, layer: str, acts):
        """``acts`` of ``layer`` as ``[b, h, w, units]`` for dissection."""
        if layer in self.to_map:
            return self.to_map[layer](acts)
        if acts.ndim == 4:
            return acts
        if acts.ndim == 2:
            return acts[:, None, None, :]
        raise ValueError(f"layer {layer!r} gives activations of shape {acts.shape}; give the "
                         "spec a to_map for it (e.g. tokens -> [b, h, w, units])")

    def images(self, out):
        """A generator's output as images in [0, 1] (the segmenter's input)."""
        return self.to_images(out)

    @functools.cached_property
    def num_classes(self) -> int:
        """A classifier's number of outputs (``len(class_names)``, else traced)."""
        if self.class_names is not None:
            return len(self.class_names)
        import jax
        return int(jax.eval_shape(lambda p, x: self.run(p, x)[0], self.params,
                                  self.example_input_raw()).shape[-1])

    @property
    def layer_names(self) -> tuple[str, ...]:
        return tuple(self.layers)

    def module_paths(self) -> list[str]:
        """Every module path a forward pass calls (linen), or every submodule's path
        (NNX), for discovering layers."""
        from flax import linen as nn

        from jaxdissect import taps
        if hasattr(self.module, "named_modules"):       # a torch module
            return [n for n, _ in self.module.named_modules() if n]
        from jaxdissect.model_call import nnx_module_paths
        if not isinstance(self.module, nn.Module):
            return nnx_module_paths(self.module, self.params) or list(self.layers.values())
        return taps.module_paths(lambda p, x: self.call(p, x)[0], self.params,
                                 self.example_input())

    def example_input_raw(self, batch: int = 1, dtype="float32"):
        """Zeros shaped like the data ``run`` takes: images or latents."""
        import jax.numpy as jnp
        if self.kind == "classifier":
            return jnp.zeros((batch, *self.input_size, 3), dtype)
        return jnp.zeros((batch, self.z_dim), dtype)

    def example_input(self):
        """Zeros shaped like the model's own input (after ``preprocess``)."""
        x = self.example_input_raw()
        return self.preprocess(x) if self.kind == "classifier" else x

    def upsampler(self, layer: str, act_hw, seg_hw, image_hw=None, mode: str | None = None):
        """The upsampler from ``layer``'s grid to the segmentation grid."""
        from jaxdissect.stats.upsample import Upsampler
        mode = mode or self.upsample
        if mode not in UPSAMPLE:
            raise ValueError(f"upsample must be one of {UPSAMPLE}, got {mode!r}")
        if mode == "receptive-field":
            if layer not in self.geometry:
                raise ValueError(f"{self.name} gives no receptive-field geometry for layer "
                                 f"{layer!r}; use plain upsampling")
            return Upsampler.for_layers(list(self.geometry[layer]),
                                        tuple(image_hw or self.input_size), tuple(seg_hw),
                                        data_shape=tuple(act_hw))
        return Upsampler.plain(tuple(act_hw), tuple(seg_hw))

    @functools.cached_property
    def fingerprint(self) -> str:
        """SHA-256 of every weight's path, dtype, shape and bytes (computed once)."""
        from jaxdissect.runtime.fingerprint import fingerprint
        return fingerprint(self.params)

    def replace(self, **changes) -> "ModelSpec":
        return dataclasses.replace(self, **changes)

