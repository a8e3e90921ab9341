"""Running a chain of named layers under the model call contract.

Both reference models are plain chains of named layers, so one small driver
implements ``capture`` / ``edits`` / ``start`` / ``stop`` for them:

* ``edits[name]`` is applied to layer ``name``'s output right after it is
  computed, before capture and before the next layer sees it;
* ``start=L``: the input is layer ``L``'s unedited output; the edit for ``L``
  is applied and the chain continues after ``L``;
* ``stop=L``: the chain stops after ``L``; its (edited) output is returned.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax.numpy as jnp

from jaxdissect.edits import Edit, Edits, check_edit_names

Step = tuple[str, Callable]


def check_call(layer_names: tuple[str, ...], capture, edits: Edits | None, start, stop) -> tuple:
    """Validate the static call arguments; return ``capture`` as a tuple."""
    if isinstance(capture, str):
        capture = (capture,)
    capture = tuple(capture or ())
    unknown = [c for c in capture if c not in layer_names]
    if unknown:
        raise KeyError(f"capture names unknown layers {unknown}; known layers: {list(layer_names)}")
    check_edit_names(edits, layer_names)
    for arg, val in (("start", start), ("stop", stop)):
        if val is not None and val not in layer_names:
            raise KeyError(f"{arg}={val!r} is not a layer; known layers: {list(layer_names)}")
    if start is not None and stop is not None:
        if layer_names.index(stop) < layer_names.index(start):
            raise ValueError(f"stop={stop!r} comes before start={start!r}")
    first, last = _span(layer_names, start, stop)
    outside = [c for c in capture if not first <= layer_names.index(c) <= last]
    if outside:
        raise ValueError(f"capture {outside} lies outside the run from start={start!r} "
                         f"to stop={stop!r}")
    return capture


def broadcast_edit(edit: Edit, shape: tuple) -> Edit:
    """``edit`` with ``alpha`` and ``value`` broadcast explicitly to ``shape`` (per unit
    ``[units]``, per position ``[h, w, units]`` ... -> ``[batch, h, w, units]``), so
    it also works under ``jax_numpy_rank_promotion="raise"``."""
    try:
        return Edit(alpha=jnp.broadcast_to(edit.alpha, shape),
                    value=jnp.broadcast_to(edit.value, shape))
    except ValueError as e:
        raise ValueError(f"edit of shape alpha {jnp.shape(edit.alpha)}, value "
                         f"{jnp.shape(edit.value)} does not fit the layer output {shape}") from e


def _span(layer_names, start, stop) -> tuple[int, int]:
    first = 0 if start is None else layer_names.index(start)
    last = len(layer_names) - 1 if stop is None else layer_names.index(stop)
    return first, last


def run_chain(steps: Sequence[Step], x, capture=(), edits: Edits | None = None,
              start: str | None = None, stop: str | None = None):
    """Run ``steps`` (``(name, fn)`` pairs, ``fn: x -> x``) under the call contract.

    Returns ``(out, acts)`` with ``acts`` a dict holding exactly the ``capture`` names.
    """
    names = tuple(n for n, _ in steps)
    capture = check_call(names, capture, edits, start, stop)
    first, last = _span(names, start, stop)
    acts = {}
    for i in range(first, last + 1):
        name, fn = steps[i]
        if not (start is not None and i == first):
            x = fn(x)
        if edits is not None and name in edits:
            x = broadcast_edit(edits[name], x.shape)(x)
        if name in capture:
            acts[name] = x
    return x, acts
