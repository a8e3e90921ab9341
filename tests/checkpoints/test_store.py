"""Converted checkpoint directories are verified on load: a flipped byte, a missing or
truncated file, an edited config or an unreadable model.json each give a one-line
error naming the file (and the array where one can be named), never a loaded model
with corrupted weights."""

import json

import numpy as np
import pytest

from jaxdissect.checkpoints.architectures import expected_shapes
from jaxdissect.checkpoints.convert import unflatten_params
from jaxdissect.checkpoints.store import CorruptCheckpoint, load_converted, save_converted

SIZES = [16, 16, 8]


@pytest.fixture
def saved(tmp_path):
    rng = np.random.default_rng(0)
    shapes = expected_shapes("proggan", {"sizes": SIZES})
    flat = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
    out = save_converted(tmp_path / "g", "proggan", {"sizes": SIZES}, unflatten_params(flat))
    return out, flat


def data_files(out):
    """The files under params/ holding array bytes, largest first."""
    return sorted((p for p in (out / "params").rglob("*") if p.is_file()),
                  key=lambda p: -p.stat().st_size)


def one_line(e):
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_round_trip_is_verified_and_exact(saved):
    out, flat = saved
    meta = json.loads((out / "model.json").read_text())
    assert set(meta["arrays"]) == set(flat) and meta["files"]
    _, params, _ = load_converted(out)
    from jaxdissect.checkpoints.convert import flatten_params
    for k, v in flatten_params(params).items():
        np.testing.assert_array_equal(np.asarray(v), flat[k])


@pytest.mark.parametrize("where", [0.3, 0.6, 0.9])
def test_flipped_byte_is_refused_naming_file_and_array(saved, where):
    out, _ = saved
    target = data_files(out)[0]
    data = bytearray(target.read_bytes())
    data[int(len(data) * where)] ^= 0x10
    target.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpoint) as e:
        load_converted(out)
    msg = one_line(e)
    assert target.relative_to(out).as_posix() in msg
    assert "array '" in msg or "cannot be restored" in msg


def test_missing_and_truncated_files_are_named(saved):
    out, _ = saved
    big, *rest = data_files(out)
    big.write_bytes(big.read_bytes()[:-7])
    with pytest.raises(CorruptCheckpoint, match="bytes,.*were written") as e:
        load_converted(out)
    assert str(big) in one_line(e)
    rest[0].unlink()
    with pytest.raises(CorruptCheckpoint, match="missing") as e:
        load_converted(out)
    assert str(rest[0]) in one_line(e) or str(big) in one_line(e)


def test_config_that_disagrees_with_the_arrays_names_the_array(saved):
    out, _ = saved
    meta = json.loads((out / "model.json").read_text())
    meta["config"]["sizes"] = [16, 16, 4]
    (out / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CorruptCheckpoint, match=r"model.json: array 'layer\d/(kernel|bias)' "
                                                r"has shape .* config \(proggan\) needs"):
        load_converted(out)


def test_recorded_array_shape_or_hash_edited(saved):
    out, _ = saved
    meta = json.loads((out / "model.json").read_text())
    meta["arrays"]["layer1/bias"]["sha256"] = "0" * 64
    (out / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CorruptCheckpoint, match="array 'layer1/bias' does not match"):
        load_converted(out)


def test_unreadable_or_old_model_json(saved):
    out, _ = saved
    (out / "model.json").write_text("{not json")
    with pytest.raises(CorruptCheckpoint, match="model.json: not valid JSON"):
        load_converted(out)
    (out / "model.json").write_text(json.dumps({"arch": "proggan", "config": {"sizes": SIZES}}))
    with pytest.raises(CorruptCheckpoint, match="older jaxdissect"):
        load_converted(out)
