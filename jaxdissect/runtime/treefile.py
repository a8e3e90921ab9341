"""The one file format of saved results and caches: named arrays and one JSON entry.

A file is an ``.npz`` (a zip of ``.npy`` arrays, stored uncompressed) whose arrays
are named by where they sit (a pytree's key path, a result's field path:
``"levels/0.01"``, ``"significance/p_value"``), plus one entry ``__jaxdissect__``:
the UTF-8 JSON ``{"format": FORMAT, "version": VERSION, "kind": ..., "meta": ...,
"arrays": {name: [shape, dtype]}}``. ``kind`` says what the file holds (a result
class's name, ``"tree"`` for a sweep's statistic), so nothing is read as something
it is not, and every array is read by its name.

Reading never runs code and never allocates more than the file's size: no pickle,
only plain numeric dtypes, every member stored (not compressed) with a size that
matches its header and the declared shape and dtype, the sizes together at most the
file's, the JSON at most ``MAX_META_BYTES``. A file in another format (or an older
version of this one) raises :class:`FormatError`; a damaged one ``ValueError``.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from typing import Any

import jax
import numpy as np

FORMAT = "jaxdissect.arrays"
VERSION = 1
META = "__jaxdissect__"
#: the largest JSON entry read (a dissection's label set and settings are ~100 KB)
MAX_META_BYTES = 64 << 20
#: the most arrays one file may hold
MAX_ARRAYS = 100_000
_DTYPE_KINDS = "biufc"   # bool, integers, floats, complex: nothing that holds objects


class FormatError(ValueError):
    """The file is not in this format (another format, or another version of it)."""


def write(path: str, arrays: dict[str, Any], *, kind: str, meta: Any = None) -> str:
    """Writes ``arrays`` (name -> array) and JSON-able ``meta`` to ``path`` atomically
    as a file of kind ``kind``; returns ``path``."""
    from jaxdissect.runtime.cache import atomic_write
    out = {}
    for name, value in arrays.items():
        a = np.asarray(value)
        if not name or name == META or a.dtype.kind not in _DTYPE_KINDS:
            raise ValueError(f"cannot save array {name!r} of dtype {a.dtype}")
        out[name] = a
    header = {"format": FORMAT, "version": VERSION, "kind": kind, "meta": meta,
              "arrays": {n: [list(a.shape), a.dtype.str] for n, a in out.items()}}
    text = json.dumps(header, sort_keys=True, allow_nan=False).encode("utf-8")
    out[META] = np.frombuffer(text, np.uint8)
    return atomic_write(path, lambda f: np.savez(f, **out))


def read(path: str, kind: str | None = None) -> tuple[dict[str, np.ndarray], Any, str]:
    """``(arrays, meta, kind)`` of the file at ``path``. With ``kind``, a file of
    another kind raises ``FormatError``. Raises ``ValueError`` naming the file and
    the problem for anything that is not a whole, well-formed file of this format."""
    try:
        with zipfile.ZipFile(path) as z:
            return _read(path, z, kind)
    except zipfile.BadZipFile as e:
        raise FormatError(f"{path} is not a jaxdissect results file ({e})") from None


def _read(path, z: zipfile.ZipFile, kind):
    infos = z.infolist()
    names = [i.filename for i in infos]
    if f"{META}.npy" not in names:
        raise FormatError(f"{path} is not a jaxdissect results file in format {FORMAT} "
                          f"version {VERSION} (another format or an older jaxdissect); "
                          "delete it or write it again")
    if len(infos) > MAX_ARRAYS + 1 or len(set(names)) != len(names):
        raise ValueError(f"{path}: too many or repeated entries")
    if sum(i.file_size for i in infos) > os.path.getsize(path):
        raise ValueError(f"{path}: its entries claim more bytes than the file holds")
    by_name = {n[:-4]: i for n, i in zip(names, infos) if n.endswith(".npy")}
    if len(by_name) != len(infos):
        raise ValueError(f"{path}: an entry is not an .npy array")
    raw = _member(path, z, by_name.pop(META), ((-1,), np.dtype(np.uint8)), MAX_META_BYTES)
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ValueError(f"{path}: its {META} entry is not JSON") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise FormatError(f"{path} is not a jaxdissect results file in format {FORMAT}")
    if header.get("version") != VERSION:
        raise FormatError(f"{path} is version {header.get('version')!r} of {FORMAT}; this "
                          f"jaxdissect reads version {VERSION}: delete it or write it again")
    if kind is not None and header.get("kind") != kind:
        raise FormatError(f"{path} holds a {header.get('kind')}, not a {kind}")
    declared = header.get("arrays")
    if not isinstance(declared, dict) or set(declared) != set(by_name):
        raise ValueError(f"{path}: its arrays are not the ones its header declares")
    arrays = {}
    for name, info in by_name.items():
        try:
            shape, dtype = declared[name]
            shape, dtype = tuple(int(s) for s in shape), np.dtype(dtype)
        except (TypeError, ValueError):
            raise ValueError(f"{path}: array {name!r} has a malformed declaration") from None
        arrays[name] = _member(path, z, info, (shape, dtype), info.file_size)
    return arrays, header.get("meta"), header.get("kind")


def _member(path, z, info: zipfile.ZipInfo, want, limit: int) -> np.ndarray:
    """One stored ``.npy`` entry, read only after its header matches ``want``
    (``(shape, dtype)``; shape ``(-1,)`` for any length) and its size ``limit``."""
    name = info.filename
    if info.compress_type != zipfile.ZIP_STORED or info.file_size > limit:
        raise ValueError(f"{path}: entry {name} is compressed or too large")
    with z.open(info) as f:
        shape, fortran, dtype = _npy_header(f, f"{path}: entry {name} is not an array")
        want_shape, want_dtype = want
        if dtype.kind not in _DTYPE_KINDS or dtype.hasobject or dtype != want_dtype or (
                want_shape != (-1,) and shape != want_shape) or len(shape) > 32:
            raise ValueError(f"{path}: entry {name} holds {shape} {dtype}, declared "
                             f"{want_shape} {want_dtype}")
        size = math.prod(shape) * dtype.itemsize
        if size != info.file_size - f.tell():
            raise ValueError(f"{path}: entry {name}'s size does not match its shape")
        data = bytearray(f.read(size))
    if len(data) != size:
        raise ValueError(f"{path}: entry {name} is truncated")
    return _array(data, shape, fortran, dtype)


def _npy_header(f, problem: str):
    """``(shape, fortran, dtype)`` of the ``.npy`` header at ``f``'s position;
    ``ValueError(problem (reason))`` if it is not one."""
    try:
        version = np.lib.format.read_magic(f)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        return read_header(f)
    except ValueError as e:
        raise ValueError(f"{problem} ({e})") from None


def _array(data: bytearray, shape, fortran: bool, dtype) -> np.ndarray:
    a = np.frombuffer(data, dtype)
    return a.reshape(shape[::-1]).T if fortran else a.reshape(shape)


def read_npy(path: str) -> np.ndarray:
    """A plain ``.npy`` file (``iou.npy``) read as safely: a numeric dtype, no pickle,
    its size exactly that of its declared shape (so never more than the file)."""
    with open(path, "rb") as f:
        shape, fortran, dtype = _npy_header(f, f"{path} is not an .npy array")
        size = math.prod(shape) * dtype.itemsize
        if dtype.kind not in _DTYPE_KINDS or dtype.hasobject or len(shape) > 32 or (
                size != os.path.getsize(path) - f.tell()):
            raise ValueError(f"{path}: its {shape} {dtype} array is not a plain array of "
                             "the file's size")
        data = bytearray(f.read(size))
    return _array(data, shape, fortran, dtype)


def _key_name(key) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def tree_arrays(tree: Any) -> dict[str, np.ndarray]:
    """``{key path: leaf}`` of a pytree, paths as ``"a/b/0"`` (``""`` for a bare leaf
    is named ``"leaf"``)."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        name = "/".join(_key_name(k) for k in path) or "leaf"
        if name in out:
            raise ValueError(f"two leaves of the tree share the name {name!r}")
        out[name] = np.asarray(leaf)
    return out


def tree_from_arrays(template: Any, arrays: dict[str, np.ndarray], path: str = "file"):
    """``template``'s structure with each leaf read by its key path from ``arrays``;
    raises ``ValueError`` if the names, shapes or dtypes differ from the template's."""
    want = tree_arrays(template)
    if set(want) != set(arrays):
        missing, extra = sorted(set(want) - set(arrays)), sorted(set(arrays) - set(want))
        raise ValueError(f"{path} holds another structure (missing {missing[:5]}, "
                         f"unexpected {extra[:5]})")
    for name, w in want.items():
        if w.shape != arrays[name].shape or w.dtype != arrays[name].dtype:
            raise ValueError(f"{path} holds {name} as {arrays[name].shape} "
                             f"{arrays[name].dtype} where {w.shape} {w.dtype} is expected")
    treedef = jax.tree_util.tree_structure(template)
    return jax.tree_util.tree_unflatten(treedef, [arrays[n] for n in want])
