"""Train the world classifier (narrow VGG-16) and ship it in weights/world/classifier.

The shipped weights come from two stages:

1. the whole network, trained from scratch (the first command; its record is the
   top-level keys of config.json, and train.log);
2. its top retrained with sparse units: conv1_1..conv5_2 are kept frozen from stage 1,
   their conv5_2 outputs for --top-images training images (world seed --data-seed) and
   their horizontal mirrors are computed once, and conv5_3, fc6, fc7, fc8a are trained
   afresh on that cache with an L1 penalty (--act-l1) on conv5_3's activations
   (jaxdissect.world.train.top; recorded under "retrained_top" in config.json, and
   retrain_top.log). Without the penalty conv5_3 is so redundant that removing a class's
   20 most important units barely changes its accuracy (the demo's ablation finding).

    python scripts/train_world_classifier.py --out /tmp/cls               # stage 1 (25 min)
    python scripts/train_world_classifier.py --retrain-top-from /tmp/cls  # stage 2 (2-3 min)
    python scripts/train_world_classifier.py --steps 50 --out /tmp/cls    # a smoke run

Stage 2 on the shipped weights reproduces them (their conv1_1..conv5_2 are stage 1's).
"""

import argparse
import json
import time

from jaxdissect.world.classifier import CLASSIFIER_ARGS, DEFAULT_DIR, WorldVGG16, load_classifier
from jaxdissect.world.source import WorldSource
from jaxdissect.world.train.classifier import classifier_accuracy, train_classifier
from jaxdissect.world.weights import read_config, save_checkpoint


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0, help="parameter init seed")
    p.add_argument("--data-seed", type=int, default=1, help="world seed of training images")
    p.add_argument("--eval-seed", type=int, default=2, help="world seed of held-out images")
    p.add_argument("--eval-n", type=int, default=1000)
    p.add_argument("--max-minutes", type=float, default=24.0)
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--out", default=str(DEFAULT_DIR))
    g = p.add_argument_group("stage 2: retrain the top on cached conv5_2 features")
    g.add_argument("--retrain-top-from", default=None, metavar="DIR",
                   help="a stage-1 classifier checkpoint whose conv1_1..conv5_2 are kept")
    g.add_argument("--act-l1", type=float, default=0.05,
                   help="weight of the mean conv5_3 activation in the loss")
    g.add_argument("--top-images", type=int, default=24000,
                   help="training images (each also mirrored)")
    g.add_argument("--top-steps", type=int, default=3000)
    g.add_argument("--top-batch", type=int, default=128)
    a = p.parse_args()
    if a.retrain_top_from:
        return retrain_top(a)
    model = WorldVGG16()
    t0 = time.time()
    params, info = train_classifier(
        model, seed=a.seed, data_seed=a.data_seed, steps=a.steps, batch=a.batch, lr=a.lr,
        warmup=a.warmup, weight_decay=a.weight_decay, max_seconds=a.max_minutes * 60,
        log_every=a.log_every)
    acc, _ = classifier_accuracy(model, params, WorldSource(a.eval_n, seed=a.eval_seed), a.eval_n)
    config = {"arch": dict(CLASSIFIER_ARGS), "image_size": 64, "input": "preprocess(images01)",
              "seed": a.seed, "data_seed": a.data_seed, "steps": a.steps, "batch": a.batch,
              "optimizer": {"name": "adam + decoupled weight decay", "lr": a.lr, "warmup": a.warmup,
                            "schedule": "warmup, cosine to lr/50 over max(step/steps, time/budget)",
                            "max_minutes": a.max_minutes, "weight_decay": a.weight_decay,
                            "clip_global_norm": 1.0},
              "augmentation": "horizontal flip", **info,
              "heldout": {"world_seed": a.eval_seed, "images": a.eval_n, "accuracy": acc},
              "total_seconds": round(time.time() - t0, 1)}
    save_checkpoint(a.out, params, config)
    print(json.dumps(config, indent=1))


def retrain_top(a):
    from jaxdissect.world.train.top import cached_features, train_top

    after = "conv5_2"
    base_config = read_config(a.retrain_top_from)
    model, base = load_classifier(a.retrain_top_from)
    t0 = time.time()
    feats, labels = cached_features(model, base, WorldSource(a.top_images, seed=a.data_seed),
                                    after, a.top_images, flips=True)
    cache_seconds = round(time.time() - t0, 1)
    print(f"cached {after} of {a.top_images} images and their mirrors: {feats.shape}, "
          f"{cache_seconds}s", flush=True)
    params, info = train_top(model, base, feats, labels, after=after, act_l1=a.act_l1,
                             seed=a.seed, steps=a.top_steps, batch=a.top_batch, lr=a.lr,
                             warmup=a.warmup, weight_decay=a.weight_decay, log_every=250)
    acc, _ = classifier_accuracy(model, params, WorldSource(a.eval_n, seed=a.eval_seed), a.eval_n)
    stage1 = {k: v for k, v in base_config.items() if k != "retrained_top"}
    config = {**stage1, "heldout": {"world_seed": a.eval_seed, "images": a.eval_n,
                                    "accuracy": acc},
              "stage1_heldout": base_config.get("stage1_heldout", base_config["heldout"]),
              "retrained_top": {
                  "layers": ["conv5_3", "fc6", "fc7", "fc8a"],
                  "frozen": f"conv1_1..{after} from stage 1 (the top-level keys)",
                  "training_choice": "L1 penalty on conv5_3 activations (sparse, less "
                                     "redundant units)",
                  "act_l1": a.act_l1, "loss": "cross-entropy + act_l1 * mean(conv5_3)",
                  "init": "fresh (He-scaled LeCun normal), seed " + str(a.seed),
                  "data_seed": a.data_seed, "images": a.top_images,
                  "augmentation": "horizontal flip (each image and its mirror cached)",
                  "steps": a.top_steps, "batch": a.top_batch,
                  "optimizer": {"name": "adam + decoupled weight decay", "lr": a.lr,
                                "warmup": a.warmup, "schedule": "warmup, cosine to lr/50",
                                "weight_decay": a.weight_decay, "clip_global_norm": 1.0},
                  "cache_seconds": cache_seconds, **info,
                  "total_seconds": round(time.time() - t0, 1)}}
    save_checkpoint(a.out, params, config)
    print(json.dumps(config, indent=1))


if __name__ == "__main__":
    main()
