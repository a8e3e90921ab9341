"""Segmenting images: jaxdissect's ``netpc`` segmenter vs the same pipeline in PyTorch.

Same random-init networks at the reference's real sizes (ResNet-50 UPerNet with
fpn_dim 512, dilated ResNet-18 PPM), a vocabulary of the unified-parsing model's
scale (336 objects, 26 materials, 30 objects with 4 parts each; 12 colours),
images 256x256, segmentation grid 64x64 (``downsample=4``, as the reference's
dissection), segsizes [256]:

* jaxdissect: ``MergedSegmenter([UnifiedParsingSegmenter, SemanticSegmenter])``,
  jitted (compile excluded: timed after one warm-up call);
* PyTorch: the test oracles' modules with the reference's inference path
  (preprocess, nets, bilinear resize, softmaxes, argmaxes, part masking,
  colour categories), ``torch.no_grad``, all CPU threads.

The quadrant split is left out of the comparison (the reference runs it with
``skimage`` on the CPU, which is not installed here); its JAX cost is printed
separately. Run: ``python benchmarks/bench_segment.py [--batch 2 --reps 3]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def vocabulary():
    objects = ["-"] + [f"obj{i}" for i in range(1, 336)]
    object_part = {objects[i]: [f"part{i}_{j}" for j in range(4)] for i in range(1, 31)}
    upp = {"object": objects, "material": ["-"] + [f"mat{i}" for i in range(25)],
           "scene": [f"scene{i}" for i in range(365)], "part": [], "object_part": object_part}
    colour = {"labels": [{"name": "-", "category": "color"}] + [
        {"name": f"colour{i}", "category": "color"} for i in range(11)],
        "categories": [{"name": "color"}],
        "imageformat": {"byteorder": "RGB", "mean": [0.485, 0.456, 0.406],
                        "stdev": [0.229, 0.224, 0.225]}}
    return upp, colour


def torch_segment(upp_mods, col_mods, upp, colour, x01, downsample):
    """Reference inference path in PyTorch: ``[b, H, W, 3]`` -> ``[b, 4, h, w]`` labels."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(x01).permute(0, 3, 1, 2)
    grid = (x.shape[2] // downsample, x.shape[3] // downsample)
    with torch.no_grad():
        xb = torch.flip(x * 255, (1,)) - torch.tensor([102.9801, 115.9465, 122.7717])[
            None, :, None, None]
        out = upp_mods[1](upp_mods[0](xb))
        up = {k: F.interpolate(v, grid, mode="bilinear", align_corners=False)
              for k, v in out.items()}
        obj = F.softmax(up["object"], 1).argmax(1)
        n_obj = len(upp["object"]) - 1
        mat = F.softmax(up["material"], 1).argmax(1)
        mat = torch.where(mat > 0, mat + n_obj, 0)
        part = torch.zeros_like(obj)
        head, first = 0, n_obj + len(upp["material"])
        for owner in upp["object_part"]:  # keys in object order = head order here
            n = len(upp["object_part"][owner])
            local = F.softmax(up["part"][:, head:head + n], 1).argmax(1)
            mask = obj == upp["object"].index(owner)
            part[mask] = (first + head + local)[mask]
            head += n
        fmt = colour["imageformat"]
        xc = (x - torch.tensor(fmt["mean"])[None, :, None, None]) / torch.tensor(
            fmt["stdev"])[None, :, None, None]
        p = F.softmax(F.interpolate(col_mods[1](col_mods[0](xc)), grid, mode="bilinear",
                                    align_corners=False), 1)
        col = F.softmax(p, 1).argmax(1)
        col = torch.where(col > 0, col + first + head, 0)  # merged numbering
        return torch.stack([obj, mat, part, col], 1)


def timed(fn, reps):
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()

    import jax
    import torch

    from jaxdissect.models.ppm import DilatedPPMNet
    from jaxdissect.models.segmenter_convert import colour_params, unified_parsing_params
    from jaxdissect.models.upernet import UnifiedParsingNet
    from jaxdissect.segmentation import (
        MergedSegmenter,
        SemanticLabelData,
        SemanticSegmenter,
        UnifiedLabelData,
        UnifiedParsingSegmenter,
    )
    from tests.support.torch_segmodels import colour_modules, state_dict_numpy, upp_modules

    upp, colour = vocabulary()
    nr = dict(object=len(upp["object"]), material=len(upp["material"]),
              scene=len(upp["scene"]), part=sum(len(p) for p in upp["object_part"].values()))
    upp_mods = upp_modules(nr, seed=0)
    col_mods = colour_modules(len(colour["labels"]), seed=2)
    udata, cdata = UnifiedLabelData.from_json(upp), SemanticLabelData.from_json(colour)
    uparams = unified_parsing_params(
        UnifiedParsingNet(len(udata.object), udata.num_part_channels, len(udata.material)),
        *map(state_dict_numpy, upp_mods))
    cparams = colour_params(DilatedPPMNet(len(cdata.labels)), *map(state_dict_numpy, col_mods))
    ds, s = 4, args.size
    seg = MergedSegmenter([
        UnifiedParsingSegmenter(udata, uparams, segsizes=(s,), downsample=ds),
        SemanticSegmenter(cdata, cparams, downsample=ds, segsizes=(s,))])
    quad = MergedSegmenter([
        UnifiedParsingSegmenter(udata, uparams, segsizes=(s,), downsample=ds, quad=True),
        SemanticSegmenter(cdata, cparams, downsample=ds, segsizes=(s,))])
    x = np.random.default_rng(0).random((args.batch, s, s, 3), dtype=np.float32)

    t0 = time.perf_counter()
    ours = np.asarray(seg(x))
    compile_s = time.perf_counter() - t0
    ref = torch_segment(upp_mods, col_mods, upp, colour, x, ds).numpy()
    agree = float((ours == ref).mean())
    t_jax = timed(lambda: jax.block_until_ready(seg(x)), args.reps)
    t_torch = timed(lambda: torch_segment(upp_mods, col_mods, upp, colour, x, ds), args.reps)
    jax.block_until_ready(quad(x))
    t_quad = timed(lambda: jax.block_until_ready(quad(x)), args.reps)

    print(f"netpc segmentation, batch {args.batch} x {s}x{s} -> {s // ds}x{s // ds} grid, "
          f"median of {args.reps}; torch threads {torch.get_num_threads()}, "
          f"jax devices {jax.devices()}")
    print(f"label agreement jax vs torch: {agree:.6f}")
    print(f"jaxdissect: {t_jax:.3f} s/batch (first call incl. compile {compile_s:.1f} s)")
    print(f"pytorch:    {t_torch:.3f} s/batch")
    print(f"ratio torch/jax: {t_torch / t_jax:.2f}x "
          f"({'jaxdissect faster' if t_jax < t_torch else 'jaxdissect slower'})")
    print(f"jaxdissect netpqc (with quadrant split): {t_quad:.3f} s/batch")


if __name__ == "__main__":
    main()
