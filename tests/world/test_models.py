"""World models: the SegNet call contract, the segmenter wrapper, and the shipped
weights (load, run, and reduced versions of the accuracy figures on fresh seeds)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdissect.edits import Edit
from jaxdissect.models.segnet import SegNet
from jaxdissect.segmentation.base import Segmenter
from jaxdissect.taps import run
from jaxdissect.world import LABELS, WorldSource
from jaxdissect.world.classifier import DEFAULT_DIR as CLS_DIR
from jaxdissect.world.classifier import classify, load_classifier
from jaxdissect.world.segmenter import DEFAULT_DIR as SEG_DIR
from jaxdissect.world.segmenter import (
    SEGMENTER_ARGS,
    WorldSegmenter,
    color_labels,
    head_to_label,
    label_to_head,
    load_segmenter,
)
from jaxdissect.world.train.classifier import segmenter_accuracy
from jaxdissect.world.vocab import layer_ids


def _random_params(net, x, seed=0):
    """Params of ``net`` drawn in NumPy (compiling Flax's random init of even a tiny
    U-Net takes XLA:CPU tens of seconds)."""
    shapes = jax.eval_shape(lambda: net.init(jax.random.key(0), x)["params"])
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(0.3 * rng.standard_normal(s.shape), s.dtype),
                        shapes)


@pytest.fixture(scope="module")
def tiny():
    net = SegNet(widths=(4, 6, 8), head_sizes=(3, 2))
    x = jnp.asarray(np.random.default_rng(0).random((2, 16, 16, 3)), jnp.float32)
    return net, _random_params(net, x), x


def _conv3x3_relu(x, kernel, bias):
    """NumPy oracle: 'same' 3x3 convolution + ReLU on NHWC."""
    p = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    h, w = x.shape[1:3]
    out = sum(np.einsum("bhwi,io->bhwo", p[:, dy:dy + h, dx:dx + w], kernel[dy, dx])
              for dy in range(3) for dx in range(3)) + bias
    return np.maximum(out, 0)


def test_segnet_shapes_capture_and_oracle(tiny):
    net, params, x = tiny
    out, acts = segnet_run(net, params, x, capture=("enc1", "enc3", "dec1"))
    assert out.shape == (2, 16, 16, 5)
    assert acts["enc1"].shape == (2, 16, 16, 4) and acts["enc3"].shape == (2, 4, 4, 8)
    assert set(acts) == {"enc1", "enc3", "dec1"}
    p = jax.tree.map(np.asarray, params)
    want = _conv3x3_relu(_conv3x3_relu(np.asarray(x) * 2 - 1, p["enc1_a"]["kernel"],
                                       p["enc1_a"]["bias"]),
                         p["enc1_b"]["kernel"], p["enc1_b"]["bias"])
    np.testing.assert_allclose(acts["enc1"], want, rtol=1e-4, atol=1e-5)
    # the head is a 1x1 conv of dec1
    head = p["head"]
    np.testing.assert_allclose(
        out, np.einsum("bhwi,io->bhwo", np.asarray(acts["dec1"]), head["kernel"][0, 0])
        + head["bias"], rtol=1e-4, atol=1e-5)
    assert [h.shape[-1] for h in net.split_heads(out)] == [3, 2]
    assert net.layer_names == ("enc1", "enc2", "enc3", "dec2", "dec1", "logits")


def segnet_run(net, params, x, capture=(), edits=None, feed=None):
    """SegNet under taps by its research names (``layer_paths``)."""
    return run(net.apply, {"params": params}, x, capture=capture, edits=edits, feed=feed,
               aliases=net.layer_paths)


def test_segnet_edits_and_feed(tiny):
    net, params, x = tiny
    _, acts = segnet_run(net, params, x, capture=("enc2", "dec2"))
    # feeding enc2 its own output reproduces the decoder (the encoder still runs for
    # the skips the decoder reads)
    _, fed = segnet_run(net, params, x, feed={"enc2": acts["enc2"]}, capture=("dec2",))
    np.testing.assert_allclose(fed["dec2"], acts["dec2"], rtol=1e-6)
    # zeroing every unit of dec1 leaves only the head's bias
    edit = {"dec1": Edit(alpha=jnp.ones(4), value=jnp.zeros(4))}
    out, acts = segnet_run(net, params, x, capture=("dec1",), edits=edit)
    assert float(jnp.abs(acts["dec1"]).max()) == 0.0
    np.testing.assert_allclose(out, np.broadcast_to(params["head"]["bias"], out.shape),
                               atol=1e-6)
    # an edit on one encoder unit changes the output
    e = {"enc2": Edit(alpha=jnp.eye(6)[0], value=jnp.full(6, 5.0))}
    assert not np.allclose(segnet_run(net, params, x, edits=e)[0],
                           net.apply({"params": params}, x))
    with pytest.raises(KeyError, match="conv5_3"):
        run(net.apply, {"params": params}, x, capture=("conv5_3",))
    with pytest.raises(ValueError, match="divisible"):
        net.apply({"params": params}, x[:, :15])


def test_package_exports_loaders():
    import jaxdissect.world as world
    assert world.load_classifier is load_classifier and world.load_segmenter is load_segmenter
    with pytest.raises(AttributeError):
        _ = world.no_such_name


def test_head_label_mapping_round_trips():
    for layer in ("object", "part", "material"):
        ids = head_to_label(layer)
        assert ids[0] == 0 and list(ids[1:]) == list(layer_ids(layer))
        assert np.array_equal(label_to_head(layer)[ids], np.arange(ids.size))


def test_colour_labels_match_renderer():
    b = WorldSource(8, seed=99).batch(0, 8)
    got = np.asarray(color_labels(jnp.asarray(b["image"])))
    assert np.array_equal(got, b["seg"][:, 3])


def test_world_segmenter_protocol_and_resize(tiny):
    net = SegNet(widths=(4, 6, 8), head_sizes=SEGMENTER_ARGS["head_sizes"])
    params = _random_params(net, jnp.zeros((1, 16, 16, 3)), seed=1)
    seg = WorldSegmenter(net, params, size=16)
    assert isinstance(seg, Segmenter) and seg.num_layers == 4 and seg.labels is LABELS
    out = np.asarray(seg(np.random.default_rng(0).random((3, 8, 8, 3))))
    assert out.shape == (3, 4, 16, 16) and out.dtype == np.int32
    for k, layer in enumerate(("object", "part", "material", "color")):
        assert set(np.unique(out[:, k]).tolist()) <= set(layer_ids(layer).tolist()) | {0}
    with pytest.raises(ValueError, match="images"):
        seg(np.zeros((3, 8, 8)))


def test_segmenter_of_another_vocabulary_is_refused(tmp_path):
    import json
    sizes = list(SEGMENTER_ARGS["head_sizes"])
    arch = {"widths": [4, 6, 8], "head_sizes": [sizes[0], sizes[1] - 1, sizes[2]]}  # a part less
    (tmp_path / "config.json").write_text(json.dumps({"arch": arch, "image_size": 16}))
    (tmp_path / "params").mkdir()
    with pytest.raises(ValueError, match="another vocabulary"):
        load_segmenter(tmp_path)


# ---- shipped weights ------------------------------------------------------------

needs_weights = pytest.mark.skipif(
    not ((CLS_DIR / "config.json").is_file() and (SEG_DIR / "config.json").is_file()),
    reason="shipped world weights are missing")


@needs_weights
def test_shipped_weights_size_and_config():
    total = sum(f.stat().st_size for f in CLS_DIR.parent.rglob("*") if f.is_file())
    assert total <= 25 * 2**20, f"weights/world holds {total / 2**20:.1f} MB"
    for d in (CLS_DIR, SEG_DIR):
        cfg = json.loads((d / "config.json").read_text())
        for key in ("arch", "seed", "data_seed", "steps", "heldout"):
            assert key in cfg, (d, key)


@pytest.mark.slow
@needs_weights
def test_shipped_classifier_heldout_accuracy():
    """Reduced version of the >= 90% figure: 220 images of a fresh world seed."""
    model, params = load_classifier()
    b = WorldSource(220, seed=31337).batch(0, 220)
    logits = classify(model, params, b["image"])
    assert logits.shape == (220, 11)
    acc = float((np.argmax(np.asarray(logits), axis=1) == b["label"]).mean())
    assert acc >= 0.85, acc
    _, acts = run(model.apply, {"params": params}, jnp.zeros((1, 64, 64, 3)),
                  capture=("conv5_3",))
    assert acts["conv5_3"].shape == (1, 4, 4, 128)


@needs_weights
def test_shipped_segmenter_heldout_accuracy():
    """Reduced version of the >= 90% / 80% figures: 100 images of a fresh seed."""
    seg = load_segmenter()
    acc = segmenter_accuracy(seg, WorldSource(100, seed=31338), 100)
    assert acc["object_pixel_accuracy"] >= 0.87, acc
    assert acc["part_pixel_accuracy"] >= 0.75, acc
    assert acc["material_pixel_accuracy"] >= 0.75, acc
    assert acc["color_pixel_accuracy"] == 1.0, acc
    # 32x32 renders (the generator's size) are resized to 64x64; scored against the
    # same scenes' 64x64 ground truth (scene geometry does not depend on render size)
    small = WorldSource(50, seed=31340, size=32).batch(0, 50)
    truth = WorldSource(50, seed=31340, size=64).batch(0, 50)["seg"]
    pred = np.asarray(seg(small["image"]))
    assert pred.shape == truth.shape
    assert (pred[:, 0] == truth[:, 0]).mean() >= 0.85


def test_learning_rate_schedule():
    from jaxdissect.world.train.classifier import learning_rate
    assert learning_rate(1.0, 0, 100, 10, 0.0, 60.0) == pytest.approx(0.1)
    assert learning_rate(1.0, 9, 100, 10, 0.0, 60.0) == pytest.approx(1.0)
    # half way by steps, or by time, is the cosine's midpoint
    mid = 0.02 + 0.98 * 0.5
    assert learning_rate(1.0, 50, 100, 10, 1.0, 60.0) == pytest.approx(mid)
    assert learning_rate(1.0, 20, 100, 10, 30.0, 60.0) == pytest.approx(mid)
    assert learning_rate(1.0, 20, 100, 10, 90.0, 60.0) == pytest.approx(0.02)


@pytest.mark.slow
@needs_weights
def test_shipped_classifier_dissection_against_truth_and_segmenter():
    """Reduced version of the dissection figures (100 fresh images): >= 40% of conv5_3
    units labelled with IoU > 0.04 covering >= 8 concepts, and the trained segmenter's
    output labels those units as the ground truth does."""
    from jaxdissect.world.measure import (
        agreement,
        dissect_classifier,
        dissection_summary,
        side_by_side,
    )
    model, params = load_classifier()
    src = WorldSource(100, seed=31339)
    truth = dissect_classifier(model, params, src)
    s = dissection_summary(truth)
    assert s["labelled_fraction"] >= 0.4 and s["num_concepts"] >= 8, s
    # the IoU of a unit's label recomputed in NumPy from the exact counts
    u = int(np.argmax(truth.best_iou))
    lab = truth.best_label[u]
    inter = truth.intersections[u, lab]
    np.testing.assert_allclose(
        truth.best_iou[u], inter / (truth.unit_area[u] + truth.label_area[lab] - inter))
    segd = dissect_classifier(model, params, src, load_segmenter())
    assert agreement(side_by_side(truth, segd)) >= 0.8


@pytest.mark.slow
@needs_weights
def test_shipped_classifier_ablation_finding():
    """Reduced version of the demo's classifier-ablation finding, on fresh
    seeds: ranked on 300 images of one, measured on 300 of another, removing each
    class's 20 most important conv5_3 units moves mean balanced accuracy at least
    halfway to chance, and keeping only them retains >= 80% of the baseline (measured
    at 1,000 images on four seed pairs: 66-80% of the way, 96-97% kept)."""
    from jaxdissect.experiments import ablate
    from jaxdissect.world import classifier
    assert json.loads((CLS_DIR / "config.json").read_text())["retrained_top"]["act_l1"] > 0
    split = ablate.split_classifier(classifier.spec(), "conv5_3")
    res = ablate.run_experiment(split, WorldSource(300, seed=31341), WorldSource(300, seed=31342),
                                128, 11, ks=[20], progress=False)
    s = res.summary()
    assert s["mean_baseline_ba"] >= 0.95, s
    assert s["fraction_of_way_to_chance"] >= 0.5, s
    assert s["kept_fraction_of_baseline"] >= 0.8, s
    assert s["kept_share_of_margin"] >= 0.5, s
    for f in res.findings():    # above chance, so both apply; intervals within range
        assert f.applies and f.in_bounds(), f.plain()
