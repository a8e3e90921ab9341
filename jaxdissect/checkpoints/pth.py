"""Reading PyTorch ``.pth`` state dicts into NumPy without torch and without
running code from the file.

Two container formats exist:

* zip (``torch.save`` since 1.6): ``<name>/data.pkl`` holds the pickle,
  ``<name>/data/<key>`` the raw bytes of each storage, ``<name>/byteorder`` the
  byte order;
* legacy (the reference's 2019-2020 files, or ``_use_new_zipfile_serialization=
  False``): consecutive pickles -- magic number, protocol version, system info,
  the object, the sorted list of storage keys -- then each storage as an int64
  element count followed by its raw bytes, in key order.

In both, tensors appear in the pickle as ``torch._utils._rebuild_tensor_v2(
storage, offset, size, stride, ...)`` with ``storage`` a persistent id
``("storage", torch.FloatStorage, key, location, numel[, view])``.

Safety: the unpickler resolves only the globals a state dict needs
(:data:`ALLOWED_GLOBALS`), each to an inert stand-in of ours; any other global
(``os.system``, ``builtins.eval``, a module class ...) raises
:class:`UnsafeCheckpointError` *before* anything is called, so nothing from the
file is executed. Each storage is read once, straight from the file into its own
array; tensors are views of it (non-contiguous ones are copied).
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from dataclasses import dataclass
from typing import Any

import ml_dtypes
import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class CheckpointError(ValueError):
    """A file that is not a readable PyTorch checkpoint (truncated, corrupt, unknown)."""


class UnsafeCheckpointError(CheckpointError):
    """The pickle asks for a global outside :data:`ALLOWED_GLOBALS`; nothing was run."""


@dataclass(frozen=True)
class _StorageType:
    name: str
    dtype: Any


@dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: Any
    numel: int
    view: tuple | None  # legacy views: (root key, element offset, element count)


class _TensorRef(tuple):
    """``(storage, offset, size, stride)``; a tuple so pickle BUILD cannot set state on it."""

    __slots__ = ()


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    """Stand-in for ``torch._utils._rebuild_tensor[_v2]``: records, computes nothing."""
    if not isinstance(storage, _StorageRef):
        raise CheckpointError(f"tensor storage is {type(storage).__name__}, not a storage")
    return _TensorRef((storage, int(storage_offset), tuple(size), tuple(stride)))


def _rebuild_parameter(data, requires_grad=None, backward_hooks=None, *_ignored):
    """Stand-in for ``torch._utils._rebuild_parameter``: a parameter is its data."""
    return data


ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name, dt) for name, dt in STORAGE_DTYPES.items()},
}


class _StateDictUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafeCheckpointError(
                f"refusing to load: the pickle references {module}.{name}, which a "
                f"state dict does not need (allowed: "
                f"{sorted(f'{m}.{n}' for m, n in ALLOWED_GLOBALS)}); nothing was executed"
            ) from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            raise CheckpointError(f"unexpected persistent id {pid!r:.200}")
        stype, key, _location, numel = pid[1:5]
        if not isinstance(stype, _StorageType):
            raise CheckpointError(f"storage of unsupported type {stype!r:.100}")
        view = pid[5] if len(pid) == 6 else None
        return _StorageRef(str(key), stype.dtype, int(numel), tuple(view) if view else None)


def _unpickle(fileobj, what: str):
    try:
        return _StateDictUnpickler(fileobj).load()
    except (UnsafeCheckpointError, CheckpointError):
        raise
    except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError,
            IndexError, KeyError, struct.error, MemoryError, RecursionError) as e:
        raise CheckpointError(
            f"{what}: corrupt or truncated pickle ({type(e).__name__}: {e})") from None


_KNOWN_DTYPES = {np.dtype(d) for d in STORAGE_DTYPES.values()}


def _read_array(f, offset: int, dtype, numel: int, file_size: int, what: str) -> np.ndarray:
    """Read ``numel`` items of ``dtype`` at byte ``offset`` of ``f`` into a new array."""
    dtype = np.dtype(dtype)
    if dtype.newbyteorder("=") not in _KNOWN_DTYPES:
        raise CheckpointError(f"{what}: storage of unsupported dtype {dtype}")
    end = offset + numel * dtype.itemsize
    if offset < 0 or numel < 0 or end > file_size:
        raise CheckpointError(f"{what}: data ends at byte {end} but the file has {file_size} "
                              f"bytes (truncated?)")
    out = np.empty(numel, dtype)
    f.seek(offset)
    got = f.readinto(out.view(np.uint8)) if numel else 0
    if got != numel * dtype.itemsize:
        raise CheckpointError(f"{what}: storage at byte {offset} is truncated")
    return out


def _materialise(obj, storages: dict, what: str):
    """Replace every tensor record in ``obj`` by a NumPy array."""
    if isinstance(obj, _TensorRef):
        ref, offset, size, stride = obj
        flat = storages[ref.key]
        if ref.view is not None:
            _, v_off, v_len = ref.view
            flat = flat[int(v_off): int(v_off) + int(v_len)]
        if any(not isinstance(v, int) or v < 0 for v in size + stride):
            raise CheckpointError(f"{what}: tensor with invalid size {size} or stride {stride}")
        n = int(np.prod(size, dtype=np.int64))
        if n == 0:
            return np.zeros(size, flat.dtype)
        last = offset + sum((s - 1) * st for s, st in zip(size, stride))
        if offset < 0 or min(stride, default=0) < 0 or last >= len(flat):
            raise CheckpointError(f"{what}: tensor of size {size} stride {stride} at offset "
                                  f"{offset} overruns its storage of {len(flat)} elements")
        contiguous = tuple(np.cumprod((1,) + tuple(size[:0:-1]))[::-1]) if size else ()
        if all(s == 1 or st == c for s, st, c in zip(size, stride, contiguous)):
            return flat[offset: offset + n].reshape(size)
        item = flat.dtype.itemsize
        return np.lib.stride_tricks.as_strided(
            flat[offset:], size, tuple(st * item for st in stride), writeable=False).copy()
    if isinstance(obj, collections.OrderedDict):
        return collections.OrderedDict((k, _materialise(v, storages, what)) for k, v in obj.items())
    if isinstance(obj, dict):
        return {k: _materialise(v, storages, what) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_materialise(v, storages, what) for v in obj]
    if isinstance(obj, tuple) and not isinstance(obj, _TensorRef):
        return tuple(_materialise(v, storages, what) for v in obj)
    if isinstance(obj, (_StorageRef, _StorageType)):
        raise CheckpointError(f"{what}: holds a bare storage, not a state dict")
    return obj


def _collect_refs(obj, out: dict):
    if isinstance(obj, _TensorRef):
        out[obj[0].key] = obj[0]
    elif isinstance(obj, dict):
        for v in obj.values():
            _collect_refs(v, out)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _collect_refs(v, out)
    return out


def _byte_order(dtype, big_endian: bool):
    dtype = np.dtype(dtype)
    return dtype.newbyteorder(">") if big_endian and dtype.itemsize > 1 else dtype


def _load_zip(f, file_size: int, what: str):
    try:
        zf = zipfile.ZipFile(f)
    except zipfile.BadZipFile as e:
        raise CheckpointError(f"{what}: corrupt or truncated zip checkpoint ({e})") from None
    infos = {i.filename: i for i in zf.infolist()}
    pkl = [n for n in infos if n.endswith("data.pkl") and n.count("/") == 1]
    if not pkl:
        raise CheckpointError(f"{what}: zip file without <name>/data.pkl; "
                              f"not a torch.save file")
    prefix = pkl[0][: -len("data.pkl")]
    try:
        obj = _unpickle(io.BytesIO(zf.read(pkl[0])), what)
        byteorder = (zf.read(prefix + "byteorder").decode().strip()
                     if prefix + "byteorder" in infos else "little")
    except (zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(f"{what}: corrupt zip checkpoint ({e})") from None
    storages = {}
    for key, ref in _collect_refs(obj, {}).items():
        info = infos.get(f"{prefix}data/{key}")
        if info is None:
            raise CheckpointError(f"{what}: storage {key!r} is missing from the archive")
        dtype = _byte_order(ref.dtype, byteorder == "big")
        if info.file_size < ref.numel * dtype.itemsize:
            raise CheckpointError(f"{what}: storage {key!r} has {info.file_size} bytes, "
                                  f"needs {ref.numel * dtype.itemsize}")
        if info.compress_type != zipfile.ZIP_STORED:
            storages[key] = np.frombuffer(zf.read(info.filename), dtype, ref.numel).copy()
            continue
        # torch stores entries uncompressed: read them in place. Local header: 30
        # fixed bytes, then file name and extra field, then the data.
        f.seek(info.header_offset)
        head = f.read(30)
        if len(head) < 30 or head[:4] != b"PK\x03\x04":
            raise CheckpointError(f"{what}: corrupt zip entry for storage {key!r}")
        n_name, n_extra = struct.unpack("<HH", head[26:30])
        start = info.header_offset + 30 + n_name + n_extra
        storages[key] = _read_array(f, start, dtype, ref.numel, file_size, what)
    return _materialise(obj, storages, what)


def _load_legacy(f, file_size: int, what: str):
    magic = _unpickle(f, what)
    if magic != LEGACY_MAGIC:
        raise CheckpointError(f"{what}: not a PyTorch checkpoint (bad magic number)")
    protocol = _unpickle(f, what)
    if protocol != LEGACY_PROTOCOL:
        raise CheckpointError(f"{what}: unsupported legacy protocol version {protocol!r}")
    sys_info = _unpickle(f, what)
    big_endian = isinstance(sys_info, dict) and sys_info.get("little_endian") is False
    obj = _unpickle(f, what)
    keys = _unpickle(f, what)
    if not isinstance(keys, list):
        raise CheckpointError(f"{what}: corrupt storage key list")
    refs = _collect_refs(obj, {})
    # Roots of legacy views carry their own type; views point into them.
    for ref in list(refs.values()):
        if ref.view is not None:
            refs.setdefault(str(ref.view[0]), _StorageRef(str(ref.view[0]), ref.dtype,
                                                         ref.numel, None))
    storages = {}
    pos = f.tell()
    for key in keys:
        key = str(key)
        f.seek(pos)
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{what}: truncated before storage {key!r}")
        (numel,) = struct.unpack("<q", head)
        ref = refs.get(key)
        dtype = _byte_order(ref.dtype if ref else np.uint8, big_endian)
        storages[key] = _read_array(f, pos + 8, dtype, numel, file_size, what)
        pos += 8 + numel * dtype.itemsize
    for ref in refs.values():
        if ref.view is None and ref.key not in storages:
            raise CheckpointError(f"{what}: storage {ref.key!r} is missing")
        if ref.view is not None:
            storages[ref.key] = storages[str(ref.view[0])]
    return _materialise(obj, storages, what)


def load_pth(path) -> Any:
    """Load a ``.pth`` file (zip or legacy format) with tensors as NumPy arrays.

    Returns the unpickled object (usually an ``OrderedDict`` name -> array).
    Raises :class:`UnsafeCheckpointError` for a pickle that references anything
    beyond a state dict's needs, :class:`CheckpointError` for a truncated,
    corrupt or unknown file, ``FileNotFoundError`` if ``path`` does not exist.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such checkpoint file: {path}")
    what = os.path.basename(path)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        f.seek(0)
        load = (_load_zip if head[:4] == b"PK\x03\x04"
                else _load_legacy if head[:1] == b"\x80" else None)
        if load is not None:
            try:
                return load(f, size, what)
            except CheckpointError:
                raise
            except (TypeError, ValueError, KeyError, AttributeError, IndexError,
                    OverflowError, struct.error) as e:  # malformed records
                raise CheckpointError(
                    f"{what}: corrupt checkpoint ({type(e).__name__}: {e})") from None
    raise CheckpointError(f"{what}: neither a zip nor a legacy PyTorch checkpoint "
                          f"(starts with {head!r})")


def load_state_dict(path) -> dict:
    """:func:`load_pth`, checked to be a mapping of names to arrays (a ``state_dict``
    entry wrapping one is unwrapped)."""
    obj = load_pth(path)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise CheckpointError(f"{os.path.basename(path)}: holds a {type(obj).__name__}, "
                              f"not a state dict")
    arrays = {k: v for k, v in obj.items() if isinstance(v, np.ndarray)}
    others = sorted(k for k in obj if k not in arrays)
    if others:
        raise CheckpointError(f"{os.path.basename(path)}: entries {others[:5]} are not tensors")
    return arrays
