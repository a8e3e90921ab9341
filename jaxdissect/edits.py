"""Interventions as data.

An edit at a named layer replaces that layer's output ``x`` by

    x * (1 - alpha) + value * alpha

``alpha`` and ``value`` are ordinary arrays broadcastable to the layer's
activation ``[batch, h, w, units]`` (NHWC): per unit ``[units]``, per position
``[h, w, units]`` or per example ``[batch, h, w, units]``. Because an edit is a
pytree argument of ``model.apply`` rather than a hook, ``jax.vmap`` over a stack
of edits runs a whole sweep of interventions as one compiled program.

A fully connected layer's output ``[batch, units]`` is dissected as a 1x1 map, and
edited as one: an edit ``[..., 1, 1, units]`` applies to it as ``[..., units]``.

``Edits`` is a plain ``dict`` from layer name (the research names the reference
uses: ``conv5_3``, ``layer4`` ...) to ``Edit``.
"""

from __future__ import annotations

from typing import Mapping

import flax.struct
import jax.numpy as jnp


@flax.struct.dataclass
class Edit:
    """``x * (1 - alpha) + value * alpha``; both broadcast to ``[batch, h, w, units]``."""

    alpha: jnp.ndarray
    value: jnp.ndarray

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        # Broadcast explicitly: per-unit or per-position edits have lower rank
        # than the activation, which strict rank promotion would refuse.
        alpha = jnp.broadcast_to(_to_layout(self.alpha, x.shape), x.shape).astype(x.dtype)
        value = jnp.broadcast_to(_to_layout(self.value, x.shape), x.shape).astype(x.dtype)
        return x * (1 - alpha) + value * alpha


def _to_layout(a, shape) -> jnp.ndarray:
    """An edit array written for the map layout ``[b, h, w, units]`` in the layout of
    an output ``shape``: a fully connected ``[b, units]`` output is dissected as a
    1x1 map (``ModelSpec.maps``), so its edits are too: ``[..., 1, 1, units]`` drops
    the two map axes. Other outputs take the array as it is."""
    a = jnp.asarray(a)
    if len(shape) != 2 or a.ndim < 3:
        return a
    if a.shape[-3:-1] != (1, 1):
        raise ValueError(f"an edit of shape {a.shape} varies over positions, but the layer "
                         f"is fully connected ({tuple(shape)}: one value per unit and image, "
                         "a 1x1 map)")
    if a.ndim > 4:
        raise ValueError(f"an edit of shape {a.shape} has more axes than [b, h, w, units]")
    return a.reshape(a.shape[:-3] + a.shape[-1:])


Edits = Mapping[str, Edit]


def apply_edit(edits: Edits | None, name: str, x: jnp.ndarray) -> jnp.ndarray:
    """Apply ``edits[name]`` to ``x`` if present; the identity otherwise."""
    if edits is None or name not in edits:
        return x
    return edits[name](x)


def check_edit_names(edits: Edits | None, known: tuple[str, ...]) -> None:
    """Raise a clear error for an edit at a layer the model does not have."""
    if not edits:
        return
    unknown = sorted(set(edits) - set(known))
    if unknown:
        raise KeyError(f"edits name unknown layers {unknown}; known layers: {list(known)}")


def zero_units(units, n_units: int, dtype=jnp.float32) -> Edit:
    """Edit that zeroes ``units`` (indices, or a boolean mask ``[n_units]``)."""
    units = jnp.asarray(units)
    if units.dtype == bool:
        mask = jnp.where(units, 1.0, 0.0).astype(dtype)
    else:
        mask = jnp.zeros((n_units,), dtype).at[units].set(1)
    return Edit(alpha=mask, value=jnp.zeros((n_units,), dtype))


def keep_only_units(units, n_units: int, dtype=jnp.float32) -> Edit:
    """Edit that zeroes every unit except ``units``."""
    z = zero_units(units, n_units, dtype)
    return Edit(alpha=1 - z.alpha, value=z.value)


def set_units(units, values, n_units: int, region=None, dtype=jnp.float32) -> Edit:
    """Edit that sets ``units`` to ``values`` (``[len(units)]``), optionally only in
    ``region`` (a ``[h, w]`` mask with values in [0, 1])."""
    units = jnp.asarray(units)
    alpha = jnp.zeros((n_units,), dtype).at[units].set(1)
    value = jnp.zeros((n_units,), dtype).at[units].set(jnp.asarray(values, dtype))
    if region is not None:
        alpha = jnp.asarray(region, dtype)[..., None] * alpha[None, None, :]
    return Edit(alpha=alpha, value=value)
