"""Reading checkpoints safely (``.pth``, ``.safetensors``), converting and caching them."""

from jaxdissect.checkpoints.architectures import (  # noqa: F401
    Architecture,
    architecture_names,
    convert_state_dict,
    detect_architecture,
    model_from_config,
    register,
)
from jaxdissect.checkpoints.convert import CheckpointMismatch  # noqa: F401
from jaxdissect.checkpoints.files import read_state_dict, spec_from_file  # noqa: F401
