"""What the experiment commands share: loading a model, data and a segmenter from
command-line specs, running a (cached) dissection and writing its report.

Model specs: ``world`` / ``world-classifier`` / ``world-generator`` (the shipped world
weights), a registry name (``vgg16_places365``, ``proggan_churchoutdoor`` ... fetched
and converted on first use), a local ``.pth`` file (converted safely, without torch),
or a directory (a converted checkpoint with ``model.json``, or a world-style
checkpoint with ``config.json`` + ``params/``).

Data specs: ``world`` (the synthetic world; ground-truth segmentation), a folder in
the reference's Places layout (``root/<class>/*.jpg``), ``tfds:places365_small``
(needs tensorflow-datasets), or ``z`` (latent samples for generators).

Segmenter specs: ``truth`` (the data's ground truth; the world has it), ``world``
(the shipped world segmenter), a reference segmenter name such as ``netpqc``, or
``py:module:name`` (your own ``Segmenter`` object or class).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdissect.cli import UserError
from jaxdissect.runtime import hosts
from jaxdissect.runtime.cache import atomic_write
from jaxdissect.runtime.fingerprint import fingerprint

#: world seeds: training images of the shipped classifier use seed 1, its held-out
#: evaluation seed 2; experiments read seeds 3 (rank / "train") and 4 (val).
WORLD_TRAIN_SEED, WORLD_VAL_SEED = 3, 4


@dataclasses.dataclass
class Loaded:
    kind: str            # "classifier" or "generator"
    name: str
    model: Any
    params: Any
    default_layer: str
    image_size: int | None = None    # classifier input size
    z_dim: int | None = None         # generator latent size
    class_names: tuple | None = None

    def preprocess(self, images01):
        from jaxdissect.models.vgg16 import preprocess
        return preprocess(images01)

    def to_images(self, out):
        """Generator output in [-1, 1] -> images in [0, 1] (as the reference segments)."""
        return jnp.clip((out + 1.0) * 0.5, 0.0, 1.0)


def _from_module(model, params, name) -> Loaded:
    from jaxdissect.models.proggan import ProgressiveGenerator
    from jaxdissect.models.vgg16 import VGG16
    if isinstance(model, VGG16):
        return Loaded("classifier", name, model, params, "conv5_3", image_size=224)
    if isinstance(model, ProgressiveGenerator):
        return Loaded("generator", name, model, params, "layer4", z_dim=model.z_dim)
    raise UserError(f"model {name!r}: unsupported module {type(model).__name__}")


def load_model(spec: str) -> Loaded:
    """A classifier or generator from a model spec (see the module docstring)."""
    if spec in ("world", "world-classifier"):
        from jaxdissect.world.classifier import load_classifier
        from jaxdissect.world.scenes import CLASS_NAMES
        model, params = load_classifier()
        return Loaded("classifier", "world-classifier", model, params, "conv5_3",
                      image_size=64, class_names=tuple(CLASS_NAMES))
    if spec == "world-generator":
        from jaxdissect.world.generator import load_generator
        model, params = load_generator()
        return Loaded("generator", "world-generator", model, params, "layer4",
                      z_dim=model.z_dim)
    if spec.endswith(".pth"):
        if not os.path.isfile(spec):
            raise FileNotFoundError(f"model file {spec!r} does not exist")
        from jaxdissect import checkpoints as ck
        from jaxdissect.checkpoints.pth import load_state_dict
        state = load_state_dict(spec)
        errors = []
        for arch in ("vgg16", "proggan"):
            try:
                config, params = ck.convert_state_dict(state, arch, what=os.path.basename(spec))
            except (ck.CheckpointMismatch, KeyError, ValueError) as e:
                errors.append(f"as {arch}: {str(e).splitlines()[0]}")
                continue
            return _from_module(ck.model_from_config(arch, config),
                                jax.tree_util.tree_map(jnp.asarray, params), spec)
        raise UserError(f"{spec}: not a VGG-16 or ProGAN state dict ({'; '.join(errors)})")
    if os.path.isdir(spec):
        if os.path.isfile(os.path.join(spec, "model.json")):
            from jaxdissect.checkpoints.store import load_converted
            model, params, _ = load_converted(spec)
            return _from_module(model, params, spec)
        if os.path.isfile(os.path.join(spec, "config.json")):
            import json
            config = json.load(open(os.path.join(spec, "config.json")))
            if "sizes" in config:
                from jaxdissect.world.generator import load_generator
                model, params = load_generator(spec)
                return Loaded("generator", spec, model, params, "layer4", z_dim=model.z_dim)
            from jaxdissect.world.classifier import load_classifier
            model, params = load_classifier(spec)
            return Loaded("classifier", spec, model, params, "conv5_3",
                          image_size=config.get("image_size", 64))
        raise UserError(f"{spec!r} is a directory without model.json or config.json")
    from jaxdissect.checkpoints.registry import load_pretrained, load_registry
    names = load_registry()["checkpoints"]
    if spec not in names:
        raise UserError(f"unknown model {spec!r}: use world, world-classifier, "
                        f"world-generator, a .pth file, a checkpoint directory or one of "
                        f"{sorted(n for n, e in names.items() if e.get('arch'))}")
    model, params = load_pretrained(spec)
    return _from_module(model, params, spec)


def load_data(spec: str, loaded: Loaded, num: int | None, seed: int, split: str = "val"):
    """An ``ImageSource`` for ``loaded`` from a data spec."""
    if loaded.kind == "generator":
        if spec not in ("z", "world"):
            raise UserError(f"a generator reads latent samples: use --data z (got {spec!r})")
        from jaxdissect.data.source import ZSource
        return ZSource(num or 10_000, loaded.z_dim, seed)
    if spec == "z":
        raise UserError("--data z is for generators; a classifier needs images")
    if spec == "world":
        from jaxdissect.world import WorldSource
        # the world renders at 32, 64 or 128 pixels; larger models read it at 128
        size = loaded.image_size if loaded.image_size in (32, 64, 128) else 128
        return WorldSource(num or 2000, seed=seed, size=size)
    if spec.startswith("tfds:"):
        from jaxdissect.data.tfds_source import TFDSSource
        try:
            return TFDSSource(spec[5:], split="train" if split == "train" else "validation",
                              num_examples=num, crop=loaded.image_size or 224)
        except ImportError as e:
            raise UserError(str(e)) from None
    root = spec
    if os.path.isdir(os.path.join(spec, split)):
        root = os.path.join(spec, split)
    from jaxdissect.data.folder import ImageFolderSource
    src = ImageFolderSource(root, crop=loaded.image_size or 224,
                            resize=max(256, loaded.image_size or 224))
    if num is not None and num < src.num_examples:
        src = Prefix(src, num)
    return src


class Prefix:
    """The first ``n`` examples of a source."""

    def __init__(self, source, n):
        self.inner, self.num_examples = source, min(n, source.num_examples)
        self.seg_labels = getattr(source, "seg_labels", None)
        self.class_names = getattr(source, "class_names", None)

    def identity(self) -> dict:
        from jaxdissect.runtime.fingerprint import data_identity
        return {"prefix": self.num_examples, "of": data_identity(self.inner)}

    def batch(self, start, stop):
        return self.inner.batch(start, stop)


class TruthSegmenter:
    """Marker: use the source's ground-truth ``seg``."""

    def __init__(self, labels):
        self.labels = labels


def load_segmenter(spec: str, source, loaded: Loaded):
    if spec == "truth":
        if getattr(source, "seg_labels", None) is None:
            raise UserError("--segmenter truth needs data with ground-truth segmentation "
                            "(--data world); use --segmenter world or netpqc")
        return TruthSegmenter(source.seg_labels)
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

def _upsampler(loaded: Loaded, layer: str, act_hw, seg_hw, image_hw=None):
    from jaxdissect.stats.upsample import Upsampler
    if loaded.kind == "classifier" and hasattr(loaded.model, "layer_geometry"):
        try:
            geom = loaded.model.layer_geometry(layer)
        except ValueError:
            geom = None
        if geom is not None:
            return Upsampler.for_layers(geom, tuple(image_hw), tuple(seg_hw),
                                        data_shape=tuple(act_hw))
    return Upsampler.plain(tuple(act_hw), tuple(seg_hw))


def make_compute(loaded: Loaded, layer: str, segmenter, seg_downsample: int = 1):
    """``compute(batch, params) -> (acts [b,h,w,u], seg [b,K,H,W])``, for
    ``dissect(..., params=loaded.params)`` (the weights are then an argument of the
    compiled step, not constants folded into it), and ``forward(batch) -> (acts,
    images)`` with ``loaded.params``. ``seg_downsample`` d keeps the centre pixel of each
    d x d block of the segmentation (the reference dissects at a quarter of the image
    size)."""
    model = loaded.model
    truth = isinstance(segmenter, TruthSegmenter)

    if loaded.kind == "classifier":
        def forward_with(batch, params):
            x = jnp.asarray(batch["image"])
            acts, _ = model.apply({"params": params}, loaded.preprocess(x), stop=layer)
            return acts, x
    else:
        def forward_with(batch, params):
            out, acts = model.apply({"params": params}, jnp.asarray(batch["z"]),
                                    capture=(layer,))
            return acts[layer], loaded.to_images(out)

    def compute(batch, params):
        acts, images = forward_with(batch, params)
        seg = jnp.asarray(batch["seg"]) if truth else segmenter(images)
        if seg_downsample > 1:
            o = seg_downsample // 2
            seg = seg[:, :, o::seg_downsample, o::seg_downsample]
        return acts, seg.astype(jnp.int32)

    def forward(batch):
        return forward_with(batch, loaded.params)

    return compute, forward


def run_dissection(loaded: Loaded, source, segmenter, layer: str, outdir: str, *,
                   quantile=0.01, miniou=0.04, batch_size=32, topk=5, progress=True,
                   data_name="", seg_name="", index_link=None, seg_downsample=1):
    """Dissect ``layer`` (cached in ``outdir/cache``), write the report with thumbnails.
    Returns ``(DissectResult, report path)``."""
    from jaxdissect import report
    from jaxdissect.experiments.dissect import dissect
    seg_downsample = 1 if seg_downsample is None else seg_downsample
    if seg_downsample < 1:
        raise UserError(f"--seg-downsample must be >= 1, got {seg_downsample}")
    if layer not in loaded.model.layer_names:
        raise UserError(f"layer {layer!r} not in {loaded.name}; layers: "
                        f"{list(loaded.model.layer_names)}")
    compute, forward = make_compute(loaded, layer, segmenter, seg_downsample)
    example = {k: v for k, v in source.batch(0, 1).items()}
    acts_s, seg_s = jax.eval_shape(compute, example, loaded.params)
    if len(acts_s.shape) != 4:
        raise UserError(f"layer {layer!r} is not a convolutional layer [b,h,w,units]")
    image_hw = example["image"].shape[1:3] if "image" in example else None
    up = _upsampler(loaded, layer, acts_s.shape[1:3], seg_s.shape[2:], image_hw)
    levels = (0.005,) if quantile > 0.005 else ()
    res = dissect(compute, source, segmenter.labels, upsample=up, quantile=quantile,
                  levels=levels, miniou=miniou, batch_size=batch_size, topk=topk,
                  cache_dir=os.path.join(outdir, "cache"),
                  cache_key={"model": loaded.name, "layer": layer, "data": data_name,
                             "architecture": architecture(loaded.model),
                             "segmenter": seg_name, "n": source.num_examples,
                             "segmenter_weights": fingerprint(vars(segmenter),
                                                              arrays_only=True),
                             "seg_downsample": seg_downsample},
                  progress=progress, params=loaded.params)
    if not hosts.is_writer():  # the other processes tallied their slices; one writes
        return res, None
    strips = unit_thumbnails(forward, up, source, res, topk)
    paths = report.write_unit_thumbnails(outdir, strips)
    units = []
    for rec in res.units():
        rec["image"] = paths.get(rec["unit"])
        units.append(rec)
    summary = {"model": loaded.name, "layer": layer, "quantile": quantile, "miniou": miniou,
               "num_images": source.num_examples, "segmenter": seg_name, "data": data_name,
               "seg_grid": list(seg_s.shape[2:]),
               "units": units, "dissection": res.to_json(),
               "iou_shape": list(res.iou.shape)}
    atomic_write(os.path.join(outdir, "iou.npy"), lambda f: np.save(f, res.iou))
    path = report.write_dissection(outdir, summary, index_link=index_link)
    return res, path


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
    from jaxdissect.report.thumbs import resize_mask
    top = res.topk_images[:, :topk]
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
                   help="world | world-classifier | world-generator | registry name | "
                        "FILE.pth | checkpoint DIR")
    p.add_argument("--layer", default=None, help="layer to dissect/edit (default: conv5_3 "
                   "for classifiers, layer4 for generators)")
    p.add_argument("--segmenter", default=None,
                   help="truth | world | netpqc (reference segmenters); default: truth for "
                        "world images, world for the world generator, netpqc otherwise")
    p.add_argument("--quantile", type=float, default=0.01, help="top quantile for thresholds")
    p.add_argument("--miniou", type=float, default=0.04, help="IoU needed to label a unit")
    p.add_argument("--seg-downsample", type=int, default=None,
                   help="dissect on every d-th segmentation pixel (block centres); default 4 "
                        "for the world's full-size ground truth and world segmenter (the "
                        "reference dissects on a quarter-size grid), else 1")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out", default=None, help="results folder")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    hosts.add_arguments(p)


def seg_downsample(args, seg_name: str) -> int:
    """``--seg-downsample``, or 4 for the world's full-size segmentations, else 1."""
    if args.seg_downsample is not None:
        return args.seg_downsample
    return 4 if seg_name in ("truth", "world") else 1


def default_segmenter(args, loaded: Loaded) -> str:
    if args.segmenter:
        return args.segmenter
    if loaded.kind == "classifier":
        return "truth" if args.data == "world" else "netpqc"
    return "world" if loaded.name.startswith("world") or "world" in loaded.name else "netpqc"


def check_positive(**kw):
    for k, v in kw.items():
        if v is not None and v <= 0:
            raise UserError(f"--{k.replace('_', '-')} must be positive, got {v}")
