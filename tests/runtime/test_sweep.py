"""The sweep driver against NumPy on all the data at once: any batch size and device
count, each step traced once, resume after a kill, content-keyed caches, the atomic
write path and the process set-up flags."""

import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

from jaxdissect.runtime import cache, hosts, sweep
from jaxdissect.runtime.devices import Joint
from jaxdissect.runtime.fingerprint import data_identity, fingerprint
from jaxdissect.stats import TopK


@struct.dataclass
class Sums:
    """Per-unit integer sums and the number of examples (exact, associative)."""

    total: jax.Array
    count: jax.Array

    @classmethod
    def empty(cls, units):
        return cls(jnp.zeros(units, jnp.int32), jnp.zeros((), jnp.int32))

    def update(self, x, valid):
        return Sums(self.total + jnp.where(valid[:, None], x, 0).sum(0),
                    self.count + valid.sum(dtype=jnp.int32))

    def merge(self, other):
        return Sums(self.total + other.total, self.count + other.count)


class Arrays:
    def __init__(self, lives=None, **arrays):
        self.arrays, self.lives, self.reads = arrays, lives, []
        self.num_examples = len(next(iter(arrays.values())))

    def batch(self, start, stop):
        self.reads.append((start, stop))
        if self.lives is not None:
            self.lives -= 1
            if self.lives < 0:
                raise RuntimeError("killed")
        return {k: v[start:stop] for k, v in self.arrays.items()}

    def identity(self):
        return {"arrays": fingerprint(self.arrays)}


def data(n=29, seed=0):
    rng = np.random.default_rng(seed)
    return {"x": rng.integers(-50, 50, (n, 3)).astype(np.int32),
            "score": rng.integers(0, 9, (n, 3)).astype(np.float32)}  # ties


def step(stat, batch, scale):
    sums, top = stat.parts
    v = batch["valid"]
    return Joint((sums.update(batch["x"] * scale, v),
                  top.update(batch["score"], batch["index"], v)))


EMPTY = Joint((Sums.empty(3), TopK.empty(3, 4)))


def run(source, **kw):
    kw = {"batch_size": 5, "replicated": (jnp.int32(2),), "progress": False, **kw}
    return sweep.sweep(step, EMPTY, source, **kw)


def check(result, arrays):
    sums, top = result.parts
    np.testing.assert_array_equal(sums.total, 2 * arrays["x"].sum(0))
    assert int(sums.count) == len(arrays["x"])
    s = arrays["score"]
    for u in range(3):  # descending score, ties by lower index
        order = np.lexsort((np.arange(len(s)), -s[:, u]))[:4]
        np.testing.assert_array_equal(np.asarray(top.index)[u], order)


@pytest.mark.parametrize("batch_size", [1, 5, 8, 64])
def test_any_batch_size_and_device_count_gives_the_exact_statistic(batch_size):
    arrays = data()
    one = run(Arrays(**arrays), batch_size=batch_size, devices=jax.local_devices()[:1])
    four = run(Arrays(**arrays), batch_size=batch_size)
    check(one, arrays)
    check(four, arrays)
    for a, b in zip(jax.tree_util.tree_leaves(one), jax.tree_util.tree_leaves(four)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_step_is_traced_once_whatever_the_last_batch():
    chex.clear_trace_counter()

    @chex.assert_max_traces(n=1)
    def counted(stat, batch, scale):
        return step(stat, batch, scale)

    source = Arrays(**data(n=23))  # 5 batches of 5, the last one 3 (padded)
    sweep.sweep(counted, EMPTY, source, batch_size=5, replicated=(jnp.int32(2),),
                progress=False)
    assert len(source.reads) == 5


def test_process_slices_are_contiguous_and_cover_the_data():
    for n in (0, 1, 7, 100):
        for count in (1, 2, 3, 4, 8):
            slices = [sweep.process_slice(n, i, count) for i in range(count)]
            assert slices[0][0] == 0 and slices[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(slices, slices[1:]))
            assert max(b - a for a, b in slices) - min(b - a for a, b in slices) <= 1
    assert sweep.process_slice(10) == (0, 10)  # one process here
    with pytest.raises(ValueError, match="process index"):
        sweep.process_slice(10, 2, 2)


def test_killed_sweep_resumes_and_a_finished_one_is_not_read_again(tmp_path):
    arrays = data(seed=1)
    key = cache.content_key("test", data_identity(Arrays(**arrays)))
    with pytest.raises(RuntimeError, match="killed"):
        run(Arrays(lives=3, **arrays), cache_dir=str(tmp_path), key=key, checkpoint_every=2)
    [ckpt] = tmp_path.glob("sweep-*.npz")
    _, meta = cache.load_tree(str(ckpt), EMPTY)
    assert meta["offset"] == 10 and (meta["start"], meta["stop"]) == (0, 29)
    source = Arrays(**arrays)
    resumed = run(source, cache_dir=str(tmp_path), key=key, checkpoint_every=2)
    assert source.reads[0] == (10, 15)  # continued where the checkpoint stopped
    check(resumed, arrays)
    again = Arrays(**arrays)
    check(run(again, cache_dir=str(tmp_path), key=key), arrays)
    assert again.reads == []
    # another layout (batch size) is another file: never mixed into this one
    check(run(Arrays(**arrays), cache_dir=str(tmp_path), key=key, batch_size=4), arrays)
    assert len(list(tmp_path.glob("sweep-*.npz"))) == 2
    with pytest.raises(ValueError, match="needs a key"):
        run(Arrays(**arrays), cache_dir=str(tmp_path))


def test_fingerprint_sees_every_byte_and_name():
    params = {"conv": {"kernel": jnp.arange(6.0).reshape(2, 3), "bias": jnp.zeros(3)}}
    base = fingerprint(params)
    assert fingerprint(jax.tree_util.tree_map(lambda x: x + 0, params)) == base  # new arrays
    changed = {"conv": {**params["conv"], "bias": params["conv"]["bias"].at[1].set(1e-7)}}
    assert fingerprint(changed) != base
    assert fingerprint({"conv2": params["conv"]}) != base
    assert fingerprint(jax.tree_util.tree_map(lambda x: x.astype(jnp.float16), params)) != base
    a = np.zeros(3, np.float32)
    before = fingerprint(a)
    a[0] = 1  # NumPy arrays are mutable: hashed every call
    assert fingerprint(a) != before
    assert cache.content_key(1, a=[1, 2]) == cache.content_key(1, a=[1, 2])
    assert cache.content_key(1, a=[1, 2]) != cache.content_key(1, a=[1, 3])


def test_sources_state_their_identity(tmp_path):
    from jaxdissect.data.source import ZSource
    from jaxdissect.world import WorldSource
    assert ZSource(10, 4, 1).identity() != ZSource(10, 4, 2).identity()
    assert ZSource(10, 4, 1).identity() == ZSource(10, 4, 1).identity()
    w = WorldSource(8, seed=3, size=32).identity()
    assert w == WorldSource(8, seed=3, size=32, threads=1).identity()
    assert w != WorldSource(9, seed=3, size=32).identity()
    assert w != WorldSource(8, seed=4, size=32).identity()
    from PIL import Image

    from jaxdissect.data.folder import ImageFolderSource
    (tmp_path / "a").mkdir()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / "a" / "x.png")
    first = ImageFolderSource(str(tmp_path), size=(8, 8)).identity()
    assert first != ImageFolderSource(str(tmp_path), size=(4, 4)).identity()
    assert first != ImageFolderSource(str(tmp_path), size=(8, 8), policy="stretch").identity()
    Image.new("RGB", (9, 8), (10, 20, 30)).save(tmp_path / "a" / "x.png")  # rewritten
    assert first != ImageFolderSource(str(tmp_path), size=(8, 8)).identity()
    with pytest.warns(UserWarning, match="no identity"):
        data_identity(type("Bare", (), {"num_examples": 2,
                                        "batch": lambda self, a, b: {"x": np.arange(a, b)}})())


def test_atomic_write_keeps_the_old_file_and_cleans_dead_temporaries(tmp_path):
    path = str(tmp_path / "r.json")
    cache.write_text(path, "old")
    dead = tmp_path / ".r.json.tmp-999-dead"  # what a killed write leaves
    dead.write_text("torn")

    def dies(f):
        f.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.atomic_write(path, dies)
    assert open(path).read() == "old"
    assert sorted(os.listdir(tmp_path)) == ["r.json"]  # dead and failed temporaries gone
    cache.write_text(path, "new")
    assert open(path).read() == "new"


def test_single_process_set_up_and_bad_flags(monkeypatch):
    for var in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID",
                "SLURM_JOB_ID", "SLURM_PROCID"):
        monkeypatch.delenv(var, raising=False)
    assert hosts.initialize() is False  # nothing given, no cluster: one process
    assert hosts.initialize(num_processes=1) is False
    assert hosts.is_writer() and hosts.process_count() == 1
    with pytest.raises(ValueError, match="--process-id 2 must be below"):
        hosts.initialize("127.0.0.1:1234", 2, 2)
    with pytest.raises(ValueError, match="ADDRESS:PORT"):
        hosts.initialize("localhost", 2, 0)
    monkeypatch.setenv("JAX_PROCESS_ID", "x")
    with pytest.raises(ValueError, match="JAX_PROCESS_ID must be an integer"):
        hosts.initialize()


def test_slurm_environment_is_detected(monkeypatch):
    for var, value in {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "node[1-2]",
                       "SLURM_NODELIST": "node[1-2]", "SLURM_NTASKS": "2",
                       "SLURM_PROCID": "1", "SLURM_LOCALID": "0"}.items():
        monkeypatch.setenv(var, value)
    assert hosts.detected_cluster() == "SlurmCluster"
    monkeypatch.delenv("SLURM_PROCID")  # an salloc shell, not a task of srun
    assert hosts.detected_cluster() is None
