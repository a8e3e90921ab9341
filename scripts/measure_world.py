"""Measure the world and its shipped models on fresh held-out seeds; write
weights/world/RESULTS.md and weights/world/results.json.

    python scripts/measure_world.py                 # the recorded figures
    python scripts/measure_world.py --quick         # a smaller run, not written
"""

import argparse
import json
import os
import time

import numpy as np

from jaxdissect.world import CLASS_NAMES, WorldSource
from jaxdissect.world.classifier import load_classifier
from jaxdissect.world.measure import agreement, dissect_classifier, dissection_summary, side_by_side
from jaxdissect.world.segmenter import load_segmenter
from jaxdissect.world.source import class_indices, render_closeup
from jaxdissect.world.train.classifier import classifier_accuracy, segmenter_accuracy
from jaxdissect.world.weights import WEIGHTS_DIR


def render_speed(n: int, threads: int) -> dict:
    src = WorldSource(n, seed=1000, threads=threads)
    src.render_u8(0, 256)  # warm up
    load = os.getloadavg()[0]
    t0, c0 = time.time(), time.process_time()
    for a in range(0, n, 1000):
        src.render_u8(a, min(a + 1000, n))
    # CPU seconds summed over threads: what the rendering costs, whatever else runs
    return {"images": n, "threads": threads, "seconds": round(time.time() - t0, 2),
            "cpu_seconds": round(time.process_time() - c0, 2),
            "cpu_count": os.cpu_count(), "load_average_before": round(load, 2)}


def layer_accuracy(pairs) -> dict:
    """Object/part/material pixel accuracy, where the ground truth has a label, over
    ``(prediction, truth)`` pairs of ``[b, >=3, H, W]`` label maps."""
    hits, total = np.zeros(3), np.zeros(3)
    for pred, gt in pairs:
        for k in range(3):
            where = gt[:, k] > 0
            hits[k] += (pred[:, k] == gt[:, k])[where].sum()
            total[k] += where.sum()
    return {f"{name}_pixel_accuracy": float(hits[k] / total[k])
            for k, name in enumerate(("object", "part", "material"))}


def segment_small(seg, n: int) -> dict:
    """The segmenter on 32x32 renders (as the world generator's samples are sized),
    resized to 64x64 by the segmenter, scored against the 64x64 ground truth of the
    same scenes (a scene's geometry does not depend on the render size)."""
    small = WorldSource(n, seed=1004, size=32)
    big = WorldSource(n, seed=1004, size=64)
    return layer_accuracy((np.asarray(seg(small.batch(a, min(a + 100, n))["image"])),
                           big.batch(a, min(a + 100, n))["seg"]) for a in range(0, n, 100))


def segment_closeups(seg, n: int) -> dict:
    """The segmenter on 32x32 village close-ups (``render_closeup``), resized to 64x64
    by the segmenter, scored against the close-ups' 32x32 ground truth with each
    pixel repeated 2x2."""
    idx = class_indices(1004, ["village"], n)
    batches = (render_closeup(1004, idx[a:a + 100], 32) for a in range(0, n, 100))
    return layer_accuracy((np.asarray(seg(b["image"].astype(np.float32) / 255.0)),
                           b["seg"].repeat(2, -1).repeat(2, -2)) for b in batches)


def weights_size() -> dict:
    sizes = {}
    for d in sorted(p for p in WEIGHTS_DIR.iterdir() if p.is_dir()):
        sizes[d.name] = sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
    sizes["total"] = sum(sizes.values())
    return {k: round(v / 2**20, 2) for k, v in sizes.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    n_cls, n_seg, n_dis = (300, 100, 200) if a.quick else (3000, 1000, 2000)
    out = {"seeds": {"render": 1000, "classifier": 1001, "segmenter": 1002, "dissection": 1003,
                      "segmenter_32px": 1004}}
    out["render"] = render_speed(2000 if a.quick else 10_000, threads=2)
    print(out["render"], flush=True)
    model, params = load_classifier()
    acc, confusion = classifier_accuracy(model, params, WorldSource(n_cls, seed=1001), n_cls)
    out["classifier"] = {"images": n_cls, "accuracy": acc,
                         "per_class": {c: float(confusion[i, i] / confusion[i].sum())
                                       for i, c in enumerate(CLASS_NAMES)}}
    print(out["classifier"], flush=True)
    seg = load_segmenter()
    out["segmenter"] = {"images": n_seg,
                        **segmenter_accuracy(seg, WorldSource(n_seg, seed=1002), n_seg)}
    print(out["segmenter"], flush=True)
    out["segmenter_32px"] = {"images": n_seg, **segment_small(seg, n_seg)}
    print(out["segmenter_32px"], flush=True)
    out["segmenter_closeup"] = {"images": n_seg, **segment_closeups(seg, n_seg)}
    print(out["segmenter_closeup"], flush=True)
    src = WorldSource(n_dis, seed=1003)
    truth = dissect_classifier(model, params, src)
    segd = dissect_classifier(model, params, src, seg)
    rows = side_by_side(truth, segd)
    out["dissection"] = {"layer": "conv5_3", "images": n_dis, "quantile": truth.quantile,
                         "miniou": truth.miniou, "truth": dissection_summary(truth),
                         "segmenter": dissection_summary(segd),
                         "label_agreement": agreement(rows, truth.miniou), "units": rows}
    print({k: v for k, v in out["dissection"].items() if k != "units"}, flush=True)
    out["weights_mb"] = weights_size()
    print(out["weights_mb"])
    if not a.quick:
        (WEIGHTS_DIR / "results.json").write_text(json.dumps(out, indent=1) + "\n")
        (WEIGHTS_DIR / "RESULTS.md").write_text(markdown(out))
        print(f"wrote {WEIGHTS_DIR / 'RESULTS.md'}")


def classifier_training_note() -> list[str]:
    """The shipped classifier's training choice, from its config.json."""
    from jaxdissect.world.weights import read_config
    cfg = read_config(WEIGHTS_DIR / "classifier")
    top = cfg.get("retrained_top")
    if not top:
        return []
    return [f"Classifier training: the whole network was trained first (held-out "
            f"{100 * cfg['stage1_heldout']['accuracy']:.1f}% on {cfg['stage1_heldout']['images']} "
            f"images of world seed {cfg['stage1_heldout']['world_seed']}); then "
            f"{', '.join(top['layers'])} were retrained from scratch on its frozen "
            f"conv5_2 features of {top['images']} images (and their mirrors) with an L1 "
            f"penalty of {top['act_l1']} on conv5_3's mean activation, so that conv5_3's "
            f"units are sparse and less redundant (see scripts/train_world_classifier.py "
            f"and classifier/config.json).", ""]


def markdown(r: dict) -> str:
    d, s, c = r["dissection"], r["segmenter"], r["classifier"]
    lines = [
        "# The synthetic world: measured figures",
        "",
        "Written by `python scripts/measure_world.py` on fresh world seeds (never used in "
        f"training): {r['seeds']}.",
        "",
        "| figure | target | measured |",
        "| --- | --- | --- |",
        f"| render {r['render']['images']} images (64x64, {r['render']['threads']} threads, "
        f"{r['render']['cpu_count']} cores, load avg {r['render']['load_average_before']}) "
        f"| < 30 s | {r['render']['seconds']} s wall, {r['render']['cpu_seconds']} CPU-s |",
        f"| classifier held-out accuracy ({c['images']} images) | >= 90% | "
        f"{100 * c['accuracy']:.1f}% |",
        f"| segmenter object pixel accuracy ({s['images']} images) | >= 90% | "
        f"{100 * s['object_pixel_accuracy']:.1f}% |",
        f"| segmenter part pixel accuracy, where a part is present | >= 80% | "
        f"{100 * s['part_pixel_accuracy']:.1f}% |",
        f"| segmenter material pixel accuracy, where a material is present | >= 80% | "
        f"{100 * s['material_pixel_accuracy']:.1f}% |",
        f"| colour layer (rule on pixels) | exact | {100 * s['color_pixel_accuracy']:.1f}% |",
        f"| same on 32x32 renders resized to 64 (object / part / material) | | "
        f"{100 * r['segmenter_32px']['object_pixel_accuracy']:.1f}% / "
        f"{100 * r['segmenter_32px']['part_pixel_accuracy']:.1f}% / "
        f"{100 * r['segmenter_32px']['material_pixel_accuracy']:.1f}% |",
        f"| same on 32x32 village close-ups (render_closeup) | | "
        f"{100 * r['segmenter_closeup']['object_pixel_accuracy']:.1f}% / "
        f"{100 * r['segmenter_closeup']['part_pixel_accuracy']:.1f}% / "
        f"{100 * r['segmenter_closeup']['material_pixel_accuracy']:.1f}% |",
        f"| conv5_3 units labelled, IoU > {d['miniou']} (ground truth, {d['images']} images) "
        f"| >= 40% | {100 * d['truth']['labelled_fraction']:.1f}% "
        f"({d['truth']['labelled']}/{d['truth']['units']}) |",
        f"| distinct concepts among them | >= 8 | {d['truth']['num_concepts']} |",
        f"| same, segmenter output instead of ground truth | | "
        f"{100 * d['segmenter']['labelled_fraction']:.1f}%, "
        f"{d['segmenter']['num_concepts']} concepts |",
        f"| units labelled alike by both (of those labelled by ground truth) | | "
        f"{100 * d['label_agreement']:.1f}% |",
        f"| shipped weights, all of weights/world | <= 25 MB | {r['weights_mb']['total']} MB |",
        "",
        *classifier_training_note(),
        "Per-class classifier accuracy: " + ", ".join(
            f"{k} {100 * v:.0f}%" for k, v in c["per_class"].items()) + ".",
        "",
        "Concepts of labelled units (ground truth): " + ", ".join(d["truth"]["concepts"]) + ".",
        "",
        "## conv5_3 units: ground truth vs trained segmenter, side by side",
        "",
        "`truth` = best concept and IoU against the renderer's ground truth; `same label, "
        "segmenter` = that concept's IoU against the segmenter's output; `segmenter` = the "
        "best concept against the segmenter's output. Sorted by ground-truth IoU.",
        "",
        "| unit | truth | IoU | same label, segmenter IoU | segmenter | IoU |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in sorted(d["units"], key=lambda x: -x["truth_iou"]):
        lines.append(f"| {row['unit']} | {row['truth_label']} | {row['truth_iou']:.3f} | "
                     f"{row['same_label_seg_iou']:.3f} | {row['seg_label']} | "
                     f"{row['seg_iou']:.3f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
