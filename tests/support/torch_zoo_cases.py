"""torchvision and timm architectures at the smallest inputs they accept, random init with
BatchNorm running statistics randomised, and two named layers of each (shared by the
conformance tests)."""

from __future__ import annotations

import numpy as np

# name: (library, factory, kwargs, input (H, W), two layers)
CASES = {
    "tv_alexnet": ("torchvision", "alexnet", {}, (64, 64), ("features.4", "classifier.4")),
    "tv_vgg11_bn": ("torchvision", "vgg11_bn", {}, (32, 32), ("features.7", "features.28")),
    "tv_squeezenet": ("torchvision", "squeezenet1_1", {}, (64, 64), ("features.5",
                                                                      "features.12")),
    "tv_densenet121": ("torchvision", "densenet121", {}, (32, 32), ("features.denseblock1",
                                                                    "features.norm5")),
    "tv_mobilenet_v3": ("torchvision", "mobilenet_v3_small", {}, (32, 32), ("features.3",
                                                                             "features.12")),
    "tv_efficientnet_b0": ("torchvision", "efficientnet_b0", {}, (32, 32), ("features.2",
                                                                            "features.8")),
    "tv_regnet_y": ("torchvision", "regnet_y_400mf", {}, (32, 32), ("trunk_output.block2",
                                                                    "trunk_output.block4")),
    "tv_convnext_t": ("torchvision", "convnext_tiny", {}, (32, 32), ("features.1",
                                                                     "features.7")),
    "tv_shufflenet": ("torchvision", "shufflenet_v2_x0_5", {}, (32, 32), ("stage2", "conv5")),
    "tv_googlenet": ("torchvision", "googlenet", {"aux_logits": False, "init_weights": True},
                     (32, 32), ("inception3b", "inception5b")),
    "tv_inception_v3": ("torchvision", "inception_v3", {"aux_logits": False,
                                                        "init_weights": True},
                        (75, 75), ("Mixed_5b", "Mixed_7c")),
    "tv_resnet18": ("torchvision", "resnet18", {}, (32, 32), ("layer3", "layer4")),
    "tv_swin_t": ("torchvision", "swin_t", {}, (32, 32), ("features.3", "features.7")),
    "tv_vit_b_16": ("torchvision", "vit_b_16", {"image_size": 32}, (32, 32),
                    ("encoder.layers.encoder_layer_0", "encoder.layers.encoder_layer_11")),
    "tv_maxvit_t": ("torchvision", "maxvit_t", {"input_size": (224, 224)}, (224, 224),
                    ("blocks.0", "blocks.3")),
    "timm_resnet50": ("timm", "resnet50", {}, (32, 32), ("layer2", "layer4")),
    "timm_convnext_atto": ("timm", "convnext_atto", {}, (32, 32), ("stages.1", "stages.3")),
    "timm_efficientnet_b0": ("timm", "efficientnet_b0", {}, (32, 32), ("blocks.2",
                                                                      "conv_head")),
    "timm_deit_tiny": ("timm", "deit_tiny_patch16_224", {"img_size": 32}, (32, 32),
                       ("blocks.3", "blocks.11")),
    "timm_swin_tiny": ("timm", "swin_tiny_patch4_window7_224", {"img_size": 56}, (56, 56),
                       ("layers.0", "layers.1")),
    "timm_mobilevitv2": ("timm", "mobilevitv2_050", {}, (64, 64), ("stages.2", "final_conv")),
    "timm_levit": ("timm", "levit_128s", {"img_size": 64}, (64, 64), ("stages.0",
                                                                      "stages.2")),
    "timm_mixer": ("timm", "mixer_s16_224", {"img_size": 32}, (32, 32), ("blocks.1",
                                                                         "blocks.7")),
    "timm_eva02": ("timm", "eva02_tiny_patch14_224", {"img_size": 28}, (28, 28),
                   ("blocks.2", "blocks.11")),
    "timm_fastvit": ("timm", "fastvit_t8", {}, (64, 64), ("stages.1", "final_conv")),
    "timm_coatnet": ("timm", "coatnet_nano_rw_224", {"img_size": 64}, (64, 64),
                     ("stages.1", "stages.3")),
}


def build(name: str, seed: int = 0):
    """The torch module of case ``name`` in eval mode, BatchNorm statistics randomised."""
    import torch

    from jaxdissect.torch_compat import torchvision
    library, factory, kwargs, _, _ = CASES[name]
    torch.manual_seed(seed)
    if library == "torchvision":
        module = getattr(torchvision().models, factory)(**kwargs)
    else:
        torchvision()
        import timm
        module = timm.create_model(factory, pretrained=False, **kwargs)
    randomize_norm_stats(module, seed)
    with torch.no_grad():
        for p in module.parameters():      # zero-initialised heads (a ViT's) at random
            if p.ndim >= 2 and not p.any():
                p.normal_(0.0, 0.02)
    return module.eval()


def randomize_norm_stats(module, seed: int = 0) -> None:
    """BatchNorm running means, variances and affine weights drawn at random (at their
    initial values a normalisation is an identity a wrong layout cannot show)."""
    import torch
    rng = np.random.RandomState(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                n = m.running_mean.shape[0]
                m.running_mean.copy_(torch.tensor(rng.randn(n) * 0.2, dtype=torch.float32))
                m.running_var.copy_(torch.tensor(rng.rand(n) + 0.5, dtype=torch.float32))
                if m.weight is not None:
                    m.weight.copy_(torch.tensor(rng.rand(n) + 0.5, dtype=torch.float32))
                    m.bias.copy_(torch.tensor(rng.randn(n) * 0.1, dtype=torch.float32))
