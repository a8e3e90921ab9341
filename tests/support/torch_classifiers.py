"""PyTorch classifiers with exactly the published state-dict layouts (tests only).

Written from the layouts (torchvision's ResNet, AlexNet and ViT module trees; the
reference's ``experiment/oldalexnet.py`` and ``experiment/oldresnet152.py``), not
copied, because torchvision itself does not import beside the torch installed here.
Every module is randomly initialised, BatchNorm statistics included, and
:func:`run_hooked` records named module outputs with forward hooks, as a researcher
would.
"""

from __future__ import annotations

import collections
import pickle
import struct
import types

import numpy as np
import torch
from torch import nn

from tests.support.torch_segmodels import TBasic, TBottleneck, randomize


def damp_residuals(model: nn.Module, blocks) -> nn.Module:
    """Scale the last BatchNorm of each residual branch by 0.2, so that deep random
    ResNets stay in range (``blocks``: the branches' last BatchNorms)."""
    with torch.no_grad():
        for bn in blocks:
            bn.weight.mul_(0.2)
    return model


# ------------------------------------------------------------------ ResNet

class TorchResNet(nn.Module):
    """torchvision's ``ResNet`` module tree (v1.5)."""

    def __init__(self, block, depths, num_classes):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        for s, (planes, depth) in enumerate(zip((64, 128, 256, 512), depths)):
            blocks = []
            for j in range(depth):
                stride = 2 if s > 0 and j == 0 else 1
                blocks.append(block(cin, planes, stride,
                                    down=stride != 1 or cin != planes * block.expansion))
                cin = planes * block.expansion
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def torch_resnet(block: str, depths, num_classes=365, seed=0) -> TorchResNet:
    """torchvision's ResNet with random weights and BatchNorm statistics (the blocks
    of :mod:`tests.support.torch_segmodels` have torchvision's module names)."""
    torch.manual_seed(seed)
    cls = TBasic if block == "basic" else TBottleneck
    model = randomize(TorchResNet(cls, depths, num_classes), seed)
    last = "bn2" if block == "basic" else "bn3"
    return damp_residuals(model, [getattr(m, last) for m in model.modules()
                                  if isinstance(m, cls)])


class _Branches(nn.Sequential):
    """The reference's ``LambdaMap``: every child applied to the same input."""

    def forward(self, x):
        return [m(x) for m in self]


class _Sum(nn.Module):
    def forward(self, xs):
        return xs[0] + xs[1]


class _Identity(nn.Sequential):
    """The reference's ``Lambda(lambda x: x)``: a parameter-free skip."""

    def forward(self, x):
        return x


class _Flatten(nn.Module):
    def forward(self, x):
        return x.view(x.size(0), -1)


def torch_oldresnet(depths=(3, 8, 36, 3), num_classes=365, seed=0) -> nn.Sequential:
    """The reference's ``OldResNet152`` layout: one ``Sequential`` of numbered layers,
    each bottleneck ``Sequential(LambdaMap(main, skip), CAdd, ReLU)``. ``depths`` other
    than ResNet-152's keep the numbering (for small tests)."""
    torch.manual_seed(seed)

    stages, cin = [], 64
    for s, (planes, depth) in enumerate(zip((64, 128, 256, 512), depths)):
        blocks = []
        for j in range(depth):
            stride = 2 if s > 0 and j == 0 else 1
            bn = nn.BatchNorm2d
            main = nn.Sequential(
                nn.Conv2d(cin, planes, 1, 1, 0, bias=False), bn(planes), nn.ReLU(),
                nn.Conv2d(planes, planes, 3, stride, 1, bias=False), bn(planes), nn.ReLU(),
                nn.Conv2d(planes, planes * 4, 1, 1, 0, bias=False), bn(planes * 4))
            skip = (nn.Sequential(nn.Conv2d(cin, planes * 4, 1, stride, 0, bias=False),
                                  nn.BatchNorm2d(planes * 4)) if j == 0
                    else _Identity())
            blocks.append(nn.Sequential(_Branches(main, skip), _Sum(), nn.ReLU()))
            cin = planes * 4
        stages.append(nn.Sequential(*blocks))
    model = nn.Sequential(
        nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
        *stages, nn.AvgPool2d(7, 1), _Flatten(),
        nn.Sequential(_Identity(), nn.Linear(cin, num_classes)))
    randomize(model, seed)
    return damp_residuals(model, [blk[0][0][7] for stage in model[4:8] for blk in stage])


# ----------------------------------------------------------------- AlexNet

def torch_alexnet_reference(num_classes=365, seed=0, widths=(96, 256, 384, 384, 256),
                            fc_width=4096) -> nn.Sequential:
    """The reference's Places365 AlexNet layout (``conv1`` ... ``fc8``; groups, LRN);
    narrower ``widths`` / ``fc_width`` for small tests."""
    torch.manual_seed(seed)
    w = [3, *widths]
    layers = [("conv1", nn.Conv2d(3, w[1], 11, 4)), ("relu1", nn.ReLU(inplace=True)),
              ("pool1", nn.MaxPool2d(3, 2)), ("lrn1", nn.LocalResponseNorm(5, 1e-4, 0.75, 1.0)),
              ("conv2", nn.Conv2d(w[1], w[2], 5, padding=2, groups=2)),
              ("relu2", nn.ReLU(inplace=True)),
              ("pool2", nn.MaxPool2d(3, 2)), ("lrn2", nn.LocalResponseNorm(5, 1e-4, 0.75, 1.0)),
              ("conv3", nn.Conv2d(w[2], w[3], 3, padding=1)), ("relu3", nn.ReLU(inplace=True)),
              ("conv4", nn.Conv2d(w[3], w[4], 3, padding=1, groups=2)),
              ("relu4", nn.ReLU(inplace=True)),
              ("conv5", nn.Conv2d(w[4], w[5], 3, padding=1, groups=2)),
              ("relu5", nn.ReLU(inplace=True)),
              ("pool5", nn.MaxPool2d(3, 2)), ("flatten", _Flatten()),
              ("fc6", nn.Linear(w[5] * 36, fc_width)), ("relu6", nn.ReLU(inplace=True)),
              ("dropout6", nn.Dropout()),
              ("fc7", nn.Linear(fc_width, fc_width)), ("relu7", nn.ReLU(inplace=True)),
              ("dropout7", nn.Dropout()),
              ("fc8", nn.Linear(fc_width, num_classes))]
    return nn.Sequential(collections.OrderedDict(layers)).eval()


class TorchAlexNet(nn.Module):
    """torchvision's ``AlexNet`` module tree."""

    def __init__(self, num_classes=1000):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2))
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(), nn.Linear(256 * 36, 4096), nn.ReLU(inplace=True),
            nn.Dropout(), nn.Linear(4096, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def torch_alexnet_torchvision(num_classes=1000, seed=0) -> TorchAlexNet:
    torch.manual_seed(seed)
    return TorchAlexNet(num_classes).eval()


# --------------------------------------------------------------------- ViT

class _EncoderBlock(nn.Module):
    def __init__(self, hidden, heads, mlp_dim):
        super().__init__()
        self.ln_1 = nn.LayerNorm(hidden, eps=1e-6)
        self.self_attention = nn.MultiheadAttention(hidden, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(hidden, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(hidden, mlp_dim), nn.GELU(), nn.Dropout(0.0),
                                 nn.Linear(mlp_dim, hidden), nn.Dropout(0.0))

    def forward(self, x):
        y = self.ln_1(x)
        y, _ = self.self_attention(y, y, y, need_weights=False)
        x = x + y
        return x + self.mlp(self.ln_2(x))


class _Encoder(nn.Module):
    def __init__(self, tokens, depth, hidden, heads, mlp_dim):
        super().__init__()
        self.pos_embedding = nn.Parameter(0.02 * torch.randn(1, tokens, hidden))
        self.layers = nn.Sequential(collections.OrderedDict(
            (f"encoder_layer_{i}", _EncoderBlock(hidden, heads, mlp_dim)) for i in range(depth)))
        self.ln = nn.LayerNorm(hidden, eps=1e-6)

    def forward(self, x):
        return self.ln(self.layers(x + self.pos_embedding))


class TorchViT(nn.Module):
    """torchvision's ``VisionTransformer`` module tree (no representation layer)."""

    def __init__(self, image_size=224, patch=16, depth=12, hidden=768, heads=12,
                 mlp_dim=3072, num_classes=1000):
        super().__init__()
        self.patch = patch
        self.conv_proj = nn.Conv2d(3, hidden, patch, patch)
        self.class_token = nn.Parameter(0.02 * torch.randn(1, 1, hidden))
        self.encoder = _Encoder((image_size // patch) ** 2 + 1, depth, hidden, heads, mlp_dim)
        self.heads = nn.Sequential(collections.OrderedDict(head=nn.Linear(hidden, num_classes)))

    def forward(self, x):
        x = self.conv_proj(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.heads(self.encoder(x)[:, 0])


def torch_vit(seed=0, **kwargs) -> TorchViT:
    torch.manual_seed(seed)
    model = TorchViT(**kwargs)
    with torch.no_grad():  # LayerNorms away from the identity, so their conversion counts
        g = torch.Generator().manual_seed(seed)
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
    return model.eval()


# ------------------------------------------------------------------ running

@torch.no_grad()
def run_hooked(model: nn.Module, x_nhwc: np.ndarray, modules: dict[str, str]):
    """Forward NHWC ``x``; returns ``(logits, acts)`` with ``acts[name]`` the output of
    the torch module ``modules[name]`` (a dotted module path) recorded by a forward
    hook, 4-d maps as NHWC."""
    acts, handles = {}, []
    named = dict(model.named_modules())
    for name, path in modules.items():
        def hook(_m, _inp, out, name=name):
            acts[name] = out.clone()
        handles.append(named[path].register_forward_hook(hook))
    try:
        logits = model(torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2))))
    finally:
        for h in handles:
            h.remove()
    out = {k: (v.numpy().transpose(0, 2, 3, 1) if v.ndim == 4 else v.numpy())
           for k, v in acts.items()}
    return logits.numpy(), out


def rel_err(a, b) -> float:
    """``max |a - b| / max |b|``."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


def save_both(state_dict, directory, stem) -> dict:
    """``torch.save`` ``state_dict`` in the zip and the legacy format."""
    paths = {}
    for fmt, zipped in (("zip", True), ("legacy", False)):
        paths[fmt] = directory / f"{stem}_{fmt}.pth"
        torch.save(state_dict, paths[fmt], _use_new_zipfile_serialization=zipped)
    return paths


class _Py2Pickler(pickle._Pickler):
    """Writes str as Python 2's byte strings (``SHORT_BINSTRING``), as the 2017
    Places365 files were written."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_ascii(self, obj):
        data = obj.encode("ascii")
        self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data if len(data) < 256
                   else pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = save_ascii


def save_places365_tar(state_dict, path):
    """A ``.pth.tar`` as the Places365 ResNets are published: legacy format, protocol 2,
    Python 2 strings, ``DataParallel`` keys inside a training checkpoint."""
    py2 = types.SimpleNamespace(Pickler=_Py2Pickler, __name__="pickle",
                                dump=lambda obj, f, protocol=2: _Py2Pickler(f, protocol).dump(obj))
    checkpoint = {"epoch": 90, "arch": "resnet18", "best_prec1": torch.tensor([54.7]),
                  "state_dict": {f"module.{k}": v for k, v in state_dict.items()}}
    torch.save(checkpoint, path, pickle_module=py2, pickle_protocol=2,
               _use_new_zipfile_serialization=False)
    return path
