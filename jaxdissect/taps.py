"""Capture and edit any Flax model at named points, from outside the model.

A *tap* is a module's output, named by the module's path (``"layer4"``,
``"encoder/layers_3"``: ``module.path`` joined by ``"/"``; ``""`` is the root). ::

    out, acts = taps.run(model.apply, {"params": p}, x,
                         capture=("conv5_3",), edits={"conv5_3": Edit(alpha, value)})

runs ``model.apply({"params": p}, x)`` unchanged except that, where the module at a
tapped path returns ``y``:

* ``feed[path]`` replaces ``y`` *without calling the module*: whatever only that
  module consumed (the layers before it) is dead code, which ``jit`` removes. This is
  how a sweep starts from a cached activation (the old ``start=``);
* ``edits[path]`` (an :class:`~jaxdissect.edits.Edit`) is applied next,
  ``y * (1 - alpha) + value * alpha``;
* ``capture`` records the result in ``acts[path]``.

Layers after the last one a result needs are compiled away by ``jit`` as well, so
there is no ``stop=``. Everything is ordinary traced JAX: ``jax.vmap`` over a stack of
edits, ``jax.grad`` through them and ``jax.jit`` work as for any function.

Linen models are tapped with ``flax.linen.intercept_methods`` (the outermost
``__call__`` of a module instance is the tap: a subclass calling
``super().__call__`` is tapped once, on its own output). NNX models (pass
``module=``) are tapped by graph surgery: the submodule at each path of the (merged)
module object is wrapped for the duration of the call.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterable, Mapping

import jax
import jax.numpy as jnp

from jaxdissect.edits import Edit

Path = str


def _paths(names: Iterable[str] | str | None) -> tuple[str, ...]:
    if names is None:
        return ()
    if isinstance(names, str):
        return (names,)
    return tuple(names)


class _Taps:
    """What one call taps, and what it found."""

    def __init__(self, capture, edits, feed):
        self.capture = _paths(capture)
        self.edits = dict(edits or {})
        self.feed = dict(feed or {})
        self.wanted = set(self.capture) | set(self.edits) | set(self.feed)
        self.acts: dict[str, jax.Array] = {}
        self.hits: dict[str, int] = {}
        self.seen: list[str] = []

    def output(self, path: str, call: Callable[[], Any]) -> Any:
        """The tapped output of the module at ``path``; ``call()`` computes it."""
        if path not in self.wanted:
            return call()
        self.hits[path] = self.hits.get(path, 0) + 1
        if self.hits[path] > 1:
            raise ValueError(f"module {path!r} is called more than once in one forward pass; "
                             "a tap there is ambiguous (tap a module that runs once)")
        y = self.feed[path] if path in self.feed else call()
        if path in self.edits:
            y = _apply_edit(self.edits[path], y, path)
        if path in self.capture:
            self.acts[path] = y
        return y

    def check_all_found(self) -> None:
        missing = [p for p in sorted(self.wanted) if p not in self.hits]
        if missing:
            known = sorted(set(self.seen))
            raise KeyError(f"no module at {missing} ran in this forward pass; module paths "
                           f"that ran: {known}")


def _apply_edit(edit: Edit, y, path: str):
    if not hasattr(y, "shape"):
        raise TypeError(f"module {path!r} returns {type(y).__name__}, not an array; "
                        "edit a module whose output is one array")
    try:
        return edit(y)
    except (ValueError, TypeError) as e:
        raise ValueError(f"edit at {path!r} (alpha {jnp.shape(edit.alpha)}, value "
                         f"{jnp.shape(edit.value)}) does not fit its output {y.shape}: "
                         f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from e


# ------------------------------------------------------------------- linen

def _linen_interceptor(taps: _Taps):
    active: list[int] = []   # ids of module instances whose __call__ is running

    def interceptor(next_fun, args, kwargs, context):
        if context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        module = context.module
        if id(module) in active:        # super().__call__ of a tapped subclass
            return next_fun(*args, **kwargs)
        path = "/".join(str(p) for p in module.path)
        taps.seen.append(path)
        active.append(id(module))
        try:
            return taps.output(path, lambda: next_fun(*args, **kwargs))
        finally:
            active.pop()

    return interceptor


# --------------------------------------------------------------------- nnx

class _NNXTap:
    """Stands in for an NNX submodule during one call."""

    def __init__(self, inner, path: str, taps: _Taps):
        self._inner, self._path, self._taps = inner, path, taps

    def __call__(self, *args, **kwargs):
        return self._taps.output(self._path, lambda: self._inner(*args, **kwargs))

    def __getattr__(self, name):
        return getattr(self._inner, name)


def _nnx_get(parent, key: str):
    if isinstance(parent, (list, tuple)) or (hasattr(parent, "__getitem__")
                                            and key.isdigit() and not hasattr(parent, key)):
        return parent[int(key)]
    return getattr(parent, key)


def _nnx_set(parent, key: str, value) -> None:
    if isinstance(parent, list) or (hasattr(parent, "__setitem__") and key.isdigit()
                                    and not hasattr(parent, key)):
        parent[int(key)] = value
    else:
        object.__setattr__(parent, key, value)


@contextlib.contextmanager
def _nnx_surgery(module, taps: _Taps):
    """Wrap every wanted submodule of ``module`` for the duration of the block."""
    undo = []
    try:
        for path in sorted(taps.wanted):
            if path == "":
                raise ValueError("an NNX model's root output is its return value; tap a "
                                 "submodule instead")
            keys = path.split("/")
            parent = module
            try:
                for key in keys[:-1]:
                    parent = _nnx_get(parent, key)
                inner = _nnx_get(parent, keys[-1])
            except (AttributeError, IndexError, KeyError, TypeError):
                raise KeyError(f"the NNX model has no submodule at {path!r}") from None
            if not callable(inner):
                raise KeyError(f"{path!r} of the NNX model is not a callable submodule")
            _nnx_set(parent, keys[-1], _NNXTap(inner, path, taps))
            undo.append((parent, keys[-1], inner))
        yield
    finally:
        for parent, key, inner in reversed(undo):
            _nnx_set(parent, key, inner)


# --------------------------------------------------------------------- api

def run(fn: Callable[..., Any], *args, capture: Iterable[Path] | Path | None = (),
        edits: Mapping[Path, Edit] | None = None, feed: Mapping[Path, Any] | None = None,
        module: Any = None, aliases: Mapping[str, Path] | None = None,
        **kwargs) -> tuple[Any, dict[str, jax.Array]]:
    """``fn(*args, **kwargs)`` with taps; returns ``(output, acts)``.

    ``capture``: module paths whose outputs to return in ``acts`` (after any edit);
    ``edits``: ``{path: Edit}`` applied to those outputs; ``feed``: ``{path: array}``
    outputs that replace the module's own (the module is not called). ``aliases``:
    names (research names such as ``conv5_3``) that stand for module paths in
    ``capture``, ``edits`` and ``feed``; ``acts`` is keyed as asked. ``module``: the
    NNX module object ``fn`` calls (NNX is tapped by surgery on it); leave ``None`` for
    linen. Raises ``KeyError`` naming any path that did not run, and the paths that did.
    """
    alias = dict(aliases or {})
    names = _paths(capture)
    path = lambda name: alias.get(name, name)  # noqa: E731
    taps = _Taps([path(n) for n in names], {path(k): v for k, v in (edits or {}).items()},
                 {path(k): v for k, v in (feed or {}).items()})
    if module is None:
        from flax import linen as nn
        with nn.intercept_methods(_linen_interceptor(taps)):
            out = fn(*args, **kwargs)
    else:
        with _nnx_surgery(module, taps):
            out = fn(*args, **kwargs)
            taps.seen.extend(taps.hits)
    taps.check_all_found()
    return out, {n: taps.acts[path(n)] for n in names}


def module_paths(fn: Callable[..., Any], *args, **kwargs) -> list[Path]:
    """Every linen module path ``fn(*args, **kwargs)`` calls, in call order (traced
    abstractly with ``jax.eval_shape``, so nothing is computed)."""
    taps = _Taps((), None, None)
    from flax import linen as nn
    with nn.intercept_methods(_linen_interceptor(taps)):
        jax.eval_shape(lambda *a: fn(*a, **kwargs), *args)
    seen, order = set(), []
    for p in taps.seen:
        if p not in seen:
            seen.add(p)
            order.append(p)
    return order
