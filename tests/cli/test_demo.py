"""``jaxdissect demo`` at toy sample sizes on the shipped world weights: every part is
written and linked, and the baseline it reports matches a direct NumPy computation."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

WORLD = Path(__file__).resolve().parents[2] / "weights" / "world"


@pytest.mark.slow
@pytest.mark.skipif(not (WORLD / "classifier" / "config.json").is_file(),
                    reason="the shipped world weights (weights/world) are not present")
def test_demo_small(tmp_path):
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--images", "48", "--samples", "48",
            "--sweep-samples", "4", "--removal-samples", "8", "--insertion-samples", "4",
            "--batch-size", "16", "--no-progress"]
    # as a user runs it: its own process, one CPU device (this test process forces four;
    # with four forced host devices the sharded dissection of the world generator's
    # samples can deadlock in XLA's in-process all-gather on 2 cores)
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    run = subprocess.run([sys.executable, "-m", "jaxdissect.cli"] + argv, env=env,
                         capture_output=True, text=True, timeout=1200,
                         cwd=str(Path(__file__).resolve().parents[2]))
    assert run.returncode == 0, run.stderr[-3000:]
    printed = run.stdout.strip().splitlines()
    assert printed[-1] == str(out / "index.html")
    index = (out / "index.html").read_text()
    links = re.findall(r'href="([^"]+)"', index)
    assert "classifier/dissect/report.html" in links and "classifier/ablate/ablation.html" in links
    assert "classifier/describe.html" in links      # open-vocabulary labels beside masks'
    assert "Open-vocabulary labels beside the dissection labels" in run.stdout
    for link in links:
        assert (out / link).is_file(), link
    if (WORLD / "generator" / "config.json").is_file():
        assert "generator/intervene/intervention.html" in links
    # the index leads with its pictures (before the findings), each a file of the size
    # its <img> states: the classifier's chart, then the generator's removal strip and
    # insertion grid
    from PIL import Image
    imgs = re.findall(r'<img class="pic" src="([^"]+)" width="(\d+)" height="(\d+)"', index)
    assert index.index("<img") < index.index("class=\"finding")
    want = ["classifier/ablate/ablation_classes.png"]
    if (WORLD / "generator" / "config.json").is_file():
        want += ["generator/intervene/pictures/removal_", "generator/intervene/pictures/insertion_"]
    assert len(imgs) == len(want) and all(s.startswith(w) for (s, _, _), w in zip(imgs, want))
    for src, w, h in imgs:
        assert Image.open(out / src).size == (int(w), int(h))
    # the labels' significance: stated on the index and printed
    assert "survive a 1% false-discovery rate" in index
    assert "false-discovery rate" in run.stdout
    # the reported baseline against the classifier's own full forward and NumPy counts
    from jaxdissect.models.vgg16 import preprocess
    from jaxdissect.world import WorldSource
    from jaxdissect.world.classifier import load_classifier
    model, params = load_classifier()
    b = WorldSource(48, seed=4, size=64).batch(0, 48)
    logits = model.apply({"params": params}, preprocess(jax.numpy.asarray(b["image"])))
    pred, y = np.asarray(logits).argmax(1), b["label"]
    res = json.loads((out / "classifier" / "ablate" / "ablation.json").read_text())
    for c, got in enumerate(res["baseline_val"]["balanced_accuracy"]):
        t, p = y == c, pred == c
        if t.sum() == 0:
            assert got is None
            continue
        want = ((t & p).sum() / t.sum() + (~t & ~p).sum() / (~t).sum()) / 2
        assert got == pytest.approx(want, abs=1e-12)
