"""One frozen configuration per experiment: every default and every check, once.

Each field is a command-line option of the same name (``num_images`` is
``--num-images``); the commands take their defaults from here (:func:`default`) and
build a configuration with :func:`from_args`. ``None`` means "the model's default",
resolved by ``pipeline.resolve`` when the model is known. A bad value raises
:class:`jaxdissect.errors.UserError` when the configuration is made.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from jaxdissect.errors import UserError

#: the classifier ablation's set sizes k (capped at the number of units)
DEFAULT_KS = (1, 2, 3, 4, 5, 20, 64, 128, 256)


def _positive(config, *names: str) -> None:
    for name in names:
        v = getattr(config, name)
        if isinstance(v, str):  # "auto" (checked where it is allowed)
            continue
        if v is not None and v <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be positive, got {v}")


def _fraction(name: str, value: float) -> None:
    if not 0 < value < 1:
        raise UserError(f"--{name} must be in (0, 1), got {value}")


@dataclasses.dataclass(frozen=True)
class Common:
    """What every dissecting experiment shares (model, layer, segmenter, thresholds)."""
    model: str = "world"
    weights: str | None = None        # torchvision:/timm: models: "random" or a file
    layer: str | None = None
    segmenter: str | None = None
    upsample: str | None = None
    quantile: float = 0.01
    miniou: float = 0.04
    seg_downsample: int | None = None
    batch_size: int | str = 32   # "auto" for dissect: the largest that fits the device
    out: str | None = None
    force: bool = False
    progress: bool = True

    def __post_init__(self):
        if isinstance(self.batch_size, str):
            if self.batch_size != "auto":
                raise UserError(f"--batch-size must be a positive integer or auto, got "
                                f"{self.batch_size!r}")
            if not isinstance(self, DissectConfig):
                raise UserError("--batch-size auto is for dissect only")
        _positive(self, "batch_size", "seg_downsample")
        _fraction("quantile", self.quantile)
        _fraction("miniou", self.miniou)
        if self.upsample not in (None, "plain", "receptive-field"):
            raise UserError(f"--upsample must be plain or receptive-field, got "
                            f"{self.upsample!r}")


@dataclasses.dataclass(frozen=True)
class DissectConfig(Common):
    data: str | None = None
    num_images: int | None = None
    seed: int | None = None
    topk: int = 5
    iou_rule: str = "pnas"
    skip_bad_images: bool = False
    significance: bool = False
    max_p: float | None = None
    permutations: int = 1000

    def __post_init__(self):
        super().__post_init__()
        _positive(self, "num_images", "topk", "permutations")
        if self.max_p is not None and not 0 < self.max_p <= 1:
            raise UserError(f"--max-p must be in (0, 1], got {self.max_p}")
        if self.iou_rule not in ("pnas", "netdissect"):
            raise UserError(f"--iou-rule must be pnas or netdissect, got {self.iou_rule!r}")
        if self.tests_labels and self.iou_rule != "pnas":
            raise UserError("--significance and --max-p test the pnas IoU rule; drop "
                            "--iou-rule netdissect")

    @property
    def tests_labels(self) -> bool:
        """Whether the labels are tested (``significance``, or implied by ``max_p``)."""
        return self.significance or self.max_p is not None


@dataclasses.dataclass(frozen=True)
class AblateConfig(Common):
    data: str = "world"
    num_images: int | None = None
    train_images: int | None = None
    ks: tuple[int, ...] = DEFAULT_KS
    curve_classes: tuple[str, ...] = ()
    chunk: int = 64
    significance: bool = False

    def __post_init__(self):
        super().__post_init__()
        _positive(self, "num_images", "train_images", "chunk")
        if not self.ks or min(self.ks) < 1:
            raise UserError(f"--ks must be positive integers, got {list(self.ks)}")


@dataclasses.dataclass(frozen=True)
class InterveneConfig(Common):
    model: str = "world-generator"
    num_samples: int = 1000
    sweep_samples: int = 32
    removal_samples: int = 128
    insertion_samples: int = 64
    seed: int = 1
    remove: tuple[str, ...] = ()
    insert: tuple[str, ...] = ()
    max_remove: int = 30
    insert_units: int = 20
    chunk: int = 16
    significance: bool = True   # removal and insertion need significantly labelled units

    def __post_init__(self):
        super().__post_init__()
        _positive(self, "num_samples", "sweep_samples", "removal_samples",
                  "insertion_samples", "chunk", "insert_units")
        if self.max_remove < 0:
            raise UserError("--max-remove must be >= 0")
        if not 0.005 <= self.quantile < 1:
            raise UserError(f"--quantile must be in [0.005, 1): insertion sets units to "
                            f"their 99.5% quantile level, got {self.quantile}")


@dataclasses.dataclass(frozen=True)
class PaintConfig(Common):
    model: str = "world-generator"
    edit: tuple[str, ...] = ()
    units: int = 20
    num_z: int = 8
    z_seed: int = 2
    num_samples: int = 1000
    seed: int = 1

    def __post_init__(self):
        super().__post_init__()
        _positive(self, "units", "num_z", "num_samples")


@dataclasses.dataclass(frozen=True)
class AttackConfig(Common):
    data: str = "world"
    source: str = "ski_resort"
    target: str = "bedroom"
    num_images: int = 16
    search_images: int = 2000
    steps: int = 200
    lr: float = 0.01
    c: float = 10.0
    kappa: float = 0.0
    top: int = 20
    ranking: str | None = None
    rank_images: int = 500
    dissect_images: int = 1000
    seed: int | None = None

    def __post_init__(self):
        super().__post_init__()
        _positive(self, "num_images", "search_images", "steps", "lr", "top", "rank_images")
        if self.c <= 0 or self.kappa < 0:
            raise UserError("--c must be positive and --kappa >= 0")
        if self.dissect_images < 0:
            raise UserError(f"--dissect-images must be >= 0, got {self.dissect_images}")


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    out: str = "results/demo"
    force: bool = False
    images: int = 1000
    samples: int = 1000
    sweep_samples: int = 32
    removal_samples: int = 512
    insertion_samples: int = 256
    remove: str = "tree"
    insert: str = "door"
    generator: str = "world-generator"
    batch_size: int = 32
    progress: bool = True
    describe: bool = True             # open-vocabulary labels of conv5_3 beside dissection's

    def __post_init__(self):
        _positive(self, "images", "samples", "batch_size", "sweep_samples",
                  "removal_samples", "insertion_samples")


@dataclasses.dataclass(frozen=True)
class DescribeConfig(Common):
    data: str = "world"
    num_images: int = 2000
    seed: int | None = None
    concepts: str | None = None       # a text file, one concept a line (None: the world's)
    imagetext: str = "world"
    method: str = "softwpmi"
    top_k: int | None = None          # None: the method's default (100 / 28)
    lam: float | None = None          # None: the method's default (1 / 0.6)
    pool: str = "avg"
    no_dissect: bool = False

    def __post_init__(self):
        super().__post_init__()
        _positive(self, "num_images", "top_k")
        if self.method not in ("softwpmi", "wpmi", "cos3"):
            raise UserError(f"--method must be softwpmi, wpmi or cos3, got {self.method!r}")
        if self.pool not in ("avg", "max"):
            raise UserError(f"--pool must be avg or max, got {self.pool!r}")
        if self.method == "cos3" and (self.top_k is not None or self.lam is not None):
            raise UserError("--top-k and --lam are options of softwpmi and wpmi, not cos3")


def parse_batch_size(text: str):
    """``--batch-size``: a positive integer, or ``auto`` (dissect)."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or auto, got {text!r}") \
            from None


def parse_ks(text: str) -> tuple[int, ...]:
    """``--ks``: comma-separated positive integers."""
    try:
        ks = tuple(int(k) for k in text.split(",") if k.strip())
    except ValueError:
        raise UserError(f"--ks must be comma-separated integers, got {text!r}") from None
    if not ks or min(ks) < 1:
        raise UserError(f"--ks must be positive integers, got {text!r}")
    return ks


def default(config: type, name: str) -> Any:
    """The default of field ``name`` of configuration class ``config``."""
    return {f.name: f.default for f in dataclasses.fields(config)}[name]


def from_args(config: type, args, **overrides: Any):
    """A ``config`` from an ``argparse`` namespace: its fields of the same name (lists
    become tuples, ``no_progress`` becomes ``progress``), then ``overrides``."""
    values = {}
    for f in dataclasses.fields(config):
        if f.name == "progress" and hasattr(args, "no_progress"):
            values["progress"] = not args.no_progress
        elif hasattr(args, f.name) and getattr(args, f.name) is not None:
            v = getattr(args, f.name)
            values[f.name] = tuple(v) if isinstance(v, list) else v
    values.update(overrides)
    return config(**values)
