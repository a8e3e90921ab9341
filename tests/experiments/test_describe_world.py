"""The shipped world image-text model and concept list, and open-vocabulary labels on
the world classifier: far above chance when trained."""

import json

import pytest

from jaxdissect.experiments.describe_world import measure
from jaxdissect.world import WorldSource, classifier
from jaxdissect.world.imagetext import (
    DEFAULT_DIR,
    WORLD_WORDS,
    default_concepts,
    distractors,
    load_imagetext,
    tokenize,
)


def test_default_concepts_hold_the_world_words_and_distractors():
    concepts = default_concepts()
    assert concepts[:len(WORLD_WORDS)] == list(WORLD_WORDS)
    words = distractors(concepts)
    assert len(words) == 50 and not set(words) & set(WORLD_WORDS)


def test_any_word_has_an_embedding_and_letterless_text_is_refused():
    ids, mask = tokenize(["sky", "xylophone"], 4096, 64)
    assert mask.sum(1).tolist() == [3 + 2 + 1, 9 + 8 + 7]
    with pytest.raises(ValueError, match="no letters"):
        tokenize(["42"], 4096, 64)


@pytest.fixture(scope="module")
def imagetext():
    return load_imagetext()


def test_shipped_model_size_and_zero_shot(imagetext):
    config = json.loads((DEFAULT_DIR / "config.json").read_text())
    size = sum(f.stat().st_size for f in (DEFAULT_DIR / "params").rglob("*") if f.is_file())
    assert size < 8 << 20
    # the recorded held-out scene accuracy holds on a few fresh images (11 classes:
    # chance is 9%)
    from jaxdissect.world.train.imagetext import zero_shot
    got = zero_shot(imagetext, seed=config["heldout"]["world_seed"], n=110)
    assert got["scene_accuracy"] > 0.5 and got["concept_map"] > 0.5
    assert config["heldout"]["scene_accuracy"] > 0.5


def _lift(result):
    """Agreement over its shuffle chance level (1: no better than shuffled labels)."""
    return result["agreement_rate"] / max(result["chance"]["chance_rate"], 1e-9)


@pytest.mark.slow
def test_trained_far_above_chance(imagetext):
    """The agreement with ground-truth dissection labels against its shuffle chance
    level (the open labels permuted over the units): many times chance for the
    trained classifier (a random one: ``test_describe_chance.py``)."""
    source = WorldSource(400, seed=4, size=64)
    methods = {"wpmi": ("wpmi", {})}
    trained = measure(classifier.spec(), "conv5_3", source, imagetext, default_concepts(),
                      methods)
    good = trained["methods"]["wpmi"]
    # measured: 10/65 units, 9x chance, p = 0.0005
    assert good["chance"]["p_value"] < 0.01 and good["distractor_wins"] == 0
    assert _lift(good) > 3
