"""The app's live models: a generator that repaints a brushed region, a classifier
whose units switch off and on. Each is made once per dissection, with its functions
jitted at fixed shapes (one image per request), so that after the first compile a
request runs one compiled call.

* ``Painter.paint(seed, index, mask [H, W], units, mode)``: the generated image of
  latent ``index`` of ``ZSource(seed)`` with ``units`` of the dissected layer turned
  on (set to their 99.5% quantile level from the dissection) or off (0) inside the
  mask, as ``jaxdissect.experiments.paint`` does (the mask is averaged over each
  feature cell: ``region_to_grid``; the edit is ``paint_edit``).
* ``Switcher.probabilities(index, off, on)``: the classifier's class probabilities
  for image ``index`` of the dissection's data with ``off`` units set to 0 and ``on``
  units set to their 99.5% level over the whole map, beside the unedited ones.
"""

from __future__ import annotations

import io
import threading
import time

import numpy as np


def make(dissection, spec):
    """A ``Painter`` (generators) or ``Switcher`` (classifiers) for ``spec``."""
    if spec.kind != dissection.kind:
        dissection.kind = spec.kind           # the model knows best
    spec.check_layer(dissection.layer)
    return (Painter if spec.kind == "generator" else Switcher)(dissection, spec)


def png_bytes(image01: np.ndarray) -> bytes:
    """``[H, W, 3]`` in [0, 1] -> PNG bytes."""
    from PIL import Image
    buf = io.BytesIO()
    u8 = (np.clip(np.asarray(image01, np.float32), 0, 1) * 255 + 0.5).astype(np.uint8)
    Image.fromarray(u8).save(buf, format="PNG")
    return buf.getvalue()


def _high(dissection, n_units: int) -> np.ndarray:
    """Each unit's "on" level: the 99.5% quantile, else the highest level dissected."""
    levels = dissection.levels
    if not levels:
        return np.asarray([u.get("threshold", 0.0) for u in dissection.report["units"]],
                          np.float32)
    q = 0.005 if 0.005 in levels else min(levels)
    high = np.asarray(levels[q], np.float32)
    if high.shape != (n_units,):
        raise ValueError(f"the dissection's levels have {high.shape[0]} units, the layer "
                         f"{n_units}")
    return high


class _Live:
    def __init__(self, dissection, spec):
        import jax
        self.dissection, self.spec, self.layer = dissection, spec, dissection.layer
        self.lock = threading.Lock()
        x = spec.example_input_raw(1)
        self.acts_shape = tuple(jax.eval_shape(
            lambda p, xx: spec.activations(p, xx, self.layer), spec.params, x).shape)
        self.num_units = self.acts_shape[-1]
        if dissection.num_units and dissection.num_units != self.num_units:
            raise ValueError(f"{spec.name} layer {self.layer} has {self.num_units} units; "
                             f"the dissection has {dissection.num_units}")
        self.high = _high(dissection, self.num_units)

    def check_units(self, units) -> list[int]:
        units = [int(u) for u in units]
        bad = [u for u in units if not 0 <= u < self.num_units]
        if bad:
            raise ValueError(f"units {bad} outside 0..{self.num_units - 1}")
        return units


class Painter(_Live):
    """A generator, its layer and its compiled generate / paint functions."""

    kind = "generator"

    def __init__(self, dissection, spec):
        import jax

        from jaxdissect.edits import Edit
        super().__init__(dissection, spec)
        layer = self.layer

        def generate(params, z):
            return spec.images(spec.run(params, z)[0])

        def paint(params, z, alpha, value):
            out = spec.run(params, z, edits={layer: Edit(alpha, value)})[0]
            return spec.images(out)

        self._generate, self._paint = jax.jit(generate), jax.jit(paint)
        self.image_hw = tuple(jax.eval_shape(generate, spec.params,
                                             spec.example_input_raw(1)).shape[1:3])

    def z(self, seed: int, index: int) -> np.ndarray:
        from jaxdissect.data.source import ZSource
        return ZSource(index + 1, self.spec.z_dim, seed).batch(index, index + 1)["z"]

    def generate(self, seed: int, index: int) -> np.ndarray:
        with self.lock:
            return np.asarray(self._generate(self.spec.params, self.z(seed, index))[0])

    def paint(self, seed: int, index: int, mask: np.ndarray, units, mode: str):
        """``(image [H, W, 3], seconds)``: the repainted image and the time it took."""
        import jax.numpy as jnp

        from jaxdissect.experiments.paint import paint_edit, region_to_grid
        units = self.check_units(units)
        t0 = time.perf_counter()
        grid = region_to_grid(mask, self.acts_shape[1:3])
        edit = paint_edit(units, self.num_units, grid, mode, self.high)
        with self.lock:
            img = self._paint(self.spec.params, jnp.asarray(self.z(seed, index)),
                              edit.alpha, edit.value)
            img = np.asarray(img[0])
        return img, time.perf_counter() - t0

    def warm(self) -> None:
        mask = np.zeros(self.image_hw, np.float32)
        self.paint(1, 0, mask, [0], "off")
        self.generate(1, 0)


class Switcher(_Live):
    """A classifier, its layer, the dissection's images and a compiled forward pass
    with per-unit edits."""

    kind = "classifier"
    max_images = 48

    def __init__(self, dissection, spec):
        import jax

        from jaxdissect.edits import Edit
        super().__init__(dissection, spec)
        layer, ndim = self.layer, len(self.acts_shape)

        def probabilities(params, x, alpha, value):
            shape = (1,) * (ndim - 1) + (-1,)
            edit = Edit(alpha.reshape(shape), value.reshape(shape))
            logits = spec.run(params, x, edits={layer: edit})[0]
            return jax.nn.softmax(logits.astype("float32"), axis=-1)

        self._probs = jax.jit(probabilities)
        self.class_names = list(spec.class_names or ())
        self._source = None

    @property
    def source(self):
        if self._source is None:
            from jaxdissect.pipeline.resolve import WORLD_VAL_SEED, load_data
            d = self.dissection
            n = min(int(d.report.get("num_images") or self.max_images), self.max_images)
            seed = d.data_seed if d.data_seed is not None else WORLD_VAL_SEED
            self._source = load_data(d.data_spec or "world", self.spec, n, seed)
        return self._source

    @property
    def num_images(self) -> int:
        return min(self.source.num_examples, self.max_images)

    def image(self, index: int) -> tuple[np.ndarray, int | None]:
        """``(image [H, W, 3] in [0, 1], true label or None)``."""
        if not 0 <= index < self.num_images:
            raise ValueError(f"image index {index} outside 0..{self.num_images - 1}")
        b = self.source.batch(index, index + 1)
        label = b.get("label")
        return np.asarray(b["image"][0], np.float32), (None if label is None
                                                       else int(label[0]))

    def probabilities(self, index: int, off=(), on=()):
        """``(edited [C], unedited [C], seconds)``."""
        import jax.numpy as jnp
        off, on = self.check_units(off), self.check_units(on)
        both = set(off) & set(on)
        if both:
            raise ValueError(f"units {sorted(both)} are both off and on")
        image, _ = self.image(index)
        t0 = time.perf_counter()
        alpha = np.zeros(self.num_units, np.float32)
        value = np.zeros(self.num_units, np.float32)
        alpha[off + on] = 1
        value[on] = self.high[on]
        x = jnp.asarray(image[None])
        with self.lock:
            base = np.asarray(self._probs(self.spec.params, x, np.zeros_like(alpha),
                                          value)[0])
            edited = np.asarray(self._probs(self.spec.params, x, alpha, value)[0])
        if not self.class_names:
            self.class_names = [f"class {i}" for i in range(len(base))]
        return edited, base, time.perf_counter() - t0

    def warm(self) -> None:
        self.probabilities(0)
