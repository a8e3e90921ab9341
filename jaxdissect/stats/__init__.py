"""Dissection statistics: immutable pytrees with ``empty`` / ``update`` / ``merge`` /
``compute``, plus receptive-field-aligned upsampling.

``Quantile`` and ``RadixHistogram`` (exact thresholds), ``TopK`` (top images per
unit), ``IoUTally`` (exact intersection/union counts), ``Upsampler``.
"""

from jaxdissect.stats.iou import (  # noqa: F401
    IoUTally,
    best_by_category,
    best_labels,
    iou_from_counts,
    pairs_above,
)
from jaxdissect.stats.quantile import (  # noqa: F401
    RADIX_SCHEDULE,
    Quantile,
    RadixHistogram,
    radix_refine,
    radix_thresholds,
    rank_for_level,
)
from jaxdissect.stats.topk import TopK, image_max  # noqa: F401
from jaxdissect.stats.upsample import (  # noqa: F401
    Upsampler,
    sequence_data_size,
    sequence_scale_offset,
)
from jaxdissect.stats.wide import Wide  # noqa: F401
