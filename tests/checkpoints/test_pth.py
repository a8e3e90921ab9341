"""The torch-free .pth reader: both container formats against torch.load, refusal of
pickles that would run code (with the side effect checked absent), truncated and
corrupt files."""

import collections
import io
import os
import pickle
import zipfile

import numpy as np
import pytest
import torch

from jaxdissect.checkpoints.pth import (
    CheckpointError,
    UnsafeCheckpointError,
    load_pth,
    load_state_dict,
)

FORMATS = {"zip": True, "legacy": False}


def save(obj, path, fmt):
    torch.save(obj, path, _use_new_zipfile_serialization=FORMATS[fmt])
    return path


def mixed_state_dict():
    torch.manual_seed(0)
    m = torch.nn.Sequential(collections.OrderedDict(
        conv=torch.nn.Conv2d(3, 5, 3), bn=torch.nn.BatchNorm2d(5), fc=torch.nn.Linear(4, 6)))
    sd = m.state_dict()
    base = torch.randn(4, 6, 5)
    sd["half"] = torch.randn(7).half()
    sd["bf16"] = torch.randn(3, 2).bfloat16()
    sd["double"] = torch.randn(2, 2).double()
    sd["int"] = torch.arange(5, dtype=torch.int32)
    sd["bool"] = torch.tensor([True, False, True])
    sd["u8"] = torch.arange(4, dtype=torch.uint8)
    sd["scalar"] = torch.tensor(3.5)
    sd["empty"] = torch.zeros(0, 3)
    sd["view_row"] = base[2]  # shares storage, non-zero offset
    sd["transposed"] = base.transpose(0, 2)  # non-contiguous
    sd["strided"] = base[:, ::2, 1:]
    return sd


@pytest.mark.parametrize("fmt", FORMATS)
def test_reads_like_torch_load(tmp_path, fmt):
    sd = mixed_state_dict()
    got = load_pth(save(sd, tmp_path / "m.pth", fmt))
    assert list(got) == list(sd)
    for k, v in sd.items():
        want = v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy()
        have = got[k].astype(np.float32) if v.dtype == torch.bfloat16 else got[k]
        assert have.shape == want.shape and have.dtype == want.dtype, k
        np.testing.assert_array_equal(have, want, err_msg=k)


@pytest.mark.parametrize("fmt", FORMATS)
def test_nested_containers_and_parameters(tmp_path, fmt):
    w = torch.nn.Parameter(torch.randn(3, 4))
    obj = {"state_dict": {"w": w, "b": torch.ones(2)}, "epoch": 7, "names": ["a", ("b", 2.5)]}
    got = load_pth(save(obj, tmp_path / "n.pth", fmt))
    np.testing.assert_array_equal(got["state_dict"]["w"], w.detach().numpy())
    assert got["epoch"] == 7 and got["names"] == ["a", ("b", 2.5)]
    assert set(load_state_dict(tmp_path / "n.pth")) == {"w", "b"}


class RunsCommand:
    """Pickles to a call of os.system, as a malicious checkpoint would."""

    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


class RunsEval:
    def __reduce__(self):
        return (eval, ("__import__('os').system('true')",))


def zip_with_pickle(path, payload: bytes):
    """A torch zip container whose data.pkl is ``payload``."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", payload)
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/version", "3\n")
    return path


def legacy_with_pickle(path, payload: bytes):
    with open(path, "wb") as f:
        for head in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
            pickle.dump(head, f, protocol=2)
        f.write(payload)
        pickle.dump([], f, protocol=2)
    return path


@pytest.mark.parametrize("container", ["zip", "legacy"])
@pytest.mark.parametrize("protocol", [2, 4])
def test_pickle_that_runs_a_command_is_refused(tmp_path, container, protocol):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"w": RunsCommand(f"touch {marker}")}, protocol=protocol)
    # Sanity: the payload really does run the command when unpickled normally.
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(RunsCommand(f"touch {probe}"), protocol=protocol))
    assert probe.exists()
    build = zip_with_pickle if container == "zip" else legacy_with_pickle
    path = build(tmp_path / "evil.pth", payload)
    with pytest.raises(UnsafeCheckpointError, match=r"system.*nothing was executed"):
        load_pth(path)
    assert not marker.exists()


def test_eval_and_unknown_classes_are_refused(tmp_path):
    path = zip_with_pickle(tmp_path / "e.pth", pickle.dumps(RunsEval(), protocol=2))
    with pytest.raises(UnsafeCheckpointError, match=r"builtin_*\.eval"):
        load_pth(path)
    module = torch.nn.Linear(2, 2)
    torch.save(module, tmp_path / "module.pth")  # a whole module, not a state dict
    with pytest.raises(UnsafeCheckpointError, match="torch.nn.modules.linear.Linear"):
        load_pth(tmp_path / "module.pth")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("keep", [0.3, 0.9, 0.999])
def test_truncated_file_gives_clear_error(tmp_path, fmt, keep):
    sd = {"a": torch.randn(64, 64), "b": torch.randn(300)}
    data = open(save(sd, tmp_path / "full.pth", fmt), "rb").read()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError, match="cut.pth.*(truncated|corrupt)"):
        load_pth(cut)


def test_garbage_and_missing_files(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(CheckpointError, match="neither a zip nor a legacy"):
        load_pth(bad)
    bad.write_bytes(b"\x80\x02" + os.urandom(200))
    with pytest.raises(CheckpointError, match="bad.pth"):
        load_pth(bad)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_pth(tmp_path / "nope.pth")
    buf = io.BytesIO()
    torch.save([torch.ones(2)], buf)
    (tmp_path / "list.pth").write_bytes(buf.getvalue())
    with pytest.raises(CheckpointError, match="not a state dict"):
        load_state_dict(tmp_path / "list.pth")


@pytest.mark.parametrize("size, stride", [((4, 4), (4, 1)), ((2, 3), (1, -1)), ((-2,), (1,))])
def test_tensor_overrunning_its_storage_is_refused(tmp_path, size, stride):
    """A hand-made pickle whose tensor reaches past its 6-element storage."""
    good = tmp_path / "good.pth"
    torch.save({"w": torch.arange(6, dtype=torch.float32)}, good)
    with zipfile.ZipFile(good) as z:
        names = z.namelist()
        prefix = names[0].split("/")[0]
        entries = {n: z.read(n) for n in names}
    pkl = entries[f"{prefix}/data.pkl"]
    assert pkl.count(b"K\x06\x85") == 1  # size tuple (6,) as pickled by torch

    def tuple_ops(t):  # opcodes building tuple t, without PROTO, memo put and STOP
        ops = pickle.dumps(tuple(t), protocol=2)
        assert ops.endswith(b"q\x00.")
        return ops[2:-3]

    new_size, new_stride = tuple_ops(size), tuple_ops(stride)
    i = pkl.index(b"K\x06\x85")
    j = pkl.index(b"K\x01\x85", i)
    patched = pkl[:i] + new_size + pkl[i + 3:j] + new_stride + pkl[j + 3:]
    entries[f"{prefix}/data.pkl"] = patched
    bad = tmp_path / "bad.pth"
    with zipfile.ZipFile(bad, "w", zipfile.ZIP_STORED) as z:
        for n, data in entries.items():
            z.writestr(n, data)
    with pytest.raises(CheckpointError, match="bad.pth.*(overruns|invalid size)"):
        load_pth(bad)
