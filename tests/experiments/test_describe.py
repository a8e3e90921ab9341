"""Open-vocabulary dissection (CLIP-Dissect's method): the scores against NumPy
transcriptions of the published formulas, the sweep's tables on 1 and 4 devices,
resuming, labels on planted concepts, result round trip and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdissect.errors import UserError
from jaxdissect.experiments.describe import (
    DescribeResult,
    ProbeTables,
    describe,
    label_units,
    probe_tables,
)
from jaxdissect.imagetext import check_model, parse_concepts
from jaxdissect.stats import softwpmi
from jaxdissect.stats.rows import Rows
from jaxdissect.world import WorldSource


def _log_softmax_rows(x):
    x = x - x.max(1, keepdims=True)
    return x - np.log(np.exp(x).sum(1, keepdims=True))


def _logsumexp0(x):
    m = x.max(0, keepdims=True)
    return m + np.log(np.exp(x - m).sum(0, keepdims=True))


def numpy_soft_wpmi(P, A, top_k, a, lam, p_start, p_end, min_prob, soft=True):
    """The published formula, unit by unit and image by image, in float64."""
    S = np.exp(_log_softmax_rows(a * P.astype(np.float64)))
    units, M = A.shape[1], P.shape[1]
    given = np.zeros((units, M))
    for k in range(units):
        order = sorted(range(A.shape[0]), key=lambda i: (-A[i, k], i))[:top_k]
        for r, i in enumerate(order):
            p = p_start - r / top_k * (p_start - p_end) if soft else 1.0
            given[k] += np.log(1.0 + p * (S[i] - 1.0) + min_prob)
    log_pm = _logsumexp0(given) - np.log(units)
    return given - lam * log_pm


def numpy_cos3(P, A):
    def prep(x):
        x = (x - x.mean(0, keepdims=True)) ** 3
        return x / np.linalg.norm(x, axis=0, keepdims=True)
    return prep(A.astype(np.float64)).T @ prep(P.astype(np.float64))


@pytest.fixture(scope="module")
def random_inputs():
    rng = np.random.default_rng(0)
    emb, text = rng.normal(size=(150, 16)), rng.normal(size=(23, 16))
    P = np.asarray(softwpmi.similarity(jnp.asarray(emb, jnp.float32),
                                       jnp.asarray(text, jnp.float32)))
    A = rng.gamma(2.0, size=(150, 13)).astype(np.float32)
    return emb, text, P, A


def test_similarity_is_cosine(random_inputs):
    emb, text, P, _ = random_inputs
    want = (emb / np.linalg.norm(emb, axis=1, keepdims=True)) @ (
        text / np.linalg.norm(text, axis=1, keepdims=True)).T
    np.testing.assert_allclose(P, want, atol=1e-6)


def test_soft_wpmi_matches_the_published_formula(random_inputs):
    _, _, P, A = random_inputs
    for opts in (softwpmi.SOFT_WPMI_DEFAULTS,
                 {"top_k": 17, "a": 3.0, "lam": 0.5, "p_start": 0.9, "p_end": 0.6,
                  "min_prob": 1e-4}):
        got = softwpmi.scores(P, A, "softwpmi", **opts)
        want = numpy_soft_wpmi(P, A, **opts)
        assert got.shape == (A.shape[1], P.shape[1])
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-3)
        np.testing.assert_array_equal(got.argmax(1), want.argmax(1))


def test_wpmi_and_cos3_match_numpy(random_inputs):
    _, _, P, A = random_inputs
    o = softwpmi.WPMI_DEFAULTS
    want = numpy_soft_wpmi(P, A, o["top_k"], o["a"], o["lam"], 1.0, 1.0, o["min_prob"],
                           soft=False)
    np.testing.assert_allclose(softwpmi.scores(P, A, "wpmi"), want, rtol=2e-5, atol=2e-3)
    np.testing.assert_allclose(softwpmi.scores(P, A, "cos3"), numpy_cos3(P, A), atol=1e-5)


def test_top_images_break_ties_by_index():
    acts = np.array([[1.0, 0.0], [2.0, 5.0], [2.0, 5.0], [0.5, 5.0]], np.float32)
    np.testing.assert_array_equal(softwpmi.top_images(acts, 3), [[1, 2, 0], [1, 2, 3]])
    with pytest.raises(ValueError, match="top_k"):
        softwpmi.top_images(acts, 5)


def test_bad_method_and_options(random_inputs):
    _, _, P, A = random_inputs
    with pytest.raises(ValueError, match="unknown method"):
        softwpmi.scores(P, A, "netdissect")
    with pytest.raises(ValueError, match="no options"):
        softwpmi.scores(P, A, "cos3", a=2.0)


class OneHotText:
    """An image-text model whose image embedding is the image's mean colour and
    whose concepts are the three channels (text m = one-hot m)."""

    params = {"scale": jnp.ones((3,), jnp.float32)}

    def encode_images(self, params, images01):
        return images01.reshape(images01.shape[0], -1, 3).mean(1) * params["scale"][None] + 0.01

    def encode_texts(self, texts):
        return np.eye(3, dtype=np.float32)[[["red", "green", "blue"].index(t) for t in texts]]


def _forward(batch, params):
    """Units: per-pixel mixtures of the colour channels (ReLU)."""
    images = batch["image"]
    acts = jax.nn.relu(jnp.einsum("bhwc,cu->bhwu", images, params["w"]) - 0.2)
    return acts, images


@pytest.fixture(scope="module")
def probe():
    source = WorldSource(40, seed=5, size=32)
    w = np.zeros((3, 6), np.float32)
    for u in range(6):
        w[u % 3, u] = 1.0 + 0.1 * u  # unit u reads channel u % 3
    return source, {"w": jnp.asarray(w)}


def test_tables_identical_on_one_and_four_devices(probe):
    source, params = probe
    devices = jax.local_devices()
    if len(devices) < 4:
        pytest.skip("needs 4 devices (XLA_FLAGS=--xla_force_host_platform_device_count=4)")
    kw = dict(params=params, batch_size=12, progress=False)
    one = probe_tables(_forward, source, OneHotText(), devices=devices[:1], **kw)
    four = probe_tables(_forward, source, OneHotText(), devices=devices[:4], **kw)
    np.testing.assert_array_equal(one.acts, four.acts)
    np.testing.assert_array_equal(one.embeddings, four.embeddings)
    # the tables are every image's own values, in image order
    batch = source.batch(0, source.num_examples)
    acts, images = _forward(batch, params)
    np.testing.assert_allclose(one.acts, np.asarray(acts, np.float64).mean((1, 2)), rtol=1e-4,
                               atol=1e-6)
    np.testing.assert_allclose(one.embeddings, batch["image"].astype(np.float64).mean((1, 2))
                               + 0.01, rtol=1e-4)


@pytest.mark.slow
def test_describe_labels_planted_concepts_and_resumes(probe, tmp_path):
    source, params = probe
    from jaxdissect.runtime.cache import run_cache
    cache = run_cache(str(tmp_path), model="planted", layer="acts", data=source,
                      segmenter=None)
    kw = dict(params=params, batch_size=8, progress=False, cache=cache, top_k=10,
              checkpoint_every=1)
    res = describe(_forward, source, OneHotText(), ["blue", "red", "green"], **kw)
    assert res.labels() == ["red", "green", "blue"] * 2
    again = describe(_forward, source, OneHotText(), ["blue", "red", "green"], **kw)
    np.testing.assert_array_equal(res.scores, again.scores)
    assert list(tmp_path.glob("describe-*.npz"))
    path = str(tmp_path / "result.npz")
    res.save(path)
    back = DescribeResult.load(path)
    np.testing.assert_array_equal(back.scores, res.scores)
    assert back.labels() == res.labels() and back.options == res.options
    assert back.to_json()["units"][0]["label"] == "red"


def test_label_units_checks_its_input():
    tables = ProbeTables(np.ones((5, 2), np.float32), np.ones((5, 3), np.float32))
    with pytest.raises(ValueError, match="repeats"):
        label_units(tables, OneHotText(), ["red", "red"])
    with pytest.raises(ValueError, match="no options"):
        label_units(tables, OneHotText(), ["red"], "softwpmi", alpha=3)


def test_rows_refuse_double_writes_and_huge_tables():
    rows = Rows.empty(3, 2).update(jnp.ones((2, 2)), jnp.array([0, 0]), jnp.array([True, True]))
    with pytest.raises(ValueError, match="written"):
        rows.compute()
    with pytest.raises(ValueError, match="fewer probe images"):
        Rows.empty(1 << 20, 1 << 10)


def test_concept_lists_and_model_protocol():
    assert parse_concepts("# c\nsky\n\n  tree \n") == ["sky", "tree"]
    with pytest.raises(UserError, match="repeated"):
        parse_concepts("sky\nsky\n")
    with pytest.raises(UserError, match="no concepts"):
        parse_concepts("# nothing\n")
    with pytest.raises(UserError, match="encode_texts"):
        check_model(object())


def test_compare_counts_exact_and_near_agreement():
    from types import SimpleNamespace

    from jaxdissect.experiments.describe import compare
    from jaxdissect.labels import LabelSet
    labels = LabelSet.from_pairs([("sky", "object"), ("sand", "object"), ("blue", "color")])
    iou = np.array([[0, 0.30, 0.10, 0.20], [0, 0.01, 0.02, 0.03], [0, 0.05, 0.30, 0.01]])
    names = [None, "sky", "sand"]
    dissected = SimpleNamespace(num_units=3, labels=labels, iou=iou,
                                labelled=np.array([True, False, True]),
                                unit_label=lambda u: [names[1], None, names[2]][u])
    described = DescribeResult(concepts=["sky", "blue", "dog"], method="softwpmi",
                               options={}, scores=np.zeros((3, 3), np.float32),
                               label=np.array([0, 1, 1]), top_images=np.zeros((3, 1)),
                               num_examples=1)
    got = compare(described, dissected, distractors=["dog"], near=2)
    assert (got["labelled"], got["agree"], got["near_agree"]) == (2, 1, 1)
    assert [p["iou_rank"] for p in got["pairs"]] == [0, 0, 2]
    described.label = np.array([2, 2, 2])
    assert compare(described, dissected, ["dog"])["distractor_wins"] == 3
