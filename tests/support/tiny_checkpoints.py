"""Tiny checkpoints for the command tests: a narrow VGG-16 and a small ProGAN saved
as reference-layout .pth files, with their PyTorch modules as oracles."""

from __future__ import annotations

import numpy as np
import torch

from tests.support.reference_torch import torch_proggan, torch_vgg16

VGG_ARGS = dict(widths=(4, 4, 8, 8, 8), fc_width=16, num_classes=11)
GAN_SIZES = (8, 8, 8, 8)  # z 8; 4x4, 8x8 (layer3/4), 16x16; output 16x16


def tiny_vgg_pth(path):
    model = torch_vgg16(**VGG_ARGS, seed=0)
    torch.save(model.state_dict(), path)
    return model


def tiny_gan_pth(path):
    model = torch_proggan(GAN_SIZES, seed=0)
    torch.save(model.state_dict(), path)
    return model


@torch.no_grad()
def vgg_forward(model, images01, zero=(), stop=None):
    """Logits (or ``stop`` layer's NHWC output) of the torch VGG, ``zero`` conv5_3
    channels zeroed after its ReLU."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = (torch.from_numpy(np.asarray(images01)).permute(0, 3, 1, 2) - mean) / std
    for name, mod in model.features.named_children():
        x = mod(x)
        if name == "relu5_3":
            if stop == "conv5_3":
                return x.permute(0, 2, 3, 1).numpy()
            x = x.clone()
            x[:, list(zero)] = 0
    return model.classifier(torch.flatten(model.avgpool(x), 1)).numpy()


@torch.no_grad()
def gan_forward(model, z, edit=None, stop=None, clip=True):
    """Images in [0, 1] NHWC (``clip=False``: ``(out + 1) / 2`` unclipped, as the
    segmenter sees it); ``edit(h NCHW) -> h`` applied to layer4's output."""
    x = torch.from_numpy(np.asarray(z)).view(len(z), -1, 1, 1)
    for name, mod in model.named_children():
        x = mod(x)
        if name == "layer4":
            if stop == "layer4":
                return x.permute(0, 2, 3, 1).numpy()
            if edit is not None:
                x = edit(x)
    x = (x + 1) / 2
    return (torch.clamp(x, 0, 1) if clip else x).permute(0, 2, 3, 1)
