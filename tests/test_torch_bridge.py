"""torch modules as JAX functions: the torchax / torchvision import fixes, layouts, and
captures, edits, feed, vmap, grad and eval mode on a small torch CNN and token model
(torch itself is the oracle)."""

import importlib.util
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if importlib.util.find_spec("torchax") is None:     # imported through torch_compat
    pytest.skip("torchax is not installed", allow_module_level=True)
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from jaxdissect import torch_bridge, torch_compat  # noqa: E402
from jaxdissect.edits import Edit, zero_units  # noqa: E402
from jaxdissect.spec import ModelSpec  # noqa: E402
from jaxdissect.torch_bridge import Layout, infer_layout, token_grid  # noqa: E402


class SmallCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = torch.nn.BatchNorm2d(8)
        self.conv2 = torch.nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.drop = torch.nn.Dropout(0.5)
        self.fc = torch.nn.Linear(16, 5)

    def forward(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))
        h = torch.relu(self.conv2(h))
        return self.fc(self.drop(h.mean((2, 3))))


class SmallTokens(torch.nn.Module):
    """A class token and 2x4 patch tokens (8x16 input, 4x4 patches)."""

    num_prefix_tokens = 1

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Conv2d(3, 6, 4, stride=4)
        self.cls = torch.nn.Parameter(torch.randn(1, 1, 6))
        self.block = torch.nn.Linear(6, 6)
        self.head = torch.nn.Linear(6, 3)

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(len(t), -1, -1), t], 1)
        t = self.block(t)
        return self.head(t[:, 0] + t[:, 1:].mean(1))


def small_cnn(seed=0):
    torch.manual_seed(seed)
    m = SmallCNN()
    with torch.no_grad():
        m.bn1.running_mean.uniform_(-0.5, 0.5)
        m.bn1.running_var.uniform_(0.5, 1.5)
    return m


def torch_out(m, x_nhwc, hooks=()):
    hs = [m.get_submodule(k).register_forward_hook(f) for k, f in hooks]
    try:
        with torch.no_grad():
            return m(torch.tensor(x_nhwc.transpose(0, 3, 1, 2).copy())).numpy()
    finally:
        for h in hs:
            h.remove()


X = np.random.RandomState(0).rand(2, 12, 12, 3).astype(np.float32)


def cnn_spec(m):
    return ModelSpec.from_torch(m, kind="classifier", input_size=(12, 12),
                                layers={"conv": "conv2"}, default_layer="conv",
                                mean=(0, 0, 0), std=(1, 1, 1))


def test_torchax_imports_with_this_torch_and_linear_takes_keywords():
    tx = torch_compat.torchax()
    assert tx.__version__
    # every placeholder stands for an overload this torch lacks
    for op, overload in torch_compat.REMOVED_OVERLOADS:
        packet = getattr(torch.ops.aten, op.split("::")[1])
        assert not hasattr(packet, overload), (op, overload)
    assert torch.backends.mha.get_fastpath_enabled()     # restored after the import
    assert "ENABLE_RUNTIME_UPTIME_TELEMETRY" not in os.environ
    from torchax import interop

    def f(x, w):
        with tx.default_env():
            tx_, tw = interop.torch_view((x, w))
            return interop.jax_view(torch.nn.functional.linear(tx_, weight=tw))
    x, w = np.ones((2, 3), np.float32), np.arange(12, dtype=np.float32).reshape(4, 3)
    np.testing.assert_allclose(f(jnp.asarray(x), jnp.asarray(w)), x @ w.T)


def test_torchvision_imports():
    tv = torch_compat.torchvision()
    assert tv.models.resnet18(num_classes=3).eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 3)


def test_layouts_round_trip_and_inference():
    y = np.random.RandomState(0).randn(2, 5, 3, 4).astype(np.float32)
    lay = Layout("nchw")
    m = lay.to_map(jnp.asarray(y))
    assert m.shape == (2, 3, 4, 5)
    np.testing.assert_array_equal(lay.from_map(m, None), y)
    tokens = jnp.asarray(np.random.RandomState(1).randn(2, 1 + 6, 4).astype(np.float32))
    lay = Layout("tokens", 1)
    m = lay.to_map(tokens, aspect=2 / 3)
    assert m.shape == (2, 2, 3, 4)
    np.testing.assert_array_equal(lay.from_map(m, tokens), tokens)
    assert token_grid(196) == (14, 14) and token_grid(8, 0.5) == (2, 4)
    assert infer_layout((2, 512, 7, 7), (224, 224)) == Layout("nchw")
    assert infer_layout((2, 7, 7, 768), (224, 224)) == Layout("nhwc")
    assert infer_layout((2, 197, 768), (224, 224), 1) == Layout("tokens", 1)
    assert infer_layout((2, 196, 768), (224, 224), 0) == Layout("tokens", 0)
    assert infer_layout((2, 10), (224, 224)) == Layout("vector")
    with pytest.raises(ValueError, match="layout must be one of"):
        Layout("nchwx")


def test_logits_captures_and_edits_match_torch():
    m = small_cnn()
    m.train()                                 # the spec runs eval mode all the same
    spec = cnn_spec(m)
    out, acts = jax.jit(lambda p, x: spec.run(p, x, capture=("conv", "bn1")))(spec.params, X)
    assert m.training and m.drop.training     # and leaves the module's modes alone
    m.eval()
    got = {}
    ref = torch_out(m, X, [("conv2", lambda mod, i, o: got.__setitem__("c", o))])
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    assert acts["conv"].shape == (2, 6, 6, 16)
    np.testing.assert_allclose(acts["conv"], got["c"].numpy().transpose(0, 2, 3, 1),
                               rtol=1e-5, atol=1e-6)
    assert acts["bn1"].shape == (2, 12, 12, 8)

    edit = Edit(alpha=jnp.zeros((16,)).at[3].set(1.0), value=jnp.full((16,), 2.0))
    out_e, acts_e = spec.run(spec.params, X, capture=("conv",), edits={"conv": edit})
    np.testing.assert_allclose(acts_e["conv"][..., 3], 2.0)

    def hook(mod, i, o):
        o = o.clone()
        o[:, 3] = 2.0
        return o
    np.testing.assert_allclose(out_e, torch_out(m, X, [("conv2", hook)]), rtol=1e-5,
                               atol=1e-6)
    assert not m.conv2._forward_hooks          # hooks live for one call only


def test_feed_resumes_and_vmap_grad_fingerprint():
    m = small_cnn()
    spec = cnn_spec(m)
    out, acts = spec.run(spec.params, X, capture=("conv",))
    np.testing.assert_allclose(spec.resume(spec.params, "conv", acts["conv"]), out,
                               rtol=1e-5, atol=1e-6)
    # vmap over a stack of single-unit ablations = one call per unit
    stack = jax.vmap(lambda u: zero_units(u[None], 16))(jnp.arange(4))
    sweep = jax.jit(jax.vmap(lambda e: spec.run(spec.params, X, edits={"conv": e})[0]))(stack)
    for u in range(4):
        np.testing.assert_allclose(
            sweep[u], spec.run(spec.params, X, edits={"conv": zero_units([u], 16)})[0],
            rtol=1e-5, atol=1e-6)
    # grad with respect to the weights, against torch autograd
    floats = {k: v for k, v in spec.params.items() if jnp.issubdtype(v.dtype, jnp.floating)}
    g = jax.grad(lambda f: spec.run({**spec.params, **f}, X)[0].sum())(floats)
    m.eval()
    m.zero_grad()
    m(torch.tensor(X.transpose(0, 3, 1, 2).copy())).sum().backward()
    np.testing.assert_allclose(g["conv1.weight"], m.conv1.weight.grad.numpy(), rtol=1e-4,
                               atol=1e-6)
    assert spec.fingerprint == cnn_spec(small_cnn()).fingerprint
    assert spec.fingerprint != cnn_spec(small_cnn(seed=1)).fingerprint
    assert spec.module_paths()[:2] == ["conv1", "bn1"]


def test_tokens_exclude_the_class_token():
    torch.manual_seed(0)
    m = SmallTokens().eval()
    spec = ModelSpec.from_torch(m, kind="classifier", input_size=(8, 12),
                                mean=(0, 0, 0), std=(1, 1, 1))
    x = np.random.RandomState(3).rand(2, 8, 12, 3).astype(np.float32)
    out, acts = spec.run(spec.params, x, capture=("block",))
    got = {}
    ref = torch_out(m, x, [("block", lambda mod, i, o: got.__setitem__("b", o))])
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    assert acts["block"].shape == (2, 7, 6)            # whole, the class token first
    np.testing.assert_allclose(acts["block"], got["b"].numpy(), rtol=1e-5, atol=1e-6)
    grid = spec.maps("block", acts["block"])
    assert grid.shape == (2, 2, 3, 6)
    np.testing.assert_allclose(grid.reshape(2, 6, 6), got["b"][:, 1:].numpy(), rtol=1e-5,
                               atol=1e-6)
    # a capture is fed back whole; its grid alone cannot be
    np.testing.assert_allclose(spec.resume(spec.params, "block", acts["block"]), out,
                               rtol=1e-5, atol=1e-6)
    # an edit changes patch tokens only: the class token passes unchanged
    out_e = spec.run(spec.params, x, edits={"block": zero_units(np.arange(6), 6)})[0]

    def hook(mod, i, o):
        return torch.cat([o[:, :1], torch.zeros_like(o[:, 1:])], 1)
    np.testing.assert_allclose(out_e, torch_out(m, x, [("block", hook)]), rtol=1e-5,
                               atol=1e-6)
    with pytest.raises(ValueError, match="class or register tokens"):
        spec.resume(spec.params, "block", grid)


def test_bad_layers_are_named():
    spec = cnn_spec(small_cnn())
    with pytest.raises(KeyError, match="no submodule"):
        spec.run(spec.params, X, capture=("conv9",))
    with pytest.raises(ValueError, match="does not fit its map"):
        spec.run(spec.params, X, edits={"conv": zero_units([0], 7)})
    assert torch_bridge.prefix_tokens(small_cnn()) == 0
