"""Ports of the reference's segmenters (unified parsing, colour) and their loader.

``load_segmenter("netpqc", cache_dir=...)`` builds the reference's default
segmenter from converted weights; see :mod:`jaxdissect.segmentation.load`.
"""

from jaxdissect.segmentation.labeldata import SemanticLabelData, UnifiedLabelData  # noqa: F401
from jaxdissect.segmentation.load import load_segmenter  # noqa: F401
from jaxdissect.segmentation.merged import MergedSegmenter  # noqa: F401
from jaxdissect.segmentation.semantic import SemanticSegmenter  # noqa: F401
from jaxdissect.segmentation.unified import UnifiedParsingSegmenter  # noqa: F401
