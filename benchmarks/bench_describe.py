"""Open-vocabulary labelling: jaxdissect's SoftWPMI against a PyTorch transcription of
CLIP-Dissect's procedure, on the same embeddings and activations, in one run.

Inputs: N probe-image embeddings and M concept embeddings (D dimensions), and U
units' pooled activations over the N images (random, fixed seed).

* torch (CLIP-Dissect's procedure, written here from its description): normalise
  both embeddings, the similarity matrix ``image @ text.T``, a softmax of ``a P``
  over concepts, each unit's top-k images by ``topk`` over images, then unit by unit
  (as the reference loops): gather the k rows, ``sum log(1 + p_r (S - 1) + min_prob)``,
  and at the end ``logsumexp`` over units for the PMI.
* jaxdissect: ``stats.softwpmi.similarity`` and ``soft_wpmi`` (units in compiled
  chunks of 64), as ``experiments.describe.label_units`` calls them.

Both with the paper's defaults (k = 100, a = 10, lam = 1, p 0.998..0.97). Prints each
side's best-of-3 time, the ratio, and the largest score difference and label
agreement. Compilation is excluded (a warm-up run on the same shapes).

    python benchmarks/bench_describe.py                       # 10000 x 1000 x 512
    python benchmarks/bench_describe.py --images 2000 --units 64 --concepts 200   # quick
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch

from jaxdissect.stats import softwpmi


def torch_clip_dissect(image_emb, text_emb, acts, top_k=100, a=10.0, lam=1.0,
                       p_start=0.998, p_end=0.97, min_prob=1e-7):
    """CLIP-Dissect's SoftWPMI as its reference runs it, one unit at a time."""
    with torch.no_grad():
        img = image_emb / image_emb.norm(dim=-1, keepdim=True)
        txt = text_emb / text_emb.norm(dim=-1, keepdim=True)
        probs = torch.softmax(a * (img @ txt.T), dim=1)
        inds = torch.topk(acts, k=top_k, dim=0)[1]
        p = (p_start - torch.arange(top_k) / top_k * (p_start - p_end)).unsqueeze(1)
        rows = []
        for unit in range(acts.shape[1]):
            s = probs.gather(0, inds[:, unit:unit + 1].expand(-1, probs.shape[1]))
            rows.append(torch.log(1 + p * (s - 1) + min_prob).sum(0, keepdim=True))
        given = torch.cat(rows)
        log_p = torch.logsumexp(given, dim=0, keepdim=True) - np.log(given.shape[0])
        return given - lam * log_p


def jax_describe(image_emb, text_emb, acts):
    sim = softwpmi.similarity(image_emb, text_emb)
    return softwpmi.soft_wpmi(sim, acts, **softwpmi.SOFT_WPMI_DEFAULTS)


def best_of(fn, repeats=3):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=10000)
    p.add_argument("--concepts", type=int, default=1000)
    p.add_argument("--units", type=int, default=512)
    p.add_argument("--dim", type=int, default=512)
    a = p.parse_args()
    rng = np.random.default_rng(0)
    image_emb = rng.normal(size=(a.images, a.dim)).astype(np.float32)
    text_emb = rng.normal(size=(a.concepts, a.dim)).astype(np.float32)
    acts = rng.gamma(2.0, size=(a.images, a.units)).astype(np.float32)

    t_img, t_txt, t_act = (torch.from_numpy(x) for x in (image_emb, text_emb, acts))
    j_img, j_txt, j_act = (jnp.asarray(x) for x in (image_emb, text_emb, acts))
    jax.block_until_ready(jax_describe(j_img, j_txt, j_act))  # compile
    t_jax, ours = best_of(lambda: jax.block_until_ready(jax_describe(j_img, j_txt, j_act)))
    torch_clip_dissect(t_img[:200], t_txt, t_act[:200])  # warm-up
    t_torch, ref = best_of(lambda: torch_clip_dissect(t_img, t_txt, t_act))
    ours, ref = np.asarray(ours), ref.numpy()
    print(f"{a.images} images x {a.concepts} concepts x {a.units} units (D = {a.dim}), "
          f"torch threads {torch.get_num_threads()}, jax devices {jax.device_count()} "
          f"({jax.devices()[0].platform})")
    print(f"torch (CLIP-Dissect's procedure): {t_torch:.3f} s")
    print(f"jaxdissect soft_wpmi:              {t_jax:.3f} s")
    print(f"ratio torch / jaxdissect: {t_torch / t_jax:.2f}x")
    print(f"largest score difference {np.abs(ours - ref).max():.2e} (scores up to "
          f"{np.abs(ref).max():.1f}); labels equal on "
          f"{(ours.argmax(1) == ref.argmax(1)).mean() * 100:.1f}% of units")


if __name__ == "__main__":
    main()
