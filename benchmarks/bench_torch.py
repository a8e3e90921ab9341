"""A torchvision ResNet-18 run by jaxdissect (torch_bridge: the torch module as a JAX
function) against the same module in torch eager, in the same run.

* Single-unit ablation sweep of ``layer4`` (512 units): jaxdissect computes ``layer4``
  once per batch, then runs every unit's ablation from there (``spec.resume`` with a
  ``feed`` at ``layer4``, ``vmap`` over chunks of edits, compile included and apart);
  the reference's loop (davidbau/dissect's ``intervention_experiment.py``) runs one full
  torch forward of every image per unit, with that channel zeroed by a hook. The torch
  loop is timed on ``--torch-units`` units and extrapolated linearly to 512 (each unit is
  the same work); the script says so.
* Forward throughput: images per second through the whole network, jitted JAX against
  torch eager (``torch.no_grad``), after warm-up.

Weights are random (BatchNorm statistics too); outputs of both sides are compared.
Run: ``python benchmarks/bench_torch.py [--images 8] [--size 224] [--torch-units 16]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import numpy as np  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--torch-units", type=int, default=16)
    ap.add_argument("--chunk", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()

    import jax
    import jax.numpy as jnp
    import torch

    from jaxdissect.edits import Edit
    from jaxdissect.models import torch_zoo
    from tests.support.torch_zoo_cases import randomize_norm_stats

    torch.manual_seed(0)
    spec = torch_zoo.load("torchvision:resnet18", weights="random")
    module = spec.module
    randomize_norm_stats(module)
    spec = torch_zoo.spec_for_module(module, name="resnet18")
    layer, n = "layer4", 512
    x = np.random.RandomState(0).rand(args.images, args.size, args.size, 3).astype(np.float32)
    xt = torch.tensor(np.asarray(spec.preprocess(jnp.asarray(x))).transpose(0, 3, 1, 2))
    print(f"torch {torch.__version__} threads {torch.get_num_threads()}, jax "
          f"{jax.__version__} {jax.devices()[0].platform}; {args.images} images "
          f"{args.size}x{args.size}; load {os.getloadavg()[0]:.2f}")

    # ---------------------------------------------------------------- sweep
    capture = jax.jit(lambda p, x: spec.run(p, x, capture=(layer,))[1][layer])

    def one(p, acts, unit):
        e = Edit(alpha=jax.nn.one_hot(unit, n), value=jnp.zeros((n,)))
        return spec.resume(p, layer, acts, edits={layer: e})
    step = jax.jit(jax.vmap(one, in_axes=(None, None, 0)))

    def sweep():
        acts = capture(spec.params, x)
        return np.concatenate([np.asarray(step(spec.params, acts, jnp.arange(s, s + args.chunk)))
                               for s in range(0, n, args.chunk)])
    t = time.perf_counter()
    outs = sweep()
    first = time.perf_counter() - t
    t = time.perf_counter()
    outs = sweep()
    steady = time.perf_counter() - t

    def hooked(unit):
        def hook(m, i, o):
            o = o.clone()
            o[:, unit] = 0
            return o
        h = module.get_submodule(layer).register_forward_hook(hook)
        try:
            with torch.no_grad():
                return module(xt).numpy()
        finally:
            h.remove()
    module.eval()
    units = np.linspace(0, n - 1, args.torch_units).astype(int)
    t = time.perf_counter()
    loop = np.stack([hooked(int(u)) for u in units])
    per_unit = (time.perf_counter() - t) / len(units)
    torch_total = per_unit * n
    err = np.abs(outs[units] - loop).max() / np.abs(loop).max()
    print(f"\nsingle-unit ablation sweep of {layer} ({n} units), max relative difference "
          f"{err:.1e} on the {len(units)} units torch ran")
    print(f"  jaxdissect, compile included  {first:8.2f} s")
    print(f"  jaxdissect, compiled          {steady:8.2f} s")
    print(f"  torch loop (timed on {len(units)} units, extrapolated to {n}) {torch_total:8.2f} s")
    print(f"  ratio: sweep {torch_total / steady:.0f}x the loop compiled, "
          f"{torch_total / first:.0f}x with compile")

    # ----------------------------------------------------------- throughput
    fwd = jax.jit(lambda p, x: spec.run(p, x)[0])
    np.asarray(fwd(spec.params, x))
    t = time.perf_counter()
    for _ in range(args.reps):
        out = np.asarray(fwd(spec.params, x))
    jax_ips = args.reps * args.images / (time.perf_counter() - t)
    with torch.no_grad():
        ref = module(xt).numpy()
        t = time.perf_counter()
        for _ in range(args.reps):
            module(xt)
        torch_ips = args.reps * args.images / (time.perf_counter() - t)
    err = np.abs(out - ref).max() / np.abs(ref).max()
    print(f"\nforward, max relative difference {err:.1e}")
    print(f"  jaxdissect (jit)  {jax_ips:8.1f} images/s")
    print(f"  torch eager       {torch_ips:8.1f} images/s")
    print(f"  ratio: {jax_ips / torch_ips:.2f}x")


if __name__ == "__main__":
    main()
