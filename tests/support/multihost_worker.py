"""One process of a multi-process test run (started by tests/runtime/test_hosts.py):

    python -m tests.support.multihost_worker --coordinator 127.0.0.1:PORT --num-processes N \\
        --process-id I --devices D --out DIR [--cache DIR] [--die-after K] EXPERIMENT...

Forces ``D`` host devices, joins ``jax.distributed`` through ``runtime.hosts``, runs
each named experiment on the shared test model and data (``EXPERIMENTS``) and saves
this process's result to ``DIR/EXPERIMENT-pI.npz`` (every process: the test checks
that all hold the identical result). ``--die-after K``: after reading K batches
this process exits at once, like a killed one. The model and data are exact in
float32 (small integers and dyadic weights), so the forward pass rounds nowhere and
results can be compared bit for bit with one process's at any batch shape.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

LAYERS = 2  # segmentation layers
NUM_LABELS = 6
CLASSES = 3  # of the ablation experiment's classifier


def make_source(n: int = 40, size: int = 12):
    """Deterministic integer images and a segmentation correlated with them."""
    from jaxdissect.labels import LabelSet
    labels = LabelSet.from_pairs([("sky", "object"), ("tree", "object"), ("door", "object"),
                                  ("brick", "material"), ("wood", "material")])

    class IntSource:
        seg_labels = labels
        class_names = None
        num_examples = n
        reads = 0
        die_after = None

        def batch(self, start, stop):
            IntSource.reads += 1
            if self.die_after is not None and IntSource.reads > self.die_after:
                raise RuntimeError("killed")
            imgs, segs = [], []
            for i in range(start, stop):
                rng = np.random.default_rng([7, i])
                img = rng.integers(0, 4, (size, size, 3)).astype(np.float32)
                seg = np.stack([1 + (img[..., 0] >= 2) + (img[..., 1] >= 3),
                                np.where(img[..., 2] >= 2, 4, 5)]).astype(np.int32)
                seg[1, : rng.integers(0, size)] = 0
                imgs.append(img)
                segs.append(seg)
            images = np.stack(imgs)
            # class labels for the ablation experiment: mostly the exact classifier's
            # own answer, so accuracies are far from chance
            pred = np.asarray(_classify(images)).argmax(1)
            noise = np.array([np.random.default_rng([8, i]).integers(-1, CLASSES)
                              for i in range(start, stop)])
            label = np.where(noise < 0, pred, noise).astype(np.int32)
            return {"image": images, "seg": np.stack(segs), "label": label}

        def identity(self):
            return {"source": "multihost-test", "n": n, "size": size}

    return IntSource()


def make_model():
    """A two-conv network with small integer weights: ``(apply, params)``."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.relu(nn.Conv(8, (3, 3), padding=1, name="conv1")(x))
            return nn.Conv(6, (3, 3), strides=2, padding=1, name="conv2")(h)

    net = Net()
    shapes = jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((1, 12, 12, 3)))["params"]
    rng = np.random.default_rng(3)
    params = jax.tree_util.tree_map(
        lambda p: jnp.asarray(rng.integers(-2, 3, p.shape).astype(np.float32) / 4), shapes)
    return net.apply, params


def run_dissect(source, args, budget=None):
    import jax

    from jaxdissect.experiments.dissect import dissect
    from jaxdissect.stats import Upsampler
    apply, params = make_model()

    def compute(batch, p):
        return apply({"params": p}, batch["image"]), batch["seg"]

    up = Upsampler.for_layers([(3, 1, 1), (3, 2, 1)], (12, 12), (12, 12))
    result = dissect(compute, source, source.seg_labels, upsample=up, quantile=0.05,
                     levels=(0.02,), batch_size=args.batch_size, topk=3, params=params,
                     budget=budget, cache=_cache(args, params, source),
                     checkpoint_every=1, progress=False,
                     devices=None if args.devices_used is None
                     else jax.local_devices()[:args.devices_used])
    return {f: getattr(result, f) for f in (
        "thresholds", "iou", "intersections", "unit_area", "label_area", "topk_values",
        "topk_images")} | {f"level{q}": t for q, t in result.levels.items()}


def exact_split():
    """The test model cut after conv2 (6 units), with exact tails: a classifier (sum
    pooling, dyadic linear layer -> ``CLASSES`` logits) and a generator-like one
    (units repeated to 12x12 and mixed into 3 image channels), as ``ablate.Split``s."""
    import jax.numpy as jnp

    from jaxdissect.experiments.ablate import Split
    apply, params = make_model()
    w_cls = jnp.asarray(np.random.default_rng(6).integers(-3, 4, (6, CLASSES))
                        .astype(np.float32) / 128)
    # the units' typical pooled values, so that the classes split the data
    centre = jnp.asarray([[-85, 102, -125, 253, -151, 451]], jnp.float32)
    w_img = jnp.asarray(np.random.default_rng(5).integers(-2, 3, (6, 3))
                        .astype(np.float32) / 4)

    def head(p, batch):
        return apply({"params": p}, jnp.asarray(batch["image"]))

    def classify(p, acts, edit):
        return (edit(acts).sum((1, 2)) - centre) @ w_cls

    def draw(p, acts, edit):
        up = jnp.repeat(jnp.repeat(edit(acts), 2, 1), 2, 2)         # [b, 12, 12, 6]
        return up @ w_img

    return Split(head, classify, params), Split(head, draw, params)


def segment_drawn(images):
    """``[b, 12, 12, 3]`` -> ``[b, 2, 12, 12]`` labels by thresholds."""
    import jax.numpy as jnp
    return jnp.stack([1 + (images[..., 0] > 0) + (images[..., 1] > 1),
                      jnp.where(images[..., 2] > 0, 4, 5)], 1).astype(jnp.int32)


def _classify(images):
    """The unedited exact classifier's logits ``[b, CLASSES]``."""
    import jax.numpy as jnp
    split, _ = exact_split()
    zero = jnp.zeros((1, 1, 1, 6))
    from jaxdissect.edits import Edit
    return split.tail(split.params, split.head(split.params, {"image": images}),
                      Edit(zero, zero))


def _devices(args):
    import jax
    return None if args.devices_used is None else jax.local_devices()[:args.devices_used]


def _cache(args, weights, source):
    """The test run's cache in ``--cache`` (None: no cache)."""
    if args.cache is None:
        return None
    from jaxdissect.runtime.cache import run_cache
    return run_cache(args.cache, model=weights, layer="multihost-test", data=source,
                     segmenter=None)


def run_ablate(source, args):
    """The whole ablation experiment; its ``to_json`` as one string."""
    import json

    from jaxdissect.experiments import ablate
    split, _ = exact_split()
    result = ablate.run_experiment(
        split, source, source, 6, CLASSES, ks=(1, 2, 4), curve_classes=(0,),
        unit_iou=np.linspace(0, 0.3, 6), replicates=20, batch_size=args.batch_size, chunk=4,
        cache=_cache(args, split.params, source), progress=False, devices=_devices(args))
    return {"json": np.array(json.dumps(result.to_json(), sort_keys=True))}


def run_intervene(source, args):
    """The whole intervention experiment; its ``to_json`` as one string."""
    import json

    from jaxdissect.experiments import intervene
    _, split = exact_split()
    iou = np.random.default_rng(2).random((6, NUM_LABELS))
    result = intervene.run_experiment(
        split, segment_drawn, source, iou, source.seg_labels, np.full(6, 2.0),
        remove_concepts=(1,), insert_concepts=(4,), max_remove=3, insert_units=2,
        batch_size=args.batch_size, chunk=4, cache=_cache(args, split.params, source),
        progress=False, devices=_devices(args))
    return {"json": np.array(json.dumps(result.to_json(), sort_keys=True))}


#: experiment name -> run(source, args) -> {name: array}
EXPERIMENTS = {"dissect": run_dissect,
               # three radix passes and an IoU pass: four merges across processes
               "dissect-radix": lambda source, args: run_dissect(source, args, budget=8),
               "ablate": run_ablate, "intervene": run_intervene}


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("experiments", nargs="+", choices=sorted(EXPERIMENTS))
    p.add_argument("--coordinator")
    p.add_argument("--num-processes", type=int)
    p.add_argument("--process-id", type=int)
    p.add_argument("--devices", type=int, default=1, help="forced host devices")
    p.add_argument("--devices-used", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=6)
    p.add_argument("--out", required=True)
    p.add_argument("--cache", default=None)
    p.add_argument("--die-after", type=int, default=None)
    args = p.parse_args(argv)
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
    os.environ["JAX_PLATFORMS"] = "cpu"
    from jaxdissect.runtime import hosts
    hosts.initialize(args.coordinator, args.num_processes, args.process_id)
    import jax
    assert jax.process_count() == (args.num_processes or 1)
    assert len(jax.local_devices()) == args.devices
    source = make_source()
    source.die_after = args.die_after
    for name in args.experiments:
        try:
            arrays = EXPERIMENTS[name](source, args)
        except RuntimeError as e:
            if str(e) != "killed":
                raise
            print("killed", flush=True)
            os._exit(3)  # as a killed process: no clean shutdown of jax.distributed
        np.savez(os.path.join(args.out, f"{name}-p{jax.process_index()}.npz"),
                 reads=np.int64(source.reads), **arrays)
    return 0


if __name__ == "__main__":
    sys.exit(main())
