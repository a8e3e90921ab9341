"""``runtime.computed``: arrays made outside the sweeps are computed once per run and
its settings, read back exactly, and never served to another run or setting."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxdissect.runtime.cache import run_cache
from jaxdissect.runtime.computed import computed

TEMPLATE = {"images": jax.ShapeDtypeStruct((3, 4, 4, 3), np.float32),
            "masks": jax.ShapeDtypeStruct((2, 4, 4), np.bool_)}


def make_counted(calls, seed=0):
    def make():
        calls.append(seed)
        rng = np.random.default_rng(seed)
        return {"images": rng.random((3, 4, 4, 3), np.float32),
                "masks": rng.random((2, 4, 4)) > 0.5}
    return make


class Data:
    num_examples = 2

    def identity(self):
        return {"data": "two examples"}


def cache_of(folder, layer="a"):
    return run_cache(str(folder), model={"w": np.arange(3.0)}, layer=layer, data=Data(),
                     segmenter="truth", size=1)


def test_computed_once_then_read_back_exactly(tmp_path):
    calls = []
    first = computed(cache_of(tmp_path), "pics", TEMPLATE, make_counted(calls), which=[1, 2])
    again = computed(cache_of(tmp_path), "pics", TEMPLATE, make_counted(calls, 9),
                     which=[1, 2])
    assert calls == [0]
    for k in TEMPLATE:
        assert again[k].dtype == first[k].dtype
        np.testing.assert_array_equal(again[k], first[k])


def test_another_run_or_setting_computes_its_own(tmp_path):
    calls = []
    computed(cache_of(tmp_path), "pics", TEMPLATE, make_counted(calls), which=[1, 2])
    other = computed(cache_of(tmp_path, layer="b"), "pics", TEMPLATE,
                     make_counted(calls, 1), which=[1, 2])
    setting = computed(cache_of(tmp_path), "pics", TEMPLATE, make_counted(calls, 2),
                       which=[1, 3])
    assert calls == [0, 1, 2]
    np.testing.assert_array_equal(other["images"],
                                  make_counted([], 1)()["images"])
    np.testing.assert_array_equal(setting["images"],
                                  make_counted([], 2)()["images"])


def test_without_a_cache_it_computes_every_time(tmp_path):
    calls = []
    computed(None, "pics", TEMPLATE, make_counted(calls))
    computed(None, "pics", TEMPLATE, make_counted(calls))
    assert calls == [0, 0]


def test_arrays_that_do_not_fit_the_template_are_refused(tmp_path):
    def wrong():
        return {"images": np.zeros((3, 4, 4, 3), np.float64),
                "masks": np.zeros((2, 4, 4), bool)}
    with pytest.raises(ValueError, match="pics: computed arrays do not match"):
        computed(cache_of(tmp_path), "pics", TEMPLATE, wrong)
    assert list(tmp_path.iterdir()) == []
