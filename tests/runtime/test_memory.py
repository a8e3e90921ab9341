"""The dissection steps' device memory on the accelerators' kernels, checked against
XLA's accounting of the compiled steps; the batch chosen to fit a device."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxdissect.experiments.dissect import dissect
from jaxdissect.runtime import devices as sharding
from jaxdissect.runtime import memory
from jaxdissect.stats import (
    RADIX_SCHEDULE,
    IoUTally,
    RadixHistogram,
    TopK,
    TopLabels,
    image_max,
    kernels,
)
from jaxdissect.stats.checks import DataCheck
from jaxdissect.stats.upsample import Upsampler
from tests.experiments.test_dissect import LABELS, UP, assert_same, compute, random_source


def measured(b, hw, u, grid, K, L, B):
    """XLA's temporaries of each step on the statistics alone (the model's are its own)."""
    up = Upsampler.plain(hw, grid)
    args = (jnp.zeros((b, *hw, u)), jnp.zeros((b, K, *grid), jnp.int32), jnp.ones(b, bool),
            jnp.arange(b, dtype=jnp.int32))

    def one(stat, acts, seg, valid, index):
        top, images, check = stat.parts
        return sharding.Joint((top.update(acts, seg, valid, index, up),
                               images.update(image_max(acts), index, valid),
                               check.update(acts, seg, valid, index, L)))

    def radix(stat, acts, seg, valid, index):
        hist, images, check = stat.parts
        return sharding.Joint((hist.update(up(acts), valid),
                               images.update(image_max(acts), index, valid),
                               check.update(acts, seg, valid, index, L)))

    def iou(stat, acts, seg, valid, index):
        return stat.update(up(acts), jnp.zeros(u), seg, valid)

    empty = {"onepass": (one, sharding.Joint((TopLabels.empty(u, B, L, K), TopK.empty(u, 5),
                                              DataCheck.empty()))),
             "radix": (radix, sharding.Joint((RadixHistogram.empty(u, 1, *RADIX_SCHEDULE[0]),
                                               TopK.empty(u, 5), DataCheck.empty()))),
             "iou": (iou, IoUTally.empty(u, L))}
    return {name: memory.compiled_bytes(f, s, *args)["temporaries"]
            for name, (f, s) in empty.items()}


@pytest.mark.parametrize("b,hw,u,grid,K,L,B", [
    (4, (7, 7), 64, (28, 28), 1, 20, 512),
    (8, (14, 14), 96, (56, 56), 2, 40, 1024),
    (2, (4, 4), 32, (16, 16), 3, 100, 4096)])
def test_steps_stay_within_their_stated_bounds(monkeypatch, b, hw, u, grid, K, L, B):
    monkeypatch.setattr(kernels, "_MODE", ["xla"])
    got = measured(b, hw, u, grid, K, L, B)
    for step, temps in got.items():
        bound = memory.step_bound(step, batch=b, layer_hw=hw, units=u, grid=grid, layers=K,
                                  labels=L, budget=B)
        assert temps <= bound, (step, temps, bound)
        if b * grid[0] * grid[1] * u > 1e5 and step != "onepass":
            assert temps >= 0.25 * bound, (step, temps, bound)  # the bound is not vacuous


def test_auto_batch_size_is_the_largest_that_fits():
    def forward(b):
        return 1000 + 300 * b

    def step(b):
        return 50 * b

    for limit in (10_000, 123_456, 10 ** 9):
        b = memory.auto_batch_size(forward, step, limit, fraction=0.5, multiple=4, largest=512)
        assert b % 4 == 0 and 4 <= b <= 512
        assert forward(b) + step(b) <= 0.5 * limit or b == 4
        assert b == 512 or forward(b + b // 8 + 4) + step(b + b // 8 + 4) > 0.5 * limit
    with pytest.raises(ValueError, match="positive memory limit"):
        memory.auto_batch_size(forward, step, 0)


def test_dissect_with_auto_batch_fits_and_gives_the_same_result(monkeypatch):
    source = random_source()
    limit = 40 << 20
    monkeypatch.setattr(memory, "device_memory", lambda device=None: limit)

    def call(batch, p):
        return compute(batch)

    b = memory.dissect_batch_size(call, source, len(LABELS), upsample=UP, levels=(0.05,),
                                  devices=sharding.local_devices()[:1])
    assert 1 <= b <= 1024
    example = {"acts": source.arrays["acts"][:1], "seg": source.arrays["seg"][:1],
               "index": np.zeros(1, np.int32)}
    fwd = memory.forward_memory(lambda x, p: (UP(call(x, p)[0]), x["seg"]), example, None)
    assert fwd(b) + memory.step_bound("onepass", batch=b, layer_hw=(6, 6), units=4,
                                      grid=(12, 12), layers=2, labels=len(LABELS),
                                      budget=128) <= 0.7 * limit
    auto = dissect(compute, source, LABELS, upsample=UP, quantile=0.05, batch_size="auto",
                   progress=False, topk=3)
    fixed = dissect(compute, source, LABELS, upsample=UP, quantile=0.05, batch_size=7,
                    progress=False, topk=3)
    assert_same(auto, fixed)
