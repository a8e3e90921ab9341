"""Train the world segmenter (small U-Net) and ship it in weights/world/segmenter.

    python scripts/train_world_segmenter.py            # the shipped run
    python scripts/train_world_segmenter.py --steps 50 --out /tmp/seg   # a smoke run
"""

import argparse
import json
import time

from jaxdissect.models.segnet import SegNet
from jaxdissect.world.segmenter import DEFAULT_DIR, SEGMENTER_ARGS, WorldSegmenter
from jaxdissect.world.source import WorldSource
from jaxdissect.world.train.classifier import PRESENT_WEIGHT, segmenter_accuracy, train_segmenter
from jaxdissect.world.weights import save_checkpoint


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0, help="parameter init seed")
    p.add_argument("--data-seed", type=int, default=11, help="world seed of training images")
    p.add_argument("--eval-seed", type=int, default=12, help="world seed of held-out images")
    p.add_argument("--eval-n", type=int, default=500)
    p.add_argument("--max-minutes", type=float, default=24.0)
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--closeup-every", type=int, default=0,
                   help="every Nth training image is a 1.5x close-up (render_closeup), for "
                        "a generator trained on close-ups; default 0: none (the shipped run)")
    p.add_argument("--out", default=str(DEFAULT_DIR))
    a = p.parse_args()
    net = SegNet(**SEGMENTER_ARGS)
    t0 = time.time()
    params, info = train_segmenter(
        net, seed=a.seed, data_seed=a.data_seed, steps=a.steps, batch=a.batch, lr=a.lr,
        warmup=a.warmup, weight_decay=a.weight_decay, max_seconds=a.max_minutes * 60,
        log_every=a.log_every, closeup_every=a.closeup_every)
    acc = segmenter_accuracy(WorldSegmenter(net, params),
                             WorldSource(a.eval_n, seed=a.eval_seed), a.eval_n)
    config = {"arch": {k: list(v) for k, v in SEGMENTER_ARGS.items()}, "image_size": 64,
              "layers": ["object", "part", "material"], "color": "world colour rule",
              "seed": a.seed, "data_seed": a.data_seed, "steps": a.steps, "batch": a.batch,
              "optimizer": {"name": "adam + decoupled weight decay", "lr": a.lr, "warmup": a.warmup,
                            "schedule": "warmup, cosine to lr/50 over max(step/steps, time/budget)",
                            "max_minutes": a.max_minutes, "weight_decay": a.weight_decay,
                            "clip_global_norm": 1.0},
              "present_weight": PRESENT_WEIGHT, "augmentation": "horizontal flip" + (
                  f"; every {a.closeup_every}th image a 1.5x close-up (render_closeup)"
                  if a.closeup_every else ""), **info,
              "heldout": {"world_seed": a.eval_seed, "images": a.eval_n, **acc},
              "total_seconds": round(time.time() - t0, 1)}
    save_checkpoint(a.out, params, config)
    print(json.dumps(config, indent=1))


if __name__ == "__main__":
    main()
