"""An architecture added the way a new one is: this one module holds the Flax module,
its state-dict conversion (key signature, config read from shapes, table), its spec and
its registration. ``tests/checkpoints/test_architectures.py`` loads weights for it through the
same detection, readers, converter, store and CLI as the built-in architectures.

The network: ``stem`` 3x3 convolution (padding 1) -> ReLU -> global mean -> ``head``
linear; its PyTorch twin names its modules ``stem`` and ``head`` as well.
"""

import flax.linen as nn
import jax.numpy as jnp

from jaxdissect.checkpoints.architectures import Architecture, register
from jaxdissect.checkpoints.convert import CheckpointMismatch, dim_of
from jaxdissect.models.vgg16 import LinearOI


class TinyNet(nn.Module):
    width: int = 4
    num_classes: int = 3

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(self.width, (3, 3), padding=1, name="stem")(x))
        return LinearOI(self.num_classes, name="head")(jnp.mean(x, axis=(1, 2)))


def read_config(state_dict) -> dict:
    if "stem.weight" not in state_dict or "head.weight" not in state_dict:
        raise CheckpointMismatch("not a TinyNet checkpoint: no key 'stem.weight'")
    return {"width": dim_of(state_dict, "stem.weight", 0, 4),
            "num_classes": dim_of(state_dict, "head.weight", 0, 2)}


def spec(model, variables, *, name="tiny", class_names=None):
    from jaxdissect.spec import ModelSpec
    return ModelSpec.from_linen(model, variables, kind="classifier", name=name,
                                layers={"stem": "stem"}, default_layer="stem",
                                input_size=(8, 8), class_names=class_names)


ARCHITECTURE = register(Architecture(
    name="tiny", what="a two-layer test network",
    build=lambda config: TinyNet(**config), signatures=(("stem.weight", "head.weight"),),
    read_config=read_config, example_input=lambda config: (1, 8, 8, 3), spec=spec),
    replace=True)
