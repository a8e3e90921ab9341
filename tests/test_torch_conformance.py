"""torchvision and timm models run as JAX functions (jaxdissect.torch_bridge) against the
same torch modules run by torch: logits and two named layers (torch forward hooks) within
1e-4 relative; for six of them a vmapped 16-unit single-unit ablation sweep against
torch's one-unit-at-a-time loop, and jax.grad through an edit against torch autograd."""

import importlib.util

import numpy as np
import pytest

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")
if importlib.util.find_spec("torchax") is None:     # imported through torch_compat
    pytest.skip("torchax is not installed", allow_module_level=True)
import jax.numpy as jnp  # noqa: E402

from jaxdissect import torch_bridge  # noqa: E402
from jaxdissect.edits import Edit  # noqa: E402
from jaxdissect.spec import ModelSpec  # noqa: E402
from tests.support.torch_zoo_cases import CASES, build  # noqa: E402

RTOL = 1e-4
# each sweep at a layer whose units move the logits: a late one, except in DeiT, whose
# logits read the class token alone (the last block's patch tokens reach nothing)
SWEEP_CASES = {"tv_resnet18": "layer4", "tv_mobilenet_v3": "features.12",
               "tv_swin_t": "features.7", "timm_convnext_atto": "stages.3",
               "timm_deit_tiny": "blocks.3", "timm_mixer": "blocks.7"}


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def spec_and_input(name, batch=2):
    module = build(name)
    hw = CASES[name][3]
    spec = ModelSpec.from_torch(module, kind="classifier", input_size=hw)
    x = np.random.RandomState(1).randn(batch, *hw, 3).astype(np.float32)
    return module, spec, x


def torch_run(module, x_nhwc, hooks=()):
    """``module``'s output for NHWC ``x`` with forward hooks ``(layer, fn)``."""
    handles = [module.get_submodule(layer).register_forward_hook(fn) for layer, fn in hooks]
    try:
        return module(torch.tensor(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2))))
    finally:
        for h in handles:
            h.remove()


def to_map(y, spec_map_shape):
    """A torch output as [b, h, w, units], by its layout in the map's shape."""
    y = y.detach().numpy()
    b, h, w, u = spec_map_shape
    if y.ndim == 4 and y.shape[1] == u and y.shape[2:] == (h, w):
        return y.transpose(0, 2, 3, 1)
    if y.ndim == 3:
        return y[:, y.shape[1] - h * w:].reshape(b, h, w, u)
    return y.reshape(spec_map_shape)


def torch_edit(y, alpha, value, prefix=0):
    """``y * (1 - alpha) + value * alpha`` on the units axis of a torch output (channels
    of NCHW, the last axis otherwise; a token sequence's patch tokens only)."""
    if y.ndim == 4 and y.shape[1] == alpha.shape[0] and y.shape[-1] != alpha.shape[0]:
        a, v = alpha.view(1, -1, 1, 1), value.view(1, -1, 1, 1)
        return y * (1 - a) + v * a
    if y.ndim == 3 and prefix:
        return torch.cat([y[:, :prefix], y[:, prefix:] * (1 - alpha) + value * alpha], 1)
    return y * (1 - alpha) + value * alpha


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_logits_and_layers_match_torch(name):
    module, spec, x = spec_and_input(name)
    layers = CASES[name][4]
    xp = np.asarray(spec.preprocess(jnp.asarray(x)))
    out, acts = jax.jit(lambda p, x: spec.call(p, x, capture=layers))(spec.params,
                                                                      jnp.asarray(xp))
    got = {}
    hooks = [(layer, lambda m, i, o, layer=layer: got.__setitem__(layer, o))
             for layer in layers]
    with torch.no_grad():
        ref = torch_run(module, xp, hooks)
    assert out.shape == tuple(ref.shape)
    assert rel(out, ref.numpy()) < RTOL
    for layer in layers:
        m = spec.maps(layer, acts[layer])
        assert m.ndim == 4, (layer, acts[layer].shape)
        assert rel(m, to_map(got[layer], m.shape)) < RTOL, layer


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SWEEP_CASES))
def test_single_unit_sweep_and_grad_match_torch(name):
    module, spec, x = spec_and_input(name, batch=1)
    layer = SWEEP_CASES[name]
    xp = jnp.asarray(spec.preprocess(jnp.asarray(x)))
    # the layer's width, from shapes alone (nothing compiled or run)
    n = jax.eval_shape(lambda p, x: spec.call(p, x, capture=(layer,))[1][layer],
                       spec.params, xp).shape[-1]
    units = np.arange(16) * (n // 16)
    prefix = torch_bridge.prefix_tokens(module)

    def ablated(params, unit):
        edit = Edit(alpha=jax.nn.one_hot(unit, n), value=jnp.zeros((n,)))
        return spec.call(params, xp, edits={layer: edit})[0]

    sweep = jax.jit(jax.vmap(ablated, in_axes=(None, 0)))(spec.params, jnp.asarray(units))
    loop = []
    for u in units:
        alpha = torch.zeros(n)
        alpha[u] = 1
        hook = lambda m, i, o, alpha=alpha: torch_edit(o, alpha, torch.zeros(n), prefix)  # noqa: E731
        with torch.no_grad():
            loop.append(torch_run(module, np.asarray(xp), [(layer, hook)]).numpy())
    loop = np.stack(loop)
    assert rel(sweep, loop) < RTOL
    # the sweep changes the output: the comparison is not of 16 unedited forwards
    with torch.no_grad():
        plain = torch_run(module, np.asarray(xp)).numpy()
    assert np.abs(loop - plain[None]).max() > 1e-6

    rng = np.random.RandomState(2)
    alpha_np = rng.rand(n).astype(np.float32)
    value_np = rng.randn(n).astype(np.float32)
    weights_np = rng.randn(*plain.shape).astype(np.float32)

    def loss(value):
        out = spec.call(spec.params, xp, edits={layer: Edit(jnp.asarray(alpha_np), value)})[0]
        return jnp.sum(out * weights_np)

    g = jax.jit(jax.grad(loss))(jnp.asarray(value_np))
    value = torch.tensor(value_np, requires_grad=True)
    hook = lambda m, i, o: torch_edit(o, torch.tensor(alpha_np), value, prefix)  # noqa: E731
    (torch_run(module, np.asarray(xp), [(layer, hook)]) * torch.tensor(weights_np)).sum() \
        .backward()
    assert rel(g, value.grad.numpy()) < RTOL
    assert np.abs(value.grad.numpy()).max() > 0
