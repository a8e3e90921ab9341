"""How a Flax model is called as its author wrote it: the call's extra arguments
(``train=False``), which part of its return value is the output an experiment reads
(the logits of a classifier, the images of a generator), and an NNX model's copy in
eval mode."""

from __future__ import annotations

from typing import Any, Callable, Mapping

#: argument names ``taps.run`` takes for itself
_RESERVED = ("capture", "edits", "feed", "module", "aliases")


def call_kwargs(kwargs: Mapping[str, Any] | None) -> dict:
    """``apply_kwargs`` checked: a mapping from argument name to value."""
    if kwargs is None:
        return {}
    if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
        raise TypeError(f"apply_kwargs must map argument names to values, got "
                        f"{type(kwargs).__name__}")
    clash = sorted(set(kwargs) & set(_RESERVED))
    if clash:
        raise ValueError(f"apply_kwargs {clash} clash with the spec's own call arguments "
                         f"{list(_RESERVED)}")
    return dict(kwargs)


def output_selector(output) -> Callable[[Any], Any]:
    """The function that picks the output from a model's return value: ``None`` (the
    value itself), a key (``str``: a dict entry), an index (``int``: a tuple / list
    item) or a function."""
    if output is None:
        return lambda out: out
    if callable(output):
        return output
    if isinstance(output, bool) or not isinstance(output, (str, int)):
        raise TypeError(f"output must be a key (str), an index (int) or a function, got "
                        f"{type(output).__name__}")

    def select(out):
        if isinstance(output, str):
            if not isinstance(out, Mapping):
                raise TypeError(f"output={output!r} picks a dict entry, but the model "
                                f"returns {type(out).__name__}")
            if output not in out:
                raise KeyError(f"output={output!r}: the model returns the keys {list(out)}")
            return out[output]
        if not isinstance(out, (tuple, list)):
            raise TypeError(f"output={output} picks a tuple item, but the model returns "
                            f"{type(out).__name__}")
        if not -len(out) <= output < len(out):
            raise IndexError(f"output={output}: the model returns {len(out)} values")
        return out[output]

    return select


def nnx_eval_split(model, eval_mode: bool = True):
    """``(graphdef, state)`` of ``model``, or of a copy of it in eval mode
    (``deterministic=True``, ``use_running_average=True`` wherever a submodule has
    them), ``model`` itself unchanged."""
    from flax import nnx
    if eval_mode:
        model = nnx.clone(model)
        model.eval()
    return nnx.split(model)


def nnx_module_paths(graphdef, state) -> list[str]:
    """The ``/``-joined path of every submodule of an NNX model given as
    ``(graphdef, state)``, sorted; ``[]`` for anything else."""
    from flax import nnx
    if not isinstance(graphdef, nnx.GraphDef):
        return []
    model = nnx.merge(graphdef, state)
    return sorted("/".join(str(k) for k in path) for path, node in nnx.iter_graph(model)
                  if path and isinstance(node, nnx.Module))
