"""Any ``torch.nn.Module`` as a pure JAX function, tapped at torch module names.

:func:`torch_call` turns a module into ``call(params, x, capture=, edits=, feed=) ->
(out, acts)``, the seam :class:`~jaxdissect.spec.ModelSpec` runs. The module runs
through torchax (``torch.func.functional_call`` on tensors that wrap JAX arrays), in eval
mode, with ``params`` (:func:`torch_params`: every parameter and buffer by its
``state_dict`` name, as JAX arrays) as an argument, so ``jit``, ``vmap``, ``grad`` and
fingerprints work as for a Flax model. Taps are torch forward hooks at module names
(``layer4``, ``blocks.5``, ``features.28``), registered for one call and removed; they
fire while JAX traces, and what they capture is returned from the traced function.

Captures are read when the forward pass ends, so a later in-place operation on the
tapped output (``ReLU(inplace=True)`` after a convolution) shows in them, as in torch's
own hooks (and the reference's, whose VGG and AlexNet activations are post-ReLU for that
reason); edits and feeds apply where the module returns.

Layouts. Experiments see a layer as ``[b, h, w, units]``; each tapped output is read
through its :class:`Layout`: ``"nchw"`` (convolutions), ``"nhwc"`` (Swin's stages),
``"tokens"`` (``[b, prefix + h*w, units]``: the class / register tokens first are left
out of the map and left unchanged by edits), ``"vector"`` (``[b, units]`` as a 1x1 map)
or ``"raw"`` (anything else, as the module returns it). Captures come back in the
layer's map layout (a token sequence whole, ``[b, n, units]``, which
:class:`TorchMaps` turns into the map, as for jaxdissect's Flax ViT), edits
(``x*(1-a)+v*a``) apply in the map layout, and ``feed`` takes what a capture gives. A layout
not given is inferred from the output's shape and the input's aspect ratio.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from jaxdissect.edits import Edit

LAYOUTS = ("nchw", "nhwc", "tokens", "vector", "raw")


@dataclasses.dataclass(frozen=True)
class Layout:
    """How a layer's output maps onto ``[b, h, w, units]``; ``prefix``: the leading
    tokens (class, register) of a ``"tokens"`` layout."""

    kind: str
    prefix: int = 0

    def __post_init__(self):
        if self.kind not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.kind!r}")

    def to_map(self, y, aspect: float = 1.0):
        """The output ``y`` as ``[b, h, w, units]`` (``"raw"``: ``y`` itself)."""
        if self.kind == "nchw":
            return jnp.transpose(y, (0, 2, 3, 1))
        if self.kind == "vector":
            return y[:, None, None, :]
        if self.kind == "tokens":
            h, w = token_grid(y.shape[1] - self.prefix, aspect)
            return y[:, self.prefix:].reshape(y.shape[0], h, w, y.shape[2])
        return y

    def capture(self, y, aspect: float = 1.0):
        """What a capture returns: the map, except that a token sequence stays whole
        (``[b, n, units]``, class tokens included, so a cached capture can be fed back);
        :class:`TorchMaps` reads it as a map."""
        return y if self.kind == "tokens" else self.to_map(y, aspect)

    def from_map(self, m, y):
        """``y`` with its mapped part replaced by ``m`` (``to_map``'s inverse)."""
        if self.kind == "nchw":
            return jnp.transpose(m, (0, 3, 1, 2))
        if self.kind == "vector":
            return m.reshape(m.shape[0], m.shape[-1])
        if self.kind == "tokens":
            seq = m.reshape(m.shape[0], -1, m.shape[-1])
            if self.prefix == 0:
                return seq
            if y is None:
                raise ValueError("a token layer with class or register tokens cannot be fed "
                                 "its patch grid alone; feed a layer without them")
            prefix = jnp.broadcast_to(y[:, :self.prefix], (seq.shape[0], self.prefix,
                                                             seq.shape[-1]))
            return jnp.concatenate([prefix.astype(seq.dtype), seq], axis=1)
        return m


def token_grid(n: int, aspect: float = 1.0) -> tuple[int, int]:
    """``(h, w)`` with ``h * w == n`` and ``h / w`` closest to ``aspect``."""
    best = None
    for h in range(1, n + 1):
        if n % h == 0:
            score = abs(math.log(h / (n // h)) - math.log(aspect))
            if best is None or score < best[0]:
                best = (score, h, n // h)
    return best[1], best[2]


def infer_layout(shape, input_hw=None, prefix_tokens: int = 0) -> Layout:
    """A layout for an output of ``shape`` given the input image's ``(H, W)``:
    4-D is NCHW unless only its middle two axes have the input's aspect (NHWC);
    3-D is tokens (``prefix_tokens`` leading ones excluded when the rest form a grid);
    2-D is a vector."""
    if len(shape) == 2:
        return Layout("vector")
    if len(shape) == 4:
        _, a, b, c = shape
        if input_hw is None:
            nhwc = a == b and b != c
        else:
            H, W = input_hw
            nchw = b * W == c * H
            nhwc = a * W == b * H and not nchw
        return Layout("nhwc" if nhwc else "nchw")
    if len(shape) == 3:
        n = shape[1]
        aspect = 1.0 if input_hw is None else input_hw[0] / input_hw[1]
        for k in dict.fromkeys((prefix_tokens, 0)):
            if 0 < n - k and _is_grid(n - k, aspect):
                return Layout("tokens", k)
        return Layout("tokens", 0)
    return Layout("raw")


def _is_grid(n: int, aspect: float) -> bool:
    h, w = token_grid(n, aspect)
    return abs(h / w - aspect) < 1e-6


def prefix_tokens(module) -> int:
    """Leading non-patch tokens: timm's ``num_prefix_tokens``, or a torchvision-style
    ``class_token``."""
    n = getattr(module, "num_prefix_tokens", None)
    if isinstance(n, int):
        return n
    return 1 if getattr(module, "class_token", None) is not None else 0


class TorchMaps(Mapping):
    """``ModelSpec.to_map`` for a torch model: any layer's capture as ``[b, h, w, units]``
    (token sequences by :func:`infer_layout`; maps as they are)."""

    def __init__(self, input_hw=None, prefix: int = 0, layouts=None, aliases=None):
        self.input_hw, self.prefix = input_hw, prefix
        alias = dict(aliases or {})
        self.layouts = {alias.get(k, k): (v if isinstance(v, Layout) else Layout(v))
                        for k, v in (layouts or {}).items()}
        self.alias = alias

    def __contains__(self, layer):
        return True

    def __getitem__(self, layer):
        given = self.layouts.get(self.alias.get(layer, layer))
        if given is not None and given.kind == "tokens":
            aspect = 1.0 if self.input_hw is None else self.input_hw[0] / self.input_hw[1]
            return lambda acts: given.to_map(acts, aspect)
        return self.convert

    def __iter__(self):
        return iter(())

    def __len__(self):
        return 0

    def convert(self, acts):
        if acts.ndim != 3:
            return acts if acts.ndim == 4 else Layout("vector").to_map(acts)
        aspect = 1.0 if self.input_hw is None else self.input_hw[0] / self.input_hw[1]
        return infer_layout(acts.shape, self.input_hw, self.prefix).to_map(acts, aspect)


def torch_params(module) -> dict[str, Any]:
    """Every parameter and buffer of ``module`` (state-dict names; a tied weight once)
    as a JAX array."""
    import numpy as np
    out = {}
    for name, t in [*module.named_parameters(), *module.named_buffers()]:
        out[name] = jnp.asarray(np.asarray(t.detach().cpu().numpy()))
    return out


@contextlib.contextmanager
def _eval_mode(module):
    import torch
    modes = [(m, m.training) for m in module.modules()]
    fastpath = torch.backends.mha.get_fastpath_enabled()
    module.eval()
    torch.backends.mha.set_fastpath_enabled(False)   # fused kernels cannot run on JAX arrays
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        for m, training in modes:
            m.training = training


def _select(out, output):
    if output is None:
        return out
    if callable(output):
        return output(out)
    return out[output]


def torch_call(module, aliases: Mapping[str, str] | None = None,
               layouts: Mapping[str, str | Layout] | None = None, image_input: bool = True,
               output: Any = None) -> Callable[..., Any]:
    """``call(params, x, capture=, edits=, feed=) -> (out, acts)`` running ``module``.

    ``x``: NHWC images when ``image_input`` (given to the module as NCHW), else as is
    (latents). ``aliases``: research name -> module name; ``layouts``: module or research
    name -> layout (``"nchw"`` ... or a :class:`Layout`), the rest inferred. ``output``:
    a key, an index or a function picking the output from what ``forward`` returns.
    """
    from jaxdissect import taps
    from jaxdissect.torch_compat import torchax

    alias = dict(aliases or {})
    given = {alias.get(k, k): (v if isinstance(v, Layout) else Layout(v))
             for k, v in (layouts or {}).items()}
    prefix = prefix_tokens(module)
    names = {n for n, _ in module.named_modules()}

    def layout_of(path, y, input_hw):
        return given.get(path) or infer_layout(y.shape, input_hw, prefix)

    def call(params, x, capture=(), edits=None, feed=None):
        import torch
        env = torchax().default_env()        # first: imports torchax with its fixes
        from torchax import interop
        asked = taps._paths(capture)
        path = lambda n: alias.get(n, n)  # noqa: E731
        capture_at = {path(n) for n in asked}
        edit_at = {path(k): v for k, v in (edits or {}).items()}
        feed_at = {path(k): v for k, v in (feed or {}).items()}
        wanted = capture_at | set(edit_at) | set(feed_at)
        unknown = sorted(p for p in wanted if p not in names or p == "")
        if unknown:
            raise KeyError(f"the torch model has no submodule {unknown}; a layer is a module "
                           f"name such as {sorted(n for n in names if n)[:8]}")
        input_hw = tuple(x.shape[1:3]) if image_input else None
        aspect = 1.0 if input_hw is None else input_hw[0] / input_hw[1]
        captured, hits = {}, {}

        def hook_for(p):
            def hook(mod, inputs, out):
                hits[p] = hits.get(p, 0) + 1
                if hits[p] > 1:
                    raise ValueError(f"module {p!r} is called more than once in one forward "
                                     "pass; a tap there is ambiguous (tap a module that runs "
                                     "once)")
                y = interop.jax_view(out)
                if not hasattr(y, "shape"):
                    raise TypeError(f"module {p!r} returns {type(y).__name__}, not a tensor; "
                                    "tap a module whose output is one tensor")
                lay = layout_of(p, y, input_hw)
                if p in feed_at:
                    fed = jnp.asarray(feed_at[p])
                    # a whole token sequence (a capture) is fed as it is; a patch grid
                    # alone cannot be, where the module's class token would come from
                    # the placeholder input
                    y = fed if lay.kind == "tokens" and fed.ndim == 3 else \
                        lay.from_map(fed, None)
                if p in edit_at:
                    y = lay.from_map(_edit(edit_at[p], lay.to_map(y, aspect), p), y)
                t = interop.torch_view(y)
                if p in capture_at:
                    # read after the forward pass: a later in-place op (ReLU(inplace=True))
                    # shows in the capture, as in torch's hooks and the reference's
                    captured[p] = (t, lay)
                return t
            return hook

        if image_input:
            x = jnp.transpose(x, (0, 3, 1, 2))
        handles = []
        with _eval_mode(module):
            try:
                for p in sorted(wanted):
                    handles.append(module.get_submodule(p).register_forward_hook(hook_for(p)))
                # torch broadcasts as NumPy does, whatever JAX's rank promotion setting
                with env, jax.numpy_rank_promotion("allow"):
                    tparams, tx = interop.torch_view((dict(params), x))
                    out = torch.func.functional_call(module, tparams, (tx,))
                out = interop.jax_view(out)
                mapped = {p: lay.capture(interop.jax_view(t), aspect)
                          for p, (t, lay) in captured.items()}
            finally:
                for h in handles:
                    h.remove()
        missing = sorted(wanted - set(hits))
        if missing:
            raise KeyError(f"no module at {missing} ran in this forward pass")
        return _select(out, output), {n: mapped[path(n)] for n in asked}

    return call


def _edit(edit: Edit, m, path: str):
    try:
        return edit(m)
    except (ValueError, TypeError) as e:
        raise ValueError(f"edit at {path!r} (alpha {jnp.shape(edit.alpha)}, value "
                         f"{jnp.shape(edit.value)}) does not fit its map {m.shape}") from e
