"""The package-free .safetensors reader: files written by the ``safetensors`` package
read back equal (every dtype, metadata, empty and scalar tensors); hostile files
(header length, JSON, dtypes, shapes, offsets, overlaps, gaps, truncation) refused in
one line naming the file, without allocating more than the file holds."""

import json
import struct
import tracemalloc

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file as np_save_file
from safetensors.torch import save_file as torch_save_file

from jaxdissect.checkpoints.pth import CheckpointError
from jaxdissect.checkpoints.safetensors import (
    MAX_HEADER_BYTES,
    load_safetensors,
    read_safetensors,
)


def test_reads_numpy_written_file(tmp_path):
    rng = np.random.default_rng(0)
    want = {
        "conv.weight": rng.normal(size=(5, 3, 3, 3)).astype(np.float32),
        "f64": rng.normal(size=(2, 2)),
        "f16": rng.normal(size=(7,)).astype(np.float16),
        "i8": np.arange(-4, 4, dtype=np.int8),
        "i16": np.arange(6, dtype=np.int16).reshape(2, 3),
        "i32": np.arange(5, dtype=np.int32),
        "i64": np.array([-(1 << 40), 1 << 40]),
        "u8": np.arange(4, dtype=np.uint8),
        "bool": np.array([True, False, True]),
        "scalar": np.array(3.5, np.float32),
        "empty": np.zeros((0, 3), np.float32),
    }
    path = tmp_path / "m.safetensors"
    np_save_file(want, str(path), metadata={"format": "np", "note": "x"})
    got, meta = read_safetensors(path)
    assert meta == {"format": "np", "note": "x"}
    assert set(got) == set(want)
    for k, v in want.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape, k
        np.testing.assert_array_equal(got[k], v, err_msg=k)


def test_reads_torch_written_file_with_bfloat16(tmp_path):
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    sd = {k: v.contiguous() for k, v in m.state_dict().items()}
    sd["bf16"] = torch.randn(3, 2).bfloat16()
    path = tmp_path / "t.safetensors"
    torch_save_file(sd, str(path))
    got = load_safetensors(path)
    assert set(got) == set(sd)
    for k, v in sd.items():
        want = v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy()
        assert got[k].shape == want.shape, k
        np.testing.assert_array_equal(got[k].astype(want.dtype), want, err_msg=k)
    assert str(got["bf16"].dtype) == "bfloat16"
    assert got["1.num_batches_tracked"].dtype == np.int64


# -- hostile files ---------------------------------------------------------------------
def _file(header, data: bytes = b"", n: int | None = None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if n is None else n) + raw + data


def _t(dtype="F32", shape=(2,), offs=(0, 8)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offs)}


F8 = bytes(8)
HOSTILE = {
    "empty_file": b"",
    "short_length": b"\x05\x00\x00",
    "header_past_end": _file({"w": _t()}, F8, n=1 << 20),
    "header_length_2e63": _file(b"{}", n=1 << 63),
    "header_over_limit": _file(b"{}", n=MAX_HEADER_BYTES + 1),
    "header_not_json": _file(b"{not json"),
    "header_not_utf8": _file(b'{"\xff\xfe": 1}'),
    "header_a_list": _file(b"[1, 2]"),
    "header_pickle": _file(b"\x80\x04\x95"),
    "header_deeply_nested": _file(b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
    "duplicate_name": _file(b'{"w": %s, "w": %s}' % (json.dumps(_t()).encode(),
                                                  json.dumps(_t(offs=(8, 16))).encode()),
                            bytes(16)),
    "entry_not_object": _file({"w": [1, 2]}, F8),
    "entry_missing_offsets": _file({"w": {"dtype": "F32", "shape": [2]}}, F8),
    "entry_extra_field": _file({"w": dict(_t(), code="print(1)")}, F8),
    "dtype_unknown": _file({"w": _t(dtype="F128")}, F8),
    "dtype_object": _file({"w": _t(dtype="O")}, F8),
    "dtype_not_string": _file({"w": _t(dtype=4)}, F8),
    "shape_negative": _file({"w": _t(shape=(-2,))}, F8),
    "shape_float": _file({"w": _t(shape=(2.0,))}, F8),
    "shape_bool": _file({"w": _t(shape=(True, 2))}, F8),
    "shape_not_list": _file({"w": {"dtype": "F32", "shape": 2, "data_offsets": [0, 8]}}, F8),
    "shape_ndim_40": _file({"w": _t(shape=(1,) * 40, offs=(0, 4))}, bytes(4)),
    "shape_huge_offsets_small": _file({"w": _t(shape=(1 << 40, 1 << 40))}, F8),
    "shape_overflow_int64": _file({"w": _t(shape=(1 << 62, 8), offs=(0, 0))}),
    "length_mismatch": _file({"w": _t(shape=(3,))}, F8),
    "offsets_reversed": _file({"w": _t(offs=(8, 0))}, F8),
    "offsets_negative": _file({"w": _t(offs=(-8, 0))}, F8),
    "offsets_three": _file({"w": _t(offs=(0, 8, 16))}, F8),
    "offsets_float": _file({"w": _t(offs=(0.0, 8.0))}, F8),
    "offsets_past_end": _file({"w": _t(shape=(1 << 30,), offs=(0, 4 << 30))}, F8),
    "offsets_past_end_small": _file({"w": _t(shape=(4,), offs=(0, 16))}, F8),
    "overlap": _file({"a": _t(), "b": _t(offs=(4, 12))}, bytes(12)),
    "overlap_same_span": _file({"a": _t(), "b": _t()}, F8),
    "overlap_many_same_span": _file({f"t{i}": _t(shape=(1 << 18,), offs=(0, 1 << 20))
                                     for i in range(2000)}, bytes(1 << 20)),
    "gap": _file({"a": _t(), "b": _t(offs=(12, 20))}, bytes(20)),
    "gap_at_start": _file({"w": _t(offs=(8, 16))}, bytes(16)),
    "trailing_bytes": _file({"w": _t()}, bytes(9)),
    "truncated_data": _file({"w": _t()}, bytes(4)),
    "metadata_not_object": _file({"__metadata__": [1], "w": _t()}, F8),
    "metadata_value_not_string": _file({"__metadata__": {"a": 1}, "w": _t()}, F8),
    "bool_bytes_not_0_or_1": _file({"w": _t(dtype="BOOL", shape=(2,), offs=(0, 2))},
                                   b"\x01\x07"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_file_refused_in_one_line_within_file_size(tmp_path, name):
    path = tmp_path / f"{name}.safetensors"
    path.write_bytes(HOSTILE[name])
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError) as e:
            load_safetensors(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{name}.safetensors: "), msg
    assert peak < 2 * len(HOSTILE[name]) + (4 << 20), (name, peak)


def test_a_good_file_after_hostile_ones_still_reads(tmp_path):
    good = tmp_path / "good.safetensors"
    good.write_bytes(_file({"__metadata__": {"k": "v"}, "w": _t()},
                           np.array([1.5, -2], "<f4").tobytes()))
    for name in ("overlap", "dtype_unknown"):
        (tmp_path / name).write_bytes(HOSTILE[name])
        with pytest.raises(CheckpointError):
            load_safetensors(tmp_path / name)
    got, meta = read_safetensors(good)
    assert meta == {"k": "v"}
    np.testing.assert_array_equal(got["w"], [1.5, -2])


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such checkpoint file"):
        load_safetensors(tmp_path / "nope.safetensors")


@pytest.mark.parametrize("name", ["header_length_2e63", "overlap_many_same_span",
                                  "dtype_object", "truncated_data"])
def test_hostile_file_refused_by_weights_convert(tmp_path, capsys, name):
    from jaxdissect.cli import main
    path = tmp_path / f"{name}.safetensors"
    path.write_bytes(HOSTILE[name])
    assert main(["weights", "convert", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"{name}.safetensors: " in err, err
    assert not (tmp_path / "out").exists()
