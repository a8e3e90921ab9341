"""jaxdissect: network dissection (Bau et al., PNAS 2020) as compiled JAX programs."""

__version__ = "0.1.0"

from jaxdissect.edits import Edit, Edits, apply_edit  # noqa: E402,F401
from jaxdissect.labels import LabelSet  # noqa: E402,F401
