"""The shipped world image-text model and concept list, and open-vocabulary labels on
the world classifier: above chance when trained, at chance when randomly initialised."""

import json

import numpy as np
import pytest

from jaxdissect.experiments.describe_world import measure, random_spec
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


@pytest.mark.slow
def test_trained_above_chance_random_at_chance(imagetext):
    source = WorldSource(300, seed=4, size=64)
    concepts = default_concepts()
    trained = measure(classifier.spec(), "conv5_3", source, imagetext, concepts)
    random = measure(random_spec(0), "conv5_3", source, imagetext, concepts)
    assert trained["chance"]["p_value"] < 0.01
    assert trained["agreement_rate"] > 2 * trained["chance"]["chance_rate"]
    assert random["chance"]["p_value"] > 0.05
    assert np.isfinite(random["agreement_rate"]) or random["labelled_by_dissection"] == 0
