"""What the experiment commands share: loading a model, data and a segmenter from
command-line specs, running a (cached) dissection and writing its report.

Model specs (each loads a :class:`~jaxdissect.spec.ModelSpec`): ``world`` /
``world-classifier`` / ``world-generator`` (the shipped world weights),
``py:module:factory`` (your own model: ``factory()`` returns a ``ModelSpec``, or a
torch image classifier), ``torchvision:NAME`` / ``timm:NAME`` (published weights,
``--weights random`` or ``--weights FILE`` for a local state dict), a
registry name (``vgg16_places365``, ``proggan_churchoutdoor`` ... fetched and converted
on first use), a local ``.pth`` file (converted safely, without torch), or a directory
(a converted checkpoint with ``model.json``, or a world-style checkpoint with
``config.json`` + ``params/``).

Data specs: ``world`` (the synthetic world; ground-truth segmentation), a folder in
the reference's Places layout (``root/<class>/*.jpg``), ``tfds:places365_small``
(needs tensorflow-datasets), ``broden:DIR`` (the Broden layout), or ``z`` (latent
samples for generators).

Segmenter specs: ``truth`` (the data's ground truth; the world has it), ``broden``
(Broden's annotation), ``world`` (the shipped world segmenter), a reference segmenter
name such as ``netpqc``, or ``py:module:name`` (your own ``Segmenter`` object or class).
"""

from __future__ import annotations

import os

import numpy as np

from jaxdissect.cli import UserError
from jaxdissect.data.source import Prefix
from jaxdissect.runtime import hosts

# JAX is imported inside the functions that use it: the commands' argument parsers
# (``--help``) import this module and must not wait for JAX.

#: world seeds: training images of the shipped classifier use seed 1, its held-out
#: evaluation seed 2; experiments read seeds 3 (rank / "train") and 4 (val).
WORLD_TRAIN_SEED, WORLD_VAL_SEED = 3, 4


def load_model(spec: str, weights: str | None = None):
    """A :class:`~jaxdissect.spec.ModelSpec` from a model spec (see the module docstring);
    ``weights`` (``random`` or a state-dict file) for ``torchvision:`` / ``timm:`` models."""
    from jaxdissect.models import torch_zoo
    if torch_zoo.is_zoo_name(spec):
        try:
            return torch_zoo.load(spec, weights)
        except (ValueError, ImportError) as e:
            raise UserError(f"model {spec!r}: {e}") from None
    if weights is not None:
        raise UserError("--weights applies to torchvision:NAME and timm:NAME models")
    if spec in ("world", "world-classifier"):
        from jaxdissect.world import classifier
        return classifier.spec()
    if spec == "world-generator":
        from jaxdissect.world import generator
        return generator.spec()
    if spec.startswith("py:"):
        return _user_spec(spec)
    from jaxdissect.checkpoints.architectures import spec_from_converted
    if spec.endswith((".pth", ".pth.tar")):
        if not os.path.isfile(spec):
            raise UserError(f"model file {spec!r} does not exist")
        import jax
        import jax.numpy as jnp

        from jaxdissect import checkpoints as ck
        from jaxdissect.checkpoints.pth import load_state_dict
        state = load_state_dict(spec)
        errors = []
        for arch in ck.ARCHITECTURES:
            try:
                config, params = ck.convert_state_dict(state, arch, what=os.path.basename(spec))
            except (ck.CheckpointMismatch, KeyError, ValueError) as e:
                errors.append(f"as {arch}: {str(e).splitlines()[0]}")
                continue
            return spec_from_converted(arch, ck.model_from_config(arch, config),
                                       jax.tree_util.tree_map(jnp.asarray, params), spec)
        raise UserError(f"{spec}: not a state dict of a known architecture "
                        f"({'; '.join(errors)})")
    if os.path.isdir(spec):
        if os.path.isfile(os.path.join(spec, "model.json")):
            from jaxdissect.checkpoints.store import load_converted
            model, params, meta = load_converted(spec)
            return spec_from_converted(meta["arch"], model, params, spec)
        if os.path.isfile(os.path.join(spec, "config.json")):
            import json
            with open(os.path.join(spec, "config.json")) as f:
                config = json.load(f)
            if "sizes" in config:
                from jaxdissect.world import generator
                return generator.spec(spec)
            from jaxdissect.world import classifier
            return classifier.spec(spec)
        raise UserError(f"{spec!r} is a directory without model.json or config.json")
    from jaxdissect.checkpoints.registry import load_pretrained, load_registry
    names = load_registry()["checkpoints"]
    if spec not in names:
        raise UserError(f"unknown model {spec!r}: use world, world-classifier, "
                        f"world-generator, py:MODULE:FACTORY, a .pth file, a checkpoint "
                        f"directory or one of "
                        f"{sorted(n for n, e in names.items() if e.get('arch'))}")
    model, params = load_pretrained(spec)
    return spec_from_converted(names[spec]["arch"], model, params, spec)


def _user_spec(text: str):
    """``py:module:factory``: ``factory()`` (or the object itself) must be a ModelSpec."""
    import importlib

    from jaxdissect.spec import ModelSpec
    try:
        mod, attr = text[3:].rsplit(":", 1)
        obj = getattr(importlib.import_module(mod), attr)
    except (ValueError, ImportError, AttributeError) as e:
        raise UserError(f"model {text!r}: cannot load ({e}); expected py:MODULE:FACTORY") \
            from None
    if callable(obj) and not isinstance(obj, ModelSpec) and not _is_torch_module(obj):
        obj = obj()
    if _is_torch_module(obj):
        from jaxdissect.models import torch_zoo
        obj = torch_zoo.spec_for_module(obj, name=text)
    if not isinstance(obj, ModelSpec):
        raise UserError(f"model {text!r} gave a {type(obj).__name__}, not a "
                        "jaxdissect.spec.ModelSpec")
    return obj


def _is_torch_module(obj) -> bool:
    import sys
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def load_data(spec: str, model, num: int | None, seed: int, split: str = "val",
              skip_bad: bool = False):
    """An ``ImageSource`` for the :class:`~jaxdissect.spec.ModelSpec` ``model``
    (``skip_bad``: leave out a folder's unreadable images; see :func:`skipped_images`)."""
    if model.kind == "generator":
        if spec not in ("z", "world"):
            raise UserError(f"a generator reads latent samples: use --data z (got {spec!r})")
        from jaxdissect.data.source import ZSource
        return ZSource(num or 10_000, model.z_dim, seed)
    if spec == "z":
        raise UserError("--data z is for generators; a classifier needs images")
    if spec == "world":
        from jaxdissect.world import WorldSource
        # the world renders at 32, 64 or 128 pixels; models with a larger input read it
        # at 128 (the reference's classifiers pool adaptively before their fc layers)
        side = model.input_size[0]
        size = side if side in (32, 64, 128) else 128
        return _match_classes(WorldSource(num or 2000, seed=seed, size=size), model, spec)
    if spec.startswith("broden:"):
        from jaxdissect.data.broden import broden_from_spec
        try:
            src = broden_from_spec(spec, size=tuple(model.input_size))
        except (FileNotFoundError, ValueError) as e:
            raise UserError(str(e)) from None
        return Prefix(src, num) if num is not None and num < src.num_examples else src
    if spec.startswith("tfds:"):
        from jaxdissect.data.tfds_source import TFDSSource
        try:
            source = TFDSSource(spec[5:], split="train" if split == "train" else "validation",
                                num_examples=num, crop=model.input_size[0])
        except ImportError as e:
            raise UserError(str(e)) from None
        return _match_classes(source, model, spec)
    root = spec
    if os.path.isdir(os.path.join(spec, split)):
        root = os.path.join(spec, split)
    from jaxdissect.data.folder import ImageFolderSource
    try:
        src = ImageFolderSource(root, size=tuple(model.input_size), policy=model.resize,
                                class_names=model.class_names, skip_bad=skip_bad)
    except (FileNotFoundError, ValueError) as e:
        raise UserError(str(e)) from None
    if num is not None and num < src.num_examples:
        src = Prefix(src, num)
    return src


def _match_classes(source, model, spec: str):
    """``source`` with labels in the model's class order (by class name)."""
    names = getattr(source, "class_names", None)
    if names is None or model.class_names is None or tuple(names) == tuple(model.class_names):
        return source
    missing = [n for n in names if n not in model.class_names]
    if missing:
        raise UserError(f"data {spec!r} has classes {missing} that {model.name} does not "
                        f"know; its classes: {list(model.class_names)}")
    return Relabelled(source, [model.class_names.index(n) for n in names],
                      tuple(model.class_names))


class Relabelled:
    """``source`` with ``label`` mapped through ``mapping`` (source class -> model class)."""

    def __init__(self, source, mapping, class_names):
        self.inner, self.mapping = source, np.asarray(mapping, np.int32)
        self.num_examples = source.num_examples
        self.seg_labels = getattr(source, "seg_labels", None)
        self.class_names = class_names

    def identity(self) -> dict:
        from jaxdissect.runtime.fingerprint import data_identity
        return {"relabelled": self.mapping.tolist(), "of": data_identity(self.inner)}

    def batch(self, start, stop):
        b = dict(self.inner.batch(start, stop))
        if "label" in b:
            b["label"] = self.mapping[b["label"]]
        return b


def writes_results(run):
    """Decorate a command's ``run``: the folder it opens with :func:`results` is swapped
    in when it returns, left as it was if it raises."""
    from jaxdissect.runtime import outdir
    return outdir.writes_results(run)


def results(args, command: str, default: str) -> str:
    """Where ``command`` writes: a staging folder swapped into ``args.out`` (or
    ``default``) when its decorated ``run`` returns (``runtime.outdir``): never half
    written, never mixing two runs, another command's folder only with ``--force``."""
    from jaxdissect.runtime import outdir
    return outdir.open_results(args.out or default, command, getattr(args, "force", False))


def final_path(path: str) -> str:
    """A written file's path as it will be once its folder is swapped in."""
    from jaxdissect.runtime import outdir
    return outdir.final_path(path)


def skipped_images(source) -> int:
    """How many unreadable images ``source`` (or the folder it is a prefix of) left out."""
    return len(getattr(getattr(source, "inner", source), "skipped", ()))


class TruthSegmenter:
    """Marker: use the source's ground-truth ``seg``."""

    def __init__(self, labels):
        self.labels = labels


def load_segmenter(spec: str, source, model=None):
    if spec == "truth":
        if getattr(source, "seg_labels", None) is None:
            raise UserError("--segmenter truth needs data with ground-truth segmentation "
                            "(--data world); use --segmenter world or netpqc")
        return TruthSegmenter(source.seg_labels)
    if spec == "broden":
        from jaxdissect.data.broden import BrodenSegmenter
        try:
            return BrodenSegmenter(source)
        except ValueError as e:
            raise UserError(str(e)) from None
    if spec == "world":
        from jaxdissect.world.segmenter import load_segmenter as world_seg
        return world_seg()
    if spec.startswith("py:"):
        # py:module:attr -- a Segmenter object (or a factory called with no arguments)
        import importlib
        try:
            mod, attr = spec[3:].rsplit(":", 1)
            obj = getattr(importlib.import_module(mod), attr)
        except (ValueError, ImportError, AttributeError) as e:
            raise UserError(f"segmenter {spec!r}: cannot load ({e})") from None
        return obj() if isinstance(obj, type) or not hasattr(obj, "labels") else obj
    from jaxdissect.segmentation.load import load_segmenter as ref_seg
    return ref_seg(spec)


# ---------------------------------------------------------------- dissection

def make_compute(model, layer: str, segmenter, seg_downsample: int = 1):
    """``compute(batch, params) -> (acts [b,h,w,u], seg [b,K,H,W])``, for
    ``dissect(..., params=model.params)`` (the weights are then an argument of the
    compiled step, not constants folded into it), and ``forward(batch) -> (acts,
    images)`` with ``model.params``. ``seg_downsample`` d keeps the centre pixel of each
    d x d block of the segmentation (the reference dissects at a quarter of the image
    size)."""
    import jax.numpy as jnp

    from jaxdissect.experiments.dissect import spec_compute, spec_forward
    # the data's own annotation (world truth, Broden) rather than a model's
    truth = isinstance(segmenter, TruthSegmenter) or getattr(segmenter, "reads_batch", False)

    def segment(batch, images):
        seg = jnp.asarray(batch["seg"]) if truth else segmenter(images)
        if seg_downsample > 1:
            o = seg_downsample // 2
            seg = seg[:, :, o::seg_downsample, o::seg_downsample]
        return seg.astype(jnp.int32)

    forward_with = spec_forward(model, layer)

    def forward(batch):
        return forward_with(batch, model.params)

    return spec_compute(model, layer, segment), forward


def check_layer(model, layer: str) -> None:
    try:
        model.check_layer(layer)
    except KeyError as e:
        raise UserError(str(e).strip("'\"")) from None


def run_dissection(model, source, segmenter, layer: str, outdir: str, *,
                   quantile=0.01, miniou=0.04, batch_size=32, topk=5, progress=True,
                   data_name="", seg_name="", index_link=None, seg_downsample=1,
                   upsample=None, iou_rule="pnas", model_spec=None, significance=False,
                   max_p=None, permutations=1000):
    """Dissect ``layer`` of the :class:`~jaxdissect.spec.ModelSpec` ``model`` (cached in
    ``outdir/cache``, keyed by the weights' fingerprint), write the report with
    thumbnails and NetDissect's ``tally.csv``. With ``significance`` (or ``max_p``),
    test every label (``experiments.label_significance``: ``permutations`` image
    permutations, a bootstrap interval) and drop labels with p > ``max_p``. Returns
    ``(DissectResult, report path)``."""
    import jax

    from jaxdissect import report
    from jaxdissect.experiments.dissect import dissect
    from jaxdissect.runtime.cache import atomic_write
    from jaxdissect.runtime.fingerprint import fingerprint
    seg_downsample = 1 if seg_downsample is None else seg_downsample
    if seg_downsample < 1:
        raise UserError(f"--seg-downsample must be >= 1, got {seg_downsample}")
    check_layer(model, layer)
    compute, forward = make_compute(model, layer, segmenter, seg_downsample)
    example = {k: v for k, v in source.batch(0, 1).items()}
    try:
        acts_s, seg_s = jax.eval_shape(compute, example, model.params)
    except ValueError as e:
        raise UserError(f"layer {layer!r}: {e}") from None
    image_hw = example["image"].shape[1:3] if "image" in example else None
    try:
        up = model.upsampler(layer, acts_s.shape[1:3], seg_s.shape[2:], image_hw, upsample)
    except ValueError as e:
        raise UserError(str(e)) from None
    levels = (0.005,) if quantile > 0.005 else ()
    cache_key = {"layer": layer, "data": data_name, "architecture": architecture(model.module),
                 "segmenter": seg_name, "n": source.num_examples,
                 "segmenter_weights": fingerprint(vars(segmenter), arrays_only=True),
                 "seg_downsample": seg_downsample, "upsample": upsample or model.upsample}
    res = dissect(compute, source, segmenter.labels, upsample=up, quantile=quantile,
                  levels=levels, miniou=miniou, batch_size=batch_size, topk=topk,
                  cache_dir=os.path.join(outdir, "cache"), cache_key=cache_key,
                  progress=progress, params=model.params, iou_rule=iou_rule)
    sig_summary = None
    if (significance or max_p is not None) and res.labelled.any():
        res, sig_summary = label_significance(res, compute, source, up, model.params,
                                              outdir, cache_key, batch_size, permutations,
                                              max_p, progress)
    if not hosts.is_writer():  # the other processes tallied their slices; one writes
        return res, None
    strips = unit_thumbnails(forward, up, source, res, topk)
    paths = report.write_unit_thumbnails(outdir, strips)
    units = []
    for rec in res.units():
        rec["image"] = paths.get(rec["unit"])
        units.append(rec)
    summary = {"model": model.name, "model_spec": model_spec or model.name, "layer": layer,
               "quantile": quantile, "miniou": miniou,
               "num_images": source.num_examples, "segmenter": seg_name, "data": data_name,
               "skipped_images": skipped_images(source),
               "seg_grid": list(seg_s.shape[2:]),
               "units": units, "dissection": res.to_json(),
               "iou_shape": list(res.iou.shape), "significance": sig_summary}
    atomic_write(os.path.join(outdir, "iou.npy"), lambda f: np.save(f, res.iou))
    write_tally_csv(res, source, outdir)
    path = report.write_dissection(outdir, summary, index_link=index_link)
    return res, path


def label_significance(res, compute, source, up, params, outdir, cache_key, batch_size,
                       permutations, max_p, progress):
    """The significance sweep of ``res``'s labels: ``(res carrying it, report summary)``."""
    from jaxdissect.experiments.label_significance import significance
    if max_p is not None and not 0 < max_p <= 1:
        raise UserError(f"--max-p must be in (0, 1], got {max_p}")
    check_positive(permutations=permutations)
    sig = significance(compute, source, res, upsample=up, params=params,
                       batch_size=batch_size, permutations=permutations,
                       cache_dir=os.path.join(outdir, "cache"), cache_key=cache_key,
                       progress=progress)
    summary = {"tested": len(sig.units), "permutations": sig.permutations,
               "level": sig.level, "fdr": 0.01,
               "discoveries": int(sig.discoveries(0.01).sum()), "max_p": max_p}
    return res.with_significance(sig, max_p), summary


def write_tally_csv(res, source, outdir: str) -> str:
    """``outdir/tally.csv`` in NetDissect's schema (Broden data: its category order)."""
    from jaxdissect.data.broden import innermost
    from jaxdissect.report.netdissect_csv import write_csv
    broden = innermost(source)
    order = None if broden is None else [
        c for c in broden.categories if c in res.labels.category_names]
    return write_csv(res, os.path.join(outdir, "tally.csv"), order)


def architecture(model) -> dict:
    """A model's class and scalar settings (its code's part of a cache key; the
    weights are fingerprinted by ``dissect``)."""
    fields = getattr(model, "__dataclass_fields__", {})
    simple = (int, float, str, bool, type(None))
    return {"class": f"{type(model).__module__}.{type(model).__qualname__}",
            **{k: getattr(model, k) for k in sorted(fields)
               if k not in ("parent", "name") and isinstance(getattr(model, k), simple)}}


def unit_thumbnails(forward, up, source, res, topk):
    """``{unit: (images [k,H,W,3], masks [k,H,W])}`` for each unit's top images."""
    import jax

    from jaxdissect.report.thumbs import resize_mask
    top = np.where(res.fires[:, None], res.topk_images[:, :topk], -1)
    wanted = sorted({int(i) for i in top.ravel() if i >= 0})
    if not wanted:
        return {}
    fwd = jax.jit(lambda b: (lambda a, im: (up(a), im))(*forward(b)))
    acts_up, images = {}, {}
    for start in range(0, len(wanted), 32):
        idx = wanted[start:start + 32]
        parts = [source.batch(i, i + 1) for i in idx]
        batch = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        a, im = fwd(batch)
        for j, i in enumerate(idx):
            acts_up[i], images[i] = np.asarray(a[j]), np.asarray(im[j])
    out = {}
    for u in range(top.shape[0]):
        if not res.fires[u]:        # never above its threshold: no top images to show
            continue
        imgs, masks = [], []
        for i in top[u]:
            if i < 0:
                continue
            img = images[int(i)]
            imgs.append(img)
            masks.append(resize_mask(acts_up[int(i)][..., u], float(res.thresholds[u]),
                                     img.shape[:2]))
        if imgs:
            out[u] = (np.stack(imgs), np.stack(masks))
    return out


def add_common(p, kind_default_model="world"):
    p.add_argument("--model", default=kind_default_model,
                   help="world | world-classifier | world-generator | py:MODULE:FACTORY "
                        "(a function returning a jaxdissect.spec.ModelSpec) | registry "
                        "name | FILE.pth | checkpoint DIR | torchvision:NAME | timm:NAME "
                        "(default: %(default)s)")
    p.add_argument("--weights", default=None,
                   help="for torchvision:/timm: models: random (untrained) or a local "
                        "FILE.safetensors / FILE.pth state dict (default: the library's "
                        "published weights)")
    p.add_argument("--upsample", choices=("plain", "receptive-field"), default=None,
                   help="how a layer's map is brought to the segmentation grid (default: "
                        "the model's own; plain stretch for VGG-16 and generators, as "
                        "the reference)")
    p.add_argument("--layer", default=None, help="layer to dissect/edit (default: conv5_3 "
                   "for classifiers, layer4 for generators)")
    p.add_argument("--segmenter", default=None,
                   help="truth | world | netpqc (reference segmenters) | broden (the "
                        "annotation of --data broden:DIR); default: truth for world images, "
                        "broden for Broden, world for the world generator, netpqc otherwise")
    p.add_argument("--quantile", type=float, default=0.01, help="top quantile for thresholds")
    p.add_argument("--miniou", type=float, default=0.04, help="IoU needed to label a unit")
    p.add_argument("--seg-downsample", type=int, default=None,
                   help="dissect on every d-th segmentation pixel (block centres); default 4 "
                        "for the world's full-size ground truth and world segmenter (the "
                        "reference dissects on a quarter-size grid), else 1")
    p.add_argument("--batch-size", type=int, default=32, help="inputs per compiled step")
    p.add_argument("--out", default=None, help="results folder (default: a folder under "
                   "results/ named after the command, model and layer)")
    add_force(p)
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    hosts.add_arguments(p)


def add_force(p):
    p.add_argument("--force", action="store_true",
                   help="replace --out even if it holds another command's results or files "
                        "jaxdissect did not write")


def seg_downsample(args, seg_name: str) -> int:
    """``--seg-downsample``, or 4 for the world's full-size segmentations, else 1."""
    if args.seg_downsample is not None:
        return args.seg_downsample
    return 4 if seg_name in ("truth", "world") else 1


def default_segmenter(args, model) -> str:
    if args.segmenter:
        return args.segmenter
    if model.kind == "classifier":
        if str(args.data or "").startswith("broden:"):
            return "broden"
        return "truth" if args.data == "world" else "netpqc"
    return "world" if "world" in model.name else "netpqc"


def check_positive(**kw):
    for k, v in kw.items():
        if v is not None and v <= 0:
            raise UserError(f"--{k.replace('_', '-')} must be positive, got {v}")
