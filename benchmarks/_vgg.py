"""The VGG-16 set-up the sweep and accelerator benchmarks share: a random-init torch
VGG-16 (Places365 layout) and its jaxdissect twin, in-memory sources, and the
reference's single-unit ablation loop (one full PyTorch forward per unit)."""

from __future__ import annotations

import time

import numpy as np


def vgg_setup(classes: int = 365, seed: int = 0, size: int = 224):
    """A random-init torch VGG-16 (Places365 layout) and the same weights as a
    jaxdissect ``ModelSpec`` for ``size x size`` images."""
    import jax

    from jaxdissect.checkpoints import convert_state_dict, model_from_config
    from jaxdissect.models import vgg16
    from tests.support.reference_torch import torch_vgg16

    tmodel = torch_vgg16(num_classes=classes, seed=seed)
    sd = {k: v.numpy() for k, v in tmodel.state_dict().items()}
    config, params = convert_state_dict(sd, "vgg16")
    model = model_from_config("vgg16", config)
    params = jax.tree_util.tree_map(jax.numpy.asarray, params)
    return tmodel, vgg16.spec(model, params, input_size=(size, size))


def random_images(n: int, classes: int = 365, seed: int = 0, size: int = 224):
    """``n`` random ``size x size`` images in [0, 1] and class labels."""
    rng = np.random.default_rng(seed)
    return (rng.random((n, size, size, 3), dtype=np.float32),
            rng.integers(0, classes, n).astype(np.int32))


class ArraySource:
    """Images and labels in memory, as an ``ImageSource``."""

    seg_labels = class_names = None

    def __init__(self, images, labels):
        self.images, self.labels, self.num_examples = images, labels, len(images)

    def batch(self, a, b):
        return {"image": self.images[a:b], "label": self.labels[a:b]}

    def identity(self):
        return {"source": "bench", "n": self.num_examples}


def torch_single_unit_loop(tmodel, images, labels, units, classes, device="cpu",
                           layer="relu5_3"):
    """The reference's procedure for ``units``: a full forward of every image per
    ablated unit. Returns ``(seconds, {unit: (pred counts [C], correct counts [C])})``
    (one untimed warm-up forward first)."""
    import torch

    mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1)
    x = (torch.from_numpy(images).to(device).permute(0, 3, 1, 2) - mean) / std
    y = torch.from_numpy(labels).long().to(device)
    tmodel = tmodel.to(device).eval()

    def forward_ablated(unit):
        h = x
        for name, mod in tmodel.features.named_children():
            h = mod(h)
            if name == layer:
                h = h.clone()
                h[:, unit] = 0
        return tmodel.classifier(torch.flatten(tmodel.avgpool(h), 1))

    counts = {}
    with torch.no_grad():
        forward_ablated(0)
        if device != "cpu":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for u in units:
            pred = forward_ablated(u).argmax(1)
            counts[u] = (pred.bincount(minlength=classes).cpu().numpy(),
                         y.bincount((pred == y).long(), minlength=classes).cpu().numpy())
        if device != "cpu":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    return seconds, counts


def agreement(torch_counts, jax_counts) -> int:
    """How many of the torch-timed units have the same class counts in jaxdissect."""
    return sum(int((p == jax_counts["pred"][u]).all() and (c == jax_counts["correct"][u]).all())
               for u, (p, c) in torch_counts.items())
