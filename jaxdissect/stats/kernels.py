"""Which kernels the statistics use: the native CPU ones or the accelerators' XLA ones.

Every statistic that has a native CPU kernel (``stats/cpu_kernels.cc``, built by
``stats.native``) picks it by ``jax.lax.platform_dependent`` when its step is
lowered: the native kernel on CPU, plain XLA ops (``lax.top_k``, scatter-adds,
blends) on GPUs and TPUs. ``platform_dependent(*args, cpu=..., default=...)`` here
does the same, except that under ``JAXDISSECT_KERNELS=xla`` it always takes the
``default`` (accelerator) branch, on any platform, so the accelerators' programs run
end to end on a CPU: the suite checks that they give the native kernels' results.

``JAXDISSECT_KERNELS``: ``native`` (default) or ``xla``; read once, on first use,
and fixed for the life of the process (a step traced later never sees another
value, so compiled steps and their caches stay consistent). ``mode()`` is what
results record in their metadata.
"""

from __future__ import annotations

import os
from typing import Callable

import jax

#: the environment variable and its values
ENV = "JAXDISSECT_KERNELS"
MODES = ("native", "xla")

_MODE: list[str] = []


def mode() -> str:
    """``"native"`` or ``"xla"``: ``$JAXDISSECT_KERNELS`` as read on first use."""
    if not _MODE:
        value = os.environ.get(ENV, "native").strip().lower() or "native"
        if value not in MODES:
            raise ValueError(f"{ENV}={value!r}: expected one of {', '.join(MODES)}")
        _MODE.append(value)
    return _MODE[0]


def platform_dependent(*args, cpu: Callable, default: Callable):
    """``jax.lax.platform_dependent(*args, cpu=cpu, default=default)``, or
    ``default(*args)`` on every platform when ``mode()`` is ``"xla"``."""
    if mode() == "xla":
        return default(*args)
    return jax.lax.platform_dependent(*args, cpu=cpu, default=default)
