"""A results folder as the app sees it: its dissections, and their models on demand.

Every ``report.json`` below the folder (written by ``jaxdissect dissect`` and by the
commands that dissect on the way: ``demo``, ``ablate``, ``intervene``, ``paint``,
``attack``) is a dissection: its units (label, category, IoU, threshold, top-image
strip), its label set, its quantile levels and, beside it, ``iou.npy`` ``[units,
labels]``. The model that made it is the report's ``model_spec`` (or ``model``) with
its ``model_weights`` (``--weights``: a file's absolute path, or ``random``), unless
``--model DISSECTION=SPEC`` / ``--weights DISSECTION=FILE`` override them; it is
loaded the first time a live page needs it (``Dissection.live()``) and kept, compiled,
for later requests.
"""

from __future__ import annotations

import json
import os
import threading

import numpy as np

from jaxdissect.runtime import treefile

#: where a report's model name cannot be loaded as a model spec
NO_MODEL = ("this dissection's report does not name a loadable model; start the app "
            "with --model {id}=SPEC (and --weights {id}=FILE for its weights file)")
#: where the recorded weights file is gone
NO_WEIGHTS = ("the weights file {weights} recorded for dissection {id} is not there (moved "
              "or deleted); start the app with --weights {id}=FILE, or --model {id}=SPEC "
              "--weights {id}=FILE")


def parse_model_overrides(items) -> dict[str, str]:
    """``["generator/dissect=py:m:f", "py:m:g"]`` -> ``{"generator/dissect": ..., "": ...}``
    (an entry without ``=`` applies to every dissection)."""
    out = {}
    for item in items:
        key, sep, spec = item.partition("=")
        if not sep or key.startswith("py:"):
            key, spec = "", item
        out[key.strip("/")] = spec
    return out


class Dissection:
    """One ``report.json``: ``id`` (its folder relative to the results folder, "/"
    separated, "." for the folder itself), ``report`` (the JSON), ``iou [u, L]``."""

    def __init__(self, root: str, folder: str, model_spec: str | None = None,
                 weights: str | None = None):
        self.root, self.folder = root, folder
        rel = os.path.relpath(folder, root)
        self.id = "." if rel == "." else rel.replace(os.sep, "/")
        with open(os.path.join(folder, "report.json")) as f:
            self.report = json.load(f)
        d = self.report.get("dissection", {})
        labels = d.get("labels", {})
        self.label_names = list(labels.get("names", []))
        self.label_categories = list(labels.get("categories", []))
        iou_path = os.path.join(folder, "iou.npy")
        self.iou = treefile.read_npy(iou_path) if os.path.isfile(iou_path) else None
        self.levels = {float(q): np.asarray(v, np.float32)
                       for q, v in d.get("levels", {}).items()}
        self.layer = self.report.get("layer", "?")
        self.model_name = self.report.get("model", "model")
        if model_spec:      # another model: the recorded weights were the recorded model's
            self.model_spec, self.model_weights = model_spec, weights
        else:
            self.model_spec = self.report.get("model_spec") or self.model_name
            self.model_weights = weights or self.report.get("model_weights")
        data = str(self.report.get("data", ""))
        self.data_spec, _, seed = data.rpartition("@") if "@" in data else (data, "", "")
        self.data_seed = int(seed) if seed.lstrip("-").isdigit() else None
        self.kind = "generator" if self.data_spec == "z" else "classifier"
        self.key = ""
        self._live = None
        self._lock = threading.Lock()

    @property
    def units(self) -> list[dict]:
        """The report's unit records, each with ``fires`` (False for a unit never above
        its threshold: not labelled, no top images) and its top-image strip's path
        relative to the results folder."""
        out = []
        for u in self.report.get("units", []):
            rec = dict(u)
            rec["fires"] = bool(u.get("fires", not (u.get("threshold", 1) <= 0
                                                   and u.get("iou", 0) <= 0)))
            if not rec["fires"]:
                rec["labelled"], rec["image"] = False, None
            if rec.get("image"):           # a strip that is not there is not shown
                exists = os.path.isfile(os.path.join(self.folder, rec["image"]))
                rec["image"] = self.file_path(rec["image"]) if exists else None
            out.append(rec)
        return out

    @property
    def num_units(self) -> int:
        return len(self.report.get("units", []))

    def file_path(self, rel: str) -> str:
        """A path relative to this dissection's folder, as a path relative to the root."""
        return rel if self.id == "." else f"{self.id}/{rel}"

    def concept_ious(self, unit: int) -> list[dict]:
        """Every concept's IoU with ``unit``, highest first (label 0, "none", left out)."""
        if self.iou is None:
            return []
        row = self.iou[unit]
        order = np.argsort(-row[1:], kind="stable") + 1
        return [{"label": self.label_names[i] if i < len(self.label_names) else str(i),
                 "category": (self.label_categories[i] if i < len(self.label_categories)
                              else ""), "iou": float(row[i])} for i in order]

    def concept_units(self, concept: str, n: int) -> list[int]:
        """The ``n`` units with the highest IoU for ``concept``, best first."""
        from jaxdissect.experiments.paint import concept_units
        if self.iou is None:
            raise ValueError("this dissection has no iou.npy")
        return concept_units(self.iou, self.label_names, concept, n).tolist()

    def summary(self) -> dict:
        units = self.units
        return {"key": self.key, "id": self.id, "model": self.model_name, "layer": self.layer,
                "kind": self.kind, "num_units": len(units),
                "labelled": sum(bool(u.get("labelled")) for u in units),
                "silent": sum(not u["fires"] for u in units),
                "num_images": self.report.get("num_images"),
                "quantile": self.report.get("quantile"),
                "report": (self.file_path("report.html") if os.path.isfile(
                    os.path.join(self.folder, "report.html")) else None)}

    def live(self):
        """The loaded model with its compiled functions (``app.live``), made once."""
        with self._lock:
            if self._live is None:
                from jaxdissect.app import live
                from jaxdissect.pipeline.resolve import load_model
                w = self.model_weights
                if w not in (None, "random") and not os.path.isfile(w):
                    raise LookupError(NO_WEIGHTS.format(weights=w, id=self.id))
                try:
                    spec = load_model(self.model_spec, w)
                except Exception as e:   # any failure to load is the user's to fix
                    raise LookupError(f"cannot load model {self.model_spec!r}: {e}; "
                                      + NO_MODEL.format(id=self.id)) from None
                self._live = live.make(self, spec)
            return self._live


class Results:
    """Every dissection below ``root`` (sorted by folder)."""

    def __init__(self, root: str, models: dict[str, str] | None = None,
                 weights: dict[str, str] | None = None):
        self.root = os.path.realpath(root)
        models, weights = models or {}, weights or {}
        self.dissections: dict[str, Dissection] = {}
        for folder, dirs, files in sorted(os.walk(self.root)):
            dirs[:] = sorted(d for d in dirs if d not in ("cache", "units", "images"))
            if "report.json" not in files:
                continue
            rel = os.path.relpath(folder, self.root).replace(os.sep, "/")
            key = "" if rel == "." else rel
            try:
                d = Dissection(self.root, folder, models.get(key) or models.get(""),
                               weights.get(key) or weights.get(""))
            except (OSError, ValueError) as e:
                print(f"warning: skipping {folder}: {e}", flush=True)
                continue
            if d.report.get("units") is not None:
                d.key = str(len(self.dissections))      # the id in URLs
                self.dissections[d.key] = d
        folders = {d.id for d in self.dissections.values()}
        for option, given in (("--model", models), ("--weights", weights)):
            unknown = set(given) - {""} - folders
            if unknown:
                raise ValueError(f"{option} names no dissection: {sorted(unknown)}; "
                                 f"dissections: {sorted(folders)}")

    def get(self, key: str) -> Dissection:
        if key not in self.dissections:
            raise KeyError(f"no dissection {key!r}")
        return self.dissections[key]

    def warm(self, log=print) -> None:
        """Loads and compiles every dissection's model now."""
        for d in self.dissections.values():
            log(f"loading and compiling {d.model_spec} for {d.id} ...")
            d.live().warm()
