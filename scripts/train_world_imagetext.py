"""Train the world image-text model and ship it in weights/world/imagetext.

    nice -n 15 python scripts/train_world_imagetext.py          # the shipped run
    python scripts/train_world_imagetext.py --steps 20 --images 512 --out /tmp/it  # smoke
    python scripts/train_world_imagetext.py --targets presence --out /tmp/presence
"""

import argparse
import json
import time

from jaxdissect.world.imagetext import DEFAULT_DIR, IMAGETEXT_ARGS, WorldCLIP, WorldImageText
from jaxdissect.world.train.imagetext import (
    CAPTION_WORDS,
    FULL_SHARE,
    MIN_SHARE,
    RANDOM_WORDS,
    WORLD_WORDS,
    train,
    zero_shot,
)
from jaxdissect.world.weights import save_checkpoint


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch", type=int, default=48)
    p.add_argument("--images", type=int, default=8000, help="training images (rendered once)")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0, help="parameter init and sampling seed")
    p.add_argument("--data-seed", type=int, default=21, help="world seed of training images")
    p.add_argument("--eval-seed", type=int, default=22, help="world seed of held-out images")
    p.add_argument("--eval-n", type=int, default=1000)
    p.add_argument("--targets", choices=("graded", "presence"), default="graded",
                   help="word targets: min(1, share / full_share) with captions of the "
                        "largest concepts, or present/absent with any present concepts")
    p.add_argument("--word-weight", type=float, default=10.0,
                   help="weight of the word loss against the caption loss")
    p.add_argument("--max-minutes", type=float, default=30.0)
    p.add_argument("--out", default=str(DEFAULT_DIR))
    a = p.parse_args()
    module = WorldCLIP(**IMAGETEXT_ARGS)
    t0 = time.time()
    params, info = train(module, seed=a.seed, data_seed=a.data_seed, images=a.images,
                         steps=a.steps, batch=a.batch, lr=a.lr, max_seconds=a.max_minutes * 60,
                         graded=a.targets == "graded", word_weight=a.word_weight)
    heldout = zero_shot(WorldImageText(module, params), a.eval_seed, a.eval_n)
    config = {"arch": {k: list(v) if isinstance(v, tuple) else v
                       for k, v in IMAGETEXT_ARGS.items()},
              "image_size": 64, "input": "images in [0, 1] (resized to 64x64)",
              "seed": a.seed, "data_seed": a.data_seed, "images": a.images,
              "steps": a.steps, "batch": a.batch,
              "optimizer": {"name": "adamw", "lr": a.lr, "weight_decay": 1e-4, "warmup": 50,
                            "schedule": "warmup, cosine to lr/50", "clip_global_norm": 1.0},
              "words": list(WORLD_WORDS), "min_share": MIN_SHARE, "full_share": FULL_SHARE,
              "word_targets": "min(1, pixel share / full_share); scene class 1"
              if a.targets == "graded" else "present (min_share); scene class 1",
              "captions": "scene class and its caption_words largest present concepts"
              if a.targets == "graded" else "scene class and caption_words present concepts",
              "caption_words": CAPTION_WORDS, "random_words_per_step": RANDOM_WORDS,
              "word_weight": a.word_weight,
              "augmentation": "horizontal flip", **info, "heldout": heldout,
              "total_seconds": round(time.time() - t0, 1)}
    save_checkpoint(a.out, params, config)
    print(json.dumps(config, indent=1))


if __name__ == "__main__":
    main()
