"""The one file format of results and caches: arrays by name, exact round trips, files
in another format refused (results) or recomputed (sweep caches), and hostile files
that can neither run code nor exhaust memory."""

import io
import json
import os
import zipfile

import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

from jaxdissect.experiments.dissect import DissectResult
from jaxdissect.experiments.label_significance import Significance
from jaxdissect.labels import LabelSet
from jaxdissect.runtime import cache, sweep, treefile


@struct.dataclass
class Sums:
    total: jnp.ndarray
    count: jnp.ndarray

    @classmethod
    def empty(cls):
        return cls(jnp.zeros(3, jnp.int32), jnp.zeros((), jnp.int32))

    def merge(self, other):
        return Sums(self.total + other.total, self.count + other.count)


class Rows:
    def __init__(self, x):
        self.x, self.num_examples, self.reads = x, len(x), []

    def batch(self, start, stop):
        self.reads.append((start, stop))
        return {"x": self.x[start:stop]}


def _step(stat, batch):
    v = batch["valid"]
    return Sums(stat.total + jnp.where(v[:, None], batch["x"], 0).sum(0),
                stat.count + v.sum(dtype=jnp.int32))


def _result(category_area=None, significance=None):
    rng = np.random.default_rng(0)
    labels = LabelSet.from_pairs([("none", ""), ("sky", "object"), ("red", "color")])
    return DissectResult(
        labels=labels, quantile=0.01, miniou=0.04,
        thresholds=rng.random(4, dtype=np.float32),
        levels={0.01: rng.random(4, dtype=np.float32), 0.005: rng.random(4, dtype=np.float32)},
        iou=rng.random((4, 3)), best_label=np.array([1, 2, 1, 2]), best_iou=rng.random(4),
        intersections=rng.integers(0, 9, (4, 3)), unit_area=rng.integers(0, 9, 4),
        label_area=rng.integers(0, 9, 3), pixels=1024, topk_values=rng.random((4, 2)),
        topk_images=np.array([[0, 1], [2, -1], [3, 0], [1, 2]]), num_examples=5,
        iou_rule="netdissect" if category_area is not None else "pnas",
        category_area=category_area, significance=significance,
        max_p=None if significance is None else 0.05)


def _same(a, b):
    for f in ("thresholds", "iou", "best_label", "best_iou", "intersections", "unit_area",
              "label_area", "topk_values", "topk_images"):
        x, y = getattr(a, f), getattr(b, f)
        assert x.dtype == y.dtype and np.array_equal(x, y), f
    assert a.labels == b.labels and a.levels.keys() == b.levels.keys()
    for q in a.levels:
        np.testing.assert_array_equal(a.levels[q], b.levels[q])


def test_results_round_trip_by_field_name(tmp_path):
    sig = Significance(units=np.array([0, 2]), labels=np.array([1, 2]), iou=np.array([.3, .1]),
                       p_value=np.array([.001, .5]), iou_low=np.array([.2, 0.]),
                       iou_high=np.array([.4, .2]), null_iou=np.array([.05, .04]),
                       permutations=99, replicates=50, level=0.95, seed=3)
    for kw in ({}, {"category_area": np.arange(8).reshape(4, 2)}, {"significance": sig}):
        r = _result(**kw)
        path = r.save(str(tmp_path / "r.npz"))
        with np.load(path, allow_pickle=False) as data:   # arrays named by their fields
            assert "thresholds" in data.files and "levels/0.01" in data.files
            assert ("category_area" in data.files) == ("category_area" in kw)
            assert ("significance/p_value" in data.files) == ("significance" in kw)
        back = DissectResult.load(path)
        _same(r, back)
        assert back.iou_rule == r.iou_rule and back.max_p == r.max_p
        if "category_area" in kw:
            np.testing.assert_array_equal(back.category_area, kw["category_area"])
        else:
            assert back.category_area is None
        if "significance" in kw:
            assert back.significance.to_json() == sig.to_json()
            np.testing.assert_array_equal(back.labelled, r.labelled)


def _old_format(path, leaves, **meta):
    """A file as jaxdissect wrote results and caches before: positional leaves."""
    arrays = {f"leaf{i}": np.asarray(x) for i, x in enumerate(leaves)}
    np.savez(path, meta=np.array(json.dumps(meta)), **arrays)


def test_a_result_in_another_format_is_refused(tmp_path):
    r = _result(category_area=np.zeros((4, 2), np.int64))
    path = str(tmp_path / "old.npz")
    names = sorted(("thresholds", "iou", "best_label", "best_iou", "intersections",
                    "unit_area", "label_area", "topk_values", "topk_images", "category_area"))
    _old_format(path, [getattr(r, n) for n in names], labels=r.labels.to_json(),
                quantile=0.01, miniou=0.04, pixels=1, num_examples=5, levels={})
    with pytest.raises(ValueError, match="not a jaxdissect results file"):
        DissectResult.load(path)
    r.save(path)
    from jaxdissect.experiments.ablate import AblationResult
    with pytest.raises(ValueError, match="holds a DissectResult, not a AblationResult"):
        AblationResult.load(path)
    with pytest.raises(ValueError, match="holds a DissectResult"):
        cache.load_tree(path, Sums.empty())


def test_a_cache_in_another_format_is_recomputed_not_read(tmp_path, capsys):
    x = np.arange(30, dtype=np.int32).reshape(10, 3)
    key = cache.content_key("test-old-cache")
    kw = dict(batch_size=4, progress=False, cache_dir=str(tmp_path), key=key)
    fresh = sweep.sweep(_step, Sums.empty(), Rows(x), **kw)
    [path] = tmp_path.glob("sweep-*.npz")
    # the same file name, written in the old format, claiming a finished sweep of
    # other numbers (same shapes, same leaf count): it must not be served
    _old_format(path, [np.full(3, 7, np.int32), np.int32(99)], offset=10, start=0, stop=10)
    src = Rows(x)
    again = sweep.sweep(_step, Sums.empty(), src, **kw)
    assert src.reads and "recomputing" in capsys.readouterr().err
    np.testing.assert_array_equal(again.total, x.sum(0))
    assert int(again.count) == 10 and np.array_equal(fresh.total, again.total)
    tree, meta = cache.load_tree(str(path), Sums.empty())   # replaced in this format
    np.testing.assert_array_equal(tree.total, x.sum(0)) and meta["offset"] == 10
    # a file of this format but another structure is not read either
    cache.save_tree(str(path), {"other": np.zeros(3, np.int32)}, offset=10, start=0, stop=10)
    src = Rows(x)
    np.testing.assert_array_equal(sweep.sweep(_step, Sums.empty(), src, **kw).total, x.sum(0))
    assert src.reads


def test_tree_names_are_key_paths_and_checked(tmp_path):
    tree = {"a": Sums.empty(), "b": [np.ones((2, 3), np.float64, order="F"), np.int8(3)]}
    path = str(tmp_path / "t.npz")
    cache.save_tree(path, tree, note="x")
    arrays, meta, kind = treefile.read(path)
    assert set(arrays) == {"a/total", "a/count", "b/0", "b/1"} and kind == "tree"
    assert meta == {"note": "x"}
    back, _ = cache.load_tree(path, tree)
    assert back["b"][0].dtype == np.float64 and np.array_equal(back["b"][0], np.ones((2, 3)))
    wrong = {"a": Sums.empty(), "b": [np.ones((3, 2)), np.int8(3)]}
    with pytest.raises(ValueError, match=r"b/0 as \(2, 3\) float64 where \(3, 2\)"):
        cache.load_tree(path, wrong)
    with pytest.raises(ValueError, match="another structure"):
        cache.load_tree(path, {"a": Sums.empty()})


def _rewrite(src, dst, edit):
    """Copies the zip ``src`` to ``dst`` with ``edit(name, bytes) -> (name, bytes,
    compression)`` applied to each entry."""
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(dst, "w") as out:
        for info in z.infolist():
            name, data, comp = edit(info.filename, z.read(info))
            out.writestr(zipfile.ZipInfo(name), data, compress_type=comp)


def _npy(array) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array, allow_pickle=True)
    return buf.getvalue()


def _declare_huge(name, data):
    """The header entry declaring ``iou`` as 128 TB, as a hostile file would."""
    if not name.startswith(treefile.META):
        return data
    raw = np.lib.format.read_array(io.BytesIO(data)).tobytes()
    header = json.loads(raw)
    header["arrays"]["iou"] = [[1 << 22, 1 << 22], "<f8"]
    return _npy(np.frombuffer(json.dumps(header).encode(), np.uint8))


class Boom:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_hostile_files_run_no_code_and_allocate_nothing_large(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    good = str(tmp_path / "good.npz")
    _result().save(good)
    huge = np.lib.format.header_data_from_array_1_0(np.zeros(1))
    huge["shape"] = (1 << 22, 1 << 22)             # 128 TB declared, a few bytes held
    huge_header = io.BytesIO()
    np.lib.format.write_array_header_1_0(huge_header, huge)
    big_meta = b"[" + b"0," * (treefile.MAX_META_BYTES // 2) + b"0]"
    deep = b"[" * 9000 + b"]" * 9000
    cases = {
        "pickled object": lambda n, d: (n, _npy(np.array([Boom()], object))
                                        if n == "iou.npy" else d, zipfile.ZIP_STORED),
        "huge declared shape": lambda n, d: (n, huge_header.getvalue() + b"\0" * 8
                                             if n == "iou.npy" else _declare_huge(n, d),
                                             zipfile.ZIP_STORED),
        "compressed (zip bomb)": lambda n, d: (n, d, zipfile.ZIP_DEFLATED),
        "array not declared": lambda n, d: ("extra.npy" if n == "iou.npy" else n, d,
                                            zipfile.ZIP_STORED),
        "truncated": lambda n, d: (n, d[:-8] if n == "iou.npy" else d, zipfile.ZIP_STORED),
        "string dtype": lambda n, d: (n, _npy(np.array(["x" * 12] * 12))
                                      if n == "iou.npy" else d, zipfile.ZIP_STORED),
        "meta not JSON": lambda n, d: (n, _npy(np.frombuffer(b"\xff{", np.uint8))
                                       if n.startswith(treefile.META) else d,
                                       zipfile.ZIP_STORED),
        "meta nested too deep": lambda n, d: (n, _npy(np.frombuffer(deep, np.uint8))
                                              if n.startswith(treefile.META) else d,
                                              zipfile.ZIP_STORED),
        "meta too large": lambda n, d: (n, _npy(np.frombuffer(big_meta, np.uint8))
                                        if n.startswith(treefile.META) else d,
                                        zipfile.ZIP_STORED),
    }
    for name, edit in cases.items():
        bad = str(tmp_path / f"{name}.npz")
        _rewrite(good, bad, edit)
        with pytest.raises(ValueError) as e:
            DissectResult.load(bad)
        assert bad in str(e.value) and "\n" not in str(e.value), name
    assert not os.path.exists(tmp_path / "PWNED")
    for text in (b"", b"not a zip at all"):
        (tmp_path / "x.npz").write_bytes(text)
        with pytest.raises(treefile.FormatError, match="not a jaxdissect results file"):
            DissectResult.load(str(tmp_path / "x.npz"))


def test_npy_files_are_read_within_their_size(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from jaxdissect.app.results import Results
    a = np.random.default_rng(0).random((5, 3))
    np.save(tmp_path / "iou.npy", np.asfortranarray(a))
    np.testing.assert_array_equal(treefile.read_npy(str(tmp_path / "iou.npy")), a)
    header = np.lib.format.header_data_from_array_1_0(a)
    header["shape"] = (1 << 22, 1 << 22)
    with open(tmp_path / "iou.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(a.tobytes())
    with pytest.raises(ValueError, match="not a plain array of the file's size"):
        treefile.read_npy(str(tmp_path / "iou.npy"))
    with open(tmp_path / "iou.npy", "wb") as f:
        np.lib.format.write_array(f, np.array([Boom()], object), allow_pickle=True)
    (tmp_path / "report.json").write_text(json.dumps({"units": []}))
    assert Results(str(tmp_path)).dissections == {}     # skipped with a warning
    assert not os.path.exists("PWNED")
