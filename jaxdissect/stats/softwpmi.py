"""CLIP-Dissect's unit-concept scores (Oikarinen & Weng, ICLR 2023), in JAX.

Inputs, for ``N`` probe images, ``u`` units and ``M`` concepts:

    P [N, M]     the similarity matrix: cos(image embedding i, concept text m)
    A [N, u]     each unit's activation summarised per image (spatial mean)

``soft_wpmi`` (the paper's method and default). For unit ``k`` let ``B_k`` be its
``top_k`` images by ``A[:, k]``, the ``r``-th of them (r = 0 .. top_k-1) believed
to belong to the unit's concept with probability
``p_r = p_start - r / top_k (p_start - p_end)``, and ``S = softmax(a P)`` over
concepts (rows). Then

    log p(m | k) = sum_{r} log(1 + p_r (S[B_k[r], m] - 1) + min_prob)
    log p(m)     = logsumexp_k log p(m | k) - log u
    score[k, m]  = log p(m | k) - lam log p(m)

with the paper's defaults ``top_k=100, a=10, lam=1, p_start=0.998, p_end=0.97,
min_prob=1e-7``. The label of unit ``k`` is ``argmax_m score[k, m]``.

The alternatives the paper compares, as options of ``scores``:
``"wpmi"`` (hard membership, ``p_r = 1``: ``log p(m|k) = sum_r log(S + min_prob)``;
defaults ``top_k=28, a=2, lam=0.6``) and ``"cos3"`` (cosine similarity of the
centred, cubed columns of ``A`` and ``P``). (Its "rank reorder" draws random
permutations per unit and is left out.)

Top images: ``top_images`` orders by activation, ties by the lower image index (so a
unit's set does not depend on how the images were split over devices).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

#: the paper's SoftWPMI settings
SOFT_WPMI_DEFAULTS = {"top_k": 100, "a": 10.0, "lam": 1.0, "p_start": 0.998,
                      "p_end": 0.97, "min_prob": 1e-7}
#: CLIP-Dissect's WPMI settings
WPMI_DEFAULTS = {"top_k": 28, "a": 2.0, "lam": 0.6, "min_prob": 1e-7}
METHODS = ("softwpmi", "wpmi", "cos3")


def similarity(image_emb, text_emb) -> jax.Array:
    """``P [N, M]``: cosine similarity of each image embedding with each text."""
    img = image_emb / jnp.linalg.norm(image_emb, axis=-1, keepdims=True)
    txt = text_emb / jnp.linalg.norm(text_emb, axis=-1, keepdims=True)
    return img @ txt.T


def top_images(acts, top_k: int) -> jax.Array:
    """``[u, top_k]`` int32: each unit's images by decreasing activation (``acts
    [N, u]``), ties by the lower index."""
    n = acts.shape[0]
    if not 0 < top_k <= n:
        raise ValueError(f"top_k must be in 1..{n} (the probe images), got {top_k}")
    # lax.top_k keeps the lower index first among equal values
    return jax.lax.top_k(jnp.asarray(acts).T, top_k)[1].astype(jnp.int32)


def membership(top_k: int, p_start: float, p_end: float) -> jax.Array:
    """``[top_k]`` ``p_r``: the probability that the ``r``-th top image shows the
    unit's concept (linear from ``p_start`` down, ``p_end`` just past the last)."""
    return p_start - jnp.arange(top_k, dtype=jnp.float32) / top_k * (p_start - p_end)


@functools.partial(jax.jit, static_argnames=("chunk",))
def log_p_given_unit(probs, top, p, min_prob, chunk: int = 64) -> jax.Array:
    """``[u, M]`` ``sum_r log(1 + p_r (probs[top[k, r]] - 1) + min_prob)`` with
    ``probs [N, M]`` (softmaxed similarities), ``top [u, k]``, ``p [k]``; units in
    chunks of ``chunk`` (memory ``chunk * k * M``)."""
    u = top.shape[0]
    pad = -u % chunk
    top = jnp.concatenate([top, jnp.zeros((pad, top.shape[1]), top.dtype)])

    def one(rows):  # [chunk, k]
        s = probs[rows]  # [chunk, k, M]
        return jnp.log(1.0 + p[None, :, None] * (s - 1.0) + min_prob).sum(1)

    out = jax.lax.map(one, top.reshape(-1, chunk, top.shape[1]))
    return out.reshape(-1, probs.shape[1])[:u]


def pmi(log_given, lam) -> jax.Array:
    """``log p(m|k) - lam log p(m)``, ``log p(m) = logsumexp_k log p(m|k) - log u``."""
    u = log_given.shape[0]
    log_p = jax.scipy.special.logsumexp(log_given, axis=0, keepdims=True) - jnp.log(u)
    return log_given - lam * log_p


def soft_wpmi(sim, acts, top_k=100, a=10.0, lam=1.0, p_start=0.998, p_end=0.97,
              min_prob=1e-7) -> jax.Array:
    """``[u, M]`` SoftWPMI scores (see the module docstring) of ``sim [N, M]`` and
    ``acts [N, u]``."""
    probs = jax.nn.softmax(a * jnp.asarray(sim, jnp.float32), axis=1)
    top = top_images(acts, top_k)
    return pmi(log_p_given_unit(probs, top, membership(top_k, p_start, p_end),
                                jnp.float32(min_prob)), lam)


def wpmi(sim, acts, top_k=28, a=2.0, lam=0.6, min_prob=1e-7) -> jax.Array:
    """``[u, M]`` WPMI scores: SoftWPMI with every top image a member (``p_r = 1``)."""
    probs = jax.nn.softmax(a * jnp.asarray(sim, jnp.float32), axis=1)
    top = top_images(acts, top_k)
    return pmi(log_p_given_unit(probs, top, jnp.ones((top_k,), jnp.float32),
                                jnp.float32(min_prob)), lam)


def cos3(sim, acts) -> jax.Array:
    """``[u, M]`` cosine similarity of the centred, cubed columns of ``acts`` and ``sim``."""
    def prep(x):
        x = jnp.asarray(x, jnp.float32)
        x = (x - x.mean(0, keepdims=True)) ** 3
        return x / jnp.maximum(jnp.linalg.norm(x, axis=0, keepdims=True), 1e-30)
    return prep(acts).T @ prep(sim)


def scores(sim, acts, method: str = "softwpmi", **options) -> np.ndarray:
    """``[u, M]`` float32 scores by ``method`` (``METHODS``) with its options
    (defaults: ``SOFT_WPMI_DEFAULTS`` / ``WPMI_DEFAULTS``)."""
    if method == "softwpmi":
        out = soft_wpmi(sim, acts, **{**SOFT_WPMI_DEFAULTS, **options})
    elif method == "wpmi":
        out = wpmi(sim, acts, **{**WPMI_DEFAULTS, **options})
    elif method == "cos3":
        if options:
            raise ValueError(f"cos3 takes no options, got {sorted(options)}")
        out = cos3(sim, acts)
    else:
        raise ValueError(f"unknown method {method!r}; methods are {', '.join(METHODS)}")
    return np.asarray(out, np.float32)
