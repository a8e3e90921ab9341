"""PyTorch oracles for the segmentation networks, in the reference's state-dict layout.

Written for the tests (not taken from the reference): module attribute names
reproduce the keys of the reference's ``encoder_epoch_N.pth`` /
``decoder_epoch_N.pth`` files (``layer1.0.downsample.1.running_var``,
``ppm_conv.3.0.weight``, ``object_head.0.0.weight``, ``conv_last.4.bias`` ...).
Precise RoI pooling is computed here cell by cell (the integral of the bilinear
interpolant over each unit cell, as the original CUDA kernel does), an
independent route from the closed-form matrices of ``jaxdissect.models.resample``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def cbr(cin, cout, k=3):
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU())


class TBottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride=1, down=False):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, planes * 4, 1, stride, bias=False),
                                         nn.BatchNorm2d(planes * 4)) if down else None)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        skip = x if self.downsample is None else self.downsample(x)
        return F.relu(out + skip)


class TBasic(nn.Module):
    expansion = 1

    def __init__(self, cin, planes, stride=1, down=False):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, planes, 1, stride, bias=False),
                                         nn.BatchNorm2d(planes)) if down else None)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        skip = x if self.downsample is None else self.downsample(x)
        return F.relu(out + skip)


class TEncoder(nn.Module):
    """Deep-stem ResNet returning the four stage outputs; ``dilated`` = ResnetDilated(8)."""

    def __init__(self, block, depths, dilated=False):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2 = nn.Conv2d(64, 64, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.conv3 = nn.Conv2d(64, 128, 3, 1, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(128)
        cin = 128
        for s, (planes, depth) in enumerate(zip((64, 128, 256, 512), depths)):
            stride = 1 if s == 0 else 2
            blocks = []
            for j in range(depth):
                down = j == 0 and (stride != 1 or cin != planes * block.expansion)
                blocks.append(block(cin, planes, stride if j == 0 else 1, down=down))
                cin = planes * block.expansion
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
        if dilated:
            self._dilate(self.layer3, 2)
            self._dilate(self.layer4, 4)

    @staticmethod
    def _dilate(stage, d):
        for m in stage.modules():
            if isinstance(m, nn.Conv2d):
                if m.stride == (2, 2):
                    m.stride = (1, 1)
                    if m.kernel_size == (3, 3):
                        m.dilation, m.padding = (d // 2, d // 2), (d // 2, d // 2)
                elif m.kernel_size == (3, 3):
                    m.dilation, m.padding = (d, d), (d, d)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.relu(self.bn3(self.conv3(x)))
        x = F.max_pool2d(x, 3, 2, 1)
        outs = []
        for s in range(1, 5):
            x = getattr(self, f"layer{s}")(x)
            outs.append(x)
        return outs


def prroi_whole_map(x: torch.Tensor, bins: int) -> torch.Tensor:
    """Precise RoI pooling of the RoI ``[0, w] x [0, h]`` into ``bins x bins``, cell by cell."""
    b, c, h, w = x.shape
    pad = F.pad(x, (0, 1, 0, 1))  # samples beyond the map are zero

    def hat_integral(lo, hi):
        # integral over [lo, hi] (inside one unit cell) of (1 - t) with t the distance
        return (hi - 0.5 * hi * hi) - (lo - 0.5 * lo * lo)

    out = x.new_zeros(b, c, bins, bins)
    bh, bw = h / bins, w / bins
    for p in range(bins):
        y0, y1 = p * bh, (p + 1) * bh
        for q in range(bins):
            x0, x1 = q * bw, (q + 1) * bw
            acc = x.new_zeros(b, c)
            for cy in range(math.floor(y0), math.ceil(y1)):
                ya, yb = max(y0, cy), min(y1, cy + 1)
                for cx in range(math.floor(x0), math.ceil(x1)):
                    xa, xb = max(x0, cx), min(x1, cx + 1)
                    wy = (hat_integral(ya - cy, yb - cy), hat_integral(cy + 1 - yb, cy + 1 - ya))
                    wx = (hat_integral(xa - cx, xb - cx), hat_integral(cx + 1 - xb, cx + 1 - xa))
                    for dy in (0, 1):
                        for dx in (0, 1):
                            acc = acc + pad[:, :, cy + dy, cx + dx] * (wy[dy] * wx[dx])
            out[:, :, p, q] = acc / (bh * bw)
    return out


class TUPerNet(nn.Module):
    """The reference's UPerNet decoder (PrRoI PPM, FPN, scene/object/part/material heads)."""

    def __init__(self, nr_classes, fc_dim=2048, fpn_dim=512, inplanes=(256, 512, 1024, 2048)):
        super().__init__()
        self.scales = (1, 2, 3, 6)
        self.ppm_conv = nn.ModuleList([cbr(fc_dim, 512, 1) for _ in self.scales])
        self.ppm_last_conv = cbr(fc_dim + 4 * 512, fpn_dim)
        self.fpn_in = nn.ModuleList([cbr(c, fpn_dim, 1) for c in inplanes[:-1]])
        self.fpn_out = nn.ModuleList([nn.Sequential(cbr(fpn_dim, fpn_dim))
                                      for _ in inplanes[:-1]])
        self.conv_fusion = cbr(len(inplanes) * fpn_dim, fpn_dim)
        self.scene_head = nn.Sequential(cbr(fpn_dim, fpn_dim), nn.AdaptiveAvgPool2d(1),
                                        nn.Conv2d(fpn_dim, nr_classes["scene"], 1))
        for k in ("object", "part", "material"):
            setattr(self, f"{k}_head", nn.Sequential(cbr(fpn_dim, fpn_dim),
                                                     nn.Conv2d(fpn_dim, nr_classes[k], 1)))

    def forward(self, feats):
        c4 = feats[-1]
        hw = c4.shape[2:]
        ppm = [c4]
        for s, pc in zip(self.scales, self.ppm_conv):
            ppm.append(pc(F.interpolate(prroi_whole_map(c4, s), hw, mode="bilinear",
                                        align_corners=False)))
        f = self.ppm_last_conv(torch.cat(ppm, 1))
        pyramid = [f]
        for i in reversed(range(len(feats) - 1)):
            lat = self.fpn_in[i](feats[i])
            f = lat + F.interpolate(f, lat.shape[2:], mode="bilinear", align_corners=False)
            pyramid.append(self.fpn_out[i](f))
        pyramid.reverse()
        size = pyramid[0].shape[2:]
        fused = torch.cat([pyramid[0]] + [F.interpolate(p, size, mode="bilinear",
                                                        align_corners=False)
                                          for p in pyramid[1:]], 1)
        x = self.conv_fusion(fused)
        return {"object": self.object_head(x), "part": self.part_head(x),
                "material": self.material_head(pyramid[0])}


class TPPMDeepsup(nn.Module):
    """The reference's PPMDeepsup decoder (inference path; deep-sup weights present)."""

    def __init__(self, num_class, fc_dim=512):
        super().__init__()
        self.ppm = nn.ModuleList([nn.Sequential(nn.AdaptiveAvgPool2d(s),
                                                nn.Conv2d(fc_dim, 512, 1, bias=False),
                                                nn.BatchNorm2d(512), nn.ReLU())
                                  for s in (1, 2, 3, 6)])
        self.cbr_deepsup = cbr(fc_dim // 2, fc_dim // 4)
        self.conv_last = nn.Sequential(nn.Conv2d(fc_dim + 4 * 512, 512, 3, padding=1, bias=False),
                                       nn.BatchNorm2d(512), nn.ReLU(), nn.Dropout2d(0.1),
                                       nn.Conv2d(512, num_class, 1))
        self.conv_last_deepsup = nn.Conv2d(fc_dim // 4, num_class, 1)

    def forward(self, feats):
        c4 = feats[-1]
        hw = c4.shape[2:]
        ppm = [c4] + [F.interpolate(m(c4), hw, mode="bilinear", align_corners=False)
                      for m in self.ppm]
        return self.conv_last(torch.cat(ppm, 1))


def randomize(module: nn.Module, seed: int) -> nn.Module:
    """Random weights and BatchNorm statistics of sensible scale; eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * math.sqrt(2.0 / fan_in))
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(0.5 + 0.5 * torch.rand(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
    return module.eval()


def upp_modules(nr_classes, seed=0):
    """(encoder, decoder) of the unified-parsing ResNet-50 UPerNet, random, eval."""
    enc = randomize(TEncoder(TBottleneck, (3, 4, 6, 3)), seed)
    dec = randomize(TUPerNet(nr_classes), seed + 1)
    return enc, dec


def colour_modules(num_class, seed=0):
    """(encoder, decoder) of the colour resnet18dilated + ppm_deepsup, random, eval."""
    enc = randomize(TEncoder(TBasic, (2, 2, 2, 2), dilated=True), seed)
    dec = randomize(TPPMDeepsup(num_class), seed + 1)
    return enc, dec


def state_dict_numpy(module: nn.Module) -> dict:
    return {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}
