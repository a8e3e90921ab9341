"""The generator edits of ``experiments.intervene``, shown on a few samples.

The same edits the measurements make, through the same split (``split_generator``:
``head`` once, then ``tail`` with ``intervene._unit_edit``), so a picture is one of
the measured edits and not a second code path:

* **removal**: a concept's best-IoU units zeroed everywhere (the removal curve's
  units, 20 of them when the curve measured 20, else its largest set);
* **insertion**: a concept's inserted units set to their high (99.5% quantile)
  levels at one cell of the layer's ``[h, w]`` grid, for a few cells spread over
  the grid, exactly one of ``insertion_by_context``'s edits.

Each returns the unedited and edited images and, per edited image, the pixels of
the segmentation that lost the concept (removal) or gained it (insertion).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxdissect.experiments.intervene import _unit_edit, label_presence

REMOVAL_UNITS = 20     # the paper's picture: about 20 tree units zeroed


@dataclasses.dataclass(frozen=True)
class EditPictures:
    """``samples [b]`` indices into the source; ``base [b, H, W, 3]`` unedited and
    ``edited [b, E, H, W, 3]`` images (``spec.images``, unclipped); ``changed [b, E,
    Hs, Ws]`` the segmentation's pixels that gained (insertion) or lost (removal) the
    concept; ``units`` edited (best IoU first); ``locations [E, 2]`` the layer cells
    (y, x) edited (insertion; ``[1, 0]`` for removal) on a ``grid`` (h, w); ``edit``
    and ``which`` say in words what was edited and which samples are shown."""

    kind: str
    concept: str
    units: np.ndarray
    samples: np.ndarray
    base: np.ndarray
    edited: np.ndarray
    changed: np.ndarray
    locations: np.ndarray
    grid: tuple
    edit: str
    which: str


def spread_locations(grid: tuple[int, int], k: int) -> np.ndarray:
    """``k`` cells ``[k, 2]`` (y, x) spread over an ``[h, w]`` grid: the centres of a
    near-square ``rows x cols`` tiling, row by row (the first ``k``)."""
    h, w = grid
    rows = max(1, math.isqrt(k))
    cols = math.ceil(k / rows)
    cells = [((2 * i + 1) * h // (2 * rows), (2 * j + 1) * w // (2 * cols))
             for i in range(rows) for j in range(cols)]
    return np.array(cells[:k], np.int64).reshape(-1, 2)


def _edited(split, segment, batch, alphas, value, concept: int, num_labels: int,
            cache=None):
    """``alphas [E, ...]`` per-unit or per-cell masks, ``value [units]`` -> ``(base
    [b, H, W, 3], edited [E, b, H, W, 3], has_base [b, Hs, Ws], has [E, b, Hs, Ws])``.
    With ``cache`` (the intervention's ``RunCache``), computed once per run and read
    back by a re-run (``runtime.computed``)."""
    from jaxdissect.runtime.computed import computed
    n_units = value.shape[0]

    @jax.jit
    def run(params, batch, alphas, value):
        acts = split.head(params, batch)
        base = split.tail(params, acts, _unit_edit(jnp.zeros((n_units,)), value))

        def has(images):
            return label_presence(segment(images), num_labels)[..., concept]

        def one(alpha):
            images = split.tail(params, acts, _unit_edit(alpha, value))
            return images, has(images)

        images, present = jax.lax.map(one, alphas)
        return base, images, has(base), present

    args = (split.params, batch, jnp.asarray(alphas), jnp.asarray(value))
    return list(computed(cache, "picture-edits", jax.eval_shape(run, *args),
                         lambda: run(*args), batch=batch, alphas=np.asarray(alphas),
                         value=np.asarray(value), concept=concept, num_labels=num_labels))


def _choose(split, segment, source, concept, num_labels, count, pool, cache=None):
    """The ``count`` samples among the first ``pool`` with the largest share of
    ``concept`` unedited (ties: the earlier), in index order."""
    pool = min(pool, source.num_examples)
    batch = source.batch(0, pool)
    n_units = _units_of(split, batch)
    _, _, has, _ = _edited(split, segment, batch, np.zeros((0, n_units), np.float32),
                           np.zeros((n_units,), np.float32), concept, num_labels, cache)
    share = has.mean(axis=(1, 2))
    return np.sort(np.argsort(-share, kind="stable")[:min(count, pool)])


def _units_of(split, batch) -> int:
    return int(jax.eval_shape(split.head, split.params, batch).shape[-1])


def _batch(source, samples):
    """The rows ``samples`` of ``source`` as one batch (``source.batch`` per row)."""
    rows = [source.batch(int(i), int(i) + 1) for i in samples]
    return {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}


def removal_pictures(split, segment, source, curve, concept: int, num_labels: int, *,
                     count: int = 8, pool: int = 64, cache=None) -> EditPictures:
    """The removal curve's units zeroed on the ``count`` samples (of the first
    ``pool``) showing the most of the concept. ``curve`` an ``intervene.RemovalCurve``."""
    sizes = np.asarray(curve.n_units)
    n = REMOVAL_UNITS if REMOVAL_UNITS in sizes else int(sizes.max())
    units = np.asarray(curve.units)[:n]
    samples = _choose(split, segment, source, concept, num_labels, count, pool, cache)
    batch = _batch(source, samples)
    n_units = _units_of(split, batch)
    alpha = np.zeros((1, n_units), np.float32)
    alpha[0, units] = 1
    base, edited, has0, has = _edited(split, segment, batch, alpha,
                                      np.zeros((n_units,), np.float32), concept, num_labels,
                                      cache)
    edit = (f"the {n} best-IoU {curve.concept} units zeroed (n = {n}, measured on the "
            f"removal curve)" if n == REMOVAL_UNITS else
            f"the {n} best-IoU {curve.concept} units zeroed (the removal curve's largest "
            f"set; the curve stops below {REMOVAL_UNITS})")
    which = (f"the {len(samples)} of the first {min(pool, source.num_examples)} samples "
             f"with the most {curve.concept} unedited")
    return EditPictures("removal", curve.concept, units, samples, base,
                        np.moveaxis(edited, 0, 1), np.moveaxis(has0[None] & ~has, 0, 1),
                        np.zeros((1, 2), np.int64), (0, 0), edit, which)


def insertion_pictures(split, segment, source, summary, high, concept: int,
                       num_labels: int, *, count: int = 4, locations: int = 4,
                       cache=None) -> EditPictures:
    """The insertion's units (``summary.units``, an ``intervene.InsertionSummary``)
    set to ``high [units of the layer]`` at each of ``locations`` cells spread over
    the grid, on the first ``count`` samples."""
    samples = np.arange(min(count, source.num_examples))
    batch = _batch(source, samples)
    shape = jax.eval_shape(split.head, split.params, batch).shape
    h, w, n_units = int(shape[1]), int(shape[2]), int(shape[3])
    units = np.asarray(summary.units, np.int64)
    value = np.zeros((n_units,), np.float32)
    value[units] = np.asarray(high, np.float32)[units]
    cells = spread_locations((h, w), locations)
    alphas = np.zeros((len(cells), h, w, n_units), np.float32)
    for e, (y, x) in enumerate(cells):
        alphas[e, y, x, units] = 1
    base, edited, has0, has = _edited(split, segment, batch, alphas, value, concept,
                                      num_labels, cache)
    edit = (f"the {len(units)} inserted {summary.concept} units set to their 99.5% "
            f"quantile levels at one cell of the {h}x{w} layer grid")
    return EditPictures("insertion", summary.concept, units, samples, base,
                        np.moveaxis(edited, 0, 1), np.moveaxis(has & ~has0[None], 0, 1),
                        cells, (h, w), edit, f"the first {len(samples)} samples")


def intervention_pictures(split, segment, source, result, high, *, removal_count: int = 8,
                          insertion_count: int = 4, locations: int = 4,
                          cache=None) -> list[EditPictures]:
    """One ``EditPictures`` per removal and per insertion concept of ``result`` (an
    ``intervene.InterventionResult``); ``high [units]`` the 99.5% quantile levels.
    ``cache``: the intervention's ``RunCache``, where the edited images are kept, so a
    re-run of the same run draws its pictures without running the model."""
    labels = result.labels
    out = [removal_pictures(split, segment, source, cv, labels.index(name), len(labels),
                            count=removal_count, cache=cache)
           for name, cv in result.removal.items()]
    out += [insertion_pictures(split, segment, source, ins, high, labels.index(name),
                               len(labels), count=insertion_count, locations=locations,
                               cache=cache)
            for name, ins in result.insertion.items()]
    return out
