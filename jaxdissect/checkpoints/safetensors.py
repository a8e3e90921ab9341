"""Reading ``.safetensors`` files into NumPy, without the ``safetensors`` package.

The format (huggingface/safetensors): an unsigned little-endian 64-bit header length
``n``, ``n`` bytes of UTF-8 JSON, then the data buffer. The JSON maps each tensor name to
``{"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}`` (offsets relative to
the buffer), plus an optional ``"__metadata__"`` mapping of strings to strings. Tensors
are little-endian and row-major.

Checks, before any tensor is read (every refusal a one-line
:class:`~jaxdissect.checkpoints.pth.CheckpointError` naming the file): the header length
is at most :data:`MAX_HEADER_BYTES` and inside the file; the header is a JSON object
with no duplicate names; each entry has exactly those three fields, a known dtype, a
shape of at most :data:`MAX_NDIM` non-negative integers, and ``end - begin`` equal to the
shape's element count times the dtype's size; the tensors, sorted by offset, tile the
data buffer from its first byte to the file's last with no gap or overlap (as the
``safetensors`` package requires). Memory: the arrays read total the buffer's length, so
a load never allocates more than the file holds (plus the header).
"""

from __future__ import annotations

import json
import os
import struct

import ml_dtypes
import numpy as np

from jaxdissect.checkpoints.pth import CheckpointError

MAX_HEADER_BYTES = 100 << 20  # the safetensors package's own limit
MAX_NDIM = 32
MAX_TENSORS = 1_000_000

#: safetensors dtype name -> NumPy dtype (little-endian)
DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype(np.bool_),
}


def _unique_object(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise CheckpointError(f"the header names {k[:80]!r} twice")
        out[k] = v
    return out


def _int(v) -> bool:
    return type(v) is int and v >= 0


def read_header(f, file_size: int, what: str) -> tuple[dict, dict, int]:
    """``(entries, metadata, data start)`` of the open file ``f``: ``entries`` maps each
    name to ``(dtype, shape, begin, end)`` with offsets from the file's start, checked as
    the module docstring says."""
    head = f.read(8)
    if len(head) < 8:
        raise CheckpointError(f"{what}: {file_size} bytes, too short for a safetensors "
                              f"header")
    (n,) = struct.unpack("<Q", head)
    if n > MAX_HEADER_BYTES:
        raise CheckpointError(f"{what}: header of {n} bytes (at most {MAX_HEADER_BYTES})")
    if 8 + n > file_size:
        raise CheckpointError(f"{what}: header of {n} bytes but the file has {file_size} "
                              f"(truncated, or not a safetensors file)")
    raw = f.read(n)
    if len(raw) != n:
        raise CheckpointError(f"{what}: truncated header")
    if not raw.lstrip(b" ").startswith(b"{"):
        raise CheckpointError(f"{what}: header is not a JSON object (starts with "
                              f"{raw[:16]!r}); not a safetensors file?")
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_object)
    except CheckpointError as e:
        raise CheckpointError(f"{what}: {e}") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise CheckpointError(f"{what}: header is not valid JSON "
                              f"({type(e).__name__}: {str(e)[:120]})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{what}: header is a JSON {type(header).__name__}, not an "
                              f"object")
    meta = header.pop("__metadata__", None) or {}
    if not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
        raise CheckpointError(f"{what}: __metadata__ must map names to strings")
    if len(header) > MAX_TENSORS:
        raise CheckpointError(f"{what}: header lists {len(header)} tensors (at most "
                              f"{MAX_TENSORS})")
    start = 8 + n
    entries = {}
    for name, e in header.items():
        entries[name] = _entry(name, e, start, what)
    spans = sorted((b, e, name) for name, (_, _, b, e) in entries.items())
    pos = start
    for b, e, name in spans:
        if b != pos:
            raise CheckpointError(
                f"{what}: tensor {name[:80]!r} starts at data byte {b - start}, expected "
                f"{pos - start} ({'overlaps the one before' if b < pos else 'a gap before it'})")
        pos = e
    if pos != file_size:
        raise CheckpointError(
            f"{what}: tensors end at byte {pos} but the file has {file_size} bytes "
            f"({'truncated' if pos > file_size else 'unclaimed bytes at the end'})")
    return entries, meta, start


def _entry(name: str, e, start: int, what: str) -> tuple:
    label = f"{what}: tensor {name[:80]!r}"
    if not (isinstance(e, dict) and set(e) == {"dtype", "shape", "data_offsets"}):
        fields = sorted(e) if isinstance(e, dict) else type(e).__name__
        raise CheckpointError(f"{label} must have exactly dtype, shape and data_offsets "
                              f"(has {str(fields)[:100]})")
    dtype = DTYPES.get(e["dtype"]) if isinstance(e["dtype"], str) else None
    if dtype is None:
        raise CheckpointError(f"{label} has unsupported dtype {str(e['dtype'])[:20]!r} "
                              f"(supported: {', '.join(DTYPES)})")
    shape, offs = e["shape"], e["data_offsets"]
    if not (isinstance(shape, list) and len(shape) <= MAX_NDIM and all(map(_int, shape))):
        raise CheckpointError(f"{label} has invalid shape {str(shape)[:80]}")
    if not (isinstance(offs, list) and len(offs) == 2 and all(map(_int, offs))
            and offs[0] <= offs[1]):
        raise CheckpointError(f"{label} has invalid data_offsets {str(offs)[:80]}")
    count = 1
    for s in shape:
        count *= s
    if count * dtype.itemsize != offs[1] - offs[0]:
        raise CheckpointError(f"{label}: shape {shape} of {e['dtype']} needs "
                              f"{count * dtype.itemsize} bytes, its data_offsets span "
                              f"{offs[1] - offs[0]}")
    return dtype, tuple(shape), start + offs[0], start + offs[1]


def load_safetensors(path) -> dict[str, np.ndarray]:
    """The tensors of a ``.safetensors`` file as NumPy arrays (native byte order), in
    the header's order. Raises :class:`CheckpointError` (one line, naming the file) for
    anything malformed, ``FileNotFoundError`` if ``path`` does not exist."""
    return read_safetensors(path)[0]


def read_safetensors(path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """``(tensors, metadata)`` of a ``.safetensors`` file; see :func:`load_safetensors`."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such checkpoint file: {path}")
    what = os.path.basename(path)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        entries, meta, _ = read_header(f, size, what)
        out = {}
        for name, (dtype, shape, begin, end) in entries.items():
            arr = np.empty(shape, dtype)
            f.seek(begin)
            got = f.readinto(arr.reshape(-1).view(np.uint8)) if end > begin else 0
            if got != end - begin:
                raise CheckpointError(f"{what}: tensor {name[:80]!r} is truncated "
                                      f"(the file changed while it was read?)")
            if dtype == np.bool_ and arr.view(np.uint8).max(initial=0) > 1:
                raise CheckpointError(f"{what}: tensor {name[:80]!r} of BOOL holds bytes "
                                      f"other than 0 and 1")
            out[name] = arr.astype(dtype.newbyteorder("="), copy=False)
    return out, dict(meta)


def is_safetensors(path) -> bool:
    """Whether ``path`` is named as a safetensors file (``.safetensors``)."""
    return os.fspath(path).lower().endswith(".safetensors")
