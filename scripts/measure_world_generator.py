"""Measure the shipped world generator with the world segmenter (generator_quality's figures).

    python scripts/measure_world_generator.py                  # 1000 samples, prints json
    python scripts/measure_world_generator.py --write   # the recorded figures: writes
        # weights/world/generator/measured.json and weights/world/generator/RESULTS.md

Targets: >= 80% of generated pixels get a non-background object label; every
object covering >= 2% of real pixels has a generated share within a factor of 2
of its real share (checked against ground truth and against the segmented reals).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from jaxdissect.world.generator import DEFAULT_DIR, load_generator
from jaxdissect.world.generator_quality import measure_generator
from jaxdissect.world.segmenter import load_segmenter


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--generator", default=None, help="generator directory (default: shipped)")
    p.add_argument("--segmenter", default=None, help="segmenter directory (default: shipped)")
    p.add_argument("--num", type=int, default=1000)
    p.add_argument("--z-seed", type=int, default=1)
    p.add_argument("--world-seed", type=int, default=1004, help="held-out world seed of reals")
    p.add_argument("--write", action="store_true",
                   help="write measured.json and RESULTS.md beside the generator")
    args = p.parse_args(argv)
    t0 = time.time()
    model, params = load_generator(args.generator)
    config = json.loads(((Path(args.generator) if args.generator else DEFAULT_DIR)
                         / "config.json").read_text())
    figures = measure_generator(model, params, load_segmenter(args.segmenter), args.num,
                                args.z_seed, args.world_seed, config.get("classes"),
                                config.get("closeup"), config.get("closeup_every") or 1)
    figures["targets_met"] = bool(figures["nonbackground"] >= 0.8
                                  and figures["vs_ground_truth"]["ok"]
                                  and figures["vs_segmented_real"]["ok"])
    figures["measure_seconds"] = round(time.time() - t0, 1)
    text = json.dumps(figures, indent=1)
    print(text)
    if args.write:
        out = Path(args.generator) if args.generator else DEFAULT_DIR
        (out / "measured.json").write_text(text + "\n")
        (out / "RESULTS.md").write_text(markdown(figures, config))
        print(f"wrote {out / 'RESULTS.md'}")
    return 0


def markdown(f: dict, config: dict) -> str:
    """The figures as a results section (the targets beside the measurements)."""
    gt, sg = f["vs_ground_truth"], f["vs_segmented_real"]
    framing = ""
    if f.get("closeup"):
        share = "all" if f["closeup_every"] == 1 else f"one in {f['closeup_every']}"
        framing = (f", {share} seen as {f['closeup']}x close-ups framing a house, as the "
                   "generator was trained")
    lines = [
        "# World generator: measured figures",
        "",
        "Written by `python scripts/measure_world_generator.py --write`: "
        f"{f['samples']} samples (z seed {f['z_seed']}) of the shipped "
        f"{f['resolution']}x{f['resolution']} generator (sizes {config['sizes']}), "
        "segmented by the shipped world segmenter (which resizes them to 64x64), against "
        f"{f['samples']} real images of held-out world seed {f['real_world_seed']} (scene "
        f"classes: {f['classes'] if isinstance(f['classes'], str) else ', '.join(f['classes'])}"
        + framing
        + "; the generator's training classes). Trained "
        f"{config['steps_done']} steps x batch {config['batch']}: "
        f"{config['cpu_minutes']} CPU-minutes ({config['train_minutes']} min wall on 2 CPU "
        "cores shared with other jobs).",
        "",
        "The world has no background pixels, so the segmenter never answers label 0 and "
        "the non-background figure is 100% by construction; the share ratios are the "
        "informative test.",
        "",
        "| figure | target | measured |",
        "| --- | --- | --- |",
        f"| generated pixels with a non-background object label | >= 80% | "
        f"{100 * f['nonbackground']:.1f}% |",
        f"| worst generated/real share ratio, objects >= 2% of real pixels (ground truth) "
        f"| within 2x | {gt['worst_ratio']:.2f}x |",
        f"| same, real shares from the segmenter on real images at "
        f"{f['resolution']}x{f['resolution']} | within 2x | {sg['worst_ratio']:.2f}x |",
        f"| all targets met | | {'yes' if f['targets_met'] else 'no'} |",
        "",
        "| object | real share (truth) | real share (segmented) | generated share "
        "| ratio (truth) | ratio (segmented) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, o in gt["objects"].items():
        s = sg["objects"].get(name)
        lines.append(f"| {name} | {o['real']:.3f} | {s['real'] if s else '-'} | "
                     f"{o['generated']:.3f} | {o['ratio']:.2f} | "
                     f"{s['ratio'] if s else '-'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
