"""The native CPU selection kernel: build, load and register ``top_merge.cc``.

``top_merge_target()`` returns the name of the XLA FFI target
(``jaxdissect_top_merge``) after compiling ``top_merge.cc`` once with the system's
C++ compiler against the FFI headers jaxlib ships (``jax.ffi.include_dir()``),
loading it and registering it for the CPU platform; or ``None`` when that is not
possible (no compiler, a failed build, or ``JAXDISSECT_NATIVE=0``), in which case
``stats.select`` uses its NumPy host kernel. The library is cached under
``$JAXDISSECT_CACHE`` (default ``~/.cache/jaxdissect``), keyed by a hash of the
source, the compiler flags and the jaxlib version, and written atomically, so
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

SOURCE = Path(__file__).with_name("top_merge.cc")
TARGET = "jaxdissect_top_merge"
FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC", "-w")

_STATE: dict = {}


def cache_dir() -> Path:
    return Path(os.environ.get("JAXDISSECT_CACHE", Path.home() / ".cache" / "jaxdissect"))


def library_path() -> Path:
    import jaxlib

    key = hashlib.sha256(SOURCE.read_bytes() + repr((FLAGS, jaxlib.__version__)).encode())
    return cache_dir() / "native" / f"top_merge-{key.hexdigest()[:16]}.so"


def build(path: Path) -> None:
    """Compiles ``top_merge.cc`` to ``path`` (atomically). Raises on failure."""
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


def top_merge_target() -> str | None:
    """The registered FFI target name, or ``None`` if the kernel is unavailable."""
    if "target" not in _STATE:
        _STATE["target"] = _load()
    return _STATE["target"]


def _load() -> str | None:
    if os.environ.get("JAXDISSECT_NATIVE", "1") == "0":
        return None
    try:
        path = library_path()
        if not path.exists():
            build(path)
        lib = ctypes.cdll.LoadLibrary(str(path))
        jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(lib.JaxdissectTopMerge),
                                    platform="cpu")
    except (OSError, RuntimeError, AttributeError) as err:
        warnings.warn(f"jaxdissect: native CPU top-B kernel unavailable ({err}); using the "
                      "NumPy host kernel", RuntimeWarning, stacklevel=3)
        return None
    return TARGET
