"""``benchmarks/accelerator.py --small`` runs end to end on the CPU with the
accelerators' kernels (``JAXDISSECT_KERNELS=xla``): the JPEG folder, the dissection
from it (radix path, activations kept), the reference's passes, the ablation sweep,
and its table with full agreement."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_small_run_with_xla_kernels(tmp_path):
    env = dict(os.environ, JAXDISSECT_KERNELS="xla", PYTHONPATH=ROOT,
               XLA_FLAGS="--xla_force_host_platform_device_count=1")
    done = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "accelerator.py"),
                           "--small", "--folder", str(tmp_path / "jpegs")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "kernels xla" in out
    assert len(list((tmp_path / "jpegs").glob("*/*.jpg"))) == 48
    rows = [line for line in out.splitlines() if line.startswith("| dissect")
            or line.startswith("| ablate")]
    assert len(rows) == 3, out
    assert "best label equal for 100.0% of units" in rows[0]
    assert re.search(r"thresholds within (\S+) \(relative\)", rows[0])
    assert float(re.search(r"thresholds within (\S+) \(relative\)", rows[0]).group(1)) < 1e-3
    for row in rows[1:]:
        assert "class counts equal for 2/2 timed units" in row
