"""``JAXDISSECT_KERNELS=xla``: the accelerators' kernels (``lax.top_k`` merges, XLA
scatter-add histograms, XLA blends) run end to end on the CPU and give the native
kernels' results: bitwise where the statistics' inputs are identical, labels,
ablation and intervention results identical through the commands."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jaxdissect.experiments.dissect import DissectResult
from jaxdissect.stats import kernels

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXACT = ("thresholds", "iou", "best_label", "best_iou", "intersections", "unit_area",
         "label_area", "topk_values", "topk_images")


def test_mode_is_read_once_and_checked(monkeypatch):
    monkeypatch.setattr(kernels, "_MODE", [])
    monkeypatch.setenv(kernels.ENV, "gpu")
    with pytest.raises(ValueError, match="JAXDISSECT_KERNELS='gpu'"):
        kernels.mode()
    monkeypatch.setenv(kernels.ENV, "XLA")
    assert kernels.mode() == "xla"
    monkeypatch.setenv(kernels.ENV, "native")
    assert kernels.mode() == "xla"  # fixed for the life of the process
    calls = []
    out = kernels.platform_dependent(3, cpu=lambda x: calls.append("cpu"),
                                     default=lambda x: calls.append(("xla", x)))
    assert out is None and calls == [("xla", 3)]


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    out = {}
    for mode in kernels.MODES:
        d = tmp_path_factory.mktemp(mode)
        env = dict(os.environ, JAXDISSECT_KERNELS=mode, PYTHONPATH=ROOT)
        done = subprocess.run([sys.executable, "-m", "tests.support.kernels_worker", str(d)],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
        assert (d / "kernels.txt").read_text() == mode
        out[mode] = d
    return out["native"], out["xla"]


@pytest.mark.slow
@pytest.mark.parametrize("path", ["onepass", "radix"])
def test_statistics_are_bitwise_identical_on_identical_inputs(both, path):
    native, xla = (DissectResult.load(str(d / f"lib-identity-{path}.npz")) for d in both)
    assert (native.kernels, xla.kernels) == ("native", "xla")
    for f in EXACT:
        np.testing.assert_array_equal(getattr(native, f), getattr(xla, f), err_msg=f)
    for q in native.levels:
        np.testing.assert_array_equal(native.levels[q], xla.levels[q])


@pytest.mark.slow
@pytest.mark.parametrize("path", ["onepass", "radix"])
def test_upsampled_statistics_agree_to_float_rounding(both, path):
    """The native upsampling rounds each product before the sum; XLA's CPU blends may
    fuse them: a threshold can move by an ulp, a pixel at it flip. Labels do not."""
    native, xla = (DissectResult.load(str(d / f"lib-upsampled-{path}.npz")) for d in both)
    np.testing.assert_array_max_ulp(native.thresholds, xla.thresholds, maxulp=4)
    np.testing.assert_allclose(native.iou, xla.iou, rtol=0, atol=0.01)
    np.testing.assert_array_equal(native.best_label, xla.best_label)
    np.testing.assert_array_equal(native.topk_images, xla.topk_images)


def _json(path):
    with open(path) as f:
        data = json.load(f)
    return data


@pytest.mark.slow
def test_world_dissection_labels_and_ious_agree(both):
    native, xla = (_json(d / "dissect" / "report.json") for d in both)
    assert (native["dissection"]["kernels"], xla["dissection"]["kernels"]) == ("native", "xla")
    nu, xu = native["dissection"]["units"], xla["dissection"]["units"]
    assert len(nu) == len(xu) == 128
    t_native = np.array([u["threshold"] for u in nu], np.float32)
    t_xla = np.array([u["threshold"] for u in xu], np.float32)
    np.testing.assert_array_max_ulp(t_native, t_xla, maxulp=4)
    assert [u["label"] for u in nu] == [u["label"] for u in xu]
    assert [u["labelled"] for u in nu] == [u["labelled"] for u in xu]
    assert [u["top_images"] for u in nu] == [u["top_images"] for u in xu]
    iou_native, iou_xla = (np.load(d / "dissect" / "iou.npy") for d in both)
    np.testing.assert_allclose(iou_native, iou_xla, rtol=0, atol=0.01)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ablate/ablate/ablation.json",
                                  "intervene/intervene/intervention.json"])
def test_ablation_and_intervention_results_are_identical(both, name):
    native, xla = (_json(d / name) for d in both)
    assert (native.pop("kernels"), xla.pop("kernels")) == ("native", "xla")
    assert native == xla
