"""Module outputs of a linen model by Flax's own ``capture_intermediates`` (tests only:
an oracle for the models that does not go through ``jaxdissect.taps``)."""

from __future__ import annotations

import jax


def run_captured(model, variables, x, paths):
    """``(out, {path: output of the module at path})``. A module whose ``__call__``
    wraps ``super().__call__`` records both; its own (outer) output is the last."""
    def fn(v, x):
        return model.apply(v, x, capture_intermediates=True, mutable=["intermediates"])

    out, state = jax.jit(fn)(variables, x)
    acts = {}
    for path in paths:
        node = state["intermediates"]
        for key in path.split("/"):
            node = node[key]
        acts[path] = node["__call__"][-1]
    return out, acts
