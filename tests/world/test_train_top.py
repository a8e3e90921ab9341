"""Retraining the world classifier's top on cached features: the cache against direct
forwards of each image and its mirror; one training step against the same loss
(cross-entropy + L1 on conv5_3) differentiated by PyTorch and put through the
optimiser's first-step formula; the lower layers stay bit-for-bit frozen."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxdissect.models.vgg16 import VGG16, preprocess
from jaxdissect.taps import run as tap
from jaxdissect.world import WorldSource
from jaxdissect.world.train.top import cached_features, train_top, trainable_names

MODEL = VGG16(widths=(2, 3, 3, 4, 5), fc_width=6, num_classes=4, pool_hw=(2, 2))


def _params(seed=0):
    shapes = jax.eval_shape(
        lambda: MODEL.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)))["params"])
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(0.3 * rng.standard_normal(s.shape), s.dtype),
                        shapes)


@pytest.mark.slow
def test_cached_features_are_the_layer_output_of_images_and_mirrors():
    params = _params()
    src = WorldSource(5, seed=7)
    feats, labels = cached_features(MODEL, params, src, "conv5_2", 5, flips=True, batch=3)
    b = src.batch(0, 5)
    want, want_y = [], []
    for a, z in ((0, 3), (3, 5)):  # per batch: the images, then their mirrors
        for x in (b["image"][a:z], np.flip(b["image"][a:z], axis=2)):
            want.append(np.asarray(tap(MODEL.apply, {"params": params}, preprocess(jnp.asarray(
                np.ascontiguousarray(x))), capture="conv5_2")[1]["conv5_2"]))
            want_y.append(b["label"][a:z])
    np.testing.assert_allclose(feats, np.concatenate(want), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(labels, np.concatenate(want_y))
    assert feats.shape == (10, 4, 4, 5)
    plain, _ = cached_features(MODEL, params, src, "conv5_2", 5, flips=False)
    np.testing.assert_allclose(plain, np.concatenate([want[0], want[2]]), rtol=1e-5, atol=1e-6)


def _torch_grads(p, feats, labels, act_l1):
    """Gradients of cross-entropy + act_l1 * mean(relu(conv5_3)) over the tail
    conv5_3 -> pool5 -> fc6 -> fc7 -> fc8a, written in PyTorch."""
    t = {f"{k}.{n}": torch.tensor(np.asarray(v), requires_grad=True)
         for k in ("conv5_3", "fc6", "fc7", "fc8a") for n, v in p[k].items()}
    x = torch.tensor(feats).permute(0, 3, 1, 2)
    a = torch.relu(torch.nn.functional.conv2d(
        x, t["conv5_3.kernel"].permute(3, 2, 0, 1), t["conv5_3.bias"], padding=1))
    h = torch.nn.functional.max_pool2d(a, 2).flatten(1)           # channel-major
    h = torch.relu(h @ t["fc6.weight"].T + t["fc6.bias"])
    h = torch.relu(h @ t["fc7.weight"].T + t["fc7.bias"])
    logits = h @ t["fc8a.weight"].T + t["fc8a.bias"]
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor(labels).long())
    (loss + act_l1 * a.mean()).backward()
    return {k: v.grad.numpy().astype(np.float64) for k, v in t.items()}


@pytest.mark.slow
@pytest.mark.parametrize("act_l1", [0.0, 3.0])
def test_one_step_matches_torch_gradient_and_freezes_lower_layers(act_l1):
    base = _params(1)
    rng = np.random.default_rng(2)
    m = 12
    feats = rng.random((m, 4, 4, 5), dtype=np.float32)
    labels = rng.integers(0, 4, m).astype(np.int32)
    kw = dict(after="conv5_2", act_l1=act_l1, seed=3, batch=m, lr=0.1, warmup=10,
              weight_decay=0.01, log=lambda msg: None)
    p0, _ = train_top(MODEL, base, feats, labels, steps=0, **kw)
    p1, info = train_top(MODEL, base, feats, labels, steps=1, **kw)
    assert info["steps_done"] == 1
    top = trainable_names(MODEL, "conv5_2")
    assert top == ("conv5_3", "fc6", "fc7", "fc8a")
    for name in base:
        if name not in top:  # frozen: the very same numbers
            for k in base[name]:
                np.testing.assert_array_equal(np.asarray(p1[name][k]), np.asarray(base[name][k]))
    g = _torch_grads(p0, feats, labels, act_l1)
    norm = np.sqrt(sum((v ** 2).sum() for v in g.values()))
    rate = 0.1 * 1 / 10                                  # first warm-up step
    for key, gk in g.items():
        layer, n = key.split(".")
        gc = gk * min(1.0, 1.0 / norm)                   # clip by global norm 1
        adam = gc / (np.abs(gc) + 1e-8)                  # Adam's first step
        w0 = np.asarray(p0[layer][n], np.float64)
        step = (w0 - np.asarray(p1[layer][n], np.float64)) / rate - 0.01 * w0
        sure = np.abs(gc) > 1e-5                         # sign well above float noise
        assert sure.mean() > 0.3, key
        np.testing.assert_allclose(step[sure], adam[sure], atol=2e-3, err_msg=key)
        assert np.all(np.abs(step) <= 1 + 1e-3), key


@pytest.mark.slow
def test_l1_penalty_makes_conv5_3_sparser_and_training_learns():
    base = _params(4)
    rng = np.random.default_rng(5)
    m = 64
    labels = rng.integers(0, 4, m).astype(np.int32)
    feats = 0.1 * rng.random((m, 4, 4, 5), dtype=np.float32)
    feats[np.arange(m), :, :, labels] += 1.0                     # class k: channel k on

    def fit(act_l1):
        p, _ = train_top(MODEL, base, feats, labels, act_l1=act_l1, seed=0, steps=150,
                         batch=16, lr=1e-2, warmup=5, weight_decay=0.0, log=lambda m: None)
        placeholder = jnp.zeros((len(feats), 64, 64, 3))
        logits, acts = tap(MODEL.apply, {"params": p}, placeholder,
                           feed={"conv5_2": jnp.asarray(feats)}, capture=("conv5_3",))
        return (np.asarray(logits).argmax(1) == labels).mean(), float(acts["conv5_3"].mean())

    acc0, act0 = fit(0.0)
    acc1, act1 = fit(1.0)
    assert acc0 == 1.0 and acc1 == 1.0, (acc0, acc1)
    assert act1 < 0.5 * act0, (act0, act1)
