"""``jaxdissect attack``: a targeted Carlini–Wagner attack on a classifier, seen
through the units of one layer (the paper's "Applications": ski resort -> bedroom).

Attacks the images of class ``--source`` that the model classifies correctly
(``jaxdissect.experiments.attack.cw_attack``), measures each unit's mean activation on the
clean and the adversarial images, and relates the units moved most to the
classes' important units: a per-class ranking by single-unit ablation, read from
an ``ablation.json`` of ``jaxdissect ablate`` (``--ranking``) or computed here on
the train split (``jaxdissect.experiments.ablate``: balanced-accuracy damage, ties broken by
the drop of the class's logit, ``attack.class_logit_drop``). Units are named by a cached dissection
(``--dissect-images``; 0 skips it). Writes ``OUT/attack.html``, ``attack.json``,
``examples.png``, ``adversarial.npy`` (the adversarial images), plots, and
``OUT/dissect/``.
"""

from __future__ import annotations

import functools
import json
import os

import numpy as np

from jaxdissect.commands import _common as C

HELP = "adversarial attack (Carlini-Wagner L2) and the units it moves"


def add_arguments(p):
    C.add_common(p, kind_default_model="world")
    p.add_argument("--data", default="world", help="world | image folder | tfds:NAME")
    p.add_argument("--source", default="ski_resort", help="class of the attacked images")
    p.add_argument("--target", default="bedroom", help="class the attack aims for")
    p.add_argument("--num-images", type=int, default=16, help="images to attack")
    p.add_argument("--search-images", type=int, default=2000,
                   help="images searched for correctly classified source-class images")
    p.add_argument("--steps", type=int, default=200, help="Adam steps")
    p.add_argument("--lr", type=float, default=0.01, help="Adam learning rate (tanh space)")
    p.add_argument("--c", type=float, default=10.0, help="weight of the margin loss")
    p.add_argument("--kappa", type=float, default=0.0, help="confidence margin")
    p.add_argument("--top", type=int, default=20, help="k of the most moved / important units")
    p.add_argument("--ranking", default=None,
                   help="ablation.npz (or ablation.json) from jaxdissect ablate with the "
                        "per-class ranking (default: rank here by single-unit ablation)")
    p.add_argument("--rank-images", type=int, default=500,
                   help="train-split images for the single-unit ablation ranking")
    p.add_argument("--dissect-images", type=int, default=1000,
                   help="images dissected to name units (0: do not dissect)")
    p.add_argument("--seed", type=int, default=None,
                   help="data seed of the attacked images (world default: the val seed)")


def _logits(model, params, images01):
    return model.run(params, images01)[0]


_APPLY_FNS: dict = {}


def apply_fns(model, layer):
    """``(logits_fn, layer_fn)`` partials, one pair per (model, layer), so that the
    jitted attack (which takes them as static arguments) compiles once per process."""
    key = (model, layer)
    if key not in _APPLY_FNS:
        _APPLY_FNS[key] = (functools.partial(_logits, model),
                           functools.partial(_layer, model, layer))
    return _APPLY_FNS[key]


def _layer(model, layer, params, images01):
    return model.maps(layer, model.activations(params, images01, layer))


def class_index(name: str, class_names) -> int:
    names = list(class_names or ())
    if name in names:
        return names.index(name)
    if name.isdigit() and (not names or int(name) < len(names)):
        return int(name)
    raise C.UserError(f"unknown class {name!r}; classes are {names}")


def find_images(source, label: int, predict, want: int, batch_size: int):
    """The first ``want`` images of class ``label`` that ``predict`` gets right;
    returns ``(indices, images, looked_at)`` with ``looked_at`` images of the class seen."""
    import jax.numpy as jnp
    idx, imgs, seen = [], [], 0
    for start in range(0, source.num_examples, batch_size):
        b = source.batch(start, min(start + batch_size, source.num_examples))
        hit = np.flatnonzero(b["label"] == label)
        if hit.size == 0:
            continue
        seen += hit.size
        pred = np.asarray(predict(jnp.asarray(b["image"][hit], jnp.float32)))
        for j in hit[pred == label]:
            idx.append(start + int(j))
            imgs.append(b["image"][j])
            if len(idx) == want:
                return idx, np.stack(imgs), seen
    return idx, (np.stack(imgs) if imgs else None), seen


def class_ranking(loaded, layer, args, num_units, num_classes, out):
    """``[C, units]`` ranking: from ``--ranking`` or by single-unit ablation here."""
    if args.ranking:
        if not os.path.isfile(args.ranking):
            raise FileNotFoundError(f"--ranking file {args.ranking!r} does not exist")
        if args.ranking.endswith(".npz"):      # a saved AblationResult
            from jaxdissect.experiments.ablate import AblationResult
            ranking = AblationResult.load(args.ranking).ranking
        else:                                  # ablation.json, or any {"ranking": [[..]]}
            ranking = np.asarray(json.load(open(args.ranking)).get("ranking"))
        if ranking.shape != (num_classes, num_units):
            raise C.UserError(f"--ranking {args.ranking}: ranking has shape {ranking.shape}, "
                              f"expected [{num_classes}, {num_units}] for this model and layer")
        return ranking, f"from {args.ranking}"
    from jaxdissect.experiments import ablate
    train = C.load_data(args.data, loaded, args.rank_images, C.WORLD_TRAIN_SEED, split="train")
    split = ablate.split_classifier(loaded, layer)
    from jaxdissect.experiments import attack
    ranking = attack.importance_ranking(
        split, train, num_units, num_classes, batch_size=args.batch_size,
        cache_dir=os.path.join(out, "cache"), cache_key={"model": loaded.name, "layer": layer},
        name="importance-train", progress=not args.no_progress)
    return ranking, (f"single-unit ablation on {train.num_examples} train-split images "
                     f"(balanced-accuracy damage, ties broken by the class logit's drop)")


@C.writes_results
def run(args) -> int:
    import sys
    import time

    import jax
    import jax.numpy as jnp

    from jaxdissect.experiments import attack
    from jaxdissect.report import applications as A
    t0 = time.perf_counter()
    C.check_positive(num_images=args.num_images, search_images=args.search_images,
                     steps=args.steps, lr=args.lr, top=args.top, rank_images=args.rank_images,
                     batch_size=args.batch_size)
    if args.c <= 0 or args.kappa < 0:
        raise C.UserError("--c must be positive and --kappa >= 0")
    loaded = C.load_model(args.model, args.weights)
    if loaded.kind != "classifier":
        raise C.UserError(f"{args.model!r} is a generator; the attack needs a classifier")
    layer = args.layer or loaded.default_layer
    C.check_layer(loaded, layer)
    seed = C.WORLD_VAL_SEED if args.seed is None else args.seed
    source = C.load_data(args.data, loaded, args.search_images, seed, split="val")
    class_names = loaded.class_names or getattr(source, "class_names", None)
    src, tgt = class_index(args.source, class_names), class_index(args.target, class_names)
    if src == tgt:
        raise C.UserError("--source and --target are the same class")
    names = list(class_names) if class_names else [str(i) for i in range(max(src, tgt) + 1)]
    out = C.results(args, "attack", os.path.join(
        "results", f"attack-{os.path.basename(loaded.name)}-{names[src]}-{names[tgt]}"))
    apply_fn, layer_fn = apply_fns(loaded, layer)
    predict = lambda x: jnp.argmax(apply_fn(loaded.params, x), -1)  # noqa: E731
    num_classes = int(apply_fn(loaded.params, jnp.asarray(
        source.batch(0, 1)["image"], jnp.float32)).shape[-1])
    if max(src, tgt) >= num_classes:
        raise C.UserError(f"class index out of range: the model has {num_classes} classes")
    example = jnp.asarray(source.batch(0, 1)["image"], jnp.float32)
    num_units = int(jax.eval_shape(lambda x: layer_fn(loaded.params, x), example).shape[-1])
    if args.ranking:     # check the file before the attack runs
        class_ranking(loaded, layer, args, num_units, num_classes, out)

    def say(msg):   # what the command is doing, for the steps without their own bar
        if not args.no_progress:
            print(f"[{time.perf_counter() - t0:5.0f}s] {msg}", file=sys.stderr, flush=True)
    say(f"looking for {args.num_images} correctly classified {names[src]} images among "
        f"{source.num_examples}")
    idx, images, seen = find_images(source, src, predict, args.num_images, args.batch_size)
    if not idx:
        raise C.UserError(f"no correctly classified {names[src]!r} image among the first "
                          f"{source.num_examples} ({seen} of that class); raise "
                          f"--search-images")
    say(f"attacking {len(idx)} {names[src]} images towards {names[tgt]} ({args.steps} "
        f"Adam steps; the first chunk compiles)")
    res = attack.cw_attack(apply_fn, loaded.params, images, tgt, steps=args.steps,
                           learning_rate=args.lr, c=args.c, kappa=args.kappa,
                           progress=not args.no_progress)
    adv = np.asarray(res.adversarial)
    shift = attack.unit_shift(layer_fn, loaded.params, images, adv,
                              batch_size=args.batch_size)
    say("ranking the units of each class" + (f" (from {args.ranking})" if args.ranking else
        f" by single-unit ablation on {args.rank_images} train images"))
    ranking, ranking_from = class_ranking(loaded, layer, args, num_units, num_classes, out)
    unit_labels, dissect_link = None, None
    if args.dissect_images > 0:
        dsrc = C.load_data(args.data, loaded, args.dissect_images, C.WORLD_TRAIN_SEED,
                           split="train")
        seg_name = C.default_segmenter(args, loaded)
        segmenter = C.load_segmenter(seg_name, dsrc, loaded)
        dres, _ = C.run_dissection(
            loaded, dsrc, segmenter, layer, os.path.join(out, "dissect"),
            quantile=args.quantile, miniou=args.miniou, batch_size=args.batch_size,
            progress=not args.no_progress, data_name=f"{args.data}@train",
            seg_name=seg_name, seg_downsample=args.seg_downsample, upsample=args.upsample,
            index_link=os.path.join("..", "attack.html"))
        unit_labels = [dres.unit_label(u) for u in range(num_units)]
        dissect_link = "dissect/report.html"
    pred = np.asarray(res.logits).argmax(-1)
    result = attack.AttackResult(
        model=loaded.name, layer=layer, source_class=names[src], target_class=names[tgt],
        source_index=src, target_index=tgt, steps=args.steps, learning_rate=args.lr,
        c=args.c, kappa=args.kappa, image_index=np.asarray(idx, np.int64),
        success=np.asarray(res.success), l2=np.asarray(res.l2, np.float64),
        adversarial_class=tuple(names[p] if p < len(names) else str(p) for p in pred),
        first_success=np.asarray(res.first_success, np.int64), shift=shift,
        ranking=np.asarray(ranking, np.int64), ranking_from=ranking_from,
        unit_labels=None if unit_labels is None else tuple(unit_labels), top=args.top)
    os.makedirs(out, exist_ok=True)
    np.save(os.path.join(out, "adversarial.npy"), adv)
    show = min(len(idx), 8)
    pert = np.clip(0.5 + 10 * (adv[:show] - images[:show]), 0, 1)
    examples = A.image_grid([list(images[:show]), list(adv[:show]), list(pert)],
                            os.path.join(out, "examples.png"))
    page = A.write_attack(out, result, examples, dissect_link=dissect_link)
    for f in result.findings():
        print(f.plain())
    print(C.final_path(page))
    return 0
