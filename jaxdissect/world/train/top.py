"""Retraining the world classifier's top layers on cached features.

The layers up to ``after`` (``conv5_2``) are kept frozen from a trained classifier;
their outputs for a set of training images (and their horizontal mirrors) are
computed once (:func:`cached_features`), then only the layers after ``after``
(``conv5_3``, ``fc6``, ``fc7``, ``fc8a``) are trained from a fresh initialisation on
that cache (:func:`train_top`). This lets the last convolution change shape (a
narrower ``conv5_3``) and be trained with an L1 penalty on its activations
(``act_l1``: sparse units that each respond to less of the image) in minutes
instead of retraining the whole network.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdissect import taps
from jaxdissect.models.vgg16 import VGG16, preprocess
from jaxdissect.world.source import WorldSource
from jaxdissect.world.train.classifier import _apply, he_rescale, learning_rate, make_optimizer


def cached_features(model: VGG16, params, source: WorldSource, layer: str, n: int,
                    flips: bool = True, batch: int = 250) -> tuple[np.ndarray, np.ndarray]:
    """``layer``'s output for images ``[0, n)`` of ``source``: ``(feats [m, h, w, c]
    float32, labels [m] int32)``, with ``m = 2n`` when ``flips`` (each image and then
    its horizontal mirror, batch by batch) else ``n``."""
    @jax.jit
    def head(p, x):
        return taps.run(model.apply, {"params": p}, preprocess(x), capture=(layer,))[1][layer]

    feats, labels = [], []
    for a in range(0, n, batch):
        b = source.batch(a, min(a + batch, n))
        views = [b["image"], b["image"][:, :, ::-1]] if flips else [b["image"]]
        for x in views:
            feats.append(np.asarray(head(params, jnp.asarray(x))))
            labels.append(b["label"])
    return np.concatenate(feats), np.concatenate(labels).astype(np.int32)


def trainable_names(model: VGG16, after: str) -> tuple[str, ...]:
    """The parameterised layers after ``after`` (pools have no parameters)."""
    names = model.layer_names
    return tuple(n for n in names[names.index(after) + 1:] if not n.startswith("pool"))


def train_top(model: VGG16, base_params, feats: np.ndarray, labels: np.ndarray, *,
              after: str = "conv5_2", act_l1: float = 0.0, seed: int = 0, steps: int = 3000,
              batch: int = 128, lr: float = 2e-3, warmup: int = 50,
              weight_decay: float = 1e-4, max_seconds: float = 1e9, log=None,
              log_every: int = 500, image_size: int = 64):
    """Train the layers of ``model`` after ``after`` on cached ``feats [m, h, w, c]`` (the
    output of ``after``) and ``labels [m]``; the layers up to ``after`` are copied from
    ``base_params`` unchanged. Loss: cross-entropy + ``act_l1`` times the mean of the
    last convolution's (post-ReLU, non-negative) activations. Minibatches are drawn
    without replacement from a fresh permutation each epoch (numpy, ``seed``).
    Returns ``(params, info)``."""
    log = log or (lambda msg: print(msg, flush=True))
    train = trainable_names(model, after)
    last_conv = [n for n in train if n.startswith("conv")]
    if not last_conv:
        raise ValueError(f"no convolution after {after!r} to train")
    last_conv = last_conv[-1]
    # linen derives each layer's initial values from its path alone, so initialising
    # the whole network gives the same values for the trained layers
    placeholder = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
    init = model.init(jax.random.key(seed), placeholder)["params"]
    frozen = {k: v for k, v in base_params.items() if k not in train}
    params = he_rescale({k: init[k] for k in train})
    opt = make_optimizer(weight_decay)

    @jax.jit
    def step(state, x, y, rate):
        params, opt_state = state

        def loss_fn(p):
            # ``after``'s output is fed: under jit the frozen layers before it vanish
            logits, acts = taps.run(model.apply, {"params": {**frozen, **p}},
                                    jnp.broadcast_to(placeholder, (x.shape[0],)
                                                     + placeholder.shape[1:]),
                                    feed={after: x}, capture=(last_conv,))
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            return ce + act_l1 * acts[last_conv].mean(), ce

        (_, ce), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        return _apply(opt, grads, opt_state, params, rate), ce

    rng = np.random.default_rng(seed)
    m = len(labels)
    order, pos = rng.permutation(m), 0
    state, losses, t0, done = (params, opt.init(params)), [], time.time(), 0
    for s in range(steps):
        elapsed = time.time() - t0
        if elapsed > max_seconds:
            log(f"stopping at step {done}: time budget of {max_seconds:.0f}s used")
            break
        if pos + batch > m:
            order, pos = rng.permutation(m), 0
        idx = order[pos:pos + batch]
        pos += batch
        rate = learning_rate(lr, s, steps, warmup, elapsed, max_seconds)
        state, ce = step(state, jnp.asarray(feats[idx]), jnp.asarray(labels[idx]),
                         np.float32(rate))
        losses.append(ce)
        done = s + 1
        if done % log_every == 0:
            log(f"step {done}/{steps} lr {rate:.2e} cross-entropy "
                f"{float(jnp.mean(jnp.stack(losses))):.4f} {time.time() - t0:.0f}s")
            losses = []
    jax.block_until_ready(state)
    return {**frozen, **state[0]}, {"steps_done": done,
                                    "train_seconds": round(time.time() - t0, 1)}
