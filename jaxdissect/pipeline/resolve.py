"""Names to objects: models, data and segmenters from their spec strings, and the
defaults that depend on the model.

Model specs (each loads a :class:`~jaxdissect.spec.ModelSpec`): ``world`` /
``world-classifier`` / ``world-generator`` (the shipped world weights),
``py:module:factory`` (your own model: ``factory()`` returns a ``ModelSpec``, or a
torch image classifier), ``torchvision:NAME`` / ``timm:NAME`` (published weights,
``--weights random`` or ``--weights FILE`` for a local state dict), a
registry name (``vgg16_places365``, ``proggan_churchoutdoor`` ... fetched and converted
on first use), a local ``.pth`` or ``.safetensors`` file (converted safely, without
torch; its architecture read from its keys), or a directory
(a converted checkpoint with ``model.json``, or a world-style checkpoint with
``config.json`` + ``params/``).

Data specs: ``world`` (the synthetic world; ground-truth segmentation), a folder in
the reference's Places layout (``root/<class>/*.jpg``), ``tfds:places365_small``
(needs tensorflow-datasets), ``broden:DIR`` (the Broden layout), or ``z`` (latent
samples for generators).

Segmenter specs: ``truth`` (the data's ground truth; the world has it), ``broden``
(Broden's annotation), ``world`` (the shipped world segmenter), a reference segmenter
name such as ``netpqc``, or ``py:module:name`` (your own ``Segmenter`` object or class).

Bad names raise :class:`jaxdissect.errors.UserError`. JAX is imported inside the
functions that use it.
"""

from __future__ import annotations

import os

import numpy as np

from jaxdissect.data.source import Prefix
from jaxdissect.errors import UserError

#: world seeds: training images of the shipped classifier use seed 1, its held-out
#: evaluation seed 2; experiments read seeds 3 (rank / "train") and 4 (val).
WORLD_TRAIN_SEED, WORLD_VAL_SEED = 3, 4
#: the z seed of generator dissections (the paper's)
Z_SEED = 1


def load_model(spec: str, weights: str | None = None):
    """A :class:`~jaxdissect.spec.ModelSpec` from a model spec (see the module docstring);
    ``weights`` (``random`` or a state-dict file) for ``torchvision:`` / ``timm:`` models."""
    from jaxdissect.models import torch_zoo
    if torch_zoo.is_zoo_name(spec):
        try:
            return torch_zoo.load(spec, weights)
        except (ValueError, ImportError) as e:
            raise UserError(f"model {spec!r}: {e}") from None
    if weights is not None:
        raise UserError("--weights applies to torchvision:NAME and timm:NAME models")
    if spec in ("world", "world-classifier"):
        from jaxdissect.world import classifier
        return classifier.spec()
    if spec == "world-generator":
        from jaxdissect.world import generator
        return generator.spec()
    if spec.startswith("py:"):
        return _user_spec(spec)
    from jaxdissect.checkpoints.architectures import spec_from_converted
    from jaxdissect.checkpoints.files import is_weights_file, spec_from_file
    if is_weights_file(spec):
        return spec_from_file(spec)
    if os.path.isdir(spec):
        if os.path.isfile(os.path.join(spec, "model.json")):
            from jaxdissect.checkpoints.store import load_converted
            model, params, meta = load_converted(spec)
            return spec_from_converted(meta["arch"], model, params, spec)
        if os.path.isfile(os.path.join(spec, "config.json")):
            import json
            with open(os.path.join(spec, "config.json")) as f:
                config = json.load(f)
            if "sizes" in config:
                from jaxdissect.world import generator
                return generator.spec(spec)
            from jaxdissect.world import classifier
            return classifier.spec(spec)
        raise UserError(f"{spec!r} is a directory without model.json or config.json")
    from jaxdissect.checkpoints.registry import load_pretrained, load_registry
    names = load_registry()["checkpoints"]
    if spec not in names:
        raise UserError(f"unknown model {spec!r}: use world, world-classifier, "
                        f"world-generator, py:MODULE:FACTORY, a .pth or .safetensors "
                        f"file, a checkpoint directory or one of "
                        f"{sorted(n for n, e in names.items() if e.get('arch'))}")
    model, params = load_pretrained(spec)
    return spec_from_converted(names[spec]["arch"], model, params, spec)


def model_record(spec: str, weights: str | None = None) -> dict:
    """``{"model_spec": ..., "model_weights": ...}``: the model as a results folder
    records it, so that ``load_model(model_spec, model_weights)`` loads the same model
    from any folder (``jaxdissect serve``): a local file or folder, and a ``--weights``
    file, as absolute paths; names, ``py:`` specs and ``random`` as given."""
    from jaxdissect.models import torch_zoo
    if not (torch_zoo.is_zoo_name(spec) or spec.startswith("py:") or spec in (
            "world", "world-classifier", "world-generator")) and os.path.exists(spec):
        spec = os.path.abspath(spec)
    if weights not in (None, "random"):
        weights = os.path.abspath(weights)
    return {"model_spec": spec, "model_weights": weights}


def _user_spec(text: str):
    """``py:module:factory``: ``factory()`` (or the object itself) must be a ModelSpec."""
    from jaxdissect.spec import ModelSpec
    from jaxdissect.user_models import load_object
    obj = load_object(text, "model", call=lambda o: callable(o) and not isinstance(
        o, ModelSpec) and not _is_torch_module(o))
    if _is_torch_module(obj):
        from jaxdissect.models import torch_zoo
        obj = torch_zoo.spec_for_module(obj, name=text)
    if not isinstance(obj, ModelSpec):
        raise UserError(f"model {text!r} gave a {type(obj).__name__}, not a "
                        "jaxdissect.spec.ModelSpec")
    return obj


def _is_torch_module(obj) -> bool:
    import sys
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def load_data(spec: str, model, num: int | None, seed: int, split: str = "val",
              skip_bad: bool = False):
    """An ``ImageSource`` for the :class:`~jaxdissect.spec.ModelSpec` ``model``, its
    images at the model's input size (``data.resize.at_input_size``; ``skip_bad``:
    leave out a folder's unreadable images; see :func:`skipped_images`)."""
    from jaxdissect.data.resize import at_input_size
    return at_input_size(_source(spec, model, num, seed, split, skip_bad), model)


def _source(spec: str, model, num: int | None, seed: int, split: str, skip_bad: bool):
    if model.kind == "generator":
        if spec not in ("z", "world"):
            raise UserError(f"a generator reads latent samples: use --data z (got {spec!r})")
        from jaxdissect.data.source import ZSource
        return ZSource(num or 10_000, model.z_dim, seed)
    if spec == "z":
        raise UserError("--data z is for generators; a classifier needs images")
    if spec == "world":
        from jaxdissect.data.resize import world_render_size
        from jaxdissect.world import WorldSource

        # the world renders at 32, 64 or 128 pixels: the smallest that is at least the
        # model's input (load_data resizes it to the input)
        size = world_render_size(model.input_size)
        return _match_classes(WorldSource(num or 2000, seed=seed, size=size), model, spec)
    if spec.startswith("broden:"):
        from jaxdissect.data.broden import broden_from_spec
        try:
            src = broden_from_spec(spec, size=tuple(model.input_size))
        except (FileNotFoundError, ValueError) as e:
            raise UserError(str(e)) from None
        return Prefix(src, num) if num is not None and num < src.num_examples else src
    if spec.startswith("tfds:"):
        from jaxdissect.data.tfds_source import TFDSSource
        try:
            source = TFDSSource(spec[5:], split="train" if split == "train" else "validation",
                                num_examples=num, crop=model.input_size[0])
        except ImportError as e:
            raise UserError(str(e)) from None
        return _match_classes(source, model, spec)
    root = spec
    if os.path.isdir(os.path.join(spec, split)):
        root = os.path.join(spec, split)
    from jaxdissect.data.folder import ImageFolderSource
    try:
        src = ImageFolderSource(root, size=tuple(model.input_size), policy=model.resize,
                                class_names=model.class_names, skip_bad=skip_bad)
    except (FileNotFoundError, ValueError) as e:
        raise UserError(str(e)) from None
    if num is not None and num < src.num_examples:
        src = Prefix(src, num)
    return src


def _match_classes(source, model, spec: str):
    """``source`` with labels in the model's class order (by class name)."""
    names = getattr(source, "class_names", None)
    if names is None or model.class_names is None or tuple(names) == tuple(model.class_names):
        return source
    missing = [n for n in names if n not in model.class_names]
    if missing:
        raise UserError(f"data {spec!r} has classes {missing} that {model.name} does not "
                        f"know; its classes: {list(model.class_names)}")
    return Relabelled(source, [model.class_names.index(n) for n in names],
                      tuple(model.class_names))


class Relabelled:
    """``source`` with ``label`` mapped through ``mapping`` (source class -> model class)."""

    def __init__(self, source, mapping, class_names):
        self.inner, self.mapping = source, np.asarray(mapping, np.int32)
        self.num_examples = source.num_examples
        self.seg_labels = getattr(source, "seg_labels", None)
        self.class_names = class_names

    def identity(self) -> dict:
        from jaxdissect.runtime.fingerprint import data_identity
        return {"relabelled": self.mapping.tolist(), "of": data_identity(self.inner)}

    def batch(self, start, stop):
        b = dict(self.inner.batch(start, stop))
        if "label" in b:
            b["label"] = self.mapping[b["label"]]
        return b


def skipped_images(source) -> int:
    """How many unreadable images ``source`` (or the folder it is a prefix of) left out."""
    return len(getattr(getattr(source, "inner", source), "skipped", ()))


class TruthSegmenter:
    """Marker: use the source's ground-truth ``seg``."""

    def __init__(self, labels):
        self.labels = labels


def load_segmenter(spec: str, source, model=None):
    if spec == "truth":
        if getattr(source, "seg_labels", None) is None:
            raise UserError("--segmenter truth needs data with ground-truth segmentation "
                            "(--data world); use --segmenter world or netpqc")
        return TruthSegmenter(source.seg_labels)
    if spec == "broden":
        from jaxdissect.data.broden import BrodenSegmenter
        try:
            return BrodenSegmenter(source)
        except ValueError as e:
            raise UserError(str(e)) from None
    if spec == "world":
        from jaxdissect.world.segmenter import load_segmenter as world_seg
        return world_seg()
    if spec.startswith("py:"):
        # py:module:attr -- a Segmenter object (or a factory called with no arguments)
        from jaxdissect.user_models import load_object
        return load_object(spec, "segmenter", call=lambda o: isinstance(o, type) or (
            callable(o) and not hasattr(o, "labels")))
    from jaxdissect.segmentation.load import load_segmenter as ref_seg
    return ref_seg(spec)


def check_layer(model, layer: str) -> None:
    try:
        model.check_layer(layer)
    except KeyError as e:
        raise UserError(str(e).strip("'\"")) from None


def default_layer(model, layer: str | None) -> str:
    """``layer``, or the model's default (conv5_3 for classifiers, layer4 for
    generators); checked against the model's layers."""
    layer = layer or model.default_layer
    if layer is None:
        raise UserError(f"{model.name} has no default layer; name one of "
                        f"{list(model.layer_names)}")
    check_layer(model, layer)
    return layer


def default_data(model, data: str | None) -> str:
    """``data``, or ``z`` for generators and ``world`` for classifiers."""
    return data or ("z" if model.kind == "generator" else "world")


def default_seed(model, seed: int | None) -> int:
    """``seed``, or the z seed for generators and the world's val seed for classifiers."""
    if seed is not None:
        return seed
    return Z_SEED if model.kind == "generator" else WORLD_VAL_SEED


def default_segmenter(model, data: str | None, segmenter: str | None) -> str:
    """``segmenter``, or: truth for world images, broden for Broden, world for the world
    generator, netpqc otherwise."""
    if segmenter:
        return segmenter
    if model.kind == "classifier":
        if str(data or "").startswith("broden:"):
            return "broden"
        return "truth" if data == "world" else "netpqc"
    return "world" if "world" in model.name else "netpqc"


def default_seg_downsample(seg_downsample: int | None, segmenter: str) -> int:
    """``seg_downsample``, or 4 for the world's full-size segmentations (truth, world),
    else 1."""
    if seg_downsample is not None:
        return seg_downsample
    return 4 if segmenter in ("truth", "world") else 1
