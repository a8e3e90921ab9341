"""Saving and loading converted parameters with orbax-checkpoint.

A converted checkpoint is a directory::

    DIR/model.json   {"arch": "vgg16", "config": {...}, "source": {...}}
    DIR/params/      orbax checkpoint of the params pytree

so ``load_converted(DIR)`` rebuilds the Flax module and its params without the
original file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import orbax.checkpoint as ocp

from jaxdissect.checkpoints.architectures import model_from_config

MODEL_JSON = "model.json"


def save_converted(directory, arch: str, config: dict, params, source: dict | None = None):
    """Write ``params`` and the model description into ``directory`` (must not hold a
    converted checkpoint already)."""
    directory = Path(directory).absolute()
    if (directory / MODEL_JSON).exists() or (directory / "params").exists():
        raise FileExistsError(f"{directory} already holds a converted checkpoint; "
                              f"choose another directory or remove it")
    directory.mkdir(parents=True, exist_ok=True)
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(directory / "params", params)
    meta = {"arch": arch, "config": config, "source": source or {}}
    (directory / MODEL_JSON).write_text(json.dumps(meta, indent=1) + "\n")
    return directory


def load_converted(directory):
    """Return ``(model, params, meta)`` from a directory written by :func:`save_converted`."""
    directory = Path(directory).absolute()
    meta_path = directory / MODEL_JSON
    if not meta_path.is_file() or not (directory / "params").is_dir():
        raise FileNotFoundError(f"{directory} is not a converted checkpoint "
                                f"(needs {MODEL_JSON} and params/)")
    meta = json.loads(meta_path.read_text())
    model = model_from_config(meta["arch"], meta["config"])
    with ocp.StandardCheckpointer() as ckpt:
        params = ckpt.restore(directory / "params")
    return model, params, meta


def is_converted(directory) -> bool:
    return os.path.isfile(os.path.join(directory, MODEL_JSON))
