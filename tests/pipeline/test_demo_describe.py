"""The demo's open-vocabulary section: each unit of the world classifier's conv5_3 with
its open-vocabulary label (the describe experiment's defaults) beside its dissection
label, in ``describe.html``, the index's entry and the printed summary; its agreement
and chance level against direct counts over both labellings."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import numpy as np
import pytest

WORLD = Path(__file__).resolve().parents[2] / "weights" / "world"


@pytest.fixture(scope="module")
def section(tmp_path_factory):
    """The section as the demo builds it, on the demo's own dissection of 24 images."""
    from jaxdissect.pipeline import resolve as R
    from jaxdissect.pipeline.demo import CLASSIFIER, RESCORE, _describe_link
    from jaxdissect.pipeline.description import describe_into
    from jaxdissect.pipeline.dissection import Dissection, dissect_into
    from jaxdissect.pipeline.workspace import Workspace
    if not (WORLD / "imagetext" / "config.json").is_file():
        pytest.skip("the shipped world weights (weights/world) are not present")
    clf = R.load_model(CLASSIFIER)
    val = R.load_data("world", clf, 24, R.WORLD_VAL_SEED)
    d = Dissection(clf, CLASSIFIER, "conv5_3", val, R.load_segmenter("truth", val, clf),
                   "truth", f"world@{R.WORLD_VAL_SEED}", 4, batch_size=8, progress=False)
    ws = Workspace(str(tmp_path_factory.mktemp("demo") / "classifier"))
    dissected, _ = dissect_into(d, ws.part("dissect"))
    desc = describe_into(clf, CLASSIFIER, "conv5_3", val, dissected, ws, data_name="world@4",
                         rescore=RESCORE, batch_size=8, progress=False,
                         index_link="../index.html")
    return clf, val, dissected, desc, ws, _describe_link(desc)


def _index_rows(page: str) -> list[list[str]]:
    rows = re.findall(r"<tr>(.*?)</tr>", page)
    return [[html.unescape(c) for c in re.findall(r"<td>(.*?)</td>", r)] for r in rows[1:]]


@pytest.mark.slow
def test_agreement_and_chance_against_direct_counts(section):
    from jaxdissect.experiments.describe import describe_spec
    from jaxdissect.imagetext import load_imagetext
    from jaxdissect.world.imagetext import default_concepts, distractors
    clf, val, dissected, desc, _, _ = section
    concepts = default_concepts()
    # the describe experiment run on its own, with its defaults
    own = describe_spec(clf, "conv5_3", val, load_imagetext("world"), concepts,
                        batch_size=8, progress=False)
    assert own.method == "softwpmi" and own.options["lam"] == 1
    np.testing.assert_array_equal(desc["result"].label, own.label)
    opened = np.array(own.labels(), dtype=object)
    names = np.array(dissected.labels.names, dtype=object)[dissected.best_label]
    labelled = np.asarray(dissected.labelled)
    assert desc["labelled"] == labelled.sum() > 0
    assert desc["agree"] == int((labelled & (opened == names)).sum())
    assert desc["distractor_wins"] == int(np.isin(opened, distractors(concepts)).sum())
    # chance: the expected agreement when the open labels are shuffled over the units,
    # exactly sum over labelled units of (units with its mask word as open label) / u
    counts = {w: (opened == w).sum() for w in set(opened)}
    exact = sum(counts.get(w, 0) for w in names[labelled]) / len(opened)
    assert desc["chance"]["chance_mean"] == pytest.approx(exact, abs=0.15)
    assert 0 < desc["chance"]["p_value"] <= 1
    assert set(desc["rescored"]) == {"WPMI"}


@pytest.mark.slow
def test_cards_show_both_labels_of_every_unit(section):
    _, _, dissected, desc, ws, link = section
    page = (Path(ws.folder) / "describe.html").read_text()
    cards = re.findall(r'<div class="card( agree)?"><div class="info">unit (\d+): '
                       r'<span class="open">([^<]*)</span>.*?<div class="mask">masks: '
                       r'([^<(]*)', page)
    assert [int(c[1]) for c in cards] == list(range(dissected.num_units))
    for agree, unit, open_label, mask in cards:
        pair = desc["pairs"][int(unit)]
        assert html.unescape(open_label) == pair["open"]
        assert mask.strip() == (pair["dissect"] or "no label")
        assert bool(agree) == pair["agree"]
    # the page's link to the masks' report resolves beside it, as in the demo's folder
    assert 'href="dissect/report.html"' in page and 'href="../index.html"' in page
    assert (Path(ws.folder) / "dissect" / "report.html").is_file()
    recorded = json.loads((Path(ws.folder) / "describe.json").read_text())["comparison"]
    assert recorded["agree"] == desc["agree"] and recorded["chance"] == desc["chance"]
    assert recorded["rescored"] == desc["rescored"]
    assert link["href"] == "classifier/describe.html"
    assert f"{desc['agree']}/{desc['labelled']}" in link["text"]


@pytest.mark.slow
def test_index_section_tables_example_units_both_ways(section, tmp_path):
    from jaxdissect import report
    from jaxdissect.pipeline.demo import _describe_section
    _, _, _, desc, _, _ = section
    page = Path(report.write_index(str(tmp_path), [], sections=[_describe_section(desc)])
                ).read_text()
    assert "Open-vocabulary labels beside the dissection labels" in page
    assert f"{desc['agree']}/{desc['labelled']}" in page
    assert 'href="classifier/describe.html"' in page
    rows = _index_rows(page)
    assert 0 < len(rows) <= 5
    for unit, mask, iou, open_label, same in rows:
        pair = desc["pairs"][int(unit)]
        assert (mask, open_label, same) == (pair["dissect"], pair["open"],
                                            "yes" if pair["agree"] else "no")
        assert float(iou) == pytest.approx(pair["iou"], abs=5e-4)


@pytest.mark.slow
def test_printed_summary_states_agreement_chance_and_examples(section):
    from jaxdissect.pipeline.demo import describe_summary
    _, _, _, desc, _, _ = section
    lines = describe_summary(desc)
    assert f"{desc['agree']}/{desc['labelled']}" in lines[0]
    assert f"chance {100 * desc['chance']['chance_rate']:.1f}%" in lines[0]
    assert f"{desc['rescored']['WPMI']['agree']}/{desc['labelled']}" in lines[1]
    minority = 2 * desc["agree"] < desc["labelled"]
    assert ("Agreement is a minority" in lines[2]) == minority
    assert ("distractor words" in lines[2]) == (minority and desc["distractor_wins"] > 0)
    examples = [re.match(r"  unit +(\d+): masks (\S+) \(IoU [\d.]+\), open vocabulary (\S+)",
                         line) for line in lines[3:]]
    assert 0 < len(examples) <= 5 and all(examples)
    for m in examples:
        pair = desc["pairs"][int(m[1])]
        assert (m[2], m[3]) == (pair["dissect"], pair["open"])


def test_summary_says_minority_only_when_it_is():
    from jaxdissect.pipeline.demo import describe_summary
    pairs = [{"unit": u, "open": "sky" if u < 3 else "dog", "dissect": "sky", "agree": u < 3,
              "iou": 0.1 + u / 100} for u in range(4)]
    desc = {"labelled": 4, "agree": 3, "units": 4, "distractor_wins": 1, "pairs": pairs,
            "chance": {"chance_rate": 0.56, "p_value": 0.3}, "rescored": {}}
    lines = describe_summary(desc)
    assert "3/4 (75.0%)" in lines[0] and "minority" not in " ".join(lines)
    # the highest-IoU agreeing units, up to half of those shown, then the others
    assert [int(re.match(r"  unit +(\d+)", x)[1]) for x in lines[2:]] == [2, 1, 3]
    desc = dict(desc, agree=1)
    assert "Agreement is a minority" in describe_summary(desc)[1]
    assert "distractor words" in describe_summary(desc)[1]
    assert "distractor words" not in describe_summary(dict(desc, distractor_wins=0))[1]


def test_index_section_is_escaped(tmp_path):
    from jaxdissect import report
    section = {"title": "t", "lines": ["<b>x</b>"], "header": ("a",), "rows": [("<i>",)],
               "href": "d.html", "link": "cards"}
    page = Path(report.write_index(str(tmp_path), [], sections=[section])).read_text()
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<td>&lt;i&gt;</td>" in page
