"""Build the reference's named segmenters from the weights cache.

Names follow the reference's ``--seg`` option (``experiment/setting.py``): always
the unified-parsing segmenter; ``p`` in the name: parts of every object that has
parts (otherwise only sky, building, person); ``q``: the quadrant split of
objects; ``c``: the colour segmenter, merged after it. ``netpqc`` is the
reference's default (K = 6 layers: object, material, part, two quadrant
layers, colour). ``x`` (textures) names a model that was never published.

Files are read from ``<cache>/downloads/segmodel/...`` where
``jaxdissect weights fetch segmenter_upp`` (and ``segmenter_color``) put them;
the PyTorch files are read by the safe reader and converted on load.
"""

from __future__ import annotations

import re
from pathlib import Path

from jaxdissect.checkpoints.pth import load_state_dict
from jaxdissect.models.ppm import DilatedPPMNet
from jaxdissect.models.segmenter_convert import colour_params, unified_parsing_params
from jaxdissect.models.upernet import UnifiedParsingNet
from jaxdissect.segmentation.labeldata import SemanticLabelData, UnifiedLabelData
from jaxdissect.segmentation.merged import MergedSegmenter
from jaxdissect.segmentation.semantic import SemanticSegmenter
from jaxdissect.segmentation.unified import UnifiedParsingSegmenter

MODELS = {
    # registry group: (directory under downloads/, epoch)
    "segmenter_upp": ("segmodel/upp-resnet50-upernet", 40),
    "segmenter_color": ("segmodel/color-resnet18dilated-ppm_deepsup", 20),
}


def _files(cache: Path, group: str) -> tuple[Path, Path, Path]:
    sub, epoch = MODELS[group]
    d = cache / "downloads" / sub
    files = (d / f"encoder_epoch_{epoch}.pth", d / f"decoder_epoch_{epoch}.pth", d / "labels.json")
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(
            f"segmenter weights missing: {', '.join(missing)}. "
            f"Run `jaxdissect weights fetch {group}` (cache: {cache}; "
            f"set JAXDISSECT_CACHE or pass cache_dir to use another).")
    return files


def load_unified(cache, all_parts=True, quad=False, downsample=1, segsizes=(256,)):
    """The unified-parsing segmenter from the cache."""
    enc, dec, labels = _files(Path(cache), "segmenter_upp")
    data = UnifiedLabelData.read(str(labels))
    model = UnifiedParsingNet(len(data.object), data.num_part_channels, len(data.material))
    params = unified_parsing_params(model, load_state_dict(enc), load_state_dict(dec))
    return UnifiedParsingSegmenter(data, params, segsizes=segsizes, downsample=downsample,
                                   all_parts=all_parts, quad=quad)


def load_colour(cache, downsample=1, segsizes=None):
    """The colour segmenter from the cache."""
    enc, dec, labels = _files(Path(cache), "segmenter_color")
    data = SemanticLabelData.read(str(labels))
    params = colour_params(DilatedPPMNet(len(data.labels)), load_state_dict(enc),
                           load_state_dict(dec))
    return SemanticSegmenter(data, params, downsample=downsample, segsizes=segsizes)


def load_segmenter(name: str = "netpqc", cache_dir=None, downsample: int = 4,
                   segsizes=(256,)):
    """The reference's segmenter ``name`` (``net``, ``netp``, ``netq``, ``netpq``,
    ``netpqc``, ...) as a :class:`~jaxdissect.segmentation.base.Segmenter`.

    ``downsample``: the segmentation grid is ``H // downsample`` (the reference
    dissects with 4). ``segsizes``: input sizes whose scores are summed (the
    reference uses 256 for the unified-parsing model; the colour model takes
    its sizes from its ``labels.json``).
    """
    if not re.fullmatch(r"net[pqcx]*", name or ""):
        raise ValueError(f"unknown segmenter {name!r}: expected 'net' followed by any of "
                         f"p (all parts), q (quadrant split), c (colours), e.g. 'netpqc'")
    if "x" in name:
        raise ValueError(f"segmenter {name!r}: the texture model (x) was never published "
                         f"with the reference's weights; use e.g. 'netpqc'")
    if cache_dir is None:
        from jaxdissect.checkpoints.registry import cache_dir as default_cache

        cache_dir = default_cache()
    unified = load_unified(cache_dir, all_parts="p" in name, quad="q" in name,
                           downsample=downsample, segsizes=segsizes)
    if "c" not in name:
        return unified
    return MergedSegmenter([unified, load_colour(cache_dir, downsample=downsample)])
