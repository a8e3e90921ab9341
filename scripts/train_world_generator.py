"""Train the world generator (a 32x32 ProgressiveGAN) on world scenes.

The shipped weights (three stages of one run; ``weights/world/generator/config.json``
``stages`` holds the commands as they ran):

    python scripts/train_world_generator.py --out /tmp/wg/stage1 --steps 4000 \\
        --classes village --lr 0.001 --r1-gamma 0.5 --translate 4 --max-cpu-minutes 110 \\
        --state-dir /tmp/wg/state
    python scripts/train_world_generator.py --out /tmp/wg/stage2 --steps 6500 \\
        --classes village --lr 0.001 --r1-gamma 0.5 --translate 4 --sparsity 1.0 \\
        --max-cpu-minutes 110 --state-dir /tmp/wg/state
    python scripts/train_world_generator.py --out weights/world/generator --steps 9000 \\
        --classes village --lr 0.001 --r1-gamma 0.5 --translate 4 --object-weights door=3 \\
        --max-cpu-minutes 110 --state-dir /tmp/wg/state

``--classes village`` trains on one scene class (as ProGAN on one LSUN class);
``--sparsity`` adds the layer4 unit-sparsity penalty (``GanHyper.sparsity``);
``--object-weights door=3`` draws each real image with probability proportional to
``(door share / mean door share) ** 3`` (the generator under-draws doors; the chosen
powers, the shares the generator then sees and the effective number of images are
printed and recorded in ``config.json``).

Non-saturating GAN with lazy R1 and a generator EMA (jaxdissect.world.train.gan),
Adam(2e-3, 0, 0.99), batch 32, real images rendered at 32x32 from world seed 0 and
randomly mirrored. Step ``i`` draws its batch and latents from ``(seed, i)`` only,
so a run resumed from ``--state-dir`` takes exactly the steps an uninterrupted run
would. The budget is process CPU time (``--max-cpu-minutes``; 60 CPU-minutes is 30
minutes on 2 dedicated cores), since the cores may be shared; ``config.json``
beside the weights records the steps taken, CPU and wall time, and the command of
every stage of a resumed run (a stage may change --lr, --r1-gamma, --translate,
--sparsity or the real-image sampler).

``--class-weights`` (e.g. ``uniform`` or ``farm=2,ski_resort=1.5``) draws class-balanced
real batches: each batch holds the scene classes in proportion to their weights
(stratified), each image drawn at random within its class. Without it batches are
drawn uniformly from all images, as the first shipped run did.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxdissect.models.proggan import ProgressiveGenerator
from jaxdissect.world import WorldSource
from jaxdissect.world.generator import WORLD_GENERATOR_SIZES
from jaxdissect.world.scenes import CLASS_NAMES
from jaxdissect.world.source import class_indices, render, render_mixed
from jaxdissect.world.train import gan as gt
from jaxdissect.world.train.discriminator import Discriminator
from jaxdissect.world.train.real_sampler import object_probs
from jaxdissect.world.weights import save_checkpoint


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="weights/world/generator")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--num-train", type=int, default=20_000, help="world images to train on")
    p.add_argument("--world-seed", type=int, default=0)
    p.add_argument("--seed", type=int, default=0, help="init, z and batch-order seed")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--r1-gamma", type=float, default=0.1)
    p.add_argument("--ema-decay", type=float, default=0.998)
    p.add_argument("--sizes", default=",".join(map(str, WORLD_GENERATOR_SIZES)),
                   help="generator depths z_dim,4x4,8x8,16x16,32x32")
    p.add_argument("--d-widths", default="16,32,64,128")
    p.add_argument("--max-cpu-minutes", type=float, default=60.0,
                   help="stop when this process (plus resumed runs) used this much CPU time")
    p.add_argument("--state-dir", default=None,
                   help="save the full training state here every --save-every steps; "
                        "resume from it if present")
    p.add_argument("--save-every", type=int, default=250)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--snapshot-dir", default=None,
                   help="sample grids and EMA weights (stepN/) every --save-every steps")
    p.add_argument("--translate", type=int, default=0,
                   help="DiffAugment translation range in pixels for the discriminator")
    p.add_argument("--sparsity", type=float, default=0.0,
                   help="weight of the layer4 unit-sparsity penalty (GanHyper.sparsity)")
    p.add_argument("--classes", default=None,
                   help="train on these scene classes only, e.g. 'village' (as ProGAN is "
                        "trained on one LSUN class); default: every class")
    p.add_argument("--closeup", type=float, default=0.0,
                   help="train on close-ups: each real image rendered this many times "
                        "larger and cut to the window framing a house "
                        "(world.source.render_closeup), e.g. 1.5; default: whole scenes")
    p.add_argument("--closeup-every", type=int, default=1,
                   help="with --closeup, only every Nth image (index %% N == N - 1) is a "
                        "close-up, the others whole scenes (default 1: all)")
    p.add_argument("--class-weights", default=None,
                   help="class-balanced real batches: 'uniform' or e.g. 'farm=2,snow=1.5'")
    p.add_argument("--object-weights", default=None,
                   help="draw real images with probability proportional to the product of "
                        "(share of object / its mean share) ** power, e.g. 'door=3': more "
                        "door-rich scenes, for a generator that under-draws doors")
    args = p.parse_args(argv)
    if args.object_weights and args.class_weights:
        p.error("--object-weights and --class-weights are two samplers; give one")
    return args


def sample_grid(model, params, path: Path, seed: int = 123, n: int = 64) -> None:
    from PIL import Image

    from jaxdissect.world.generator import generate, sample_z
    img = np.asarray(generate(model, params, sample_z(model, n, seed)))
    r = img.shape[1]
    side = int(np.sqrt(n))
    grid = img[: side * side].reshape(side, side, r, r, 3).transpose(0, 2, 1, 3, 4)
    grid = (grid.reshape(side * r, side * r, 3) * 255 + 0.5).astype(np.uint8)
    Image.fromarray(grid).save(path)


def real_batch(reals: np.ndarray, seed: int, step: int, batch: int,
               probs: np.ndarray | None = None) -> jax.Array:
    """Step ``step``'s batch: random images (uniform, or drawn with ``probs``), randomly
    mirrored, in [-1, 1]."""
    rng = np.random.default_rng([seed, step])
    x = reals[rng.integers(0, len(reals), batch) if probs is None
              else rng.choice(len(reals), batch, p=probs)]
    flip = rng.random(batch) < 0.5
    x = np.where(flip[:, None, None, None], x[:, :, ::-1], x)
    return jnp.asarray(x, jnp.float32) * (2.0 / 255.0) - 1.0


def parse_class_weights(text: str, class_names) -> np.ndarray:
    """``'uniform'`` or ``'name=w,...'`` (unlisted classes weigh 1) -> ``[C]`` weights."""
    w = np.ones(len(class_names))
    if text.strip() == "uniform":
        return w
    for item in text.split(","):
        name, _, value = item.partition("=")
        if name.strip() not in class_names:
            raise ValueError(f"unknown scene class {name.strip()!r} in --class-weights; "
                             f"classes are {', '.join(class_names)}")
        w[list(class_names).index(name.strip())] = float(value)
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"class weights must be >= 0 with a positive sum, got {text!r}")
    return w


def balanced_batch(reals: np.ndarray, labels: np.ndarray, weights: np.ndarray, seed: int,
                   step: int, batch: int) -> jax.Array:
    """Step ``step``'s batch with class ``c`` taking ``batch * w_c / sum(w)`` slots
    (stratified: rounding goes to random classes), randomly mirrored, in [-1, 1]."""
    rng = np.random.default_rng([seed, step, 1])
    cum = np.cumsum(weights / weights.sum())
    slots = (rng.random() + np.arange(batch)) / batch  # systematic sampling
    classes = np.minimum(np.searchsorted(cum, slots, side="right"), len(weights) - 1)
    members = [np.flatnonzero(labels == c) for c in range(len(weights))]
    idx = np.array([members[c][rng.integers(len(members[c]))] for c in classes])
    x = reals[idx]
    flip = rng.random(batch) < 0.5
    x = np.where(flip[:, None, None, None], x[:, :, ::-1], x)
    return jnp.asarray(x, jnp.float32) * (2.0 / 255.0) - 1.0


def save_state(directory: Path, state: gt.GanState, extra: dict) -> None:
    import orbax.checkpoint as ocp

    directory = directory.resolve()
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(directory / "state", jax.tree.map(np.asarray, state), force=True)
    (directory / "progress.json").write_text(json.dumps(extra) + "\n")


def load_state(directory: Path, like: gt.GanState) -> tuple[gt.GanState, dict]:
    import orbax.checkpoint as ocp

    directory = directory.resolve()
    with ocp.StandardCheckpointer() as ckpt:
        state = ckpt.restore(directory / "state", jax.tree.map(np.asarray, like))
    return jax.tree.map(jnp.asarray, state), json.loads((directory / "progress.json").read_text())


def main(argv=None) -> int:
    args = parse_args(argv)
    model = ProgressiveGenerator(sizes=tuple(int(s) for s in args.sizes.split(",")))
    res = model.resolution
    d_widths = tuple(int(w) for w in args.d_widths.split(","))
    disc = Discriminator(widths=d_widths)
    hyper = gt.GanHyper(z_dim=model.z_dim, learning_rate=args.lr, r1_gamma=args.r1_gamma,
                        ema_decay=args.ema_decay, translate=args.translate,
                        sparsity=args.sparsity)
    classes = args.classes.split(",") if args.classes else None
    weights = (parse_class_weights(args.class_weights, CLASS_NAMES)
               if args.class_weights else None)
    cpu0, wall0 = time.process_time(), time.time()
    if args.closeup and not classes:
        raise ValueError("--closeup needs --classes (close-ups frame a scene class's houses)")
    if classes:
        idx = class_indices(args.world_seed, classes, args.num_train)
        rendered = (render_mixed(args.world_seed, idx, res, args.closeup_every, args.closeup)
                    if args.closeup else render(args.world_seed, idx, res))
    else:
        rendered = WorldSource(args.num_train, seed=args.world_seed, size=res).render_u8(
            0, args.num_train)
    reals, labels = rendered["image"], rendered["label"]
    print(f"rendered {len(reals)} world images at {res}x{res} in {time.time() - wall0:.1f}s",
          flush=True)
    probs, object_sampler = (object_probs(args.object_weights, rendered["seg"][:, 0])
                             if args.object_weights else (None, None))
    if object_sampler:
        print(f"object-weighted sampler: {json.dumps(object_sampler)}", flush=True)

    init_key, base_key = jax.random.split(jax.random.key(args.seed))
    state = gt.init_state(model, disc, hyper, init_key, (res, res, 3))
    prior = {"cpu_seconds": 0.0, "wall_seconds": 0.0, "resumed_at": [], "stages": []}
    state_dir = Path(args.state_dir) if args.state_dir else None
    if state_dir and (state_dir / "progress.json").is_file():
        state, prior = load_state(state_dir, state)
        prior["resumed_at"] = prior.get("resumed_at", []) + [int(state.step)]
        prior.setdefault("stages", [])
        print(f"resumed at step {int(state.step)}", flush=True)
    step = gt.make_step(model, disc, hyper)
    used = lambda: (prior["cpu_seconds"] + time.process_time() - cpu0,
                    prior["wall_seconds"] + time.time() - wall0)
    command = "python scripts/train_world_generator.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None)
    stages = prior["stages"] + [{"from_step": int(state.step), "command": command}]
    metrics = {}
    while int(state.step) < args.steps:
        i = int(state.step)
        if weights is None:
            x = real_batch(reals, args.seed, i, args.batch, probs)
        else:
            x = balanced_batch(reals, labels, weights, args.seed, i, args.batch)
        state, metrics = step(state, x, jax.random.fold_in(base_key, i))
        done = i + 1
        cpu, wall = used()
        if done % args.log_every == 0 or done == 1:
            m = {k: round(float(v), 4) for k, v in metrics.items()}
            print(f"step {done} cpu {cpu / 60:.1f}min wall {wall / 60:.1f}min {m}", flush=True)
        stop = cpu > args.max_cpu_minutes * 60
        if state_dir and (done % args.save_every == 0 or stop):
            save_state(state_dir, state, {"cpu_seconds": cpu, "wall_seconds": wall,
                                          "resumed_at": prior["resumed_at"],
                                          "stages": stages})
        if args.snapshot_dir and done % args.save_every == 0:
            Path(args.snapshot_dir).mkdir(parents=True, exist_ok=True)
            sample_grid(model, state.g_ema, Path(args.snapshot_dir) / f"step{done:06d}.png")
            save_checkpoint(Path(args.snapshot_dir) / f"step{done:06d}", state.g_ema,
                            {"sizes": list(model.sizes), "steps_done": done})
        if stop:
            print(f"CPU budget reached after {done} steps", flush=True)
            break
    cpu, wall = used()
    if weights is not None:
        real_sampler = "class-stratified, class weights " + json.dumps(
            dict(zip(CLASS_NAMES, weights.tolist())))
    elif object_sampler:
        real_sampler = "object-weighted: " + json.dumps(object_sampler)
    else:
        real_sampler = "uniform over images"
    config = {
        "sizes": list(model.sizes), "resolution": res,
        "discriminator_widths": list(d_widths),
        "hyper": dataclasses.asdict(hyper), "batch": args.batch,
        "steps_requested": args.steps, "steps_done": int(state.step),
        "cpu_minutes": round(cpu / 60, 2), "train_minutes": round(wall / 60, 2),
        "resumed_at_steps": prior["resumed_at"],
        "num_train": args.num_train, "world_seed": args.world_seed, "seed": args.seed,
        "classes": classes or list(CLASS_NAMES),
        "closeup": args.closeup or None,
        "closeup_every": args.closeup_every if args.closeup else None,
        "augment": "random x-flip" + (
            f"; discriminator inputs translated by up to {args.translate} px (DiffAugment)"
            if args.translate else ""),
        "real_sampler": real_sampler,
        "stages": stages,
        "params": "exponential moving average of the generator weights",
        "final_metrics": {k: float(v) for k, v in metrics.items()},
        "command": command,
    }
    save_checkpoint(args.out, state.g_ema, config)
    sample_grid(model, state.g_ema, Path(args.out) / "samples.png")
    print(json.dumps({k: config[k] for k in ("steps_done", "cpu_minutes", "train_minutes")}),
          flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
