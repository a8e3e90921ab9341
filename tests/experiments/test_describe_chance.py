"""Open-vocabulary labels of a randomly initialised world classifier against its own
ground-truth dissection labels, and what chance means there.

Two chance levels (``experiments.describe_world``): the open labels permuted over
the units (it keeps how often each word is used), and the labels read with the same
scoring from the world's ground truth in place of the image-text model (what a
perfect image-text model gives on the same units and probe images). A random
classifier's units prefer the brightest images, so with few probe images (here 400,
a unit's top 100 are its brightest quarter) even the ground truth's labels agree with
dissection's ("snow") above the permutation level; the open labels must not agree
beyond the ground truth's (one-sided, 1% level, fixed before measuring), while a
trained classifier's agree far above the permutation level
(``test_describe_world.py``).
"""

import pytest

from jaxdissect.experiments.describe_world import beyond_truth, measure, random_spec
from jaxdissect.world import WorldSource
from jaxdissect.world.imagetext import default_concepts, load_imagetext

ALPHA = 0.01


def test_beyond_truth_is_an_exact_sign_test():
    pairs = lambda flags: [{"unit": u, "agree": f} for u, f in enumerate(flags)]  # noqa: E731
    got = beyond_truth(pairs([1, 1, 1, 1, 0, 1]), pairs([0, 0, 0, 0, 0, 1]))
    assert (got["only_open"], got["only_truth"]) == (4, 0)
    assert got["p_value"] == pytest.approx(1 / 16)
    got = beyond_truth(pairs([1, 0, 0]), pairs([0, 1, 1]))
    assert got["p_value"] == pytest.approx(7 / 8)        # P(Binom(3, 1/2) >= 1)
    assert beyond_truth(pairs([1, 0]), pairs([1, 0]))["p_value"] == 1.0


@pytest.mark.slow
def test_random_classifier_labels_no_better_than_the_ground_truths():
    source = WorldSource(400, seed=4, size=64)
    methods = {"default": ("softwpmi", {}), "wpmi": ("wpmi", {})}
    got = measure(random_spec(0), "conv5_3", source, load_imagetext(), default_concepts(),
                  methods, ceiling=True)
    assert got["labelled_by_dissection"] > 20     # the random units do get labels
    # measured: default 8/90 agree (permutation p = 0.004), ground truth 12/90
    # (p = 0.0005); wpmi 18/90 (p = 0.004), ground truth 17/90 (p = 0.004)
    for name, test in got["beyond_truth"].items():
        assert test["p_value"] > ALPHA, (name, test)
