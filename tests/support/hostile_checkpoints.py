"""Crafted hostile ``.pth`` files, generated (never committed): code-execution
attempts, memory and time bombs, state poisoning and malformed archives, each in
the zip and the legacy layout where the attack lives in the pickle, plus attacks on
one container's structure. Used by ``tests/checkpoints/test_hostile.py``.

Run as a script (``python -m tests.support.hostile_checkpoints MANIFEST OUT``) it is the
worker that feeds every file to ``jaxdissect weights convert`` and to the Python
loader (``load_state_dict`` then ``convert_state_dict``) in one fresh process,
timing each and measuring its peak allocation with ``tracemalloc``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import struct
import sys
import time
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np

MAGIC, LEGACY_PROTOCOL = 0x1950A86A20F9469CFC6C, 1001


# -- a tiny pickle assembler (protocol 2 opcodes, written by hand) ---------------------
def p_int(n: int) -> bytes:
    if 0 <= n < 256:
        return b"K" + bytes([n])
    if 0 <= n < 65536:
        return b"M" + struct.pack("<H", n)
    if -2**31 <= n < 2**31:
        return b"J" + struct.pack("<i", n)
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def p_str(s: str) -> bytes:
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def p_bytes(b: bytes) -> bytes:
    return b"B" + struct.pack("<I", len(b)) + b


def p_glob(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def p_tuple(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def p_list(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"l"


def p_call(fn: bytes, *args: bytes) -> bytes:
    return fn + p_tuple(*args) + b"R"


def p_dict(pairs) -> bytes:
    return b"}(" + b"".join(k + v for k, v in pairs) + b"u"


def p_odict(pairs) -> bytes:
    return p_glob("collections", "OrderedDict") + b")R(" + b"".join(k + v for k, v in pairs) + b"u"


def p_storage(key: str, numel: int, stype: str = "FloatStorage") -> bytes:
    return p_tuple(p_str("storage"), p_glob("torch", stype), p_str(key), p_str("cpu"),
                   p_int(numel)) + b"Q"


def p_tensor(key: str, numel: int, size, stride=None, offset: int = 0,
             storage: bytes | None = None) -> bytes:
    if stride is None:
        stride = tuple(int(np.prod(size[i + 1:])) for i in range(len(size)))
    storage = storage if storage is not None else p_storage(key, numel)
    return p_call(p_glob("torch._utils", "_rebuild_tensor_v2"), storage, p_int(offset),
                  p_tuple(*map(p_int, size)), p_tuple(*map(p_int, stride)), b"\x89",
                  p_odict([]))


def pkl(body: bytes) -> bytes:
    return b"\x80\x02" + body + b"."


# -- the two containers ---------------------------------------------------------------
def zip_pth(pickle_bytes: bytes, storages: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pickle_bytes)
        z.writestr("archive/byteorder", "little")
        for key, arr in storages.items():
            z.writestr(f"archive/data/{key}", np.ascontiguousarray(arr).tobytes())
        z.writestr("archive/version", "3\n")
    return buf.getvalue()


def legacy_pth(pickle_bytes: bytes, storages: dict, keys=None, head=None) -> bytes:
    head = head or [pickle.dumps(h, protocol=2) for h in
                    (MAGIC, LEGACY_PROTOCOL, {"protocol_version": 1001, "little_endian": True})]
    keys = sorted(storages) if keys is None else keys
    out = b"".join(head) + pickle_bytes + pickle.dumps(keys, protocol=2)
    for key in sorted(storages):
        arr = np.ascontiguousarray(storages[key])
        out += struct.pack("<q", arr.size) + arr.tobytes()
    return out


# -- code execution: fragments that, run by plain pickle, create the file `m` ----------
def _touch(m):
    return f"touch {m}"


EXEC = {
    "os.system": lambda m: p_call(p_glob("os", "system"), p_str(_touch(m))),
    "posix.system": lambda m: p_call(p_glob("posix", "system"), p_str(_touch(m))),
    "os.popen": lambda m: p_call(p_glob("os", "popen"), p_str(_touch(m))) + b"0"
    + p_call(p_glob("time", "sleep"), b"G" + struct.pack(">d", 0.3)),
    "eval": lambda m: p_call(p_glob("builtins", "eval"), p_str(f"open({str(m)!r}, 'w')")),
    "exec": lambda m: p_call(p_glob("builtins", "exec"), p_str(f"open({str(m)!r}, 'w')")),
    "open": lambda m: p_call(p_glob("builtins", "open"), p_str(str(m)), p_str("w")),
    "io.open": lambda m: p_call(p_glob("io", "open"), p_str(str(m)), p_str("w")),
    "subprocess.call": lambda m: p_call(p_glob("subprocess", "call"),
                                        p_tuple(p_str("touch"), p_str(str(m)))),
    "subprocess.check_output": lambda m: p_call(p_glob("subprocess", "check_output"),
                                                p_tuple(p_str("touch"), p_str(str(m)))),
    "subprocess.run": lambda m: p_call(p_glob("subprocess", "run"),
                                       p_tuple(p_str("touch"), p_str(str(m)))),
    "__import__+getattr": lambda m: p_call(p_call(
        p_glob("builtins", "getattr"), p_call(p_glob("builtins", "__import__"), p_str("os")),
        p_str("system")), p_str(_touch(m))),
    "stack_global": lambda m: p_str("os") + p_str("system") + b"\x93"
    + p_tuple(p_str(_touch(m))) + b"R",
    "inst": lambda m: b"(" + p_str(_touch(m)) + b"ios\nsystem\n",
    "obj": lambda m: b"(" + p_glob("os", "system") + p_str(_touch(m)) + b"o",
    "memoised_global": lambda m: p_glob("os", "system") + b"q\x07" + b"0" + b"h\x07"
    + p_tuple(p_str(_touch(m))) + b"R",
    "functools.partial": lambda m: p_call(p_glob("functools", "partial"),
                                          p_glob("os", "system"), p_str(_touch(m))) + b")R",
    "operator.methodcaller": lambda m: p_call(
        p_call(p_glob("operator", "methodcaller"), p_str("system"), p_str(_touch(m))),
        p_call(p_glob("builtins", "__import__"), p_str("os"))),
    "pathlib.touch": lambda m: p_call(p_call(p_glob("builtins", "getattr"), p_call(
        p_glob("pathlib", "Path"), p_str(str(m))), p_str("touch"))),
    "timeit": lambda m: p_call(p_glob("timeit", "timeit"), p_str(f"open({str(m)!r}, 'w')"),
                               p_str("pass"), p_glob("time", "perf_counter"), p_int(1)),
    "nested_pickle.loads": lambda m: p_call(p_glob("pickle", "loads"), p_bytes(pkl(
        p_call(p_glob("os", "system"), p_str(_touch(m)))))),
    "runpy": lambda m: p_call(p_glob("runpy", "_run_code"), p_str(f"open({str(m)!r}, 'w')"),
                              b"}"),
    "code.interact_exec": lambda m: p_call(p_call(p_glob("builtins", "getattr"), p_call(
        p_glob("code", "InteractiveInterpreter")), p_str("runsource")),
        p_str(f"open({str(m)!r}, 'w')")),
    "shutil.copyfile": lambda m: p_call(p_glob("shutil", "copyfile"), p_str("/dev/null"),
                                        p_str(str(m))),
    "ctypes.system": lambda m: p_call(p_call(p_glob("builtins", "getattr"), p_call(
        p_glob("ctypes", "CDLL"), b"N"), p_str("system")), p_bytes(_touch(m).encode())),
}
# places the os.system fragment hides in a state dict (plain pickle reaches each before
# anything fails, so each is proven to run)
PLACES = {
    "as_value": lambda f: p_odict([(p_str("w"), f)]),
    "as_key": lambda f: p_odict([(f, p_str("w"))]),
    "after_entries": lambda f: p_odict([(p_str("a"), p_int(1)), (p_str("b"), f)]),
    "nested_30": lambda f: p_odict([(p_str("w"), b"(" * 30 + f + b"l" * 30)]),
    "in_build_state": lambda f: p_odict([]) + p_dict([(p_str("_metadata"), f)]) + b"b",
    "in_storage_type": lambda f: p_odict([(p_str("w"), p_tuple(
        p_str("storage"), f, p_str("0"), p_str("cpu"), p_int(1)) + b"Q")]),
    "state_dict_wrapper": lambda f: p_dict([(p_str("state_dict"), p_dict([(p_str("w"), f)]))]),
}
# no proof with plain pickle: these never call (NEWOBJ, EXT) or need torch first
EXEC_UNPROVEN = {
    "newobj_popen": lambda m: p_glob("subprocess", "Popen") + p_tuple(p_tuple(
        p_str("touch"), p_str(str(m)))) + b"\x81",
    "ext1": lambda m: b"\x82\x01",
    "persid_text": lambda m: b"P" + _touch(m).encode() + b"\n",
    "in_tensor_stride": lambda m: p_odict([(p_str("w"), p_call(
        p_glob("torch._utils", "_rebuild_tensor_v2"), p_storage("0", 4), p_int(0),
        p_tuple(p_int(4)), p_tuple(EXEC["os.system"](m)), b"\x89", p_odict([])))]),
    "parameter_arg": lambda m: p_odict([(p_str("w"), p_call(
        p_glob("torch._utils", "_rebuild_parameter"), p_tensor("0", 4, (4,)),
        EXEC["os.system"](m), p_odict([])))]),
    "torch_load": lambda m: p_call(p_glob("torch", "load"), p_str(str(m))),
    "numpy_reconstruct": lambda m: p_call(p_glob("numpy.core.multiarray", "_reconstruct"),
                                          p_glob("numpy", "ndarray"), p_tuple(p_int(0)),
                                          p_bytes(b"b")),
}

# -- content attacks: (pickle body, storages) for both layouts -------------------------
F4 = {"0": np.arange(4, dtype=np.float32)}
BIG = 1 << 16   # elements of a 256 KiB storage


def _sd(*pairs, storages=F4):
    return p_odict([(p_str(k), v) for k, v in pairs]), storages


def _many_views(n: int):
    """``n`` distinct transposed (copied) views of one 256 KiB storage."""
    storage = p_storage("0", BIG + n) + b"q\x01"
    items = [(p_str("first"), p_tensor("0", BIG + n, (256, 256), (1, 256), 0, storage))]
    items += [(p_str(f"k{i}"), p_tensor("0", 0, (256, 256), (1, 256), i, b"h\x01"))
              for i in range(1, n)]
    return p_odict(items), {"0": np.zeros(BIG + n, np.float32)}


def _shared_refs(n: int):
    """One copied tensor referenced ``n`` times (memo), then an int key."""
    t = p_tensor("0", BIG, (256, 256), (1, 256)) + b"q\x02"
    items = [(p_str("k0"), t)] + [(p_str(f"k{i}"), b"h\x02") for i in range(1, n)]
    items.append((p_int(3), b"h\x02"))
    return p_odict(items), {"0": np.zeros(BIG, np.float32)}


def _laughs(levels: int, width: int):
    body = p_list(p_tensor("0", 4, (4,))) + b"r" + struct.pack("<I", 0)
    for i in range(1, levels):
        body += b"(" + (b"j" + struct.pack("<I", i - 1)) * width + b"l" + b"r" \
            + struct.pack("<I", i)
    return p_odict([(p_str("w"), body)]), F4


def _deep(n: int, open_op: bytes, close_op: bytes):
    return p_odict([(p_str("w"), open_op * n + b"N" + close_op * n)]), {}


def _hash_flood(n: int, float_keys: bool = False):
    mod = 2**61 - 1
    keys = [(b"G" + struct.pack(">d", float(i * mod))) if float_keys else p_int(i * mod + 5)
            for i in range(1, n)]
    return b"}(" + b"".join(k + b"N" for k in keys) + b"u", {}


def _poison(target: bytes, state: bytes):
    """BUILD ``state`` into ``target`` (an allowed global), then a usual state dict."""
    body = target + state + b"b0" + p_odict([(p_str("w"), p_tensor("0", 4, (4,)))])
    return body, F4


def _vgg_keys(bad_key: str, bad_shape):
    """The five keys vgg16_config reads, tiny and well-formed, except ``bad_key``."""
    shapes = {f"features.conv{s}_{d}.weight": (2, 2, 1, 1) for s, d in
              zip(range(1, 6), (2, 2, 3, 3, 3))}
    shapes.update({"classifier.fc7.weight": (2, 2), "classifier.fc8a.weight": (2, 2)})
    shapes[bad_key] = bad_shape
    items, storages = [], {}
    for i, (k, shape) in enumerate(shapes.items()):
        n = int(np.prod(shape))
        storages[str(i)] = np.ones(max(n, 1), np.float32)
        items.append((p_str(k), p_tensor(str(i), max(n, 1), shape)))
    return p_odict(items), storages


def _keys(shapes: dict):
    """A state dict of ones with these ``{key: shape}`` entries."""
    items, storages = [], {}
    for i, (k, shape) in enumerate(shapes.items()):
        n = max(int(np.prod(shape)), 1)
        storages[str(i)] = np.ones(n, np.float32)
        items.append((p_str(k), p_tensor(str(i), n, shape)))
    return p_odict(items), storages


def _resnet(fc_shape):
    return _keys({"conv1.weight": (2, 3, 1, 1), **{f"layer{s}.0.conv1.weight": (2, 2, 1, 1)
                                                    for s in range(1, 5)}, "fc.weight": fc_shape})


def _alexnet(conv3_shape):
    return _keys({**{f"conv{i}.weight": (2, 2, 1, 1) for i in range(1, 6)},
                  "conv3.weight": conv3_shape, "fc7.weight": (2, 2), "fc8.weight": (2, 2)})


def _vit(proj_shape):
    return _keys({"conv_proj.weight": proj_shape, "encoder.pos_embedding": (1, 5, 768),
                  "heads.head.weight": (2, 768),
                  "encoder.layers.encoder_layer_0.mlp.0.weight": (4, 768)})


def _proggan_bad(shape):
    n = max(int(np.prod(shape)), 1)
    return p_odict([(p_str("layer1.conv.weight"), p_tensor("0", n, shape))]), {
        "0": np.ones(n, np.float32)}


CONTENT = {
    # memory and time bombs
    "zero_stride_1d": lambda: _sd(("w", p_tensor("0", 4, (1 << 30,), (0,)))),
    "zero_stride_2d": lambda: _sd(("w", p_tensor("0", 4, (1 << 15, 1 << 15), (0, 0)))),
    "overlap_stride_2d": lambda: _sd(("w", p_tensor("0", BIG, (1 << 15, 1 << 15), (1, 1))),
                                     storages={"0": np.zeros(BIG, np.float32)}),
    "overlap_stride_3d": lambda: _sd(("w", p_tensor("0", BIG, (4096, 4096, 64), (1, 2, 1))),
                                     storages={"0": np.zeros(BIG, np.float32)}),
    "overlap_partial": lambda: _sd(("w", p_tensor("0", 4, (3, 2), (1, 1)))),
    "many_copied_views": lambda: _many_views(3000),
    "shared_copied_tensor_50k": lambda: _shared_refs(50_000),
    "billion_laughs_8x40": lambda: _laughs(40, 8),
    "billion_laughs_2x60": lambda: _laughs(60, 2),
    "deep_lists": lambda: _deep(5_000, b"(", b"l"),
    "deep_tuples": lambda: _deep(5_000, b"(", b"t"),
    "deep_tuple1": lambda: (p_odict([(p_str("w"), b"N" + b"\x85" * 5_000)]), {}),
    "deep_dicts": lambda: (p_odict([(p_str("w"), (b"(" + p_str("a")) * 5_000 + b"N"
                                     + b"d" * 5_000)]), {}),
    "memo_index_2e32": lambda: (p_odict([]) + b"r\xff\xff\xff\xff" + b"0" + p_int(1), {}),
    "memo_get_2e32": lambda: (b"j\xff\xff\xff\xff", {}),
    "frame_2e62": lambda: (b"\x95" + struct.pack("<Q", 1 << 62) + p_odict([]), {}),
    "binunicode8_2e60": lambda: (b"\x8d" + struct.pack("<Q", 1 << 60) + b"abc", {}),
    "binbytes8_2e40": lambda: (b"\x8e" + struct.pack("<Q", 1 << 40) + b"abc", {}),
    "binunicode_4g": lambda: (b"X\xff\xff\xff\xff" + b"abc", {}),
    "long4_2g": lambda: (b"\x8b\xff\xff\xff\x7f" + b"\x01" * 64, {}),
    "ops_bomb": lambda: (b"N" + b"20" * 600_000, {}),
    "objects_bomb": lambda: (b"N" + b"]0" * 150_000, {}),
    "hash_flood_ints": lambda: _hash_flood(20_000),
    "hash_flood_floats": lambda: _hash_flood(20_000, float_keys=True),
    "tuple_keys": lambda: (b"}(" + b"".join(p_tuple(p_int(i)) + b"N" for i in range(9)) + b"u",
                           {}),
    "numel_2e40": lambda: _sd(("w", p_tensor("0", 1 << 40, (1 << 20,)))),
    "ndim_1000": lambda: _sd(("w", p_call(
        p_glob("torch._utils", "_rebuild_tensor_v2"), p_storage("0", 4), p_int(0),
        b"(" + p_int(1) * 1000 + b"t", b"(" + p_int(1) * 1000 + b"t", b"\x89",
        p_odict([])))),
    "size_2e100": lambda: _sd(("w", p_tensor("0", 4, (2**100,), (1,)))),
    "empty_dim_2e62": lambda: _sd(("w", p_tensor("0", 4, (0, 1 << 62), (1, 1)))),
    # state poisoning: BUILD/SETITEM/APPEND into the reader's shared objects
    "build_storage_type_dtype": lambda: _poison(p_glob("torch", "FloatStorage"),
                                                p_dict([(p_str("dtype"), p_str("<f8"))])),
    "build_storage_type_slots": lambda: _poison(p_glob("torch", "FloatStorage"), p_tuple(
        b"N", p_dict([(p_str("dtype"), p_str("<i8"))]))),
    "build_rebuild_defaults": lambda: _poison(p_glob("torch._utils", "_rebuild_parameter"),
                                              p_tuple(b"N", p_dict([(p_str("__defaults__"),
                                                                     p_tuple(p_int(1)))]))),
    "build_rebuild_dict": lambda: _poison(p_glob("torch._utils", "_rebuild_tensor_v2"),
                                          p_dict([(p_str("x"), p_int(1))])),
    "build_odict_class": lambda: _poison(p_glob("collections", "OrderedDict"), p_tuple(
        b"N", p_dict([(p_str("fromkeys"), b"N")]))),
    "setitem_on_global": lambda: (p_glob("torch", "FloatStorage") + p_str("dtype")
                                  + p_str("<f8") + b"s", {}),
    "append_on_global": lambda: (p_glob("collections", "OrderedDict") + b"Na", {}),
    "build_storage_ref": lambda: (p_odict([(p_str("w"), p_storage("0", 4)
                                            + p_dict([(p_str("numel"), p_int(9))]) + b"b")]),
                                  F4),
    "build_tensor_ref": lambda: (p_odict([(p_str("w"), p_tensor("0", 4, (4,))
                                           + p_dict([(p_str("x"), p_int(9))]) + b"b")]), F4),
    "build_odict_list_state": lambda: (p_odict([]) + p_list(p_int(1)) + b"b", {}),
    # malformed pickles and records
    "no_stop": lambda: (p_odict([]) + b"N", {}),
    "empty_stack_stop": lambda: (b"", {}),
    "unknown_opcode": lambda: (b"\xff", {}),
    "text_int": lambda: (b"I1\n", {}),
    "text_get": lambda: (b"N" + b"p0\n" + b"g0\n", {}),
    "text_string": lambda: (b"S'x'\n", {}),
    "unbalanced_mark": lambda: (b"((" + p_odict([]), {}),
    "memo_missing": lambda: (b"h\x05", {}),
    "pop_empty": lambda: (b"0N", {}),
    "append_empty": lambda: (b"a", {}),
    "setitem_on_list": lambda: (b"]" + p_str("a") + p_int(1) + b"s", {}),
    "bad_utf8": lambda: (b"X\x02\x00\x00\x00\xff\xfe", {}),
    "storage_is_int": lambda: _sd(("w", p_call(p_glob("torch._utils", "_rebuild_tensor_v2"),
                                               p_int(3), p_int(0), p_tuple(p_int(1)),
                                               p_tuple(p_int(1)), b"\x89", p_odict([])))),
    "pid_short": lambda: _sd(("w", p_tuple(p_str("storage")) + b"Q")),
    "pid_not_storage": lambda: _sd(("w", p_tuple(p_str("nope"), p_int(1), p_int(2),
                                                 p_int(3), p_int(4)) + b"Q")),
    "pid_type_str": lambda: _sd(("w", p_tuple(p_str("storage"), p_str("FloatStorage"),
                                              p_str("0"), p_str("cpu"), p_int(4)) + b"Q")),
    "pid_key_escape": lambda: _sd(("w", p_tensor("../../x", 4, (4,)))),
    "pid_numel_negative": lambda: _sd(("w", p_tensor("0", -4, (4,)))),
    "pid_numel_str": lambda: _sd(("w", p_tuple(p_str("storage"), p_glob("torch", "FloatStorage"),
                                               p_str("0"), p_str("cpu"), p_str("4")) + b"Q")),
    "mixed_key_types": lambda: (p_odict([(p_str("w"), p_tensor("0", 4, (4,))),
                                         (p_int(3), p_tensor("0", 4, (4,)))]), F4),
    "bytes_key": lambda: (p_odict([(p_bytes(b"w"), p_tensor("0", 4, (4,)))]), F4),
    "top_level_list": lambda: (p_list(p_tensor("0", 4, (4,))), F4),
    "top_level_int": lambda: (p_int(7), {}),
    "values_not_tensors": lambda: (p_odict([(p_str("w"), p_int(1))]), {}),
    "size_is_list": lambda: _sd(("w", p_call(p_glob("torch._utils", "_rebuild_tensor_v2"),
                                             p_storage("0", 4), p_int(0), p_list(p_int(4)),
                                             p_tuple(p_int(1)), b"\x89", p_odict([])))),
    "stride_float": lambda: _sd(("w", p_call(p_glob("torch._utils", "_rebuild_tensor_v2"),
                                             p_storage("0", 4), p_int(0), p_tuple(p_int(4)),
                                             p_tuple(b"G" + struct.pack(">d", 1.0)), b"\x89",
                                             p_odict([])))),
    "stride_bool": lambda: _sd(("w", p_call(p_glob("torch._utils", "_rebuild_tensor_v2"),
                                            p_storage("0", 4), p_int(0), p_tuple(p_int(4)),
                                            p_tuple(b"\x88"), b"\x89", p_odict([])))),
    "offset_str": lambda: _sd(("w", p_call(p_glob("torch._utils", "_rebuild_tensor_v2"),
                                           p_storage("0", 4), p_str("0"), p_tuple(p_int(4)),
                                           p_tuple(p_int(1)), b"\x89", p_odict([])))),
    "size_stride_lengths": lambda: _sd(("w", p_tensor("0", 4, (2, 2), (1,)))),
    "negative_offset": lambda: _sd(("w", p_tensor("0", 4, (2,), (1,), -1))),
    "offset_past_storage": lambda: _sd(("w", p_tensor("0", 4, (2,), (1,), 3))),
    "negative_stride": lambda: _sd(("w", p_tensor("0", 4, (2,), (-1,), 3))),
    "cyclic_list": lambda: (p_odict([(p_str("w"), b"]q\x03h\x03a")]), {}),
    "cyclic_dict": lambda: (p_odict([(p_str("w"), b"}q\x03" + p_str("x") + b"h\x03s")]), {}),
    "storage_two_dtypes": lambda: _sd(("a", p_tensor("0", 4, (4,))), ("b", p_tensor(
        "0", 4, (4,), storage=p_storage("0", 4, "LongStorage")))),
    "parameter_of_int": lambda: _sd(("w", p_call(p_glob("torch._utils", "_rebuild_parameter"),
                                                 p_int(3), b"\x89", p_odict([])))),
    "odict_with_args": lambda: (p_call(p_glob("collections", "OrderedDict"), p_list(
        p_tuple(b"G" + struct.pack(">d", 1.0), p_int(1)))), {}),
    "call_storage_type": lambda: (p_call(p_glob("torch", "FloatStorage"), p_int(4)), {}),
    "stack_global_ints": lambda: (p_int(1) + p_int(2) + b"\x93", {}),
    "global_name_long": lambda: (b"c" + b"a" * 100_000 + b"\nb\n", {}),
    "global_name_binary": lambda: (b"c\xff\xfe\nb\n", {}),
    # shapes that disagree with the architecture (refused by convert)
    "vgg_0d_kernel": lambda: _vgg_keys("features.conv1_2.weight", ()),
    "vgg_1d_kernel": lambda: _vgg_keys("features.conv3_3.weight", (2,)),
    "vgg_1d_fc": lambda: _vgg_keys("classifier.fc7.weight", (2,)),
    "proggan_1d_kernel": lambda: _proggan_bad((8,)),
    "proggan_0d_kernel": lambda: _proggan_bad(()),
    "resnet_0d_fc": lambda: _resnet(()),
    "resnet_1d_fc": lambda: _resnet((3,)),
    "alexnet_1d_conv": lambda: _alexnet((2,)),
    "alexnet_0d_conv": lambda: _alexnet(()),
    "vit_1d_conv_proj": lambda: _vit((768,)),
    "vit_2d_pos_embedding": lambda: _keys({
        "conv_proj.weight": (768, 3, 2, 2), "encoder.pos_embedding": (5, 768),
        "heads.head.weight": (2, 768), "encoder.layers.encoder_layer_0.mlp.0.weight": (4, 768)}),
}
ARCH = {"proggan_1d_kernel": "proggan", "proggan_0d_kernel": "proggan",
        "resnet_0d_fc": "resnet", "resnet_1d_fc": "resnet", "alexnet_1d_conv": "alexnet",
        "alexnet_0d_conv": "alexnet", "vit_1d_conv_proj": "vit", "vit_2d_pos_embedding": "vit"}


# -- container attacks ----------------------------------------------------------------
def _good_zip() -> bytes:
    body, st = _sd(("w", p_tensor("0", 4, (4,))), ("b", p_tensor("1", 3, (3,))),
                   storages={"0": np.arange(4, dtype=np.float32),
                             "1": np.ones(3, np.float32)})
    return zip_pth(pkl(body), st)


def _raw_zip(members, eocd_entries=None, cd_offset_delta=0) -> bytes:
    """A zip written by hand: ``members`` are dicts (name, data, method, crc, csize,
    usize, flags, header_offset_delta) so any field can lie."""
    out, central = bytearray(), bytearray()
    for m in members:
        name = m["name"].encode()
        data = m["data"]
        crc = m.get("crc", zlib.crc32(m.get("plain", data)))
        usize = m.get("usize", len(m.get("plain", data)))
        csize = m.get("csize", len(data))
        method, flags = m.get("method", 0), m.get("flags", 0)
        offset = len(out)
        out += struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, flags, method, 0, 0, crc, csize,
                           usize, len(name), 0) + name + data
        central += struct.pack("<4s6H3I5H2I", b"PK\x01\x02", 20, 20, flags, method, 0, 0, crc,
                               csize, usize, len(name), 0, 0, 0, 0, 0,
                               offset + m.get("offset_delta", 0)) + name
    n = len(members) if eocd_entries is None else eocd_entries
    eocd = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, min(n, 65535), min(n, 65535),
                       len(central), len(out) + cd_offset_delta, 0)
    return bytes(out + central + eocd)


def _deflate(plain: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(plain) + c.flush()


def _deflate_zeros(n: int) -> bytes:
    """A raw deflate stream of ``n`` (a multiple of 1 MiB) zero bytes: one fully flushed
    (self-contained) block of 1 MiB repeated, then an empty final block."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(bytes(1 << 20)) + c.flush(zlib.Z_FULL_FLUSH)
    return block * (n >> 20) + zlib.compressobj(9, zlib.DEFLATED, -15).flush()


def _std_members(pickle_bytes=None, storages=None, **pkl_fields):
    body, st = _sd(("w", p_tensor("0", 4, (4,))))
    storages = st if storages is None else storages
    members = [dict(name="archive/data.pkl", data=pickle_bytes or pkl(body), **pkl_fields),
               dict(name="archive/byteorder", data=b"little")]
    members += [dict(name=f"archive/data/{k}", data=v.tobytes()) for k, v in storages.items()]
    return members


def _zip_bomb_pickle(declared: int, actual: int):
    plain_len = actual
    data = _deflate_zeros(plain_len)
    return _raw_zip([dict(name="archive/data.pkl", data=data, method=8, crc=0, usize=declared),
                     dict(name="archive/byteorder", data=b"little")])


def _zip_bomb_storage(declared: int, actual: int):
    body, _ = _sd(("w", p_tensor("0", declared // 4, (declared // 4,))))
    data = _deflate_zeros(actual)
    return _raw_zip([dict(name="archive/data.pkl", data=pkl(body)),
                     dict(name="archive/byteorder", data=b"little"),
                     dict(name="archive/data/0", data=data, method=8, crc=0, usize=declared)])


def _zip_overlap(n: int):
    """``n`` storages whose directory entries all point at one 1 MiB member."""
    items = [(p_str(f"k{i}"), p_tensor(str(i), BIG * 4, (BIG * 4,))) for i in range(n)]
    items.append((p_int(1), p_int(1)))
    members = [dict(name="archive/data.pkl", data=pkl(p_odict(items))),
               dict(name="archive/byteorder", data=b"little"),
               dict(name="archive/data/0", data=bytes(BIG * 16))]
    raw = bytearray(_raw_zip(members))
    # append directory entries for 1..n-1 that reuse member 0's local header
    eocd_at = raw.rindex(b"PK\x05\x06")
    cd_size, cd_off = struct.unpack("<2I", raw[eocd_at + 12: eocd_at + 20])
    cd = raw[cd_off: cd_off + cd_size]
    first = cd.index(b"archive/data/0") - 46
    entry = bytes(cd[first: first + 46])
    extra = b"".join(entry[:28] + struct.pack("<H", len(f"archive/data/{i}")) + entry[30:]
                     + f"archive/data/{i}".encode() for i in range(1, n))
    cd = bytes(cd) + extra
    total = len(members) + n - 1
    eocd = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, total, total, len(cd), cd_off, 0)
    return bytes(raw[:cd_off]) + cd + eocd


def _two_pickles(m):
    good, st = _sd(("w", p_tensor("0", 4, (4,))))
    return _raw_zip([dict(name="a/data.pkl", data=pkl(p_odict([(p_str("w"),
                                                                EXEC["os.system"](m))]))),
                     dict(name="b/data.pkl", data=pkl(good)),
                     dict(name="b/data/0", data=st["0"].tobytes())])


def _cut(data: bytes, frac: float) -> bytes:
    return data[: int(len(data) * frac)]


def _break_local_header(data: bytes) -> bytes:
    i = data.index(b"archive/data/0") - 30  # the first mention is the local header
    return data[:i] + b"XX" + data[i + 2:]


def _patch_eocd(data: bytes, entries=None, cd_offset=None) -> bytes:
    at = data.rindex(b"PK\x05\x06")
    head = bytearray(data[at:])
    if entries is not None:
        head[8:12] = struct.pack("<2H", entries, entries)
    if cd_offset is not None:
        head[16:20] = struct.pack("<I", cd_offset)
    return data[:at] + bytes(head)


ZIP_ONLY = {
    **{f"truncated_{f}": (lambda f=f: _cut(_good_zip(), f))
       for f in (0.05, 0.2, 0.35, 0.5, 0.65, 0.8, 0.9, 0.97, 0.995)},
    "no_data_pkl": lambda: _raw_zip([dict(name="archive/byteorder", data=b"little")]),
    "nested_data_pkl": lambda: _raw_zip([dict(name="a/b/data.pkl", data=pkl(p_odict([])))]),
    "empty_zip": lambda: _raw_zip([]),
    "encrypted_pickle": lambda: _raw_zip(_std_members(flags=1)),
    **{f"method_{m}": (lambda m=m: _raw_zip(_std_members(method=m))) for m in (12, 14, 93, 99)},
    "pickle_bomb_declared_300M": lambda: _zip_bomb_pickle(300 << 20, 300 << 20),
    "pickle_bomb_declared_100": lambda: _zip_bomb_pickle(100, 64 << 20),
    "storage_bomb_declared_400M": lambda: _zip_bomb_storage(400 << 20, 400 << 20),
    "storage_bomb_declared_64": lambda: _zip_bomb_storage(64, 64 << 20),
    "bad_crc": lambda: _raw_zip(_std_members(pickle_bytes=_deflate(pkl(p_odict([]))),
                                             method=8, crc=1,
                                             plain=pkl(p_odict([])))),
    "corrupt_deflate": lambda: _raw_zip(_std_members(pickle_bytes=b"\xff" * 64, method=8,
                                                     usize=200, crc=0)),
    "duplicate_members": lambda: _raw_zip(_std_members() + [dict(name="archive/data.pkl",
                                                                 data=pkl(p_odict([])))]),
    "byteorder_garbage": lambda: _raw_zip([dict(m, data=b"middle") if m["name"].endswith(
        "byteorder") else m for m in _std_members()]),
    "directory_30k_entries": lambda: _raw_zip(_std_members() + [
        dict(name=f"x{i}", data=b"") for i in range(30_000)]),
    "cd_offset_past_end": lambda: _patch_eocd(_good_zip(), cd_offset=1 << 30),
    "member_offset_past_end": lambda: _raw_zip([dict(m, offset_delta=1 << 30)
                                                if m["name"].endswith("/0") else m
                                                for m in _std_members()]),
    "local_header_broken": lambda: _break_local_header(_raw_zip(_std_members())),
    "storage_missing": lambda: _raw_zip(_std_members(storages={})),
    "storage_short": lambda: _raw_zip(_std_members(storages={"0": np.zeros(2, np.float32)})),
    "overlapping_members_500": lambda: _zip_overlap(500),
}
ZIP_EXEC = {"first_of_two_pickles": _two_pickles}


def _legacy_head(magic=MAGIC, protocol=LEGACY_PROTOCOL, sys_info=None):
    return [pickle.dumps(magic, protocol=2), pickle.dumps(protocol, protocol=2),
            pickle.dumps(sys_info or {"little_endian": True}, protocol=2)]


def _legacy_good():
    body, st = _sd(("w", p_tensor("0", 4, (4,))), ("b", p_tensor("1", 3, (3,))),
                   storages={"0": np.arange(4, dtype=np.float32), "1": np.ones(3, np.float32)})
    return legacy_pth(pkl(body), st)


def _legacy_numel(numel: int):
    body, st = _sd(("w", p_tensor("0", 4, (4,))))
    data = legacy_pth(pkl(body), st)
    at = len(data) - 4 * 4 - 8
    return data[:at] + struct.pack("<q", numel) + data[at + 8:]


LEGACY_ONLY = {
    **{f"truncated_{f}": (lambda f=f: _cut(_legacy_good(), f))
       for f in (0.02, 0.1, 0.3, 0.5, 0.7, 0.85, 0.95, 0.99)},
    "bad_magic": lambda: legacy_pth(pkl(p_odict([])), {}, head=_legacy_head(magic=12345)),
    "bad_protocol": lambda: legacy_pth(pkl(p_odict([])), {}, head=_legacy_head(protocol=7)),
    "keys_not_list": lambda: legacy_pth(pkl(p_odict([])), {}, keys="0"),
    "key_unused": lambda: legacy_pth(pkl(p_odict([])), {"9": np.zeros(2, np.float32)}),
    "key_twice": lambda: legacy_pth(pkl(_sd(("w", p_tensor("0", 4, (4,))))[0]), F4,
                                    keys=["0", "0"]),
    "key_escape": lambda: legacy_pth(pkl(p_odict([])), {}, keys=["../../etc/passwd"]),
    "storage_not_listed": lambda: legacy_pth(pkl(_sd(("w", p_tensor("0", 4, (4,))))[0]), {},
                                             keys=[]),
    "numel_negative": lambda: _legacy_numel(-5),
    "numel_2e62": lambda: _legacy_numel(1 << 62),
    "numel_too_big": lambda: _legacy_numel(5),
    "magic_long4_huge": lambda: legacy_pth(pkl(p_odict([])), {}, head=[
        b"\x80\x02\x8b\xff\xff\xff\x7f" + b"\x00" * 32]),
    "magic_frame_huge": lambda: legacy_pth(pkl(p_odict([])), {}, head=[
        b"\x80\x04\x95" + struct.pack("<Q", 1 << 62) + b"N."]),
    "view_past_root": lambda: legacy_pth(pkl(_sd(("w", p_tensor("1", 4, (4,), storage=p_tuple(
        p_str("storage"), p_glob("torch", "FloatStorage"), p_str("1"), p_str("cpu"), p_int(4),
        p_tuple(p_str("0"), p_int(2), p_int(100))) + b"Q")))[0]), F4),
}
LEGACY_EXEC = {
    "in_magic": lambda m: legacy_pth(pkl(p_odict([])), {}, head=[
        pkl(EXEC["os.system"](m))] + _legacy_head()[1:]),
    "in_sys_info": lambda m: legacy_pth(pkl(p_odict([])), {}, head=_legacy_head()[:2] + [
        pkl(EXEC["eval"](m))]),
    "in_keys": lambda m: (lambda body: body[: body.rindex(b"\x80\x02")] + pkl(p_list(
        EXEC["os.system"](m))))(legacy_pth(pkl(p_odict([])), {})),
}


def build_cases(root: Path):
    """Write every crafted file under ``root``; returns the manifest: per file its name,
    path, architecture, the marker a successful attack would create, and the pickle
    (or file) bytes to prove with plain pickle that the attack runs (``proof``)."""
    root.mkdir(parents=True, exist_ok=True)
    cases = []

    def add(name, data, marker=None, proof=None, arch="vgg16"):
        path = root / f"{name}.pth"
        path.write_bytes(data)
        cases.append(dict(name=name, path=str(path), marker=marker and str(marker),
                          proof=proof and str(proof), arch=arch))

    def both(name, body, storages, marker=None, proof=None, arch="vgg16"):
        add(f"zip-{name}", zip_pth(pkl(body), storages), marker, proof, arch)
        add(f"legacy-{name}", legacy_pth(pkl(body), storages), marker, proof, arch)

    proofs = root / "proofs"
    proofs.mkdir(exist_ok=True)
    for fam, table in (("exec", EXEC), ("place", PLACES)):
        for name, build in table.items():
            marker = root / f"PWNED-{fam}-{name}"
            probe = proofs / f"probe-{fam}-{name}"
            frag = (lambda m, build=build: build(m)) if fam == "exec" else (
                lambda m, build=build: build(EXEC["os.system"](m)))
            body = frag(marker) if fam == "place" else p_odict([(p_str("w"), frag(marker))])
            proof_body = frag(probe) if fam == "place" else p_odict(
                [(p_str("w"), frag(probe))])
            (proofs / f"{fam}-{name}.pkl").write_bytes(pkl(proof_body))
            both(f"{fam}-{name}", body, {}, marker, proofs / f"{fam}-{name}.pkl")
    for name, build in EXEC_UNPROVEN.items():
        marker = root / f"PWNED-unproven-{name}"
        body = build(marker)
        both(f"exec-{name}", body if name.startswith(("in_", "param")) else
             p_odict([(p_str("w"), body)]), F4, marker)
    for name, build in CONTENT.items():
        body, storages = build()
        both(name, body, storages, arch=ARCH.get(name, "vgg16"))
    for name, build in ZIP_ONLY.items():
        add(f"zip-{name}", build())
    for name, build in LEGACY_ONLY.items():
        add(f"legacy-{name}", build())
    for table, prefix in ((ZIP_EXEC, "zip"), (LEGACY_EXEC, "legacy")):
        for name, build in table.items():
            marker = root / f"PWNED-{prefix}-{name}"
            probe = proofs / f"probe-{prefix}-{name}"
            (proofs / f"{prefix}-{name}.pth").write_bytes(build(probe))
            add(f"{prefix}-exec-{name}", build(marker), marker, proofs / f"{prefix}-{name}.pth")
    return cases


# -- the worker -----------------------------------------------------------------------
def _attempt(fn, trace: bool = False):
    """Run ``fn``; return (refused, message, seconds, peak extra bytes). Timed without
    tracing; with ``trace``, run again under ``tracemalloc`` for the peak allocation."""
    peak = None
    if trace:
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        with contextlib.suppress(BaseException):
            fn()
        peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
    t = time.perf_counter()
    try:
        out = fn()
        refused, msg = False, f"accepted: {type(out).__name__}"
    except (ValueError, KeyError, FileNotFoundError) as e:
        refused, msg = True, f"{type(e).__name__}: {e}"
    except BaseException as e:  # noqa: BLE001 - a traceback is itself the finding
        refused, msg = False, f"CRASH {type(e).__name__}: {str(e)[:300]}"
    return refused, msg, time.perf_counter() - t, peak


def _cli(path: str, arch: str, out: Path):
    from jaxdissect import cli
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(["weights", "convert", path, "--arch", arch, "--out", str(out)])
    if code != 2:
        raise RuntimeError(f"exit status {code}: {err.getvalue()[:300]}")
    if out.exists():
        raise RuntimeError(f"{out} was created")
    raise ValueError(err.getvalue().rstrip("\n"))


def _python(path: str, arch: str):
    from jaxdissect.checkpoints.architectures import convert_state_dict
    from jaxdissect.checkpoints.pth import load_state_dict
    return convert_state_dict(load_state_dict(path), arch, what=os.path.basename(path))


def _prove(path: Path):
    """Run the attack with plain pickle, as ``torch.load(weights_only=False)`` would:
    every pickle in the file, in order, until one fails."""
    data = path.read_bytes()
    if path.suffix == ".pkl":
        pickles = [data]
    elif data[:2] == b"PK":
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            pickles = [z.read(n) for n in sorted(z.namelist()) if n.endswith("data.pkl")]
    else:
        f, pickles = io.BytesIO(data), []
        for _ in range(5):
            with contextlib.suppress(Exception):
                pickle.load(f)
        pickles = []
    for p in pickles:
        with contextlib.suppress(Exception):
            pickle.loads(p)


def worker(manifest: Path, out: Path):
    import resource

    from jaxdissect.checkpoints import pth
    from jaxdissect.checkpoints.pth import load_state_dict
    cases = json.loads(manifest.read_text())
    # proofs first: plain pickle really runs each proven payload
    for c in cases:
        if c["proof"]:
            _prove(Path(c["proof"]))
    good = Path(manifest.parent / "good.pth")
    before = load_state_dict(good)
    globals_before = repr(sorted((k, repr(v), getattr(v, "__defaults__", None),
                                  dict(getattr(v, "__dict__", {}))) for k, v in
                                 pth.ALLOWED_GLOBALS.items()))
    _attempt(lambda: _python(str(good), "vgg16"))  # warm imports
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    results = []
    scratch = manifest.parent / "scratch"
    for i, c in enumerate(cases):
        for how in ("cli", "python"):
            fn = ((lambda c=c, i=i: _cli(c["path"], c["arch"], scratch / f"out{i}"))
                  if how == "cli" else (lambda c=c: _python(c["path"], c["arch"])))
            refused, msg, seconds, peak = _attempt(fn, trace=how == "python")
            results.append(dict(name=c["name"], how=how, refused=refused, message=msg,
                                seconds=seconds, peak=peak))
    after = load_state_dict(good)
    globals_after = repr(sorted((k, repr(v), getattr(v, "__defaults__", None),
                                 dict(getattr(v, "__dict__", {}))) for k, v in
                                pth.ALLOWED_GLOBALS.items()))
    out.write_text(json.dumps(dict(
        results=results,
        rss_growth=(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) * 1024,
        good_unchanged=bool(all(np.array_equal(before[k], after[k]) and
                                before[k].dtype == after[k].dtype for k in before)
                            and list(before) == list(after)),
        globals_unchanged=globals_before == globals_after)))


if __name__ == "__main__":
    sys.setrecursionlimit(10_000)
    worker(Path(sys.argv[1]), Path(sys.argv[2]))
