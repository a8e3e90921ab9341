"""PyTorch modules with exactly the reference's state-dict layout (tests only).

Written from the reference's layer lists, not copied: VGG-16 as in netdissect
``experiment/oldvgg16.py`` (torchvision VGG-16 with research names), ProGAN as in
``experiment/proggan.py``. Each module also records its named activations.
"""

from __future__ import annotations

import collections
import math

import numpy as np
import torch
from torch import nn


def torch_vgg16(widths=(64, 128, 256, 512, 512), fc_width=4096, num_classes=365,
                depths=(2, 2, 3, 3, 3), seed=0):
    """``features`` / ``avgpool`` / ``classifier`` as torchvision, with research names."""
    torch.manual_seed(seed)
    layers = []
    cin = 3
    for s, (depth, width) in enumerate(zip(depths, widths), start=1):
        for j in range(1, depth + 1):
            layers += [(f"conv{s}_{j}", nn.Conv2d(cin, width, 3, padding=1)),
                       (f"relu{s}_{j}", nn.ReLU(inplace=True))]
            cin = width
        layers.append((f"pool{s}", nn.MaxPool2d(2, 2)))
    model = nn.Module()
    model.features = nn.Sequential(collections.OrderedDict(layers))
    model.avgpool = nn.AdaptiveAvgPool2d((7, 7))
    model.classifier = nn.Sequential(collections.OrderedDict([
        ("fc6", nn.Linear(cin * 49, fc_width)), ("relu6", nn.ReLU(inplace=True)),
        ("drop6", nn.Dropout()),
        ("fc7", nn.Linear(fc_width, fc_width)), ("relu7", nn.ReLU(inplace=True)),
        ("drop7", nn.Dropout()),
        ("fc8a", nn.Linear(fc_width, num_classes))]))
    return model.eval()


@torch.no_grad()
def run_torch_vgg16(model, x_nhwc: np.ndarray, zero_units: dict | None = None):
    """Forward NHWC numpy input; return ``(logits, acts)`` with acts in NHWC under the
    jaxdissect names (conv/fc acts post-ReLU, as the reference's in-place ReLU leaves
    them). ``zero_units``: ``{conv_name: [units]}`` zeroed in that conv's output."""
    x = torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)))
    acts = {}
    pending = None
    for name, mod in model.features.named_children():
        x = mod(x)
        if name.startswith("conv"):
            if zero_units and name in zero_units:
                x[:, list(zero_units[name])] = 0
            pending = name
        elif name.startswith("relu"):
            acts[pending] = x.clone()
        else:
            acts[name] = x.clone()
    x = torch.flatten(model.avgpool(x), 1)
    for name, mod in model.classifier.named_children():
        x = mod(x)
        if name.startswith("relu"):
            acts["fc" + name[4:]] = x.clone()
    acts["fc8a"] = x
    out = {k: (v.numpy().transpose(0, 2, 3, 1) if v.ndim == 4 else v.numpy())
           for k, v in acts.items()}
    return out["fc8a"], out


class _PixelNorm(nn.Module):
    def forward(self, x):
        return x / torch.sqrt(torch.mean(x ** 2, dim=1, keepdim=True) + 1e-8)


class _WScale(nn.Module):
    def __init__(self, size, fan_in, gain):
        super().__init__()
        self.scale = gain / math.sqrt(fan_in)
        self.b = nn.Parameter(torch.randn(size))

    def forward(self, x):
        return x * self.scale + self.b.view(1, -1, 1, 1)


class _Block(nn.Module):
    def __init__(self, cin, cout, k, pad, upsample=False, act=True, gain=None):
        super().__init__()
        self.norm = _PixelNorm()
        self.upsample = upsample
        self.conv = nn.Conv2d(cin, cout, k, 1, pad, bias=False)
        self.wscale = _WScale(cout, cin, math.sqrt(2) / k if gain is None else gain)
        self.act = act

    def forward(self, x):
        x = self.norm(x)
        if self.upsample:
            x = nn.functional.interpolate(x, scale_factor=2, mode="nearest")
        x = self.wscale(self.conv(x))
        return nn.functional.leaky_relu(x, 0.2) if self.act else x


def torch_proggan(sizes, seed=0):
    """Sequential ``layer1..layerN, output_RxR`` with the reference's state-dict keys."""
    torch.manual_seed(seed)
    seq = [_Block(sizes[0], sizes[1], 4, 3), _Block(sizes[1], sizes[1], 3, 1)]
    for si, so in zip(sizes[1:-1], sizes[2:]):
        seq += [_Block(si, so, 3, 1, upsample=True), _Block(so, so, 3, 1)]
    r = 4 * 2 ** (len(seq) // 2 - 1)
    names = [f"layer{i + 1}" for i in range(len(seq))] + [f"output_{r}x{r}"]
    seq.append(_Block(sizes[-1], 3, 1, 0, act=False, gain=1.0))
    return nn.Sequential(collections.OrderedDict(zip(names, seq))).eval()


@torch.no_grad()
def run_torch_proggan(model, z: np.ndarray):
    """Forward ``z [b, z_dim]``; return ``(image NHWC, acts NHWC by layer name)``."""
    x = torch.from_numpy(z).view(z.shape[0], z.shape[1], 1, 1)
    acts = {}
    for name, mod in model.named_children():
        x = mod(x)
        acts[name] = x.numpy().transpose(0, 2, 3, 1)
    return acts[name], acts


def state_dict_numpy(model) -> dict:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
