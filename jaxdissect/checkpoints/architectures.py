"""The architectures a state dict converts to, registered by name by their model modules.

Each model module under :mod:`jaxdissect.models` (``vgg16.py``, ``proggan.py``,
``tv_resnet.py``, ``alexnet.py``, ``vit.py``) declares one :class:`Architecture` beside
its Flax module, as timm keeps ``_filter_fn``, ``default_cfgs`` and the factory beside
each model, and passes it to :func:`register`. Adding an architecture is writing one such
module: this registry imports every module of :mod:`jaxdissect.models` on first use, and
a module elsewhere registers by calling :func:`register` itself.

Generic over the registered architectures:

* :func:`detect_architecture`: the one architecture whose key signature a state dict
  has (read from its keys, nothing converted);
* :func:`convert_state_dict`: ``(config, tree)``, the JSON-able constructor arguments
  and the converted arrays, strictly checked (the architecture's table over the
  variables its model traces, :func:`jaxdissect.checkpoints.convert.convert`);
* :func:`model_from_config`, :func:`expected_shapes`, :func:`as_variables`,
  :func:`spec_from_converted`.

A converted tree is the ``params`` collection for architectures declared with
``tree="params"`` (VGG-16, ProGAN) and the whole variables dict (``{"params": ...,
"batch_stats": ...}``) for the others; :func:`as_variables` gives what ``apply`` takes.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Any, Callable, Mapping

import numpy as np

from jaxdissect.checkpoints.convert import (
    CheckpointMismatch,
    Table,
    convert,
    prepare,
    torch_name_table,
    variable_shapes,
)


def _default_table(state_dict: Mapping, config: Mapping, shapes: Mapping) -> Table:
    return torch_name_table(shapes)


@dataclasses.dataclass(frozen=True)
class Architecture:
    """What jaxdissect knows about one architecture, declared in its model module.

    ``build(config)``: the Flax module for JSON-able constructor arguments (lists where
    the module takes tuples). ``signatures``: sets of state-dict keys, any one of which
    marks a state dict as this architecture's (each naming it reads: the reference's,
    torchvision's, timm's). ``normalise(state_dict)``: other namings renamed to the one
    the table reads. ``read_config(state_dict)``: the config, read from the shapes of the
    normalised state dict (raises :class:`CheckpointMismatch` naming a missing key).
    ``table(state_dict, config, shapes)``: variable path -> (key, transform) for the
    traced ``shapes`` (default: :func:`torch_name_table`). ``example_input(config)``: an
    input shape that creates every variable. ``spec(model, variables, *, name,
    class_names)``: its :class:`~jaxdissect.spec.ModelSpec`. ``tree``: ``"params"`` if a
    converted tree is the params collection alone, ``"variables"`` if it is all of them.
    """

    name: str
    build: Callable[[Mapping], Any]
    signatures: tuple[tuple[str, ...], ...]
    read_config: Callable[[Mapping], dict]
    example_input: Callable[[Mapping], tuple]
    spec: Callable[..., Any]
    normalise: Callable[[Mapping], dict] = dict
    table: Callable[[Mapping, Mapping, Mapping], Table] = _default_table
    tree: str = "variables"
    what: str = ""

    def __post_init__(self):
        if self.tree not in ("params", "variables"):
            raise ValueError(f"tree must be 'params' or 'variables', got {self.tree!r}")
        if not self.signatures or not all(self.signatures):
            raise ValueError(f"architecture {self.name!r} needs at least one non-empty "
                             f"key signature")

    def claims(self, keys) -> bool:
        """Whether a (prepared) state dict with ``keys`` has one of the signatures."""
        return any(all(k in keys for k in sig) for sig in self.signatures)


_REGISTRY: dict[str, Architecture] = {}
_BUILTINS_LOADED = False


def register(arch: Architecture, replace: bool = False) -> Architecture:
    """Add ``arch`` under its name (``replace`` to redefine one); returns it."""
    if arch.name in _REGISTRY and not replace and _REGISTRY[arch.name] is not arch:
        raise ValueError(f"architecture {arch.name!r} is already registered")
    _REGISTRY[arch.name] = arch
    return arch


def unregister(name: str) -> None:
    """Remove a registered architecture (tests, or a redefinition)."""
    _REGISTRY.pop(name, None)


def _load_builtins() -> None:
    """Import every module of :mod:`jaxdissect.models`; architecture modules register."""
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    import jaxdissect.models as models
    for info in pkgutil.iter_modules(models.__path__):
        importlib.import_module(f"{models.__name__}.{info.name}")
    _BUILTINS_LOADED = True


def architectures() -> dict[str, Architecture]:
    """Every registered architecture by name, sorted."""
    _load_builtins()
    return {k: _REGISTRY[k] for k in sorted(_REGISTRY)}


def architecture_names() -> tuple[str, ...]:
    return tuple(architectures())


def get_architecture(name: str) -> Architecture:
    known = architectures()
    if name not in known:
        raise ValueError(f"unknown architecture {name!r}; known: {list(known)}")
    return known[name]


def detect_architecture(state_dict: Mapping, what: str = "checkpoint") -> str:
    """The name of the one registered architecture whose key signature ``state_dict``
    has (after :func:`~jaxdissect.checkpoints.convert.prepare`). Raises
    :class:`CheckpointMismatch` on one line when none or several do."""
    keys = frozenset(prepare(state_dict))
    known = architectures()
    found = [a.name for a in known.values() if a.claims(keys)]
    if len(found) == 1:
        return found[0]
    if found:
        raise CheckpointMismatch(f"{what}: its keys fit the architectures {found}; name "
                                 f"one (--arch)")
    looked = "; ".join(f"{a.name}: " + " or ".join("+".join(s) for s in a.signatures)
                       for a in known.values())
    raise CheckpointMismatch(f"{what}: not a state dict of a known architecture (found "
                             f"keys like {sorted(keys)[:4]}; looked for {looked})")


def _jsonable(config: Mapping) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}


def convert_state_dict(state_dict: Mapping[str, np.ndarray], arch: str | None = None,
                       what: str = "checkpoint"):
    """Return ``(config, tree)`` for ``arch`` (default: :func:`detect_architecture`)
    from a state dict.

    ``config`` is the JSON-able constructor arguments (see :func:`model_from_config`);
    ``tree`` a nested dict of float32 NumPy arrays (see the module docstring). Raises
    :class:`~jaxdissect.checkpoints.convert.CheckpointMismatch` naming every
    missing, unexpected or mis-shaped key.
    """
    state_dict = prepare(state_dict)
    a = get_architecture(arch) if arch is not None else get_architecture(
        detect_architecture(state_dict, what))
    state_dict = a.normalise(state_dict)
    what = f"{what} (as {a.name})"
    try:
        config = a.read_config(state_dict)
    except CheckpointMismatch as e:
        raise CheckpointMismatch(f"{what}: {e}") from None
    shapes = variable_shapes(a.build(_jsonable(config)), a.example_input(config))
    tree = convert(state_dict, a.table(state_dict, config, shapes), shapes, what=what)
    return _jsonable(config), (tree["params"] if a.tree == "params" else tree)


def model_from_config(arch: str, config: Mapping):
    """The Flax module for ``arch`` with constructor arguments ``config``."""
    return get_architecture(arch).build(config)


def expected_shapes(arch: str, config: Mapping) -> dict:
    """Flat ``{"path": shape}`` of the tree :func:`convert_state_dict` produces for
    ``arch`` with ``config``, by abstract tracing of the model it describes."""
    a = get_architecture(arch)
    shapes = variable_shapes(a.build(config), a.example_input(config))
    if a.tree == "params":
        return {k[len("params/"):]: v for k, v in shapes.items() if k.startswith("params/")}
    return shapes


def as_variables(arch: str, tree) -> dict:
    """The ``variables`` for ``model.apply`` from a converted tree of ``arch``."""
    return {"params": tree} if get_architecture(arch).tree == "params" else tree


def spec_from_converted(arch: str, model, tree, name: str, class_names=None):
    """The :class:`~jaxdissect.spec.ModelSpec` of a converted ``arch`` model (its
    module's ``spec`` factory); ``tree`` is the converted tree."""
    return get_architecture(arch).spec(model, as_variables(arch, tree), name=name,
                                       class_names=class_names)


def tuples(config: Mapping) -> dict:
    """``config`` with its lists as tuples (Flax module fields must be hashable)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
