"""Open-vocabulary labels against ground-truth dissection labels on the world
classifier's conv5_3, and on a randomly initialised classifier of the same shape.

    python scripts/measure_describe.py                 # 2000 probe images (seed 4)
    python scripts/measure_describe.py --num-images 300 --json out.json

For each net: both labellings of every unit (``experiments.describe`` with the
shipped world image-text model and concept list; ``experiments.dissect`` with the
world's ground-truth masks, the ``dissect`` command's settings), the agreement on
the units dissection labels, how many units a distractor word labels, and the
chance level of the agreement (the open labels shuffled over the units, which keeps
how often each word is used: mean and one-sided p-value of the observed agreement).
"""

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxdissect.experiments.describe import compare, describe_spec
from jaxdissect.experiments.dissect import dissect, spec_compute
from jaxdissect.models import vgg16
from jaxdissect.world import LABELS, WorldSource, classifier
from jaxdissect.world.imagetext import default_concepts, distractors, load_imagetext
from jaxdissect.world.scenes import CLASS_NAMES


def random_spec(seed: int = 0):
    """The world classifier's architecture with fresh random weights."""
    model = classifier.WorldVGG16()
    params = model.init(jax.random.key(seed), jnp.zeros((1, 64, 64, 3)))["params"]
    return vgg16.spec(model, params, name=f"world-classifier-random{seed}",
                      input_size=(64, 64), class_names=CLASS_NAMES, resize="stretch")


def truth_dissection(spec, layer: str, source, batch_size: int = 32):
    """Mask-based dissection with the world's ground truth on every 4th pixel (the
    ``dissect`` command's defaults for world data)."""
    compute = spec_compute(spec, layer, lambda batch, images:
                           jnp.asarray(batch["seg"])[:, :, 2::4, 2::4].astype(jnp.int32))
    example = source.batch(0, 1)
    example["index"] = np.zeros(1, np.int32)
    acts_s, seg_s = jax.eval_shape(compute, example, spec.params)
    up = spec.upsampler(layer, acts_s.shape[1:3], seg_s.shape[2:], (source.size,) * 2, None)
    return dissect(compute, source, LABELS, upsample=up, params=spec.params,
                   batch_size=batch_size, progress=False)


def chance(described, dissected, permutations: int = 2000, seed: int = 0) -> dict:
    """Agreement when the open labels are shuffled over the units."""
    labelled = np.flatnonzero(dissected.labelled)
    truth = [dissected.unit_label(u) for u in labelled]
    labels = np.array(described.labels(), dtype=object)
    observed = sum(labels[u] == t for u, t in zip(labelled, truth))
    rng = np.random.default_rng(seed)
    null = np.array([sum(p[u] == t for u, t in zip(labelled, truth))
                     for p in (rng.permutation(labels) for _ in range(permutations))])
    return {"observed": int(observed), "chance_mean": float(null.mean()),
            "chance_rate": float(null.mean() / max(len(labelled), 1)),
            "p_value": float((1 + (null >= observed).sum()) / (1 + permutations)),
            "permutations": permutations}


def measure(spec, layer, source, imagetext, concepts) -> dict:
    t0 = time.time()
    dissected = truth_dissection(spec, layer, source)
    t1 = time.time()
    described = describe_spec(spec, layer, source, imagetext, concepts, progress=False)
    t2 = time.time()
    cmp = compare(described, dissected, distractors(concepts))
    words = [p["open"] for p in cmp["pairs"]]
    return {"model": spec.name, "layer": layer, "units": cmp["units"],
            "labelled_by_dissection": cmp["labelled"], "agree": cmp["agree"],
            "agreement_rate": round(cmp["rate"], 4),
            "distractor_wins": cmp["distractor_wins"],
            "distractor_rate": round(cmp["distractor_rate"], 4),
            "distinct_open_labels": len(set(words)),
            "chance": chance(described, dissected),
            "dissect_seconds": round(t1 - t0, 1), "describe_seconds": round(t2 - t1, 1),
            "pairs": [p for p in cmp["pairs"] if p["dissect"] is not None]}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-images", type=int, default=2000)
    p.add_argument("--seed", type=int, default=4, help="world seed of the probe images")
    p.add_argument("--layer", default="conv5_3")
    p.add_argument("--json", default=None, help="write the measurements here")
    a = p.parse_args()
    source = WorldSource(a.num_images, seed=a.seed, size=64)
    imagetext, concepts = load_imagetext(), default_concepts()
    out = {"num_images": a.num_images, "world_seed": a.seed, "concepts": len(concepts),
           "distractors": len(distractors(concepts)),
           "trained": measure(classifier.spec(), a.layer, source, imagetext, concepts),
           "random": measure(random_spec(0), a.layer, source, imagetext, concepts)}
    for name in ("trained", "random"):
        m = out[name]
        print(f"{name}: open label = dissection label on {m['agree']}/"
              f"{m['labelled_by_dissection']} labelled units ({100 * m['agreement_rate']:.1f}%; "
              f"chance {100 * m['chance']['chance_rate']:.1f}%, p = {m['chance']['p_value']:.4f});"
              f" distractor labels {m['distractor_wins']}/{m['units']}; "
              f"{m['distinct_open_labels']} distinct open labels")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
