"""Training and measuring the world classifier and segmenter (optax, fixed seeds).

Training images are rendered on the fly from world seed ``data_seed``: step
``s`` sees images ``[s * batch, (s + 1) * batch)``, so a run is a pure function
of its arguments. JAX dispatches each step asynchronously, so rendering the next
batch overlaps with the current step's computation.
"""

from __future__ import annotations

import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdissect.models.segnet import SegNet
from jaxdissect.models.vgg16 import VGG16, preprocess
from jaxdissect.world.segmenter import NET_LAYERS, label_to_head
from jaxdissect.world.source import WorldSource, render_mixed


def he_rescale(params):
    """Scale every ``kernel``/``weight`` by sqrt(2): Flax's default LeCun init times
    the ReLU gain, so a deep plain net (VGG-16 has no normalisation) starts with
    activations of unit scale instead of shrinking by sqrt(2) per layer."""
    def f(path, x):
        name = getattr(path[-1], "key", "")
        return x * np.sqrt(2.0) if name in ("kernel", "weight") else x
    return jax.tree_util.tree_map_with_path(f, params)


def make_optimizer(weight_decay: float):
    """Clipped Adam with decoupled weight decay; the step multiplies the result by
    ``-lr`` (see :func:`learning_rate`), so the schedule can follow wall time."""
    return optax.chain(optax.clip_by_global_norm(1.0), optax.scale_by_adam(),
                       optax.add_decayed_weights(weight_decay))


def learning_rate(lr: float, step: int, steps: int, warmup: int, elapsed: float,
                  max_seconds: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``lr / 50`` over the
    run's progress ``max(step / steps, elapsed / max_seconds)``: a run cut short by
    its time budget still ends with a decayed rate."""
    if step < warmup:
        return lr * (step + 1) / warmup
    p = min(1.0, max(step / steps, elapsed / max_seconds))
    return lr * (0.02 + 0.98 * 0.5 * (1 + np.cos(np.pi * p)))


def _loop(step_fn, state, source: WorldSource, batch: int, steps: int, lr: float,
          warmup: int, max_seconds: float, log: Callable[[str], None] | None,
          log_every: int):
    """Run ``state, loss = step_fn(state, images_u8, seg_u8, labels, lr)`` for ``steps``
    steps (fewer if ``max_seconds`` runs out). Returns ``(state, info)``."""
    log = log or (lambda msg: print(msg, flush=True))
    t0 = time.time()
    losses = []
    done = 0
    for s in range(steps):
        elapsed = time.time() - t0
        if elapsed > max_seconds:
            log(f"stopping at step {done}: time budget of {max_seconds:.0f}s used")
            break
        b = source.render_u8(s * batch, (s + 1) * batch)
        rate = learning_rate(lr, s, steps, warmup, elapsed, max_seconds)
        state, loss = step_fn(state, b["image"], b["seg"], b["label"], np.float32(rate))
        losses.append(loss)
        done = s + 1
        if done % log_every == 0:
            mean = float(jnp.mean(jnp.stack(losses)))
            losses = []
            log(f"step {done}/{steps} lr {rate:.2e} loss {mean:.4f} {time.time() - t0:.0f}s")
    jax.block_until_ready(state)
    return state, {"steps_done": done, "train_seconds": round(time.time() - t0, 1)}


def _apply(opt, grads, opt_state, params, rate):
    updates, opt_state = opt.update(grads, opt_state, params)
    params = jax.tree.map(lambda p, u: p - rate * u, params, updates)
    return params, opt_state


# ---- classifier ---------------------------------------------------------------------

def train_classifier(model: VGG16, *, seed: int, data_seed: int, steps: int, batch: int,
                     lr: float, warmup: int, weight_decay: float, size: int = 64,
                     max_seconds: float = 1e9, log=None, log_every: int = 100):
    """Cross-entropy training with horizontal flips. Returns ``(params, info)``."""
    params = he_rescale(model.init(jax.random.key(seed), jnp.zeros((1, size, size, 3)))["params"])
    opt = make_optimizer(weight_decay)
    source = WorldSource(steps * batch, seed=data_seed, size=size, threads=1)
    flip_rng = np.random.default_rng(seed)

    @jax.jit
    def step(state, images_u8, labels, flip, rate):
        params, opt_state = state
        x = images_u8.astype(jnp.float32) / 255.0
        x = jnp.where(flip[:, None, None, None], x[:, :, ::-1], x)

        def loss_fn(p):
            logits = model.apply({"params": p}, preprocess(x))
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        return _apply(opt, grads, opt_state, params, rate), loss

    def step_fn(state, images, seg, labels, rate):
        return step(state, images, labels, flip_rng.random(len(labels)) < 0.5, rate)

    state, info = _loop(step_fn, (params, opt.init(params)), source, batch, steps, lr, warmup,
                        max_seconds, log, log_every)
    return state[0], info


def classifier_accuracy(model: VGG16, params, source: WorldSource, n: int,
                        batch: int = 200) -> tuple[float, np.ndarray]:
    """Held-out accuracy on images ``[0, n)`` of ``source``; also the confusion matrix
    ``[true, predicted]``."""
    @jax.jit
    def predict(p, x):
        return jnp.argmax(model.apply({"params": p}, preprocess(x)), axis=-1)

    c = len(source.class_names)
    confusion = np.zeros((c, c), np.int64)
    for a in range(0, n, batch):
        b = source.batch(a, min(a + batch, n))
        pred = np.asarray(predict(params, b["image"]))
        np.add.at(confusion, (b["label"], pred), 1)
    return float(np.trace(confusion) / confusion.sum()), confusion


# ---- segmenter ----------------------------------------------------------------------

#: extra loss weight of pixels that carry a label, per predicted layer (parts are
#: small and rare, so without it the net learns to answer "none")
PRESENT_WEIGHT = {"object": 0.0, "part": 3.0, "material": 1.0}


class WithCloseups:
    """A ``WorldSource`` whose every ``every``-th image (index ``i % every == every - 1``)
    is replaced by its close-up (``render_mixed``), so a segmenter also learns the
    larger objects of close-up generators' images."""

    def __init__(self, source: WorldSource, every: int, zoom: float = 1.5):
        if every < 1:
            raise ValueError(f"close-up period must be >= 1, got {every}")
        self.source, self.every, self.zoom = source, every, zoom

    def render_u8(self, start: int, stop: int) -> dict[str, np.ndarray]:
        return render_mixed(self.source.seed, np.arange(start, stop), self.source.size,
                            self.every, self.zoom)


def train_segmenter(net: SegNet, *, seed: int, data_seed: int, steps: int, batch: int,
                    lr: float, warmup: int, weight_decay: float, size: int = 64,
                    max_seconds: float = 1e9, log=None, log_every: int = 100,
                    closeup_every: int = 0):
    """Per-pixel cross-entropy summed over the heads, with flips; with
    ``closeup_every`` > 0 every such image is a close-up (``WithCloseups``).
    Returns ``(params, info)``."""
    params = he_rescale(net.init(jax.random.key(seed), jnp.zeros((1, size, size, 3)))["params"])
    opt = make_optimizer(weight_decay)
    source = WorldSource(steps * batch, seed=data_seed, size=size, threads=1)
    if closeup_every:
        source = WithCloseups(source, closeup_every)
    to_head = jnp.asarray(np.stack([label_to_head(k) for k in NET_LAYERS]))
    present_w = jnp.asarray([PRESENT_WEIGHT[k] for k in NET_LAYERS])
    flip_rng = np.random.default_rng(seed)

    @jax.jit
    def step(state, images_u8, seg_u8, flip, rate):
        params, opt_state = state
        x = images_u8.astype(jnp.float32) / 255.0
        x = jnp.where(flip[:, None, None, None], x[:, :, ::-1], x)
        seg = seg_u8[:, :len(NET_LAYERS)].astype(jnp.int32)
        seg = jnp.where(flip[:, None, None, None], seg[..., ::-1], seg)

        def loss_fn(p):
            logits = net.apply({"params": p}, x)
            total = 0.0
            for k, head in enumerate(net.split_heads(logits)):
                target = to_head[k][seg[:, k]]
                ce = optax.softmax_cross_entropy_with_integer_labels(head, target)
                w = 1.0 + present_w[k] * (target > 0)
                total = total + (ce * w).sum() / w.sum()
            return total

        loss, grads = jax.value_and_grad(loss_fn)(params)
        return _apply(opt, grads, opt_state, params, rate), loss

    def step_fn(state, images, seg, labels, rate):
        return step(state, images, seg, flip_rng.random(len(labels)) < 0.5, rate)

    state, info = _loop(step_fn, (params, opt.init(params)), source, batch, steps, lr, warmup,
                        max_seconds, log, log_every)
    return state[0], info


def segmenter_accuracy(segment, source: WorldSource, n: int, batch: int = 100) -> dict:
    """Pixel accuracy of ``segment(images01) -> [b, 4, H, W]`` against ground truth on
    images ``[0, n)`` of ``source``: objects over all pixels, parts and materials
    over the pixels where the ground truth has one, colour over all pixels."""
    hits = np.zeros(4)
    total = np.zeros(4)
    for a in range(0, n, batch):
        b = source.batch(a, min(a + batch, n))
        pred = np.asarray(segment(b["image"]))
        gt = b["seg"]
        for k, layer in enumerate(("object", "part", "material", "color")):
            where = gt[:, k] > 0 if layer in ("part", "material") else np.ones_like(gt[:, k], bool)
            hits[k] += (pred[:, k] == gt[:, k])[where].sum()
            total[k] += where.sum()
    return {f"{layer}_pixel_accuracy": float(hits[k] / total[k])
            for k, layer in enumerate(("object", "part", "material", "color"))}
