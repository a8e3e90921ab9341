"""``jaxdissect paint``: add or remove objects in generated images by turning a
concept's units on or off in a region (GANPaint; the paper's "Applications").

Dissects the generator layer over z samples (cached, as ``jaxdissect intervene``
does), takes each edited concept's ``--units`` best-IoU units, and paints every
``--edit CONCEPT:on|off:y0,x0,y1,x1`` (box as fractions of the image) on
``--num-z`` latents, all edits in one vmapped program (``jaxdissect.experiments.paint``).
"On" sets the units to their 99.5% quantile levels from the dissection. The
segmenter measures the concept's pixels inside the box before and after. Writes
``OUT/paint.html``, ``paint.json``, ``painted.png`` (grid), ``images/*.png``,
``painted.npy`` (``[edits, z, H, W, 3]`` in [0, 1]) and ``OUT/dissect/``.
"""

from __future__ import annotations

import os

import numpy as np

from jaxdissect.commands import _common as C

HELP = "paint with units: turn a concept's units on/off in a region of generated images"


def add_arguments(p):
    C.add_common(p, kind_default_model="world-generator")
    p.add_argument("--edit", action="append", default=None, metavar="CONCEPT:MODE:BOX",
                   help="e.g. tree:off:0,0,1,0.5 (box y0,x0,y1,x1 as fractions of the image; "
                        "repeatable; default: the object with the most labelled units, off "
                        "in the left half and on in the right half)")
    p.add_argument("--units", type=int, default=20, help="best-IoU units per concept")
    p.add_argument("--num-z", type=int, default=8, help="latents painted")
    p.add_argument("--z-seed", type=int, default=2, help="seed of the painted latents")
    p.add_argument("--num-samples", type=int, default=1000,
                   help="z samples for the dissection (paper: 10000)")
    p.add_argument("--seed", type=int, default=1, help="z seed of the dissection (paper: 1)")


def parse_edit(spec: str):
    parts = spec.split(":")
    if len(parts) != 3:
        raise C.UserError(f"--edit {spec!r}: expected CONCEPT:on|off:y0,x0,y1,x1")
    concept, mode, box = parts
    if mode not in ("on", "off"):
        raise C.UserError(f"--edit {spec!r}: mode must be 'on' or 'off', got {mode!r}")
    try:
        box = tuple(float(v) for v in box.split(","))
    except ValueError:
        raise C.UserError(f"--edit {spec!r}: box must be four numbers y0,x0,y1,x1") from None
    if len(box) != 4:
        raise C.UserError(f"--edit {spec!r}: box must be four numbers y0,x0,y1,x1")
    return concept, mode, box


def default_edits(dres) -> list[str]:
    labels = dres.labels
    counts = np.bincount(dres.best_label[dres.labelled], minlength=len(labels))
    objects = [i for i in range(1, len(labels)) if labels.categories[i] == "object"] or \
        list(range(1, len(labels)))
    best = labels.names[max(objects, key=lambda i: (counts[i], dres.iou[:, i].max()))]
    return [f"{best}:off:0,0,1,0.5", f"{best}:on:0,0.5,1,1"]


@C.writes_results
def run(args) -> int:
    import jax
    import jax.numpy as jnp

    from jaxdissect.experiments import paint
    from jaxdissect.report import applications as A
    C.check_positive(units=args.units, num_z=args.num_z, num_samples=args.num_samples,
                     batch_size=args.batch_size)
    edits_spec = [parse_edit(s) for s in (args.edit or [])]   # fail early on bad syntax
    for _, _, box in edits_spec:
        paint.box_mask((4, 4), box)                            # range check
    if args.quantile < 0.005 and (not edits_spec or any(m == "on" for _, m, _ in edits_spec)):
        raise C.UserError("turning units on needs their 99.5% levels; use --quantile >= 0.005")
    loaded = C.load_model(args.model, args.weights)
    if loaded.kind != "generator":
        raise C.UserError(f"{args.model!r} is a classifier; painting needs a generator")
    layer = args.layer or loaded.default_layer
    source = C.load_data("z", loaded, args.num_samples, args.seed)
    args.data = "z"
    seg_name = C.default_segmenter(args, loaded)
    segmenter = C.load_segmenter(seg_name, source, loaded)
    names = list(segmenter.labels.names)
    for concept, _, _ in edits_spec:
        if concept not in names[1:]:
            raise C.UserError(f"unknown concept {concept!r}; the segmenter's labels are "
                              f"{names[1:]}")
    out = C.results(args, "paint", os.path.join(
        "results", f"paint-{os.path.basename(loaded.name)}-{layer}"))
    dres, _ = C.run_dissection(
        loaded, source, segmenter, layer, os.path.join(out, "dissect"), quantile=args.quantile,
        miniou=args.miniou, batch_size=args.batch_size, progress=not args.no_progress,
        data_name=f"z@{args.seed}", seg_name=seg_name, seg_downsample=args.seg_downsample,
        upsample=args.upsample,
        index_link=os.path.join("..", "paint.html"))
    high = dres.levels.get(0.005)
    if not edits_spec:
        edits_spec = [parse_edit(s) for s in default_edits(dres)]
    if high is None and any(m == "on" for _, m, _ in edits_spec):
        raise C.UserError("turning units on needs their 99.5% levels; use --quantile > 0.005")
    from jaxdissect.data.source import ZSource
    z = ZSource(args.num_z, loaded.z_dim, args.z_seed).batch(0, args.num_z)["z"]
    acts_shape = jax_shape(loaded, z, layer)
    image = np.asarray(loaded.images(loaded.run(loaded.params, jnp.asarray(z[:1]))[0]))
    image_hw = image.shape[1:3]
    stack, edits = [], []
    for concept, mode, box in edits_spec:
        units = paint.concept_units(dres.iou, dres.labels.names, concept, args.units)
        grid = paint.region_to_grid(paint.box_mask(image_hw, box), acts_shape[1:3])
        stack.append(paint.paint_edit(units, acts_shape[3], grid, mode, high))
        values = np.asarray(high)[units] if mode == "on" else np.zeros(len(units))
        edits.append(dict(concept=concept, mode=mode, box=tuple(box),
                          units=np.asarray(units, np.int64),
                          unit_iou=np.asarray(dres.iou[units, dres.labels.index(concept)],
                                              np.float64),
                          values=np.asarray(values, np.float64)))
    from jaxdissect.experiments.intervene import split_generator
    split = split_generator(loaded, layer)
    measure = not isinstance(segmenter, C.TruthSegmenter)
    regions = labels = None
    if measure:
        seg_hw = tuple(jax.eval_shape(segmenter, jnp.zeros((1,) + image_hw + (3,))).shape[2:])
        regions = np.stack([paint.box_mask(seg_hw, e["box"]) for e in edits])
        labels = [dres.labels.index(e["concept"]) for e in edits]
    res = paint.paint_source(split, ZSource(args.num_z, loaded.z_dim, args.z_seed),
                             paint.stack_edits(stack), batch_size=args.batch_size,
                             segment=segmenter if measure else None, labels=labels,
                             regions=regions)
    painted, base = res["images"], res["base"]                    # [E, b, H, W, 3], [b, ...]
    if measure:
        for rec, region, before, after in zip(edits, regions, res["before"], res["after"]):
            rec.update(segmenter=seg_name, region_pixels=int(region.sum()), before=before,
                       after=after)
    result = paint.PaintResult(model=loaded.name, layer=layer, z_seed=args.z_seed,
                               num_z=args.num_z, dissection_samples=args.num_samples,
                               edits=tuple(paint.PaintEdit(**e) for e in edits))
    records = [e.to_json() for e in result.edits]
    os.makedirs(out, exist_ok=True)
    np.save(os.path.join(out, "painted.npy"), painted)
    from jaxdissect.report.pictures import paint_grid
    grid_png = paint_grid(out, base, painted, [r["box"] for r in records])
    os.makedirs(os.path.join(out, "images"), exist_ok=True)
    from PIL import Image
    for e, rec in enumerate(records):
        for i in range(len(z)):
            Image.fromarray(A.to_u8(painted[e, i])).save(os.path.join(
                out, "images", f"edit{e}_{rec['concept']}_{rec['mode']}_z{i}.png"))
    page = A.write_paint(out, result, grid_png, dissection_link="dissect/report.html")
    for rec in records:
        m = rec.get("measured")
        msg = f"{rec['concept']} {rec['mode']} in box {rec['box']}"
        if m:
            msg += (f": {rec['concept']} pixels in the box {m['before_mean']:.1f} -> "
                    f"{m['after_mean']:.1f} per image")
        print(msg)
    for f in result.findings():
        print(f.plain())
    print(C.final_path(page))
    return 0


def jax_shape(loaded, z, layer):
    import jax
    import jax.numpy as jnp
    C.check_layer(loaded, layer)
    return jax.eval_shape(lambda p, zz: loaded.activations(p, zz, layer),
                          loaded.params, jnp.asarray(z)).shape
