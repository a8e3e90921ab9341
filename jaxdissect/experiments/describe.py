"""Open-vocabulary dissection: every unit of a layer described by the concepts of a
word list, from probe images and an image-text model, with no segmentation (the
method of CLIP-Dissect, Oikarinen & Weng, ICLR 2023; ``stats.softwpmi``).

``describe(forward, source, model, concepts, ...)``:

    one sweep (``runtime.sweep``) over ``source``, per batch:
        forward(batch, params) -> acts [b, h, w, u] (or [b, u]), images [b, H, W, 3]
        A rows  <- each unit's spatial mean (or max) of acts          (stats.Rows)
        E rows  <- model.encode_images(model.params, images)          (stats.Rows)
    on the host: T = model.encode_texts(concepts), P = cos(E, T) [N, M]
        scores [u, M] = SoftWPMI(P, A) (or "wpmi", "cos3"); label = argmax

The two tables are filled by image index, so they are identical on any number of
devices and processes, and the sweep checkpoints and resumes under a content key
(weights' fingerprints, data identity, pooling) like every sweep. Text embeddings
and scores are computed once on the host from the tables: a new concept list or
method reuses the sweep.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxdissect.experiments import results
from jaxdissect.runtime import devices as sharding
from jaxdissect.runtime import sweep
from jaxdissect.runtime.cache import RunCache
from jaxdissect.runtime.fingerprint import fingerprint
from jaxdissect.stats import softwpmi
from jaxdissect.stats.rows import Rows

Forward = Callable[[dict, Any], tuple[jax.Array, jax.Array]]
POOLS = ("avg", "max")


@results.typed
@dataclasses.dataclass
class DescribeResult(results.Saved):
    """Each unit's open-vocabulary label. ``u`` units, ``M`` concepts.

    concepts: the concept list; method / options: the scoring (``stats.softwpmi``);
    scores ``[u, M]`` float32; label ``[u]`` int64 (index into ``concepts``);
    top_images ``[u, k]`` int64: each unit's probe images by pooled activation, best
    first (the images SoftWPMI reads); num_examples: probe images; pool: "avg"/"max".
    ``save(path)`` / ``DescribeResult.load(path)``: every field, by name.
    """

    concepts: list[str]
    method: str
    options: dict
    scores: np.ndarray
    label: np.ndarray
    top_images: np.ndarray
    num_examples: int
    pool: str = "avg"

    @property
    def num_units(self) -> int:
        return len(self.label)

    def unit_label(self, unit: int) -> str:
        return self.concepts[int(self.label[unit])]

    def labels(self) -> list[str]:
        return [self.concepts[int(i)] for i in self.label]

    def units(self, runner_up: int = 3) -> list[dict]:
        """One record per unit: unit, label, score, the next ``runner_up`` concepts
        with their scores, top images."""
        order = np.argsort(-self.scores, axis=1, kind="stable")[:, :runner_up + 1]
        return [{"unit": u, "label": self.concepts[order[u, 0]],
                 "score": float(self.scores[u, order[u, 0]]),
                 "next": [{"concept": self.concepts[j], "score": float(self.scores[u, j])}
                          for j in order[u, 1:]],
                 "top_images": [int(i) for i in self.top_images[u]]}
                for u in range(self.num_units)]

    def to_json(self) -> dict:
        return {"method": self.method, "options": self.options, "pool": self.pool,
                "num_examples": self.num_examples, "num_units": self.num_units,
                "concepts": list(self.concepts), "units": self.units()}


@dataclasses.dataclass
class ProbeTables:
    """What the sweep measures: ``acts [N, u]`` pooled unit activations and
    ``embeddings [N, D]`` image embeddings, row ``i`` = probe image ``i``."""

    acts: np.ndarray
    embeddings: np.ndarray


def pool_map(acts, pool: str = "avg") -> jax.Array:
    """``[b, h, w, u]`` (or ``[b, u]``) -> ``[b, u]``: the spatial mean or max."""
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    if acts.ndim == 2:
        return acts
    flat = acts.reshape(acts.shape[0], -1, acts.shape[-1]).astype(jnp.float32)
    return flat.mean(1) if pool == "avg" else flat.max(1)


def probe_tables(forward: Forward, source, model, *, params: Any = None, pool: str = "avg",
                 batch_size: int = 32, cache: RunCache | None = None,
                 checkpoint_every: int = 20, progress: bool = True,
                 devices: Sequence[jax.Device] | None = None) -> ProbeTables:
    """The sweep of ``describe`` (see the module docstring): pooled activations and
    image embeddings of every probe image. ``forward(batch, params) -> (acts,
    images01)``; ``model`` an ``ImageTextModel`` whose ``params`` travel as an
    argument of the compiled step."""
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    example = sweep.first_batch(source, batch_size, devices)
    inputs = {k: v for k, v in example.items() if k != "valid"}
    acts_s, images_s = jax.eval_shape(forward, inputs, params)
    if acts_s.ndim not in (2, 4) or images_s.ndim != 4 or images_s.shape[-1] != 3:
        raise ValueError(f"forward must return acts [b,h,w,u] or [b,u] and images "
                         f"[b,H,W,3]; got {acts_s.shape} and {images_s.shape}")
    emb_s = jax.eval_shape(model.encode_images, model.params, images_s)
    if emb_s.ndim != 2:
        raise ValueError(f"encode_images must return [b, D], got {emb_s.shape}")
    n, units, dim = source.num_examples, acts_s.shape[-1], emb_s.shape[-1]
    key = None if cache is None else cache.key(
        "describe", imagetext=fingerprint(model.params), pool=pool, units=units, dim=dim)

    def step(stat, batch, p, mp):
        batch = dict(batch)
        valid = batch.pop("valid")
        acts, images = forward(batch, p)
        a, e = stat.parts
        return sharding.Joint((a.update(pool_map(acts, pool), batch["index"], valid),
                               e.update(model.encode_images(mp, images), batch["index"],
                                        valid)))

    state = sweep.sweep(step, sharding.Joint((Rows.empty(n, units), Rows.empty(n, dim))),
                        source, batch_size=batch_size, replicated=(params, model.params),
                        name="describe", key=key,
                        cache_dir=None if cache is None else cache.folder,
                        checkpoint_every=checkpoint_every, progress=progress, devices=devices)
    acts, emb = state.parts
    return ProbeTables(acts.compute(), emb.compute())


def label_units(tables: ProbeTables, model, concepts: Sequence[str],
                method: str = "softwpmi", pool: str = "avg", **options) -> DescribeResult:
    """Scores and labels from the sweep's tables and ``model``'s text embeddings."""
    concepts = list(concepts)
    if not concepts or len(set(concepts)) != len(concepts):
        raise ValueError("concepts must be a non-empty list without repeats")
    text = np.asarray(model.encode_texts(concepts), np.float32)
    if text.shape != (len(concepts), tables.embeddings.shape[1]):
        raise ValueError(f"encode_texts gave {text.shape}, expected ({len(concepts)}, "
                         f"{tables.embeddings.shape[1]})")
    sim = softwpmi.similarity(jnp.asarray(tables.embeddings), jnp.asarray(text))
    return label_similarity(sim, tables.acts, concepts, method, pool, **options)


def label_similarity(sim, acts, concepts: Sequence[str], method: str = "softwpmi",
                     pool: str = "avg", **options) -> DescribeResult:
    """Scores and labels from a similarity matrix ``sim [N, M]`` (image i, concept m)
    and pooled activations ``acts [N, u]``: :func:`label_units` after the image-text
    model, or any other image-concept score (the world's ground truth)."""
    concepts = list(concepts)
    if np.shape(sim) != (np.shape(acts)[0], len(concepts)):
        raise ValueError(f"similarity {np.shape(sim)} does not fit {np.shape(acts)[0]} "
                         f"images and {len(concepts)} concepts")
    settings = {"softwpmi": softwpmi.SOFT_WPMI_DEFAULTS, "wpmi": softwpmi.WPMI_DEFAULTS,
                "cos3": {}}.get(method)
    if settings is None:
        raise ValueError(f"unknown method {method!r}; methods are "
                         f"{', '.join(softwpmi.METHODS)}")
    unknown = set(options) - set(settings)
    if unknown:
        raise ValueError(f"method {method} has no options {sorted(unknown)}")
    settings = {**settings, **options}
    if "top_k" in settings:
        settings["top_k"] = min(int(settings["top_k"]), acts.shape[0])
    scores = softwpmi.scores(sim, acts, method, **settings)
    k = settings.get("top_k", min(100, acts.shape[0]))
    top = np.asarray(softwpmi.top_images(acts, k), np.int64)
    return DescribeResult(concepts=concepts, method=method, options=settings, scores=scores,
                          label=np.argmax(scores, axis=1).astype(np.int64), top_images=top,
                          num_examples=acts.shape[0], pool=pool)


def describe(forward: Forward, source, model, concepts: Sequence[str], *,
             method: str = "softwpmi", pool: str = "avg", params: Any = None,
             batch_size: int = 32, cache: RunCache | None = None,
             checkpoint_every: int = 20, progress: bool = True,
             devices: Sequence[jax.Device] | None = None, **options) -> DescribeResult:
    """Describes every unit of the layer ``forward`` returns; see the module docstring.

    ``forward(batch, params) -> (acts, images01)`` (``experiments.dissect.spec_forward``
    for a ``ModelSpec``); ``model``: an ``ImageTextModel`` (``jaxdissect.imagetext``);
    ``concepts``: the words; ``method``: ``"softwpmi"`` (default), ``"wpmi"`` or
    ``"cos3"``, ``options`` overriding its defaults (``stats.softwpmi``); ``pool``:
    how a unit's map becomes one number per image (the paper: ``"avg"``).
    ``cache``: the run's ``runtime.cache.RunCache`` (its identity names the model,
    layer, data and settings), where the sweep checkpoints.
    """
    tables = probe_tables(forward, source, model, params=params, pool=pool,
                          batch_size=batch_size, cache=cache,
                          checkpoint_every=checkpoint_every, progress=progress,
                          devices=devices)
    return label_units(tables, model, concepts, method, pool, **options)


def compare(described: DescribeResult, dissected, distractors: Sequence[str] = (),
            near: int = 5) -> dict:
    """The open-vocabulary labels beside a ``DissectResult`` of the same units:
    ``agree`` (units dissection labels whose open label is the same word),
    ``labelled`` (units dissection labels), ``rate``, ``near_agree`` / ``near_rate``
    (labelled units whose open label is among their ``near`` highest-IoU concepts),
    ``distractor_wins`` (units whose open label is one of ``distractors``) and
    per-unit pairs (with ``iou_rank``: the open label's rank by IoU, 0 = best, None
    if dissection's labels do not hold it)."""
    if dissected.num_units != described.num_units:
        raise ValueError(f"{described.num_units} described units, {dissected.num_units} "
                         "dissected")
    distractors = set(distractors)
    names = {n: i for i, n in enumerate(dissected.labels.names) if i > 0}
    iou = np.asarray(dissected.iou)
    pairs, agree, near_agree = [], 0, 0
    for u in range(described.num_units):
        truth = dissected.unit_label(u)
        label = described.unit_label(u)
        same = truth is not None and truth == label
        rank = None
        if label in names:
            rank = int((iou[u, 1:] > iou[u, names[label]]).sum())
        agree += same
        near_agree += truth is not None and rank is not None and rank < near
        pairs.append({"unit": u, "open": label, "dissect": truth, "agree": bool(same),
                      "iou_rank": rank})
    labelled = int(np.asarray(dissected.labelled).sum())
    wins = sum(p["open"] in distractors for p in pairs)
    return {"labelled": labelled, "agree": int(agree),
            "rate": agree / labelled if labelled else float("nan"),
            "near": near, "near_agree": int(near_agree),
            "near_rate": near_agree / labelled if labelled else float("nan"),
            "units": described.num_units, "distractor_wins": int(wins),
            "distractor_rate": wins / described.num_units, "pairs": pairs}


def describe_spec(spec, layer: str, source, model, concepts: Sequence[str], *,
                  cache: RunCache | None = None, **kw) -> DescribeResult:
    """``describe`` of ``layer`` of a :class:`~jaxdissect.spec.ModelSpec` (a classifier
    reads the batch's images, a generator its ``z``; ``experiments.dissect.spec_forward``),
    its weights an argument of the compiled step; ``cache`` as in :func:`describe`."""
    from jaxdissect.experiments.dissect import spec_forward
    return describe(spec_forward(spec, layer), source, model, concepts, params=spec.params,
                    cache=cache, **kw)
