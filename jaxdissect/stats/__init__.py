"""Dissection statistics: immutable pytrees with ``empty`` / ``update`` / ``merge`` /
``compute``, plus receptive-field-aligned upsampling.

``TopLabels`` (one pass: exact thresholds and IoU counts from each unit's top
values with their pixels' labels), ``Quantile`` and ``RadixHistogram`` (exact
thresholds), ``TopK`` (top images per unit), ``IoUTally`` (exact intersection/union
counts), ``PermutationTally`` (image-permutation p-values and bootstrap intervals of
unit-concept IoUs), ``merge_top`` (the per-unit top-B selection kernel), ``Upsampler``.
"""

from jaxdissect.stats.iou import (  # noqa: F401
    IoUTally,
    best_by_category,
    best_labels,
    iou_from_counts,
    pairs_above,
)
from jaxdissect.stats.permutation import PermutationTally, benjamini_hochberg  # noqa: F401
from jaxdissect.stats.quantile import (  # noqa: F401
    RADIX_SCHEDULE,
    Quantile,
    RadixHistogram,
    radix_refine,
    radix_thresholds,
    rank_for_level,
)
from jaxdissect.stats.select import merge_top  # noqa: F401
from jaxdissect.stats.topk import TopK, image_max  # noqa: F401
from jaxdissect.stats.toplabels import TopLabels, budget_for  # noqa: F401
from jaxdissect.stats.upsample import (  # noqa: F401
    Upsampler,
    sequence_data_size,
    sequence_scale_offset,
)
from jaxdissect.stats.wide import Wide  # noqa: F401
