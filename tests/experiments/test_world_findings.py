"""The world generator's findings at reduced sizes: every interval a finding states,
in its numbers and in its sentence, lies within its statistic's range (the tree
removal's share, the doors' ratio of contexts, the exploratory pair of contexts, and
painting tree units off and on). The dissection's labels are tested for
significance as the demo's are, on 200 z samples."""

import math
import re

import numpy as np
import pytest

from jaxdissect.world.weights import WEIGHTS_DIR

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not all((WEIGHTS_DIR / n / "config.json").is_file()
                               for n in ("generator", "segmenter")),
                       reason="world generator/segmenter weights not shipped")]

#: "99% CI a to b" as sentences print it: a percentage, points, or a ratio ("x")
CI = re.compile(r"99% (?:CI|interval) ([-+]?[\d.]+|n/a)(%|x)? to ([-+]?[\d.]+|inf|n/a)(%|x)?")


def printed_intervals(text):
    """``[(low, high, unit)]`` of every 99% interval a sentence prints (% as fractions,
    points as fractions, x as ratios)."""
    out = []
    for lo, u1, hi, u2 in CI.findall(text):
        unit = u1 or u2 or "points"
        if "n/a" not in (lo, hi):
            out.append((_value(lo, unit), _value(hi, unit), unit))
    return out


def _value(text, unit):
    return math.inf if text == "inf" else float(text) * (1.0 if unit == "x" else 0.01)


def check_in_range(f, ranges):
    """The finding's interval within its bounds, and every interval its sentence
    prints within the range of its unit (``ranges``: unit -> (low, high))."""
    assert f.in_bounds(), f.plain()
    lo, hi = f.bounds
    for v in (f.estimate, f.low, f.high):
        assert not math.isfinite(v) or lo <= v <= hi, f.plain()
    shown = printed_intervals(f.text)
    for low, high, unit in shown:
        a, b = ranges[unit]
        assert a - 5e-4 <= low <= high <= b + 5e-4, (unit, low, high, f.plain())
    return shown


@pytest.fixture(scope="module")
def world():
    from jaxdissect import pipeline as C
    from jaxdissect.experiments import intervene
    from jaxdissect.experiments.dissect import dissect
    from jaxdissect.experiments.label_significance import significance
    from jaxdissect.stats.upsample import Upsampler

    loaded = C.load_model("world-generator")
    seg = C.load_segmenter("world", None, loaded)
    source = C.load_data("z", loaded, 200, 1)
    compute, _ = C.make_compute(loaded, "layer4", seg, seg_downsample=4)
    up = Upsampler.plain((8, 8), (16, 16))
    res = dissect(compute, source, seg.labels, upsample=up, quantile=0.01, levels=(0.005,),
                  batch_size=50, progress=False, params=loaded.params)
    sig = significance(compute, source, res, upsample=up, params=loaded.params,
                       permutations=200, replicates=100, batch_size=48, progress=False)
    labels = sig.significant_labels(res.num_units, intervene.LABEL_FDR)
    return loaded, seg, source, res, labels


def test_world_generator_removal_and_insertion_intervals(world):
    """Tree removal (1, 8 and 20 units) over 24 samples, door insertion over 12 (768
    edits): the removal and both context findings apply, and what they print stays
    in range."""
    from jaxdissect.data.source import Prefix
    from jaxdissect.experiments import intervene
    loaded, seg, source, res, labels = world
    tree, door = seg.labels.index("tree"), seg.labels.index("door")
    split = intervene.split_generator(loaded, "layer4")
    ns = [0, 1, 8, 20]                     # the paper's set sizes
    order = intervene.best_iou_units(res.iou, tree, 20)
    masks = np.zeros((len(ns), res.num_units), np.float32)
    for i, k in enumerate(ns):
        masks[i, order[:k]] = 1
    deltas = intervene.ablation_share_deltas(split, seg, Prefix(source, 24), masks,
                                             len(seg.labels), replicates=200, batch_size=12,
                                             chunk=4, progress=False)
    curve = intervene.removal_curve(deltas, tree, ns, "tree", order, labels == tree)
    units = intervene.best_iou_units(res.iou, door, 20)
    sums = intervene.insertion_by_context(split, seg, Prefix(source, 12), units,
                                          np.asarray(res.levels[0.005])[units], door,
                                          len(seg.labels), batch_size=12, chunk=32,
                                          progress=False)
    ins = intervene.summarize_insertion(sums, seg.labels, concept="door", units=units,
                                        significant=labels == door)
    findings = [curve.finding(), ins.context_finding(), ins.finding()]
    print(*(f.plain() for f in findings), sep="\n")
    assert [f.applies for f in findings] == [True, True, True], [f.reason for f in findings]
    removal, ratio, pair = findings
    shown = check_in_range(removal, {"%": (-math.inf, 1.0)})
    assert len(shown) == 3                                  # removed, baseline, most removed
    assert check_in_range(ratio, {"%": (-1.0, 1.0), "x": (0.0, math.inf)})[-1][2] == "x"
    assert len(check_in_range(pair, {"points": (-2.0, 2.0)})) == 1     # a gap of shares
    assert pair.kind == "exploratory" and pair.bounds == (-2.0, 2.0)


def test_world_generator_paint_intervals(world):
    """Tree units off in the left half and on in the right half of 8 latents: both
    findings apply (the tree units' labels pass; trees present at baseline, with
    room to add), and their intervals are changes of a share, within [-1, 1]."""
    import jax
    import jax.numpy as jnp

    from jaxdissect.data.source import ZSource
    from jaxdissect.experiments import intervene, paint
    loaded, seg, source, res, labels = world
    tree = seg.labels.index("tree")
    units = paint.concept_units(res.iou, seg.labels.names, "tree", 20)
    boxes = [(0.0, 0.0, 1.0, 0.5), (0.0, 0.5, 1.0, 1.0)]
    image_hw = tuple(np.asarray(loaded.images(
        loaded.run(loaded.params, jnp.zeros((1, loaded.z_dim)))[0])).shape[1:3])
    edits = [paint.paint_edit(units, res.num_units, paint.region_to_grid(
        paint.box_mask(image_hw, b), (8, 8)), mode, res.levels[0.005])
        for b, mode in zip(boxes, ("off", "on"))]
    seg_hw = tuple(jax.eval_shape(seg, jnp.zeros((1,) + image_hw + (3,))).shape[2:])
    regions = np.stack([paint.box_mask(seg_hw, b) for b in boxes])
    out = paint.paint_source(intervene.split_generator(loaded, "layer4"),
                             ZSource(8, loaded.z_dim, 2), paint.stack_edits(edits),
                             batch_size=8, segment=seg, labels=[tree, tree], regions=regions)
    findings = []
    for e, (b, mode) in enumerate(zip(boxes, ("off", "on"))):
        pe = paint.PaintEdit("tree", mode, b, units, res.iou[units, tree],
                             np.zeros(len(units)), "world", int(regions[e].sum()),
                             out["before"][e], out["after"][e], labels[units] == tree)
        findings.append(pe.finding())
    print(*(f.plain() for f in findings), sep="\n")
    for f in findings:
        assert f.applies, f.reason
        assert f.bounds == (-1.0, 1.0) and f.kind == "pre-registered"
        assert check_in_range(f, {"points": (-1.0, 1.0)})
        assert 0 < f.p_value <= 1
