"""Reading the reference's PyTorch checkpoints safely, converting and caching them."""

from jaxdissect.checkpoints.architectures import (  # noqa: F401
    ARCHITECTURES,
    convert_state_dict,
    model_from_config,
)
from jaxdissect.checkpoints.convert import CheckpointMismatch  # noqa: F401
