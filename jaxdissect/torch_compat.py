"""Import torchax (the torch-to-JAX bridge) with this torch, and undo what it changes.

torchax 0.0.13 names operator overloads that torch 2.13 no longer has: the named-tensor
(``Dimname``) variants of ``prod``, ``all``, ``std``, ``std_mean``, ``norm``,
``index_add``, ``index_copy``, ``index_fill`` and ``unbind``. It only lists them (in its
autocast policy table and its decomposition list), so importing it fails although
nothing it runs needs them. :func:`torchax` imports it (and builds its default
environment) with those names resolving to
inert placeholders (matched by no call), then restores torch's attribute lookup.

Two more fixes, both applied here and nowhere else:

* torchax's replacement of ``torch.nn.functional.linear`` names its arguments
  ``(self, weights, bias)``, so ``F.linear(x, weight=w)`` (timm's EVA) fails; it is
  re-registered with torch's own argument names.
* importing torchax turns off torch's fused attention fast path globally and sets the
  environment variable ``ENABLE_RUNTIME_UPTIME_TELEMETRY``; both are restored after the
  import (the bridge turns it off only while it traces, where
  the fused kernel cannot run). torchax also renames torch's ``privateuse1`` backend to
  ``"jax"``, which torch allows once per process and cannot undo.
"""

from __future__ import annotations

import contextlib

# (operator, overload) pairs torchax 0.0.13 names that torch 2.13 removed.
REMOVED_OVERLOADS = frozenset({
    ("aten::prod", "dim_Dimname"), ("aten::all", "dimname"), ("aten::all", "dimname_out"),
    ("aten::index_add", "dimname"), ("aten::index_copy", "dimname"),
    ("aten::index_copy_", "dimname"), ("aten::index_fill", "Dimname_Scalar"),
    ("aten::index_fill", "Dimname_Tensor"), ("aten::index_fill_", "Dimname_Scalar"),
    ("aten::index_fill_", "Dimname_Tensor"), ("aten::norm", "names_ScalarOpt_dim"),
    ("aten::norm", "names_ScalarOpt_dim_dtype"), ("aten::norm", "names_dtype_out"),
    ("aten::norm", "names_out"), ("aten::std", "correction_names"),
    ("aten::std", "correction_names_out"), ("aten::std", "names_dim"),
    ("aten::std", "names_out"), ("aten::std_mean", "correction_names"),
    ("aten::std_mean", "names_dim"), ("aten::unbind", "Dimname"),
})


class RemovedOverload:
    """Stands for an overload torch no longer has: hashable, equal only to itself."""

    def __init__(self, name: str):
        self.name = name

    def __repr__(self):
        return f"RemovedOverload({self.name!r})"


@contextlib.contextmanager
def _removed_overloads_as_placeholders():
    import torch._ops as ops

    original = ops.OpOverloadPacket.__getattr__

    def getattr_(self, key):
        try:
            return original(self, key)
        except AttributeError:
            if (self._qualified_op_name, key) in REMOVED_OVERLOADS:
                return RemovedOverload(f"{self._qualified_op_name}.{key}")
            raise

    ops.OpOverloadPacket.__getattr__ = getattr_
    try:
        yield
    finally:
        ops.OpOverloadPacket.__getattr__ = original


def _linear(input, weight, bias=None):
    import jax.numpy as jnp
    out = jnp.einsum("...a,ba->...b", input, weight)
    return out if bias is None else out + bias


def _fix_linear(torchax_module) -> None:
    import torch
    from torchax.ops import ops_registry

    op = ops_registry.all_torch_functions.get(torch.nn.functional.linear)
    if op is None or op.func is _linear:
        return
    op.func = _linear
    env = torchax_module._env
    if env is not None and torch.nn.functional.linear in env._ops:
        env._ops[torch.nn.functional.linear].func = _linear


_TELEMETRY = "ENABLE_RUNTIME_UPTIME_TELEMETRY"     # torchax's import sets it to "1"


def torchax():
    """The ``torchax`` module, imported once with the fixes above."""
    import sys

    module = sys.modules.get("torchax")
    if module is None or not hasattr(module, "default_env"):
        import os

        import torch
        fastpath = torch.backends.mha.get_fastpath_enabled()
        telemetry = os.environ.get(_TELEMETRY)
        try:
            with _removed_overloads_as_placeholders():
                import torchax as module
                module.default_env()     # loads torchax's decomposition list, which names
                                         # removed overloads too
        except ImportError as e:
            raise ImportError("PyTorch models need torch and torchax: "
                              "pip install 'jaxdissect[torch]'") from e
        finally:
            torch.backends.mha.set_fastpath_enabled(fastpath)
            if telemetry is None:
                os.environ.pop(_TELEMETRY, None)
    _fix_linear(module)
    return module


def torchvision():
    """The ``torchvision`` module. A torchvision wheel built for another torch (PyPI's
    CUDA build beside torch's CPU build) cannot load its C++ operators, and its import
    then fails registering shapes for ``torchvision::nms`` / ``qnms``; those two
    operators are declared here (schemas only: detection's NMS stays unavailable, the
    classification models need neither) so the pure-Python models import."""
    import sys

    import torch

    if "torchvision" not in sys.modules and not _torchvision_ops_loadable():
        global _TORCHVISION_LIB
        _TORCHVISION_LIB = torch.library.Library("torchvision", "DEF")
        for op in ("nms", "qnms"):
            _TORCHVISION_LIB.define(
                f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    try:
        import torchvision as module
    except ImportError as e:
        raise ImportError("torchvision models need torchvision: "
                          "pip install 'jaxdissect[torch]'") from e
    return module


_TORCHVISION_LIB = None   # the declaration library lives as long as the process


def _torchvision_ops_loadable() -> bool:
    import importlib.util
    import os

    import torch

    if hasattr(torch.ops.torchvision, "nms"):
        return True
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return True        # not installed: let the import report it
    for folder in spec.submodule_search_locations:
        for name in os.listdir(folder):
            if name.startswith("_C.") and name.endswith((".so", ".pyd")):
                try:
                    torch.ops.load_library(os.path.join(folder, name))
                    return True
                except (OSError, RuntimeError):
                    return False
    return False
