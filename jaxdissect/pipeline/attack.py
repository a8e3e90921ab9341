"""The attack run: a targeted Carlini-Wagner attack on a classifier, seen through the
units of one layer (the paper's "Applications": ski resort -> bedroom).

Attacks the images of class ``source`` that the model classifies correctly
(``experiments.attack.cw_attack``), measures each unit's mean activation on the clean
and the adversarial images, and relates the units moved most to the classes' important
units: a per-class ranking by single-unit ablation, read from an ``ablation.json`` /
``.npz`` of ``jaxdissect ablate`` (``ranking``) or computed here on the train split
(cached under the complete run's identity). Units are named by a cached dissection
(``dissect_images``; 0 skips it). Writes ``OUT/attack.html``, ``attack.json``,
``examples.png``, ``adversarial.npy``, plots, and ``OUT/dissect/``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
import time
from typing import Any

import numpy as np

from jaxdissect.errors import UserError
from jaxdissect.pipeline import resolve as R
from jaxdissect.pipeline.config import AttackConfig
from jaxdissect.pipeline.dissection import Dissection, dissect_into
from jaxdissect.pipeline.workspace import Workspace, open_workspace


@dataclasses.dataclass(frozen=True)
class AttackOutcome:
    """``result``: the ``AttackResult``; ``page``: the final path of ``attack.html``."""
    result: Any
    page: str
    out: str


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
    raise UserError(f"unknown class {name!r}; classes are {names}")


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


def class_ranking(cfg: AttackConfig, model, layer, num_units, num_classes, ws: Workspace):
    """``([C, units] ranking, where it came from)``: from ``cfg.ranking`` or by
    single-unit ablation on the train split here (cached in ``ws``)."""
    if cfg.ranking:
        if not os.path.isfile(cfg.ranking):
            raise FileNotFoundError(f"--ranking file {cfg.ranking!r} does not exist")
        if cfg.ranking.endswith(".npz"):      # a saved AblationResult
            from jaxdissect.experiments.ablate import AblationResult
            ranking = AblationResult.load(cfg.ranking).ranking
        else:                                  # ablation.json, or any {"ranking": [[..]]}
            with open(cfg.ranking) as f:
                ranking = np.asarray(json.load(f).get("ranking"))
        if ranking.shape != (num_classes, num_units):
            raise UserError(f"--ranking {cfg.ranking}: ranking has shape {ranking.shape}, "
                            f"expected [{num_classes}, {num_units}] for this model and layer")
        return ranking, f"from {cfg.ranking}"
    from jaxdissect.experiments import ablate, attack
    train = R.load_data(cfg.data, model, cfg.rank_images, R.WORLD_TRAIN_SEED, split="train")
    cache = ws.cache(model=model, layer=layer, data=train, segmenter=None,
                     batch_size=cfg.batch_size)
    ranking = attack.importance_ranking(
        ablate.split_classifier(model, layer), train, num_units, num_classes,
        batch_size=cfg.batch_size, cache=cache, name="importance-train",
        progress=cfg.progress)
    return ranking, (f"single-unit ablation on {train.num_examples} train-split images "
                     f"(balanced-accuracy damage, ties broken by the class logit's drop)")


def run_attack(cfg: AttackConfig) -> AttackOutcome:
    """The ``jaxdissect attack`` run (see the module docstring)."""
    import jax
    import jax.numpy as jnp

    from jaxdissect.experiments import attack
    from jaxdissect.report import applications as A
    t0 = time.perf_counter()
    model = R.load_model(cfg.model, cfg.weights)
    if model.kind != "classifier":
        raise UserError(f"{cfg.model!r} is a generator; the attack needs a classifier")
    layer = cfg.layer or model.default_layer
    R.check_layer(model, layer)
    seed = R.WORLD_VAL_SEED if cfg.seed is None else cfg.seed
    source = R.load_data(cfg.data, model, cfg.search_images, seed, split="val")
    class_names = model.class_names or getattr(source, "class_names", None)
    src, tgt = class_index(cfg.source, class_names), class_index(cfg.target, class_names)
    if src == tgt:
        raise UserError("--source and --target are the same class")
    names = list(class_names) if class_names else [str(i) for i in range(max(src, tgt) + 1)]
    out = cfg.out or os.path.join(
        "results", f"attack-{os.path.basename(model.name)}-{names[src]}-{names[tgt]}")
    apply_fn, layer_fn = apply_fns(model, layer)
    predict = lambda x: jnp.argmax(apply_fn(model.params, x), -1)  # noqa: E731
    example = jnp.asarray(source.batch(0, 1)["image"], jnp.float32)
    num_classes = int(apply_fn(model.params, example).shape[-1])
    if max(src, tgt) >= num_classes:
        raise UserError(f"class index out of range: the model has {num_classes} classes")
    num_units = int(jax.eval_shape(lambda x: layer_fn(model.params, x), example).shape[-1])

    def say(msg):   # what the run is doing, for the steps without their own bar
        if cfg.progress:
            print(f"[{time.perf_counter() - t0:5.0f}s] {msg}", file=sys.stderr, flush=True)

    with open_workspace(out, "attack", cfg.force) as ws:
        if cfg.ranking:     # check the file before the attack runs
            class_ranking(cfg, model, layer, num_units, num_classes, ws)
        say(f"looking for {cfg.num_images} correctly classified {names[src]} images among "
            f"{source.num_examples}")
        idx, images, seen = find_images(source, src, predict, cfg.num_images, cfg.batch_size)
        if not idx:
            raise UserError(f"no correctly classified {names[src]!r} image among the first "
                            f"{source.num_examples} ({seen} of that class); raise "
                            f"--search-images")
        recognition = attack.recognition_counts(source, src, predict, cfg.batch_size)
        say(f"attacking {len(idx)} {names[src]} images towards {names[tgt]} ({cfg.steps} "
            f"Adam steps; the first chunk compiles)")
        res = attack.cw_attack(apply_fn, model.params, images, tgt, steps=cfg.steps,
                               learning_rate=cfg.lr, c=cfg.c, kappa=cfg.kappa,
                               progress=cfg.progress)
        adv = np.asarray(res.adversarial)
        shift = attack.unit_shift(layer_fn, model.params, images, adv,
                                  batch_size=cfg.batch_size)
        say("ranking the units of each class" + (f" (from {cfg.ranking})" if cfg.ranking else
            f" by single-unit ablation on {cfg.rank_images} train images"))
        ranking, ranking_from = class_ranking(cfg, model, layer, num_units, num_classes, ws)
        unit_labels, dissect_link = None, None
        if cfg.dissect_images > 0:
            dsrc = R.load_data(cfg.data, model, cfg.dissect_images, R.WORLD_TRAIN_SEED,
                               split="train")
            seg_name = R.default_segmenter(model, cfg.data, cfg.segmenter)
            d = Dissection(model, cfg.model, layer, dsrc, R.load_segmenter(seg_name, dsrc, model),
                           seg_name, f"{cfg.data}@train",
                           1 if cfg.seg_downsample is None else cfg.seg_downsample,
                           cfg.upsample, cfg.quantile, cfg.miniou, cfg.batch_size,
                           progress=cfg.progress, model_weights=cfg.weights)
            dres, _ = dissect_into(d, ws.part("dissect"),
                                   index_link=os.path.join("..", "attack.html"))
            unit_labels = [dres.unit_label(u) for u in range(num_units)]
            dissect_link = "dissect/report.html"
        pred = np.asarray(res.logits).argmax(-1)
        result = attack.AttackResult(
            model=model.name, layer=layer, source_class=names[src], target_class=names[tgt],
            source_index=src, target_index=tgt, steps=cfg.steps, learning_rate=cfg.lr,
            c=cfg.c, kappa=cfg.kappa, image_index=np.asarray(idx, np.int64),
            success=np.asarray(res.success), l2=np.asarray(res.l2, np.float64),
            adversarial_class=tuple(names[p] if p < len(names) else str(p) for p in pred),
            first_success=np.asarray(res.first_success, np.int64), shift=shift,
            ranking=np.asarray(ranking, np.int64), ranking_from=ranking_from,
            unit_labels=None if unit_labels is None else tuple(unit_labels), top=cfg.top,
            recognition=recognition)
        np.save(ws.path("adversarial.npy"), adv)
        show = min(len(idx), 8)
        pert = np.clip(0.5 + 10 * (adv[:show] - images[:show]), 0, 1)
        examples = A.image_grid([list(images[:show]), list(adv[:show]), list(pert)],
                                ws.path("examples.png"))
        page = ws.final_path(A.write_attack(ws.folder, result, examples,
                                            dissect_link=dissect_link))
    return AttackOutcome(result, page, os.path.abspath(out))
