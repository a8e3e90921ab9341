"""torchvision's and timm's models as :class:`~jaxdissect.spec.ModelSpec` s.

``load("torchvision:resnet18")`` / ``load("timm:vit_tiny_patch16_224")`` builds the model
with the library's published weights (downloaded by the library on first use);
``weights="random"`` builds it untrained (torch seed 0: the same weights every time);
``weights="FILE.safetensors"`` or ``"FILE.pth"`` loads a local state dict through the
project's bounded readers (no pickle code runs). Class names, input size and
normalisation come from the library's metadata where it has them; the default layer is
the last feature stage. Layers are torch module names (``layer4``, ``blocks.11``,
``features.28``).
"""

from __future__ import annotations

import os

LIBRARIES = ("torchvision", "timm")


def is_zoo_name(text: str) -> bool:
    """``True`` for ``torchvision:NAME`` / ``timm:NAME``."""
    return text.split(":", 1)[0] in LIBRARIES and ":" in text


def load(text: str, weights: str | None = None):
    """The spec of ``LIBRARY:NAME``; ``weights``: ``None`` (published), ``"random"`` or a
    local ``.safetensors`` / ``.pth`` state dict."""
    library, _, name = text.partition(":")
    if library not in LIBRARIES or not name:
        raise ValueError(f"model {text!r}: expected torchvision:NAME or timm:NAME")
    if weights not in (None, "random"):
        if not os.path.isfile(weights):
            raise ValueError(f"weights file {weights!r} does not exist")
        if not weights.endswith((".safetensors", ".pth", ".pth.tar", ".pt")):
            raise ValueError(f"weights {weights!r}: expected random, a .safetensors or a "
                             ".pth file")
    build = _torchvision if library == "torchvision" else _timm
    import torch
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)      # "random" weights are the same on every load (and cache)
        module, fields = build(name, pretrained=weights is None)
    if weights not in (None, "random"):
        load_weights(module, weights)
    return spec_for_module(module, name=text, **fields)


def spec_for_module(module, **fields):
    """A classifier spec for a torch image model (``fields`` override what is found:
    ``input_size``, ``mean``, ``std``, ``class_names``, ``layers`` ...)."""
    from jaxdissect.spec import ModelSpec
    found = {"input_size": (224, 224), **_timm_fields(module)}
    layer = default_layer(module)
    if layer is not None:
        found.update(layers={layer: layer}, default_layer=layer)
    found.update(fields)
    found.setdefault("kind", "classifier")
    return ModelSpec.from_torch(module, **found)


def load_weights(module, path: str) -> None:
    """Load a local state dict into ``module`` (strict: every key, every shape)."""
    import numpy as np
    import torch
    if path.endswith(".safetensors"):
        from jaxdissect.checkpoints.safetensors import load_safetensors
        state = load_safetensors(path)
    else:
        from jaxdissect.checkpoints.pth import load_state_dict
        state = load_state_dict(path)
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{os.path.basename(path)} does not fit {type(module).__name__}: "
                         f"{len(missing)} missing keys {missing[:3]}, {len(unexpected)} "
                         f"unexpected {unexpected[:3]}")
    tensors = {}
    for k, v in state.items():
        a = np.asarray(v)
        if tuple(a.shape) != tuple(expected[k].shape):
            raise ValueError(f"{os.path.basename(path)}: {k} has shape {a.shape}, the model "
                             f"expects {tuple(expected[k].shape)}")
        want = expected[k].detach().cpu().numpy().dtype
        tensors[k] = torch.from_numpy(np.ascontiguousarray(a.astype(want)))
    module.load_state_dict(tensors, strict=True)


def default_layer(module) -> str | None:
    """The last feature stage: timm's ``feature_info``, else a ResNet's ``layer4``, a
    torchvision ViT's last encoder layer, or the last of ``features``."""
    info = getattr(module, "feature_info", None)
    if isinstance(info, list) and info and isinstance(info[-1], dict):
        name = info[-1].get("module", "")
        if name in dict(module.named_modules()) and name:
            return name
    names = dict(module.named_modules())
    if "layer4" in names:
        return "layer4"
    layers = getattr(getattr(module, "encoder", None), "layers", None)
    if layers is not None and len(layers):
        return f"encoder.layers.{list(dict(layers.named_children()))[-1]}"
    features = getattr(module, "features", None)
    if features is not None and hasattr(features, "__len__") and len(features):
        return f"features.{len(features) - 1}"
    return None


def _torchvision(name: str, pretrained: bool):
    from jaxdissect.torch_compat import torchvision
    models = torchvision().models
    if name not in models.list_models():
        raise ValueError(f"torchvision has no model {name!r}")
    meta_weights = models.get_model_weights(name).DEFAULT
    module = models.get_model(name, weights=meta_weights if pretrained else None)
    fields = {}
    categories = meta_weights.meta.get("categories")
    if categories and _num_outputs(module) == len(categories):
        fields["class_names"] = tuple(categories)
    transforms = getattr(meta_weights.transforms, "keywords", {})
    if "crop_size" in transforms:
        crop = transforms["crop_size"]
        fields["input_size"] = (crop, crop) if isinstance(crop, int) else tuple(crop)
    return module, fields


def _timm(name: str, pretrained: bool):
    from jaxdissect.torch_compat import torchvision
    torchvision()          # timm's data transforms import torchvision
    import timm
    if not timm.is_model(name):
        raise ValueError(f"timm has no model {name!r}")
    return timm.create_model(name, pretrained=pretrained), {}


def _timm_fields(module) -> dict:
    cfg = getattr(module, "pretrained_cfg", None)
    if not isinstance(cfg, dict):
        return {}
    fields = {}
    if "input_size" in cfg:
        fields["input_size"] = tuple(cfg["input_size"][1:])
    if "mean" in cfg and "std" in cfg:
        fields.update(mean=tuple(cfg["mean"]), std=tuple(cfg["std"]))
    try:
        from timm.data import ImageNetInfo, infer_imagenet_subset
        subset = infer_imagenet_subset(module)
        if subset:
            names = ImageNetInfo(subset).label_descriptions()
            if len(names) == _num_outputs(module):
                fields["class_names"] = tuple(n.split(",")[0] for n in names)
    except (ImportError, ValueError, KeyError, OSError):
        pass
    return fields


def _num_outputs(module) -> int | None:
    n = getattr(module, "num_classes", None)
    if isinstance(n, int):
        return n
    import torch
    last = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
    return last[-1].out_features if last else None
