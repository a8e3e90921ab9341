"""Commands never leave a half-written results folder or one mixing two runs, do not
take over another command's folder without --force, and report a full disk or a path
under a file in one line (runtime.outdir wired into the commands)."""

import errno
import os

import pytest

from jaxdissect import cli
from jaxdissect.runtime import outdir
from tests.support.tiny_checkpoints import tiny_vgg_pth


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("outdir")
    tiny_vgg_pth(str(d / "m.pth"))
    argv = ["dissect", "--model", str(d / "m.pth"), "--data", "world", "--num-images", "8",
            "--segmenter", "truth", "--seg-downsample", "2", "--batch-size", "8",
            "--no-progress", "--out"]
    out = d / "res"
    assert cli.main(argv + [str(out)]) == 0
    return d, argv, out


def snapshot(folder):
    return {os.path.relpath(os.path.join(r, f), folder): open(os.path.join(r, f), "rb").read()
            for r, _, fs in os.walk(folder) for f in fs}


@pytest.mark.slow
def test_rerun_replaces_the_folder_whole(setup, capsys):
    d, argv, out = setup
    assert outdir.owner(str(out)) == "dissect"
    (out / "stale-from-an-old-run.png").write_bytes(b"old")
    capsys.readouterr()
    assert cli.main(argv + [str(out)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert printed == str(out / "report.html")  # the final path, not the staging one
    assert not (out / "stale-from-an-old-run.png").exists()
    assert (out / "report.html").is_file() and (out / "cache").is_dir()
    assert not (d / "res.partial").exists()


@pytest.mark.slow
def test_a_failed_write_loses_nothing(setup, capsys, monkeypatch):
    d, argv, out = setup
    before = snapshot(out)
    from jaxdissect import report

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(d / "res.partial" / "x"))
    monkeypatch.setattr(report, "write_dissection", full)
    capsys.readouterr()
    assert cli.main(argv + [str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "the disk is full" in err and "unchanged" in err
    assert snapshot(out) == before


def test_another_commands_folder_needs_force(setup, capsys):
    d, argv, _ = setup
    demo = d / "demo"
    demo.mkdir()
    (demo / "index.html").write_text("the demo's index")
    (demo / outdir.MARKER).write_text('{"command": "demo"}')
    ablate = ["ablate", "--model", str(d / "m.pth"), "--num-images", "8", "--ks", "1",
              "--segmenter", "truth", "--no-progress", "--out", str(demo)]
    assert cli.main(ablate) == 2
    err = capsys.readouterr().err.strip()
    assert "holds results of `jaxdissect demo`" in err and "--force" in err
    assert "\n" not in err
    assert (demo / "index.html").read_text() == "the demo's index"
    mine = d / "thesis"
    mine.mkdir()
    (mine / "chapter1.tex").write_text("precious")
    assert cli.main(argv + [str(mine)]) == 2
    assert "files not written by jaxdissect" in capsys.readouterr().err
    assert (mine / "chapter1.tex").read_text() == "precious"


def test_path_under_a_file(setup, capsys):
    d, argv, _ = setup
    (d / "notes.txt").write_text("x")
    assert cli.main(argv + [str(d / "notes.txt" / "res")]) == 2
    err = capsys.readouterr().err.strip()
    assert "is a file, not a folder" in err and "\n" not in err
