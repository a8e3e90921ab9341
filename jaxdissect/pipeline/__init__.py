"""The pipeline as a library: configurations, names resolved to objects, the results
folder that owns cache identity, and one ``run`` per experiment.

    from jaxdissect.pipeline import DissectConfig, run_dissect
    outcome = run_dissect(DissectConfig(model="world", num_images=200, out="results/w"))
    outcome.result.best_label, outcome.report

Each ``run_*`` takes its frozen configuration (``pipeline.config``: every default and
check once; ``None`` fields take the model's defaults, resolved in ``pipeline.resolve``),
writes its results folder through a ``Workspace`` (``pipeline.workspace``: written aside
and swapped in; every sweep cached under the complete run's identity) and returns a
typed outcome. The command line only parses arguments into these configurations.
Modules are imported on first use, so importing this package imports no JAX.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "AblateConfig": "config", "AttackConfig": "config", "DemoConfig": "config",
    "DissectConfig": "config", "InterveneConfig": "config", "PaintConfig": "config",
    "load_model": "resolve", "load_data": "resolve", "load_segmenter": "resolve",
    "WORLD_TRAIN_SEED": "resolve", "WORLD_VAL_SEED": "resolve", "make_compute": "dissection",
    "Workspace": "workspace", "open_workspace": "workspace",
    "Dissection": "dissection", "dissect_into": "dissection", "run_dissect": "dissection",
    "ablate_into": "ablation", "run_ablate": "ablation",
    "intervene_into": "intervention", "run_intervene": "intervention",
    "run_attack": "attack", "run_paint": "paint", "run_demo": "demo",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
