"""Shipped world weights: a directory with ``config.json`` and an orbax ``params/``.

``config.json`` records the architecture arguments, the training run (seeds,
steps, optimiser) and the accuracy measured at the end of training.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import numpy as np

#: The repository's ``weights/world`` (found from an editable install, as the README
#: installs it); ``$JAXDISSECT_WORLD_WEIGHTS`` points elsewhere.
WEIGHTS_DIR = Path(os.environ.get("JAXDISSECT_WORLD_WEIGHTS")
                   or Path(__file__).resolve().parents[2] / "weights" / "world")


def save_checkpoint(directory, params, config: dict) -> Path:
    """Write ``params`` (orbax) and ``config`` (json) into ``directory``, replacing
    what was there."""
    import orbax.checkpoint as ocp

    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    params = jax.tree.map(np.asarray, params)
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(directory / "params", params, force=True)
    (directory / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return directory


def read_config(directory) -> dict:
    directory = Path(directory).resolve()
    path = directory / "config.json"
    if not path.is_file() or not (directory / "params").is_dir():
        raise FileNotFoundError(f"no world checkpoint in {directory} (needs config.json and "
                                f"params/): install jaxdissect editable from its repository "
                                f"(pip install -e .), set JAXDISSECT_WORLD_WEIGHTS to its "
                                f"weights/world, or train one with the scripts in scripts/")
    return json.loads(path.read_text())


def load_params(directory, abstract):
    """Restore the params saved in ``directory`` with the structure of ``abstract``
    (a pytree of ``jax.ShapeDtypeStruct``); shapes must match."""
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as ckpt:
        return ckpt.restore(Path(directory).resolve() / "params", abstract)
