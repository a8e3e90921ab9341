"""jaxdissect's native CPU kernels: build, load and register ``cpu_kernels.cc``.

``target(name)`` returns the XLA FFI target name of kernel ``name``
(``"top_merge"``: ``stats.select``; ``"upsample"``: ``stats.upsample``;
``"top_merge_upsampled"``: ``stats.upsample_merge``; ``"radix_histogram"``:
``stats.quantile``) after compiling ``cpu_kernels.cc`` (and the headers it
includes) once with the system's C++ compiler against the FFI headers jaxlib
ships (``jax.ffi.include_dir()``), loading it and registering its handlers for
the CPU platform; or ``None`` when that is not possible (no
compiler, a failed build, or ``JAXDISSECT_NATIVE=0``), in which case the callers
use their fallbacks (a NumPy host kernel, XLA's own ops). The library is cached under
``$JAXDISSECT_CACHE`` (default ``~/.cache/jaxdissect``), keyed by a hash of the
sources, the compiler flags and the jaxlib version, and written atomically, so
concurrent first uses cannot load a half-written file.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import jax

SOURCE = Path(__file__).with_name("cpu_kernels.cc")
#: the headers it includes (part of the library's cache key)
HEADERS = tuple(Path(__file__).with_name(n) for n in ("top_merge.h", "blend.h"))
#: kernel name -> (FFI target name, handler symbol in the library)
KERNELS = {"top_merge": ("jaxdissect_top_merge", "JaxdissectTopMerge"),
           "upsample": ("jaxdissect_upsample", "JaxdissectUpsample"),
           "top_merge_upsampled": ("jaxdissect_top_merge_upsampled",
                                   "JaxdissectTopMergeUpsampled"),
           "radix_histogram": ("jaxdissect_radix_histogram", "JaxdissectRadixHistogram")}
#: -ffp-contract=off: no fused multiply-add, so the upsampling's float32 products
#: round before they are summed, as NumPy's do (``blend.h``)
FLAGS = ("-O3", "-std=c++17", "-ffp-contract=off", "-shared", "-fPIC", "-w")

_STATE: dict = {}


def cache_dir() -> Path:
    return Path(os.environ.get("JAXDISSECT_CACHE", Path.home() / ".cache" / "jaxdissect"))


def library_path() -> Path:
    import jaxlib

    key = hashlib.sha256(b"".join(p.read_bytes() for p in (SOURCE, *HEADERS))
                         + repr((FLAGS, jaxlib.__version__)).encode())
    return cache_dir() / "native" / f"cpu_kernels-{key.hexdigest()[:16]}.so"


def build(path: Path) -> None:
    """Compiles ``cpu_kernels.cc`` to ``path`` (atomically). Raises on failure."""
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if compiler is None:
        raise RuntimeError("no C++ compiler found (set CXX or install g++)")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        out = Path(tmp) / path.name
        cmd = [compiler, *FLAGS, f"-I{jax.ffi.include_dir()}", str(SOURCE), "-o", str(out)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"compiling {SOURCE.name} failed:\n{done.stderr[-2000:]}")
        os.replace(out, path)


def target(name: str) -> str | None:
    """The registered FFI target of kernel ``name``, or ``None`` if unavailable."""
    if name not in KERNELS:
        raise KeyError(f"no native kernel {name!r}; kernels: {sorted(KERNELS)}")
    if "loaded" not in _STATE:
        _STATE["loaded"] = _load()
    return KERNELS[name][0] if _STATE["loaded"] else None


def _load() -> bool:
    if os.environ.get("JAXDISSECT_NATIVE", "1") == "0":
        return False
    try:
        path = library_path()
        if not path.exists():
            build(path)
        lib = ctypes.cdll.LoadLibrary(str(path))
        for name, symbol in KERNELS.values():
            jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, symbol)),
                                        platform="cpu")
    except (OSError, RuntimeError, AttributeError) as err:
        warnings.warn(f"jaxdissect: native CPU kernels unavailable ({err}); using the "
                      "NumPy host kernel and XLA's own ops", RuntimeWarning, stacklevel=3)
        return False
    return True
