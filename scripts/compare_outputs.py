"""Runs reduced ``demo``, ``dissect --significance``, ``ablate`` and ``intervene`` and
compares their numbers with the reference values in ``tests/fixtures/outputs/``, recorded
from the code before the pipeline became a library.

What is compared, exactly (floats by their JSON text, ``iou.npy`` by its bytes):
every dissection's ``iou.npy`` (sha256), per-unit thresholds, labels, IoU, top images
and quantile levels, its significance numbers (p-values, intervals), and every number
and string of ``ablation.json`` / ``intervention.json`` (accuracies, shares, counts).
Each value is compared by its path; a value missing or added is a difference too.

``EXCLUDED`` lists the values left out, each with its reason: only values that a
later change redefined on purpose (the label significance test, the findings and
their intervals) or added (a field the reference did not have). Everything else
must be identical.

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
import re
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


#: ``(runs, pattern of value paths, reason)``: values left out of the comparison
EXCLUDED = [
    (("dissect", "demo"), r"dissect/units/\d+/(p_value|null_iou)$|dissect/significance/"
     r"discoveries$",
     "label significance redefined: a unit's best label is tested against the permutation "
     "maximum over all labels (the selection built in), images permuted in blocks of 8, so "
     "p-values, chance-level IoUs and discoveries differ; IoU intervals are compared"),
    (("intervene",), r"^dissect/units/\d+/(p_value|null_iou|iou_low|iou_high)$|"
     r"^dissect/significance(/|$)",
     "intervene tests its labels' significance by default and no flag turns it off; the "
     "reference ran without it (these values were null)"),
    (("ablate", "demo", "intervene"), r"^(ablation|intervention)\.json/kernels$",
     "results record which statistic kernels ran (added; not a measurement)"),
    (("ablate", "demo", "intervene"), r"^(ablation|intervention)\.json/findings/",
     "findings redefined: applicability, pre-registered or exploratory, bootstrap and "
     "Wilson intervals, the paper's criteria (docs/findings.md)"),
    (("ablate", "demo"), r"^ablation\.json/summary/(mean_baseline_ba_ci99|"
     r"kept_share_of_margin|kept_share_of_margin_ci99)(/|$)",
     "added for the redefined classifier findings (baseline interval, share of the margin "
     "over chance kept)"),
    (("intervene", "demo"), r"^intervention\.json/removal/[^/]+/(ci99_low|ci99_high)/",
     "the removal curve's 99% interval redefined: a Poisson-bootstrap percentile interval "
     "(at most 1) instead of the delta method's normal one"),
    (("intervene", "demo"), r"^intervention\.json/removal/[^/]+/(baseline_share_ci99|"
     r"significant)(/|$)",
     "added for the removal finding's applicability (the concept's baseline share interval, "
     "which removed units are significantly labelled it)"),
    (("intervene", "demo"), r"^intervention\.json/insertion/[^/]+/differs_by_context/"
     r"(pairs|z_critical)$",
     "the most different contexts are compared only among contexts with at least 100 edits, "
     "Bonferroni over those pairs (so fewer pairs and another critical z); the pair found "
     "and its numbers are compared"),
    (("intervene", "demo"), r"^intervention\.json/insertion/[^/]+/differs_by_context/"
     r"(significant_99|level|low|high)$",
     "the most different pair redefined: decided by the gap's bootstrap interval over "
     "samples with Bonferroni (its level and bounds added), not by a z over edits that "
     "took a sample's edits as independent"),
    (("intervene", "demo"), r"^intervention\.json/insertion/[^/]+/contexts/\d+/ci99/",
     "added: each context's bootstrap interval over samples (the context plot draws it)"),
]

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


def flatten(values: dict) -> dict:
    """``{path: value}`` of every compared value of ``extract``'s output: a JSON file's
    values under its name (``ablation.json/summary/k``), a dissection's under its part
    (``dissect/units/3/threshold``)."""
    flat = {}
    for doc, value in values.items():
        if doc.endswith(".json"):       # already (path, value) pairs
            flat.update({f"{doc}{p}": v for p, v in value})
        else:
            flat.update({f"{doc}{p}": v for p, v in _leaves(value)})
    return flat


def excluded(name: str, path: str) -> str | None:
    """The reason ``path`` of run ``name`` is left out, or None when it is compared."""
    for runs, pattern, reason in EXCLUDED:
        if name in runs and re.search(pattern, path):
            return reason
    return None


def differences(name: str, want: dict, got: dict) -> tuple[list[str], dict, int]:
    """``(differences, {reason: values left out}, values compared)`` of run ``name``'s
    reference values ``want`` and values ``got`` (``extract``'s outputs)."""
    want, got = flatten(want), flatten(got)
    out, left_out, compared = [], {}, 0
    for path in list(want) + [p for p in got if p not in want]:
        reason = excluded(name, path)
        if reason is not None:
            left_out[reason] = left_out.get(reason, 0) + 1
        elif path not in got:
            out.append(f"{path}: missing")
        elif path not in want:
            out.append(f"{path}: unexpected {got[path]!r}")
        else:
            compared += 1
            a, b = want[path], got[path]
            if type(a) is not type(b) or a != b:
                out.append(f"{path}: {b!r}, expected {a!r}")
    return out, left_out, compared


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
            diff, left_out, compared = differences(name, want, values)
            failed += bool(diff)
            print(f"{name}: {compared} values " +
                  ("identical" if not diff else f"compared, {len(diff)} differ"))
            for d in diff[:20]:
                print("  " + d)
            for reason, count in left_out.items():
                print(f"  left out ({count} values): {reason}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
