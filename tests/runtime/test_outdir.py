"""Results folders: written aside and swapped in, never mixing two runs, never taking
over another command's folder without --force, one-line errors for a read-only
location, a full disk or a path under a file; nothing already there is lost."""

import errno
import os

import pytest

from jaxdissect.cli import UserError
from jaxdissect.runtime import outdir


def write(folder, **files):
    for name, text in files.items():
        path = os.path.join(folder, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)


def listing(folder):
    return sorted(os.path.relpath(os.path.join(r, f), folder)
                  for r, _, fs in os.walk(folder) for f in fs)


def run(out, command="dissect", force=False, **files):
    with outdir.results_folder(str(out), command, force=force, writer=True) as stage:
        assert not os.path.samefile(stage, out) if os.path.exists(out) else True
        write(stage, **files)


def test_swap_replaces_the_whole_folder_and_keeps_the_cache(tmp_path):
    out = tmp_path / "res"
    run(out, **{"a.json": "1", "old.png": "x", "cache/pass.npz": "c"})
    assert listing(out) == [".jaxdissect.json", "a.json", "cache/pass.npz", "old.png"]
    with outdir.results_folder(str(out), "dissect", writer=True) as stage:
        assert open(os.path.join(stage, "cache", "pass.npz")).read() == "c"  # resumable
        assert open(out / "a.json").read() == "1"  # untouched while the run writes
        write(stage, **{"a.json": "2"})
    assert listing(out) == [".jaxdissect.json", "a.json", "cache/pass.npz"]  # no old.png
    assert open(out / "a.json").read() == "2"
    assert not (tmp_path / "res.partial").exists()


def test_failed_run_leaves_the_previous_results(tmp_path):
    out = tmp_path / "res"
    run(out, **{"a.json": "1"})
    with pytest.raises(RuntimeError, match="boom"):
        with outdir.results_folder(str(out), "dissect", writer=True) as stage:
            write(stage, **{"a.json": "half", "cache/new.npz": "n"})
            raise RuntimeError("boom")
    assert listing(out) == [".jaxdissect.json", "a.json"] and open(out / "a.json").read() == "1"
    # the next run resumes from the failed run's cache, and writes no half file
    with outdir.results_folder(str(out), "dissect", writer=True) as stage:
        assert listing(stage) == ["cache/new.npz"]


def test_another_commands_folder_needs_force(tmp_path, capsys):
    demo = tmp_path / "demo"
    run(demo, command="demo", **{"index.html": "demo index"})
    with pytest.raises(UserError, match=r"holds results of `jaxdissect demo`.*--force"):
        run(demo, command="ablate", **{"index.html": "ablate"})
    assert open(demo / "index.html").read() == "demo index"
    foreign = tmp_path / "mine"
    write(str(foreign), **{"thesis.tex": "precious"})
    with pytest.raises(UserError, match="files not written by jaxdissect"):
        run(foreign, command="dissect")
    assert open(foreign / "thesis.tex").read() == "precious"
    run(demo, command="ablate", force=True, **{"index.html": "ablate"})
    assert open(demo / "index.html").read() == "ablate" and outdir.owner(str(demo)) == "ablate"
    run(tmp_path / "empty_ok", command="dissect")  # a new or empty folder is fine


def test_path_under_a_file_or_a_file(tmp_path):
    (tmp_path / "f.txt").write_text("x")
    for out in (tmp_path / "f.txt" / "res", tmp_path / "f.txt"):
        with pytest.raises(UserError, match="is a file, not a folder") as e:
            run(out)
        assert "\n" not in str(e.value)
    assert (tmp_path / "f.txt").read_text() == "x"


@pytest.mark.parametrize("code, says", [(errno.ENOSPC, "the disk is full"),
                                        (errno.EROFS, "the location is read-only"),
                                        (errno.EACCES, "permission denied")])
def test_write_errors_are_one_line_and_lose_nothing(tmp_path, code, says):
    out = tmp_path / "res"
    run(out, **{"a.json": "1"})
    with pytest.raises(UserError) as e:
        with outdir.results_folder(str(out), "dissect", writer=True) as stage:
            write(stage, **{"a.json": "half"})
            raise OSError(code, os.strerror(code), os.path.join(stage, "big.npy"))
    msg = str(e.value)
    assert says in msg and "big.npy" in msg and "unchanged" in msg and "\n" not in msg
    assert open(out / "a.json").read() == "1"


def test_read_only_parent_is_one_line(tmp_path, monkeypatch):
    def refuse(path, *a, **k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)
    monkeypatch.setattr(os, "makedirs", refuse)
    with pytest.raises(UserError, match="read-only") as e:
        run(tmp_path / "ro" / "res")
    assert "\n" not in str(e.value)


def test_nested_caches_are_kept_from_the_folder_and_a_killed_run(tmp_path):
    """Every ``cache`` folder at any depth (``dissect/cache``, ``ablate/cache``, ...) is
    reused: from the finished folder and from a killed run's ``OUT.partial``."""
    out = tmp_path / "res"
    run(out, command="ablate", **{"index.html": "i", "dissect/report.html": "r",
                                  "dissect/cache/onepass.npz": "d",
                                  "ablate/cache/single-unit.npz": "s",
                                  "ablate/pictures/a.png": "p"})
    with pytest.raises(RuntimeError, match="killed"):
        with outdir.results_folder(str(out), "ablate", writer=True) as stage:
            assert listing(stage) == ["ablate/cache/single-unit.npz",
                                      "dissect/cache/onepass.npz"]
            write(stage, **{"ablate/cache/class-sets.npz": "c", "ablate/ablation.json": "h",
                            "generator/intervene/cache/removal.npz": "x"})
            raise RuntimeError("killed")
    with outdir.results_folder(str(out), "ablate", writer=True) as stage:
        assert listing(stage) == ["ablate/cache/class-sets.npz",
                                  "ablate/cache/single-unit.npz",
                                  "dissect/cache/onepass.npz",
                                  "generator/intervene/cache/removal.npz"]
        assert not os.path.exists(os.path.join(stage, "ablate", "pictures"))
