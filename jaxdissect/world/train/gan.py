"""One training step of a GAN: non-saturating logistic loss, lazy R1, generator EMA.

The losses are those of StyleGAN2 (Karras et al. 2020, sec. 2 and appendix B):
the discriminator minimises ``softplus(D(G(z))) + softplus(-D(x))`` plus, every
``r1_every`` steps, ``r1_every * r1_gamma / 2 * |grad_x D(x)|^2`` on real images;
the generator minimises ``softplus(-D(G(z)))``. The sampled images are kept as an
exponential moving average of the generator's weights, as in ProgressiveGAN.
With ``translate > 0`` every image the discriminator sees (real or generated, in
both losses) is first shifted by a random whole-pixel offset in
``[-translate, translate]`` per axis, the vacated border filled with 0 (mid-grey):
the translation of DiffAugment (Zhao et al. 2020), differentiable in the image.

Images are NHWC in [-1, 1] (the generator's output range). The generator follows
plain Flax: ``out = generator.apply({"params": p}, z)``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax


@dataclasses.dataclass(frozen=True)
class GanHyper:
    """Training hyper-parameters (recorded beside the weights)."""

    z_dim: int
    learning_rate: float = 2e-3
    beta1: float = 0.0
    beta2: float = 0.99
    r1_gamma: float = 0.1
    r1_every: int = 4
    ema_decay: float = 0.999
    #: ema decay ramps as ``min(ema_decay, (1 + step) / (ema_warmup + step))``
    ema_warmup: float = 10.0
    #: DiffAugment translation range in pixels (0: no augmentation)
    translate: int = 0
    #: weight of the unit-sparsity penalty on ``sparse_layer`` (0: none): the mean over
    #: locations of ``|pixel_norm(a)|_1 / units``, what the next layer sees, so only the
    #: spread of the activation over units counts, not its scale
    sparsity: float = 0.0
    sparse_layer: str = "layer4"


@flax.struct.dataclass
class GanState:
    g_params: Any
    d_params: Any
    g_opt: Any
    d_opt: Any
    g_ema: Any
    step: jax.Array


def adam(h: GanHyper) -> optax.GradientTransformation:
    return optax.adam(h.learning_rate, b1=h.beta1, b2=h.beta2, eps=1e-8)


def init_state(generator: nn.Module, discriminator: nn.Module, h: GanHyper,
               key: jax.Array, image_shape: tuple[int, int, int]) -> GanState:
    """Fresh parameters and optimiser states; ``image_shape`` is ``(R, R, 3)``."""
    tx = adam(h)

    @jax.jit  # one compiled program rather than many small dispatches
    def init(key):
        kg, kd = jax.random.split(key)
        g_params = generator.init(kg, jnp.zeros((1, h.z_dim), jnp.float32))["params"]
        d_params = discriminator.init(
            kd, jnp.zeros((4,) + tuple(image_shape), jnp.float32))["params"]
        return GanState(g_params=g_params, d_params=d_params, g_opt=tx.init(g_params),
                        d_opt=tx.init(d_params), g_ema=jax.tree.map(jnp.copy, g_params),
                        step=jnp.zeros((), jnp.int32))

    return init(key)


def translate_images(x: jax.Array, offsets: jax.Array, pad: int) -> jax.Array:
    """Shift each image: ``out[i, y, x] = x[i, y - dy_i, x - dx_i]`` (0 outside).

    ``x`` ``[b, H, W, C]``; ``offsets`` ``[b, 2]`` int ``(dy, dx)`` with
    ``|dy|, |dx| <= pad``. Differentiable in ``x``.
    """
    _, hh, ww, cc = x.shape
    padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))

    def one(img, off):
        return jax.lax.dynamic_slice(img, (pad - off[0], pad - off[1], 0), (hh, ww, cc))

    return jax.vmap(one)(padded, offsets)


def random_translate(key: jax.Array, x: jax.Array, pad: int) -> jax.Array:
    """``x`` shifted by offsets drawn uniformly from ``[-pad, pad]`` (identity if 0)."""
    if pad <= 0:
        return x
    offsets = jax.random.randint(key, (x.shape[0], 2), -pad, pad + 1)
    return translate_images(x, offsets, pad)


def sparsity_penalty(acts: jax.Array) -> jax.Array:
    """Mean of ``|pixel_norm(acts)|`` over ``[b, h, w, units]``: between ``1/sqrt(units)``
    (one unit active per location) and 1 (all equal), whatever the activations' scale."""
    from jaxdissect.models.proggan import pixel_norm
    return jnp.mean(jnp.abs(pixel_norm(acts)))


def make_step(generator: nn.Module, discriminator: nn.Module, h: GanHyper
              ) -> Callable[[GanState, jax.Array, jax.Array], tuple[GanState, dict]]:
    """Return a jitted ``step(state, reals [b,R,R,3] in [-1,1], key) -> (state, metrics)``.

    One step updates the discriminator once (with the R1 term when
    ``state.step % r1_every == 0``) and then the generator once.
    """
    tx = adam(h)

    def gen(p, z):
        return generator.apply({"params": p}, z)

    def disc(p, x):
        return discriminator.apply({"params": p}, x)

    def d_loss(dp, reals, fakes, with_r1, key):
        kr, kf = jax.random.split(key)
        reals = random_translate(kr, reals, h.translate)
        fakes = random_translate(kf, fakes, h.translate)
        real_logits = disc(dp, reals)
        fake_logits = disc(dp, fakes)
        loss = jnp.mean(jax.nn.softplus(fake_logits)) + jnp.mean(jax.nn.softplus(-real_logits))
        if with_r1:
            grads = jax.grad(lambda x: jnp.sum(disc(dp, x)))(reals)
            r1 = jnp.mean(jnp.sum(grads ** 2, axis=(1, 2, 3)))
        else:
            r1 = jnp.zeros(())
        total = loss + r1 * (0.5 * h.r1_gamma * h.r1_every)
        return total, {"d_loss": loss, "r1": r1,
                       "real_logit": jnp.mean(real_logits), "fake_logit": jnp.mean(fake_logits)}

    def g_loss(gp, dp, z, key):
        if h.sparsity > 0:
            from jaxdissect.taps import run as tap
            out, acts = tap(generator.apply, {"params": gp}, z, capture=(h.sparse_layer,))
            penalty = sparsity_penalty(acts[h.sparse_layer])
        else:
            out, penalty = gen(gp, z), 0.0
        fakes = random_translate(key, out, h.translate)
        return jnp.mean(jax.nn.softplus(-disc(dp, fakes))) + h.sparsity * penalty

    def make(with_r1):
        def step(state: GanState, reals: jax.Array, key: jax.Array):
            b = reals.shape[0]
            k1, k2 = jax.random.split(key)
            kd, kg = jax.random.split(jax.random.fold_in(key, 1))  # augmentation
            z1 = jax.random.normal(k1, (b, h.z_dim), jnp.float32)
            fakes = jax.lax.stop_gradient(gen(state.g_params, z1))
            (_, m), dg = jax.value_and_grad(d_loss, has_aux=True)(
                state.d_params, reals, fakes, with_r1, kd)
            du, d_opt = tx.update(dg, state.d_opt, state.d_params)
            d_params = optax.apply_updates(state.d_params, du)
            z2 = jax.random.normal(k2, (b, h.z_dim), jnp.float32)
            gl, gg = jax.value_and_grad(g_loss)(state.g_params, d_params, z2, kg)
            gu, g_opt = tx.update(gg, state.g_opt, state.g_params)
            g_params = optax.apply_updates(state.g_params, gu)
            t = state.step.astype(jnp.float32)
            beta = jnp.minimum(h.ema_decay, (1.0 + t) / (h.ema_warmup + t))
            g_ema = jax.tree.map(lambda e, p: beta * e + (1 - beta) * p, state.g_ema, g_params)
            new = GanState(g_params=g_params, d_params=d_params, g_opt=g_opt, d_opt=d_opt,
                           g_ema=g_ema, step=state.step + 1)
            return new, dict(m, g_loss=gl)
        return jax.jit(step, donate_argnums=(0,))

    plain, with_r1 = make(False), make(True)

    def step(state: GanState, reals: jax.Array, key: jax.Array):
        lazy = h.r1_every > 0 and h.r1_gamma > 0 and int(state.step) % h.r1_every == 0
        return (with_r1 if lazy else plain)(state, reals, key)

    step.plain, step.with_r1 = plain, with_r1  # the two compiled programs
    return step
