"""Arrays computed outside the sweeps (unit thumbnails, intervention pictures), kept in
a run's cache so that a re-run of the same run reads them instead of running the model.

``computed(cache, name, template, make, **settings)`` returns ``make()``'s pytree of
arrays, stored in ``cache``'s folder (a ``runtime.cache.RunCache``: the complete run's
identity) under ``cache.key(name, **settings)``; ``settings`` name what the arrays
depend on beyond the run itself (which images, which edits). ``template``: the
pytree's shapes and dtypes (``jax.ShapeDtypeStruct`` leaves, e.g. from
``jax.eval_shape``), known before anything is computed, so a stored file is read
back only when it holds exactly that structure (``cache.load_tree``). The file is
written atomically; processes that compute the same arrays write the same bytes.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import jax
import numpy as np

from jaxdissect.runtime.cache import RunCache, load_tree, save_tree


def _like(leaf) -> np.ndarray:
    """A zero-strided array of ``leaf``'s shape and dtype (no memory)."""
    return np.broadcast_to(np.zeros((), np.dtype(leaf.dtype)), tuple(leaf.shape))


def computed(cache: RunCache | None, name: str, template: Any, make: Callable[[], Any],
             **settings: Any) -> Any:
    """``make()`` (a pytree shaped as ``template``), read from ``cache`` when this run
    stored it before, else computed and stored there; computed alone without
    ``cache``. Leaves come back as NumPy arrays either way, so a re-run gives
    exactly the arrays of the first run."""
    if cache is None:
        return jax.tree_util.tree_map(np.asarray, make())
    path = os.path.join(cache.folder, f"{name}-{cache.key(name, **settings)}.npz")
    loaded = load_tree(path, jax.tree_util.tree_map(_like, template))
    if loaded is not None:
        return loaded[0]
    tree = jax.tree_util.tree_map(np.asarray, make())
    got = jax.tree_util.tree_structure(tree)
    want = jax.tree_util.tree_structure(template)
    if got != want or any(np.shape(a) != tuple(t.shape) or a.dtype != np.dtype(t.dtype)
                          for a, t in zip(jax.tree_util.tree_leaves(tree),
                                          jax.tree_util.tree_leaves(template))):
        raise ValueError(f"{name}: computed arrays do not match their template")
    save_tree(path, tree)
    return tree
