"""Open-vocabulary labels against ground-truth dissection labels on the world
classifier's conv5_3, and on a randomly initialised classifier of the same shape.

    python scripts/measure_describe.py                 # 2000 probe images (seed 4)
    python scripts/measure_describe.py --num-images 300 --json out.json
    python scripts/measure_describe.py --imagetext DIR  # another world image-text model
    python scripts/measure_describe.py --no-scenes      # the list without the scene words

For each net: both labellings of every unit (``experiments.describe`` with the
shipped world image-text model and concept list; ``experiments.dissect`` with the
world's ground-truth masks, the ``dissect`` command's settings), the agreement on
the units dissection labels, how many units a distractor word labels, and the
chance level of the agreement (``experiments.describe_world``); and the same scorings
with the world's ground truth in place of the image-text model (``ceiling``: what a
perfect image-text model would reach with the image-level method).
"""

import argparse
import json

from jaxdissect.experiments.describe_world import measure, random_spec
from jaxdissect.world import WorldSource, classifier
from jaxdissect.world.imagetext import (
    WORLD_WORDS,
    default_concepts,
    distractors,
    load_imagetext,
)
from jaxdissect.world.vocab import LABELS


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-images", type=int, default=2000)
    p.add_argument("--seed", type=int, default=4, help="world seed of the probe images")
    p.add_argument("--layer", default="conv5_3")
    p.add_argument("--imagetext", default=None,
                   help="a world image-text model's folder (default: the shipped one)")
    p.add_argument("--no-scenes", action="store_true",
                   help="leave the 11 scene class words out of the concept list (mask "
                        "dissection cannot name a scene)")
    p.add_argument("--json", default=None, help="write the measurements here")
    a = p.parse_args()
    source = WorldSource(a.num_images, seed=a.seed, size=64)
    imagetext, concepts = load_imagetext(a.imagetext), default_concepts()
    if a.no_scenes:
        scenes = set(WORLD_WORDS[len(LABELS) - 1:])
        concepts = [c for c in concepts if c not in scenes]
    out = {"num_images": a.num_images, "world_seed": a.seed, "concepts": len(concepts),
           "scene_words": not a.no_scenes,
           "distractors": len(distractors(concepts)),
           "trained": measure(classifier.spec(), a.layer, source, imagetext, concepts,
                              ceiling=True),
           "random": measure(random_spec(0), a.layer, source, imagetext, concepts,
                             ceiling=True)}
    for name in ("trained", "random"):
        m = out[name]
        print(f"{name}: cosine similarity to the probe images {m['similarity']}")
        rows = [(f"{name} {method}", r) for method, r in m["methods"].items()]
        rows += [(f"{name} ground-truth {method}", r) for method, r in m["ceiling"].items()]
        for what, r in rows:
            print(f"{what}: open label = dissection label on {r['agree']}/"
                  f"{m['labelled_by_dissection']} labelled units "
                  f"({100 * r['agreement_rate']:.1f}%; chance "
                  f"{100 * r['chance']['chance_rate']:.1f}%, p = {r['chance']['p_value']:.4f}; "
                  f"among its 5 best-IoU concepts {r['near_agree']});"
                  f" distractor labels {r['distractor_wins']}/{m['units']}; "
                  f"{r['distinct_open_labels']} distinct open labels")
        for method, b in m["beyond_truth"].items():
            print(f"{name} {method} vs ground truth: units only the open label agrees on "
                  f"{b['only_open']}, only the ground truth's {b['only_truth']}, "
                  f"p = {b['p_value']:.4f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
