"""Runs reduced ``demo``, ``dissect --significance``, ``ablate`` and ``intervene`` and
compares their numbers with the reference values in ``tests/fixtures/outputs/``.

What is compared, exactly (floats by their JSON text, ``iou.npy`` by its bytes):
every dissection's ``iou.npy`` (sha256), per-unit thresholds, labels and IoU, its
significance numbers (p-values, intervals), and every number and string of
``ablation.json`` / ``intervention.json``.

    python scripts/compare_outputs.py            # run and compare; exit 1 on a difference
    python scripts/compare_outputs.py --record   # write the reference values
    python scripts/compare_outputs.py --only dissect --keep /tmp/out
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = os.path.join(ROOT, "tests", "fixtures", "outputs")

#: command lines (after ``jaxdissect``), reduced to run in about a minute each
RUNS = {
    "dissect": ["dissect", "--model", "world", "--significance", "--num-images", "128",
                "--permutations", "200"],
    "ablate": ["ablate", "--model", "world", "--num-images", "96", "--train-images", "64",
               "--ks", "1,2,5,20", "--curve-classes", "0"],
    "intervene": ["intervene", "--model", "world-generator", "--num-samples", "96",
                  "--sweep-samples", "4", "--removal-samples", "16",
                  "--insertion-samples", "8", "--max-remove", "8"],
    "demo": ["demo", "--images", "64", "--samples", "64", "--sweep-samples", "4",
             "--removal-samples", "16", "--insertion-samples", "8"],
}


def _leaves(obj, path=""):
    """``(json path, value)`` of every scalar in ``obj``, in order."""
    if isinstance(obj, dict):
        for k in obj:
            yield from _leaves(obj[k], f"{path}/{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _leaves(v, f"{path}/{i}")
    else:
        yield path, obj


def _dissection(folder: str) -> dict:
    with open(os.path.join(folder, "iou.npy"), "rb") as f:
        iou = hashlib.sha256(f.read()).hexdigest()
    with open(os.path.join(folder, "report.json")) as f:
        report = json.load(f)
    keys = ("unit", "label", "category", "iou", "labelled", "fires", "threshold",
            "top_images", "p_value", "iou_low", "iou_high", "null_iou")
    units = [{k: u.get(k) for k in keys} for u in report["units"]]
    return {"iou.npy": iou, "units": units, "levels": report["dissection"].get("levels"),
            "significance": report.get("significance")}


def _numbers(path: str) -> list:
    with open(path) as f:
        return [[p, v] for p, v in _leaves(json.load(f))]


def extract(name: str, out: str) -> dict:
    """The compared values of run ``name`` written to ``out``."""
    if name == "dissect":
        return {"dissect": _dissection(out)}
    if name == "ablate":
        return {"dissect": _dissection(os.path.join(out, "dissect")),
                "ablation.json": _numbers(os.path.join(out, "ablate", "ablation.json"))}
    if name == "intervene":
        return {"dissect": _dissection(os.path.join(out, "dissect")),
                "intervention.json": _numbers(os.path.join(out, "intervene",
                                                           "intervention.json"))}
    return {"classifier/dissect": _dissection(os.path.join(out, "classifier", "dissect")),
            "ablation.json": _numbers(os.path.join(out, "classifier", "ablate",
                                                   "ablation.json")),
            "generator/dissect": _dissection(os.path.join(out, "generator", "dissect")),
            "intervention.json": _numbers(os.path.join(out, "generator", "intervene",
                                                       "intervention.json"))}


def run(name: str, out: str, code_root: str = ROOT) -> None:
    env = dict(os.environ, PYTHONPATH=code_root)
    cmd = [sys.executable, "-m", "jaxdissect.cli", *RUNS[name], "--out", out,
           "--no-progress"]
    done = subprocess.run(cmd, env=env, cwd=out and os.path.dirname(out),
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(RUNS[name])} failed:\n{done.stderr[-3000:]}")


def differences(want, got, path="") -> list[str]:
    """Where ``got`` differs from ``want`` (JSON values compared exactly)."""
    if isinstance(want, dict) and isinstance(got, dict):
        out = [f"{path}/{k}: missing" for k in want if k not in got]
        out += [f"{path}/{k}: unexpected" for k in got if k not in want]
        for k in want:
            if k in got:
                out += differences(want[k], got[k], f"{path}/{k}")
        return out
    if isinstance(want, list) and isinstance(got, list):
        if len(want) != len(got):
            return [f"{path}: {len(got)} entries, expected {len(want)}"]
        return [d for i, (a, b) in enumerate(zip(want, got))
                for d in differences(a, b, f"{path}/{i}")]
    return [] if (type(want) is type(got) and want == got) else \
        [f"{path}: {got!r}, expected {want!r}"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--record", action="store_true", help="write the reference values")
    p.add_argument("--only", action="append", choices=sorted(RUNS), help="runs to do")
    p.add_argument("--code", default=ROOT, help="the jaxdissect source tree to run")
    p.add_argument("--keep", default=None, help="write the runs' folders here")
    args = p.parse_args(argv)
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or tmp
        os.makedirs(base, exist_ok=True)
        for name in args.only or RUNS:
            out = os.path.join(os.path.abspath(base), name)
            run(name, out, args.code)
            values = json.loads(json.dumps(extract(name, out)))
            path = os.path.join(REFERENCE, f"{name}.json.gz")
            if args.record:
                os.makedirs(REFERENCE, exist_ok=True)
                with gzip.open(path, "wt") as f:
                    json.dump(values, f, sort_keys=True)
                print(f"{name}: recorded {path}")
                continue
            with gzip.open(path, "rt") as f:
                want = json.load(f)
            diff = differences(want, values)
            failed += bool(diff)
            print(f"{name}: {'identical' if not diff else f'{len(diff)} differences'}")
            for d in diff[:20]:
                print("  " + d)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
