"""jaxdissect: network dissection (Bau et al., PNAS 2020) as compiled JAX programs.

The public API is re-exported here and imported on first use, so that importing the
package (the ``jaxdissect`` command's ``--help``, say) does not import JAX.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: public name -> module that defines it
_EXPORTS = {
    "Edit": "jaxdissect.edits",
    "Edits": "jaxdissect.edits",
    "apply_edit": "jaxdissect.edits",
    "LabelSet": "jaxdissect.labels",
    "dissect": "jaxdissect.experiments.dissect",
    "DissectResult": "jaxdissect.experiments.dissect",
    "spec_compute": "jaxdissect.experiments.dissect",
    "Upsampler": "jaxdissect.stats.upsample",
    "ModelSpec": "jaxdissect.spec",
    "run_taps": "jaxdissect.taps",
}

#: public names that are defined under another name in their module
_RENAMED = {"run_taps": "run"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'jaxdissect' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), _RENAMED.get(name, name))
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
