"""Several processes under jax.distributed on loopback (CPU collectives): 2 and 4
processes give exactly the 1-process result on 1 and 4 devices (dissection on both
paths, the whole ablation and intervention experiments), every process ends with
it, and a killed process resumes its slice. The test starts the processes."""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.support import multihost_worker as worker

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(tmp, count, devices, *extra, experiments=("dissect",), die=None):
    """Starts ``count`` worker processes; ``die``: ``(process, after)`` makes that one
    raise after reading ``after`` batches. Returns the Popen objects."""
    port, procs = free_port(), []
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("XLA_FLAGS", None)
    for i in range(count):
        cmd = [sys.executable, "-m", "tests.support.multihost_worker", *experiments,
               "--coordinator", f"127.0.0.1:{port}", "--num-processes", str(count),
               "--process-id", str(i), "--devices", str(devices), "--out", str(tmp), *extra]
        if die is not None and die[0] == i:
            cmd += ["--die-after", str(die[1])]
        log = open(tmp / f"log-p{i}.txt", "w")
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log,
                                      stderr=subprocess.STDOUT))
    return procs


def wait(procs, tmp, timeout=120):
    deadline = time.monotonic() + timeout
    for i, p in enumerate(procs):
        try:
            p.wait(max(1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail(f"process {i} did not finish:\n" + (tmp / f"log-p{i}.txt").read_text())
        if p.returncode != 0:
            pytest.fail(f"process {i} exited {p.returncode}:\n"
                        + (tmp / f"log-p{i}.txt").read_text()[-3000:])


def results(tmp, count, name="dissect"):
    out = []
    for i in range(count):
        with np.load(tmp / f"{name}-p{i}.npz") as f:
            out.append({k: f[k] for k in f.files})
    return out


def assert_equal(a, b):
    assert set(a) - {"reads"} == set(b) - {"reads"}
    for k in a:
        if k != "reads":
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.fixture(scope="module")
def one_process():
    """The 1-process results on 1 and 4 forced devices (in this test process)."""
    def run(devices_used, budget=None):
        args = argparse.Namespace(batch_size=6, cache=None, devices_used=devices_used)
        return worker.run_dissect(worker.make_source(), args, budget)

    one, four = run(1), run(None)
    assert_equal(one, four)
    assert_equal(one, run(1, budget=8))  # the radix path agrees too
    assert (one["iou"] > 0).any() and len(np.unique(one["thresholds"])) > 1  # not trivial
    return one


@pytest.fixture(scope="module")
def one_process_experiments():
    """The ablation and intervention experiments' results (``to_json``) in one process
    on 1 and 4 forced devices: identical."""
    out = {}
    for name in ("ablate", "intervene"):
        one, four = (worker.EXPERIMENTS[name](worker.make_source(), argparse.Namespace(
            batch_size=6, cache=None, devices_used=d)) for d in (1, None))
        assert_equal(one, four)
        out[name] = one
    res = json.loads(str(out["ablate"]["json"]))
    assert 0.6 < res["summary"]["mean_baseline_ba"] < 1     # not trivial
    res = json.loads(str(out["intervene"]["json"]))
    assert max(res["removal"]["sky"]["removed_fraction"]) > 0.1
    return out


@pytest.mark.slow
@pytest.mark.parametrize("count,devices", [(2, 2), (4, 1)])
def test_processes_give_the_one_process_result(one_process, one_process_experiments, tmp_path,
                                               count, devices):
    wait(launch(tmp_path, count, devices, experiments=(
        "dissect", "dissect-radix", "ablate", "intervene")), tmp_path, timeout=600)
    for name in ("dissect", "dissect-radix"):
        for got in results(tmp_path, count, name):  # every process holds the merged result
            assert_equal(got, one_process)
    for name, want in one_process_experiments.items():
        for got in results(tmp_path, count, name):
            assert_equal(got, want)


@pytest.mark.slow
def test_killed_process_resumes_its_slice(one_process, tmp_path):
    cache = tmp_path / "cache"
    procs = launch(tmp_path, 2, 1, "--cache", str(cache), die=(1, 3))
    assert procs[1].wait(120) != 0  # read the probe and two batches, then died
    assert "killed" in (tmp_path / "log-p1.txt").read_text()
    procs[0].send_signal(signal.SIGKILL)  # as a scheduler stops the job; it waits on p1
    procs[0].wait(30)
    [ckpt] = cache.glob("onepass-*-p1of2.npz")
    from jaxdissect.runtime import cache as cache_mod
    from jaxdissect.runtime import treefile
    meta = treefile.read(str(ckpt))[1]
    assert meta["start"] == 20 and meta["offset"] == 32  # two batches of 6 kept
    wait(launch(tmp_path, 2, 1, "--cache", str(cache)), tmp_path)
    first, second = results(tmp_path, 2)
    assert_equal(first, one_process)
    assert_equal(second, one_process)
    assert second["reads"] == 3  # probe + the two batches after the checkpoint
    assert not list(cache.glob(".*tmp*"))
    assert cache_mod.clean_stale(str(ckpt)) == []


@pytest.mark.slow
def test_cli_flags_run_two_processes_and_one_writes(tmp_path):
    """``jaxdissect dissect --coordinator --num-processes --process-id``: the world
    classifier's dissection equals one process's (same per-device batch shape, so the
    forward pass rounds alike), and only process 0 writes the report."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)  # one device per process
    common = [sys.executable, "-m", "jaxdissect.cli", "dissect", "--model", "world",
              "--num-images", "16", "--batch-size", "8", "--no-progress"]
    port = free_port()
    procs = []
    for i in range(2):
        log = open(tmp_path / f"log-p{i}.txt", "w")
        procs.append(subprocess.Popen(
            common + ["--out", str(tmp_path / "two"), "--coordinator", f"127.0.0.1:{port}",
                      "--num-processes", "2", "--process-id", str(i)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
    one = subprocess.run(common + ["--out", str(tmp_path / "one")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert one.returncode == 0, one.stderr[-2000:]
    wait(procs, tmp_path)
    np.testing.assert_array_equal(np.load(tmp_path / "two" / "iou.npy"),
                                  np.load(tmp_path / "one" / "iou.npy"))
    assert "report.html" in (tmp_path / "log-p0.txt").read_text()
    assert "report.html" not in (tmp_path / "log-p1.txt").read_text()
    names = [p.name for p in (tmp_path / "two" / "cache").iterdir()
             if not p.name.startswith("unit-thumbnails-")]   # the sweeps' checkpoints
    assert sorted(n[-10:] for n in names) == ["-p0of2.npz", "-p1of2.npz"]  # one per process
