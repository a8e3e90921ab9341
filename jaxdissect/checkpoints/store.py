"""Saving and loading converted parameters with orbax-checkpoint, verified.

A converted checkpoint is a directory::

    DIR/model.json   {"arch": "vgg16", "config": {...}, "source": {...},
                      "arrays": {"conv1_1/kernel": {"shape", "dtype", "sha256"}, ...},
                      "files": {"params/<file>": {"size", "sha256"}, ...}}
    DIR/params/      orbax checkpoint of the params pytree

so ``load_converted(DIR)`` rebuilds the Flax module and its params without the
original file. Loading checks, before anything is returned: every file orbax wrote
is there with its recorded size (a missing or truncated file is named), every array
has its recorded shape, dtype and SHA-256 (a flipped byte names the array and the
files whose hash changed), and every shape is what the recorded ``config`` builds
(an edited config or swapped params name the array). Each failure is a
:class:`CorruptCheckpoint` (a ``ValueError``) on one line.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp

from jaxdissect.checkpoints.architectures import expected_shapes, model_from_config
from jaxdissect.checkpoints.convert import flatten_params

MODEL_JSON = "model.json"


class CorruptCheckpoint(ValueError):
    """A converted directory whose files or arrays are not what was written."""


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def _array_record(leaf) -> dict:
    a = np.ascontiguousarray(np.asarray(leaf))
    data = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
    return {"shape": list(a.shape), "dtype": str(a.dtype),
            "sha256": hashlib.sha256(data).hexdigest()}


def _files(directory: Path) -> dict:
    params = directory / "params"
    return {p.relative_to(directory).as_posix(): {"size": p.stat().st_size,
                                                   "sha256": _sha256_file(p)}
            for p in sorted(params.rglob("*")) if p.is_file()}


def save_converted(directory, arch: str, config: dict, params, source: dict | None = None):
    """Write ``params`` and the model description into ``directory`` (must not hold a
    converted checkpoint already), with a checksum per array and per file."""
    directory = Path(directory).absolute()
    if (directory / MODEL_JSON).exists() or (directory / "params").exists():
        raise FileExistsError(f"{directory} already holds a converted checkpoint; "
                              f"choose another directory or remove it")
    directory.mkdir(parents=True, exist_ok=True)
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(directory / "params", params)
    meta = {"arch": arch, "config": config, "source": source or {},
            "arrays": {k: _array_record(v) for k, v in flatten_params(params).items()},
            "files": _files(directory)}
    (directory / MODEL_JSON).write_text(json.dumps(meta, indent=1) + "\n")
    return directory


def _read_meta(directory: Path) -> dict:
    meta_path = directory / MODEL_JSON
    try:
        meta = json.loads(meta_path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise CorruptCheckpoint(f"{meta_path}: not valid JSON ({e})") from None
    missing = [k for k in ("arch", "config", "arrays", "files") if k not in meta]
    if missing:
        raise CorruptCheckpoint(f"{meta_path}: no {missing} recorded (written by an older "
                                f"jaxdissect, or edited); convert the checkpoint again")
    return meta


def _check_files(directory: Path, meta: dict) -> list[str]:
    """Raise for a missing or truncated file; return those whose hash changed."""
    changed = []
    for rel, rec in meta["files"].items():
        path = directory / rel
        if not path.is_file():
            raise CorruptCheckpoint(f"{path}: missing (the converted checkpoint is "
                                    f"incomplete; convert it again)")
        size = path.stat().st_size
        if size != rec["size"]:
            raise CorruptCheckpoint(f"{path}: {size} bytes, {rec['size']} were written "
                                    f"(truncated or altered)")
        if _sha256_file(path) != rec["sha256"]:
            changed.append(rel)
    return changed


def load_converted(directory):
    """Return ``(model, params, meta)`` from a directory written by :func:`save_converted`,
    verified (see the module docstring); raises :class:`CorruptCheckpoint`."""
    directory = Path(directory).absolute()
    meta_path = directory / MODEL_JSON
    if not meta_path.is_file() or not (directory / "params").is_dir():
        raise FileNotFoundError(f"{directory} is not a converted checkpoint "
                                f"(needs {MODEL_JSON} and params/)")
    meta = _read_meta(directory)
    changed = _check_files(directory, meta)
    where = f"{directory}/{', '.join(changed)}" if changed else f"{directory}/params"
    model = model_from_config(meta["arch"], meta["config"])
    try:
        with ocp.StandardCheckpointer() as ckpt:
            params = ckpt.restore(directory / "params")
    except Exception as e:  # orbax/tensorstore raise many types on damaged data
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise CorruptCheckpoint(f"{where}: cannot be restored ({type(e).__name__}: "
                                f"{first})") from None
    flat = flatten_params(params)
    recorded = meta["arrays"]
    extra, absent = sorted(set(flat) - set(recorded)), sorted(set(recorded) - set(flat))
    if extra or absent:
        raise CorruptCheckpoint(f"{where}: arrays {absent[:3]} missing, {extra[:3]} not "
                                f"recorded in {MODEL_JSON}")
    for key, leaf in flat.items():
        got, want = _array_record(leaf), recorded[key]
        if got["shape"] != want["shape"] or got["dtype"] != want["dtype"]:
            raise CorruptCheckpoint(f"{where}: array {key!r} is {got['dtype']}{got['shape']}, "
                                    f"{want['dtype']}{want['shape']} was written")
        if got["sha256"] != want["sha256"]:
            raise CorruptCheckpoint(f"{where}: array {key!r} does not match its recorded "
                                    f"SHA-256 (corrupted); convert the checkpoint again")
    shapes = expected_shapes(meta["arch"], meta["config"])
    for key in sorted(set(shapes) | set(flat)):
        have = tuple(np.shape(flat[key])) if key in flat else None
        if have != shapes.get(key):
            raise CorruptCheckpoint(
                f"{meta_path}: array {key!r} has shape {have} but the recorded config "
                f"({meta['arch']}) needs {shapes.get(key)}")
    return model, params, meta


def is_converted(directory) -> bool:
    return os.path.isfile(os.path.join(directory, MODEL_JSON))
