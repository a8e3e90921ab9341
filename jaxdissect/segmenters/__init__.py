"""Ports of the reference's segmenters (unified parsing, colour) and their loader.

``load_segmenter("netpqc", cache_dir=...)`` builds the reference's default
segmenter from converted weights; see :mod:`jaxdissect.segmenters.load`.
"""

from jaxdissect.segmenters.labeldata import SemanticLabelData, UnifiedLabelData  # noqa: F401
from jaxdissect.segmenters.load import load_segmenter  # noqa: F401
from jaxdissect.segmenters.merged import MergedSegmenter  # noqa: F401
from jaxdissect.segmenters.semantic import SemanticSegmenter  # noqa: F401
from jaxdissect.segmenters.unified import UnifiedParsingSegmenter  # noqa: F401
