"""What a dissection refuses to tally: non-finite activations and segmentation
labels outside the label set.

Policy, the same on the one-pass and the radix paths (each tallies a
:class:`DataCheck` in its first pass, alongside its statistics, and the dissection
stops after that pass): a NaN or infinite activation of any unit in any image is an
error naming the unit, the value and the first such image (lowest index); a
segmentation label outside ``0..L-1`` is an error naming the value and the first
image holding it. Nothing is dropped, clamped or counted silently: a threshold or
IoU computed over such values would be meaningless.

The check is one reduction over the batch's activations ``[b, h, w, u]`` (before
upsampling) and labels ``[b, K, H, W]``: small beside the step's other work.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import struct

NONE = 2**31 - 1  # no offending image seen
KINDS = ("nan", "+inf", "-inf")


def _first(bad, index):
    """``(image index, row)`` of the lowest-index image with a true entry in ``bad``
    ``[b, ...]`` (``NONE`` if none)."""
    per_image = bad.reshape(bad.shape[0], -1).any(1)
    images = jnp.where(per_image, index, NONE).astype(jnp.int32)
    row = jnp.argmin(images)
    return images[row], row


@struct.dataclass
class DataCheck:
    """First offending image (lowest index) for each rule; all scalars int32."""

    act_image: jnp.ndarray    # first image with a non-finite activation, or NONE
    act_unit: jnp.ndarray     # its first such unit
    act_kind: jnp.ndarray     # index into KINDS
    label_image: jnp.ndarray  # first image with a label outside 0..L-1, or NONE
    label_value: jnp.ndarray  # that label

    @classmethod
    def empty(cls) -> "DataCheck":
        none, zero = jnp.int32(NONE), jnp.int32(0)
        return cls(none, zero, zero, none, zero)

    def update(self, acts, seg, valid, index, num_labels: int) -> "DataCheck":
        """``acts [b,h,w,u]``, ``seg [b,K,H,W]`` int, ``valid [b]`` bool, ``index [b]``
        the images' indices in the source."""
        u = acts.shape[-1]
        bad = ~jnp.isfinite(acts) & valid[:, None, None, None]
        image, row = _first(bad, index)
        per_unit = bad[row].reshape(-1, u).any(0)
        unit = jnp.argmax(per_unit).astype(jnp.int32)
        x = acts[row].reshape(-1, u)[:, unit]
        value = x[jnp.argmax(~jnp.isfinite(x))]
        kind = jnp.where(jnp.isnan(value), 0, jnp.where(value > 0, 1, 2)).astype(jnp.int32)
        out_of_range = ((seg < 0) | (seg >= num_labels)) & valid[:, None, None, None]
        l_image, l_row = _first(out_of_range, index)
        flat = seg[l_row].reshape(-1)
        l_value = flat[jnp.argmax(out_of_range[l_row].reshape(-1))].astype(jnp.int32)
        return self.merge(DataCheck(image, unit, kind, l_image, l_value))

    def merge(self, other: "DataCheck") -> "DataCheck":
        a = other.act_image < self.act_image
        lab = other.label_image < self.label_image
        pick = lambda c, x, y: jnp.where(c, y, x)
        return DataCheck(pick(a, self.act_image, other.act_image),
                         pick(a, self.act_unit, other.act_unit),
                         pick(a, self.act_kind, other.act_kind),
                         pick(lab, self.label_image, other.label_image),
                         pick(lab, self.label_value, other.label_value))

    def raise_if_bad(self, num_labels: int, name_image=str) -> None:
        """Raise ``ValueError`` for what was found; ``name_image(i)`` names image ``i``."""
        if int(self.act_image) != NONE:
            raise ValueError(
                f"unit {int(self.act_unit)} has a non-finite activation "
                f"({KINDS[int(self.act_kind)]}) in {name_image(int(self.act_image))}: a "
                f"dissection needs finite activations (check the model's weights and "
                f"inputs)")
        if int(self.label_image) != NONE:
            raise ValueError(
                f"segmentation label {int(self.label_value)} in "
                f"{name_image(int(self.label_image))} is outside 0..{num_labels - 1} (the "
                f"segmenter's label set)")
