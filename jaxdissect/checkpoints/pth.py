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

Safety: the pickle runs on :mod:`jaxdissect.checkpoints.unpickle`'s machine, which
resolves only the globals a state dict needs (:data:`ALLOWED_GLOBALS`, each an inert
stand-in of ours that no file can modify); any other global raises
:class:`UnsafeCheckpointError` *before* anything is called.

Bounds (whatever the file claims): memory and time grow with the file's bytes.
Each storage is read once; all storage bytes read or decompressed, plus the copies
made for non-contiguous tensors, stay below ``EXPANSION`` times the file size plus
``SLACK``; zip members are checked (declared size, encryption, compression method,
overlap) before any is read; a tensor referenced many times is materialised once;
tensors whose strides are zero or overlap are refused; shared sub-structures are
walked once each (a graph, not a tree), nesting stops at ``MAX_DEPTH``; the pickle
itself is at most ``MAX_PICKLE_BYTES`` with the opcode and object limits of the
machine. Every refusal is a :class:`CheckpointError` whose one-line message names
the file and the problem.
"""

from __future__ import annotations

import collections
import io
import os
import re
import struct
import zipfile
from dataclasses import dataclass
from typing import Any

import ml_dtypes
import numpy as np

from jaxdissect.checkpoints.unpickle import Machine, PickleError, UnsafeGlobal

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

EXPANSION = 4              # storage bytes + tensor copies <= EXPANSION * file size + SLACK
SLACK = 16 << 20
MAX_PICKLE_BYTES = 64 << 20
MAX_DEPTH = 64
MAX_NDIM = 32
MAX_ZIP_ENTRIES = 20_000
_STORAGE_KEY = re.compile(r"[\w.\-]{1,64}")

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


@dataclass(frozen=True, slots=True)
class _StorageType:
    name: str
    dtype: Any


@dataclass(frozen=True, slots=True)
class _StorageRef:
    key: str
    dtype: Any
    numel: int
    view: tuple | None  # legacy views: (root key, element offset, element count)


class _TensorRef(tuple):
    """``(storage, offset, size, stride)``, recorded by the stand-in below."""

    __slots__ = ()


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    """Stand-in for ``torch._utils._rebuild_tensor[_v2]``: records, computes nothing."""
    if not isinstance(storage, _StorageRef):
        raise CheckpointError(f"tensor storage is {type(storage).__name__}, not a storage")
    if not (isinstance(size, tuple) and isinstance(stride, tuple)):
        raise CheckpointError("tensor size or stride is not a tuple")
    return _TensorRef((storage, storage_offset, size, stride))


def _rebuild_parameter(data, *_ignored):
    """Stand-in for ``torch._utils._rebuild_parameter``: a parameter is its data."""
    if not isinstance(data, _TensorRef):
        raise CheckpointError(f"parameter data is {type(data).__name__}, not a tensor")
    return data


ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name, dt) for name, dt in STORAGE_DTYPES.items()},
}
_CALLABLE = {collections.OrderedDict, _rebuild_tensor, _rebuild_parameter}


def _persistent_load(pid):
    if not (type(pid) is tuple and len(pid) in (5, 6) and pid[0] == "storage"):
        raise CheckpointError(f"unexpected persistent id {str(pid)[:100]!r}")
    stype, key, _location, numel = pid[1:5]
    if not isinstance(stype, _StorageType):
        raise CheckpointError(f"storage of unsupported type {str(stype)[:100]!r}")
    key = _storage_key(key)
    if type(numel) is not int or numel < 0:
        raise CheckpointError(f"storage {key!r} has element count {numel!r}")
    view = pid[5] if len(pid) == 6 else None
    if view is not None:
        if not (type(view) is tuple and len(view) == 3 and all(
                type(v) is int and v >= 0 for v in view[1:])):
            raise CheckpointError(f"storage {key!r} has a malformed view {str(view)[:80]}")
        view = (_storage_key(view[0]), view[1], view[2])
    return _StorageRef(key, stype.dtype, numel, view)


def _storage_key(key) -> str:
    key = str(key) if type(key) is int else key
    if not (isinstance(key, str) and _STORAGE_KEY.fullmatch(key)):
        raise CheckpointError(f"malformed storage key {str(key)[:80]!r}")
    return key


class _Budget:
    """Bytes the load may still allocate for storages and tensor copies."""

    def __init__(self, file_size: int, what: str):
        self.total = self.left = EXPANSION * file_size + SLACK
        self.what = what

    def charge(self, n: int, for_what: str):
        if n > self.left:
            raise CheckpointError(
                f"{self.what}: {for_what} needs {n} bytes, past the {self.total} bytes a "
                f"file of this size may expand to ({EXPANSION}x its size + "
                f"{SLACK >> 20} MiB)")
        self.left -= n


def _unpickle(read, available: int, what: str):
    """``(object, bytes consumed)`` of the pickle ``read`` supplies (it may read ahead
    by up to 64 KiB, never past ``available``)."""
    machine = Machine(read, available, ALLOWED_GLOBALS, _CALLABLE, _persistent_load)
    try:
        return machine.run(), machine.pos
    except UnsafeGlobal as e:
        raise UnsafeCheckpointError(f"{what}: {e}") from None
    except CheckpointError as e:
        raise CheckpointError(f"{what}: {e}") from None
    except PickleError as e:
        raise CheckpointError(f"{what}: corrupt or truncated pickle ({e})") from None


_KNOWN_DTYPES = {np.dtype(d) for d in STORAGE_DTYPES.values()}


def _read_array(f, offset: int, dtype, numel: int, file_size: int, budget: _Budget,
                what: str) -> np.ndarray:
    """Read ``numel`` items of ``dtype`` at byte ``offset`` of ``f`` into a new array."""
    dtype = np.dtype(dtype)
    if dtype.newbyteorder("=") not in _KNOWN_DTYPES:
        raise CheckpointError(f"{what}: storage of unsupported dtype {dtype}")
    end = offset + numel * dtype.itemsize
    if offset < 0 or numel < 0 or end > file_size:
        raise CheckpointError(f"{what}: data ends at byte {end} but the file has {file_size} "
                              f"bytes (truncated?)")
    budget.charge(numel * dtype.itemsize, "a storage")
    out = np.empty(numel, dtype)
    f.seek(offset)
    got = f.readinto(out.view(np.uint8)) if numel else 0
    if got != numel * dtype.itemsize:
        raise CheckpointError(f"{what}: storage at byte {offset} is truncated")
    return out


def _is_int(v) -> bool:
    return type(v) is int


def _tensor(ref: _TensorRef, storages: dict, budget: _Budget, name: str) -> np.ndarray:
    """The array a tensor record describes: a view of its storage when contiguous, else
    a copy (charged to ``budget``). Refuses overruns and zero or overlapping strides."""
    storage, offset, size, stride = ref
    flat = storages[storage.key]
    if storage.view is not None:
        _, v_off, v_len = storage.view
        if v_off + v_len > len(flat):
            raise CheckpointError(f"tensor {name!r}: storage view past its root storage")
        flat = flat[v_off: v_off + v_len]
    if not (len(size) == len(stride) <= MAX_NDIM and _is_int(offset)
            and all(_is_int(v) and v >= 0 for v in size + stride) and offset >= 0):
        raise CheckpointError(f"tensor {name!r} has invalid size {str(size)[:80]} or stride "
                              f"{str(stride)[:80]}")
    n = 1
    for s in size:
        n *= s
    if n == 0:
        if any(s > 2**31 for s in size):
            raise CheckpointError(f"tensor {name!r} has invalid size {size}")
        return np.zeros(size, flat.dtype)
    last = offset + sum((s - 1) * st for s, st in zip(size, stride))
    if last >= len(flat):
        raise CheckpointError(f"tensor {name!r} of size {size} stride {stride} at offset "
                              f"{offset} overruns its storage of {len(flat)} elements")
    reach = 0  # distinct elements iff each stride passes what the smaller ones reach
    for st, s in sorted((st, s) for s, st in zip(size, stride) if s > 1):
        if st <= reach:
            raise CheckpointError(f"tensor {name!r} has zero or overlapping strides "
                                  f"(size {size}, stride {stride})")
        reach += (s - 1) * st
    contiguous, step = True, 1
    for s, st in zip(reversed(size), reversed(stride)):
        if s != 1 and st != step:
            contiguous = False
        step *= s
    if contiguous:
        return flat[offset: offset + n].reshape(size)
    budget.charge(n * flat.dtype.itemsize, f"tensor {name!r}")
    item = flat.dtype.itemsize
    return np.lib.stride_tricks.as_strided(
        flat[offset:], size, tuple(st * item for st in stride), writeable=False).copy()


def _materialise(obj, storages: dict, budget: _Budget, what: str):
    """Replace every tensor record in ``obj`` by a NumPy array, walking the object
    graph: each container and tensor is converted once (shared ones stay shared),
    cycles and nesting deeper than :data:`MAX_DEPTH` are refused."""
    done: dict[int, Any] = {}
    tensors: dict[tuple, np.ndarray] = {}
    active: set[int] = set()

    def walk(o, name: str, depth: int):
        t = type(o)
        if t in (int, float, str, bytes, bool, type(None)):
            return o
        i = id(o)
        if i in done:
            return done[i]
        if i in active:
            raise CheckpointError(f"{what}: {name or 'the object'} contains itself")
        if depth > MAX_DEPTH:
            raise CheckpointError(f"{what}: nested deeper than {MAX_DEPTH} levels at "
                                  f"{name[:80]!r}")
        if t is _TensorRef:
            key = (o[0].key, o[0].view, o[1], o[2], o[3])
            if key not in tensors:
                try:
                    tensors[key] = _tensor(o, storages, budget, name)
                except CheckpointError as e:
                    msg = str(e)
                    raise CheckpointError(msg if msg.startswith(what) else f"{what}: {msg}"
                                          ) from None
            out = tensors[key]
        elif t in (dict, collections.OrderedDict, list, tuple):
            active.add(i)
            if t in (dict, collections.OrderedDict):
                out = t((k, walk(v, f"{name}.{k}" if name else str(k), depth + 1))
                        for k, v in o.items())
            else:
                out = t(walk(v, f"{name}[{j}]", depth + 1) for j, v in enumerate(o))
            active.discard(i)
        else:
            raise CheckpointError(f"{what}: holds a {t.__name__.lstrip('_')} at "
                                  f"{name[:80] or 'the top'}, not a state dict")
        done[i] = out
        return out

    return walk(obj, "", 0)  # ids in `done` stay valid: obj keeps every original alive


def _collect_refs(obj, what: str) -> dict:
    """``{key: _StorageRef}`` of every storage the tensors in ``obj`` use (iterative,
    each container visited once)."""
    out, seen, todo = {}, set(), [obj]
    while todo:
        o = todo.pop()
        if type(o) is _TensorRef:
            ref = o[0]
            old = out.setdefault(ref.key, ref)
            if np.dtype(old.dtype) != np.dtype(ref.dtype):
                raise CheckpointError(f"{what}: storage {ref.key!r} is read as two types")
        elif isinstance(o, (dict, list, tuple)) and id(o) not in seen:
            seen.add(id(o))
            todo.extend(o.values() if isinstance(o, dict) else o)
    return out


def _byte_order(dtype, big_endian: bool):
    dtype = np.dtype(dtype)
    return dtype.newbyteorder(">") if big_endian and dtype.itemsize > 1 else dtype


def _open_zip(f, file_size: int, what: str) -> zipfile.ZipFile:
    """Parse the archive's directory after checking its entry count, and check every
    member's method and flags before any is read."""
    try:
        end = zipfile._EndRecData(f)
        if end is None:
            raise zipfile.BadZipFile("no end of central directory")
        if end[zipfile._ECD_ENTRIES_TOTAL] > MAX_ZIP_ENTRIES:
            raise CheckpointError(f"{what}: zip directory lists "
                                  f"{end[zipfile._ECD_ENTRIES_TOTAL]} members (at most "
                                  f"{MAX_ZIP_ENTRIES})")
        f.seek(0)
        zf = zipfile.ZipFile(f)
    except CheckpointError:
        raise
    except Exception as e:  # zipfile raises many types on a malformed directory
        raise CheckpointError(f"{what}: corrupt or truncated zip checkpoint "
                              f"({type(e).__name__}: {e})") from None
    names = set()
    for info in zf.infolist():
        if info.filename in names:
            raise CheckpointError(f"{what}: zip member {info.filename!r} is listed twice")
        names.add(info.filename)
        if info.flag_bits & 0x1:
            raise CheckpointError(f"{what}: zip member {info.filename!r} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise CheckpointError(
                f"{what}: zip member {info.filename!r} uses compression method "
                f"{info.compress_type} (only stored and deflated members are read)")
        if info.header_offset + 30 > file_size or info.compress_size > file_size:
            raise CheckpointError(f"{what}: zip member {info.filename!r} lies past the end "
                                  f"of the file (truncated?)")
    return zf


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, budget: _Budget,
                 what: str) -> bytes:
    """A member's bytes, its declared size checked against ``limit`` and ``budget``
    before reading, and its actual size against the declared one while reading."""
    name = info.filename
    if info.file_size > limit:
        raise CheckpointError(f"{what}: zip member {name!r} declares {info.file_size} bytes "
                              f"(at most {limit})")
    budget.charge(info.file_size, f"zip member {name!r}")
    out = bytearray()
    try:
        with zf.open(info) as fh:
            while len(out) <= info.file_size:
                block = fh.read(min(1 << 20, info.file_size + 1 - len(out)))
                if not block:
                    break
                out += block
    except Exception as e:  # bad CRC, corrupt deflate stream, truncation
        raise CheckpointError(f"{what}: zip member {name!r} is corrupt "
                              f"({type(e).__name__}: {e})") from None
    if len(out) != info.file_size:
        raise CheckpointError(f"{what}: zip member {name!r} holds {len(out)}"
                              f"{'+' if len(out) > info.file_size else ''} bytes, its "
                              f"header says {info.file_size}")
    return bytes(out)


def _stored_start(f, info: zipfile.ZipInfo, file_size: int, what: str) -> int:
    """Byte offset of a stored member's data (after its local header)."""
    f.seek(info.header_offset)
    head = f.read(30)
    if len(head) < 30 or head[:4] != b"PK\x03\x04":
        raise CheckpointError(f"{what}: corrupt zip entry {info.filename!r}")
    n_name, n_extra = struct.unpack("<HH", head[26:30])
    return info.header_offset + 30 + n_name + n_extra


def _load_zip(f, file_size: int, what: str):
    budget = _Budget(file_size, what)
    zf = _open_zip(f, file_size, what)
    infos = {i.filename: i for i in zf.infolist()}
    pkl = sorted(n for n in infos if n.endswith("/data.pkl") and n.count("/") == 1)
    if not pkl:
        raise CheckpointError(f"{what}: zip file without <name>/data.pkl; "
                              f"not a torch.save file")
    prefix = pkl[0][: -len("data.pkl")]
    data = _read_member(zf, infos[pkl[0]], MAX_PICKLE_BYTES, budget, what)
    obj, _ = _unpickle(io.BytesIO(data).read, len(data), what)
    del data
    byteorder = "little"
    if prefix + "byteorder" in infos:
        raw = _read_member(zf, infos[prefix + "byteorder"], 16, budget, what)
        byteorder = raw.decode("ascii", "replace").strip()
        if byteorder not in ("little", "big"):
            raise CheckpointError(f"{what}: unknown byte order {byteorder[:16]!r}")
    storages, stored = {}, []
    for key, ref in _collect_refs(obj, what).items():
        info = infos.get(f"{prefix}data/{key}")
        if info is None:
            raise CheckpointError(f"{what}: storage {key!r} is missing from the archive")
        dtype = _byte_order(ref.dtype, byteorder == "big")
        need = ref.numel * dtype.itemsize
        if info.file_size < need:
            raise CheckpointError(f"{what}: storage {key!r} has {info.file_size} bytes, "
                                  f"needs {need}")
        if info.compress_type == zipfile.ZIP_STORED:
            # torch stores entries uncompressed: read them in place
            start = _stored_start(f, info, file_size, what)
            stored.append((start, start + need, key, dtype, ref.numel))
        else:
            raw = _read_member(zf, info, info.file_size, budget, what)
            storages[key] = np.frombuffer(raw, dtype, ref.numel).copy()
    stored.sort()
    for (_, end, key, *_), (start, _, key2, *_) in zip(stored, stored[1:]):
        if start < end:
            raise CheckpointError(f"{what}: zip members for storages {key!r} and {key2!r} "
                                  f"overlap")
    for start, _, key, dtype, numel in stored:
        storages[key] = _read_array(f, start, dtype, numel, file_size, budget, what)
    return _materialise(obj, storages, budget, what)


def _load_legacy(f, file_size: int, what: str):
    budget = _Budget(file_size, what)

    def next_pickle():
        start = f.tell()
        obj, used = _unpickle(f.read, min(file_size - start, MAX_PICKLE_BYTES), what)
        f.seek(start + used)
        return obj

    if next_pickle() != LEGACY_MAGIC:
        raise CheckpointError(f"{what}: not a PyTorch checkpoint (bad magic number)")
    protocol = next_pickle()
    if protocol != LEGACY_PROTOCOL:
        raise CheckpointError(f"{what}: unsupported legacy protocol version "
                              f"{str(protocol)[:40]}")
    sys_info = next_pickle()
    big_endian = isinstance(sys_info, dict) and sys_info.get("little_endian") is False
    obj = next_pickle()
    keys = next_pickle()
    if type(keys) is not list:
        raise CheckpointError(f"{what}: corrupt storage key list")
    try:
        keys = [_storage_key(k) for k in keys]
    except CheckpointError as e:
        raise CheckpointError(f"{what}: {e}") from None
    refs = _collect_refs(obj, what)
    # Roots of legacy views carry their own type; views point into them.
    for ref in list(refs.values()):
        if ref.view is not None:
            refs.setdefault(ref.view[0], _StorageRef(ref.view[0], ref.dtype, ref.numel, None))
    if len(set(keys)) != len(keys):
        raise CheckpointError(f"{what}: storage key list names a storage twice")
    storages = {}
    pos = f.tell()
    for key in keys:
        ref = refs.get(key)
        if ref is None:  # its element size is unknown, so the rest cannot be located
            raise CheckpointError(f"{what}: storage {key!r} is listed but no tensor uses it")
        f.seek(pos)
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{what}: truncated before storage {key!r}")
        (numel,) = struct.unpack("<q", head)
        dtype = _byte_order(ref.dtype, big_endian)
        storages[key] = _read_array(f, pos + 8, dtype, numel, file_size, budget, what)
        pos += 8 + numel * dtype.itemsize
    for ref in refs.values():
        if ref.view is None and ref.key not in storages:
            raise CheckpointError(f"{what}: storage {ref.key!r} is missing")
        if ref.view is not None:
            if ref.view[0] not in storages:
                raise CheckpointError(f"{what}: storage {ref.view[0]!r} is missing")
            storages[ref.key] = storages[ref.view[0]]
    return _materialise(obj, storages, budget, what)


def load_pth(path) -> Any:
    """Load a ``.pth`` file (zip or legacy format) with tensors as NumPy arrays.

    Returns the unpickled object (usually an ``OrderedDict`` name -> array).
    Raises :class:`UnsafeCheckpointError` for a pickle that references anything
    beyond a state dict's needs, :class:`CheckpointError` for a truncated,
    corrupt, unknown or over-large file, ``FileNotFoundError`` if ``path`` does not
    exist.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such checkpoint file: {path}")
    what = os.path.basename(path)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        f.seek(0)
        load = (_load_zip if head[:4] in (b"PK\x03\x04", b"PK\x05\x06")
                else _load_legacy if head[:1] == b"\x80" else None)
        if load is not None:
            try:
                return load(f, size, what)
            except CheckpointError:
                raise
            except (TypeError, ValueError, KeyError, AttributeError, IndexError,
                    OverflowError, struct.error, RecursionError, MemoryError,
                    zipfile.BadZipFile, EOFError, OSError) as e:  # malformed records
                raise CheckpointError(
                    f"{what}: corrupt checkpoint ({type(e).__name__}: {e})") from None
    raise CheckpointError(f"{what}: neither a zip nor a legacy PyTorch checkpoint "
                          f"(starts with {head!r})")


def load_state_dict(path) -> dict:
    """:func:`load_pth`, checked to be a mapping of names to arrays (a ``state_dict``
    entry wrapping one is unwrapped)."""
    what = os.path.basename(path)
    obj = load_pth(path)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise CheckpointError(f"{what}: holds a {type(obj).__name__}, not a state dict")
    bad = [k for k in obj if not isinstance(k, str)]
    if bad:
        raise CheckpointError(f"{what}: state dict keys must be names; found a "
                              f"{type(bad[0]).__name__} key {str(bad[0])[:40]!r}")
    arrays = {k: v for k, v in obj.items() if isinstance(v, np.ndarray)}
    others = sorted(k for k in obj if k not in arrays)
    if others:
        raise CheckpointError(f"{what}: entries {others[:5]} are not tensors")
    return arrays
