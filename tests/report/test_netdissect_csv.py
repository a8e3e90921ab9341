"""NetDissect's tally.csv schema: a dissection written and read back, checked
against the result's own arrays, and a hand-written CSV in the published schema."""

import numpy as np
import pytest

from jaxdissect.experiments.dissect import DissectResult
from jaxdissect.labels import LabelSet
from jaxdissect.report.netdissect_csv import read_csv, table_from_result, write_csv
from jaxdissect.stats.iou import best_labels, iou_from_counts, union_unit_area

LABELS = LabelSet.from_pairs([("sky", "object"), ("leg", "part"), ("tree", "object"),
                              ("head", "part"), ("kitchen-s", "scene"), ("door", "object")])


def result(rule, seed=0, units=6):
    """A DissectResult from random exact counts (unit 5 silent, so ties at 0)."""
    rng = np.random.default_rng(seed)
    L, C = len(LABELS), len(LABELS.category_names)
    label_area = rng.integers(50, 400, L)
    cat_area = rng.integers(20, 300, (units, C))
    unit_area = cat_area.max(axis=1) + rng.integers(0, 50, units)
    inter = rng.integers(0, 20, (units, L))
    inter[5] = cat_area[5] = unit_area[5] = 0
    counts = {"inter": inter, "unit_area": unit_area, "label_area": label_area,
              "category_area": cat_area}
    cats = LABELS.category_ids if rule == "netdissect" else ()
    iou = iou_from_counts(inter, union_unit_area(counts, cats), label_area)
    best, best_iou = best_labels(iou)
    return DissectResult(
        labels=LABELS, quantile=0.01, miniou=0.04, thresholds=np.zeros(units, np.float32),
        levels={}, iou=iou, best_label=best, best_iou=best_iou, intersections=inter,
        unit_area=unit_area, label_area=label_area, pixels=10_000,
        topk_values=np.zeros((units, 1)), topk_images=np.zeros((units, 1), np.int64),
        num_examples=3, iou_rule=rule,
        category_area=cat_area if rule == "netdissect" else None)


@pytest.mark.parametrize("rule", ["pnas", "netdissect"])
def test_written_and_read_back_equals_the_result(tmp_path, rule):
    res = result(rule)
    path = write_csv(res, str(tmp_path / "tally.csv"))
    table = read_csv(path)
    assert table.categories == ("object", "part", "scene")
    np.testing.assert_array_equal(table.unit, np.arange(6))
    np.testing.assert_array_equal(table.score, res.best_iou)  # same bits
    for u in range(6):
        assert table.label[u] == LABELS.names[res.best_label[u]]
        assert table.category[u] == LABELS.categories[res.best_label[u]]
        for g, cat in enumerate(table.categories):
            cols = [j for j in range(1, len(LABELS)) if LABELS.categories[j] == cat]
            j = cols[int(np.argmax(res.iou[u, cols]))]
            col = table.columns[cat]
            assert col.label[u] == LABELS.names[j]
            assert col.iou[u] == res.iou[u, j]
            assert col.intersect[u] == res.intersections[u, j]
            assert col.truth[u] == res.label_area[j]
            want = res.category_area[u, g] if rule == "netdissect" else res.unit_area[u]
            assert col.activation[u] == want
            # the IoU is what the columns say it is
            union = col.activation[u] + col.truth[u] - col.intersect[u]
            assert col.iou[u] == pytest.approx(col.intersect[u] / union if union else 0)
    with open(path) as f:
        lines = f.read().splitlines()
    assert lines[0].startswith("unit,category,label,score,object-label,object-truth,"
                               "object-activation,object-intersect,object-iou,part-label")
    scores = [float(line.split(",")[3]) for line in lines[1:]]
    assert scores == sorted(scores, reverse=True)  # best unit first, as NetDissect
    assert lines[-1].startswith("6,")  # the silent unit last
    # a chosen column order, and one the labels do not have
    assert read_csv(write_csv(res, str(tmp_path / "t2.csv"), ["scene", "object"])
                    ).categories == ("scene", "object")
    with pytest.raises(ValueError, match="not among the labels"):
        table_from_result(res, ["texture"])


PUBLISHED = """\
unit,category,label,score,object-label,object-truth,object-activation,object-intersect,\
object-iou,scene-label,scene-truth,scene-activation,scene-intersect,scene-iou
7,object,car,0.14732142857142858,car,520321.0,80125.0,76931.0,0.14732142857142858,\
street-s,61234.0,42000.0,10000.0,0.10810810810810811
2,scene,bedroom-s,0.0832,bed,120000.0,30000.0,9000.0,0.0637,bedroom-s,90000.0,25000.0,\
9000.0,0.0832
"""


def test_hand_written_csv_in_the_published_schema_reads(tmp_path):
    path = tmp_path / "tally.csv"
    path.write_text(PUBLISHED)
    t = read_csv(str(path))
    assert t.categories == ("object", "scene") and len(t) == 2
    np.testing.assert_array_equal(t.unit, [1, 6])  # sorted, 0-based
    assert t.label == ("bedroom-s", "car") and t.category == ("scene", "object")
    np.testing.assert_array_equal(t.score, [0.0832, 0.14732142857142858])
    obj = t.columns["object"]
    assert obj.label == ("bed", "car")
    np.testing.assert_array_equal(obj.truth, [120000, 520321])
    np.testing.assert_array_equal(obj.activation, [30000, 80125])
    np.testing.assert_array_equal(obj.intersect, [9000, 76931])
    assert obj.truth.dtype == np.int64
    assert t.columns["scene"].iou[1] == 0.10810810810810811
    assert t.rows()[1]["unit"] == 7 and t.rows()[1]["scene-label"] == "street-s"


@pytest.mark.parametrize("edit,message", [
    (lambda s: s.replace("object-truth,", "object-truth2,"), "no column.*object-truth"),
    (lambda s: s.replace("520321.0", "lots"), "is not a number"),
    (lambda s: s.replace("80125.0", "80125.5"), "whole number"),
    (lambda s: s.replace("\n2,", "\n7,"), "appears twice"),
    (lambda s: s.replace("\n7,", "\n0,"), "numbered from 1"),
])
def test_bad_csvs_are_clear_errors(tmp_path, edit, message):
    path = tmp_path / "bad.csv"
    path.write_text(edit(PUBLISHED))
    with pytest.raises(ValueError, match=message):
        read_csv(str(path))


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_csv(str(tmp_path / "none.csv"))
