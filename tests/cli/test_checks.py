"""Arguments are checked before any work: a bad concept name or level fails at once,
with nothing computed or written (no dissection, no results folder)."""

from __future__ import annotations

import pytest

from jaxdissect import cli
from tests.support.tiny_checkpoints import tiny_gan_pth

SEG = "py:tests.support.tiny_nets:TinySegmenter"


@pytest.fixture(scope="module")
def gan(tmp_path_factory):
    d = tmp_path_factory.mktemp("checks")
    tiny_gan_pth(str(d / "g.pth"))
    return d


@pytest.mark.parametrize("extra, message", [
    (["--remove", "unicorn"], "unknown concept 'unicorn'"),
    (["--insert", "unicorn"], "unknown concept 'unicorn'"),
    (["--quantile", "0.001"], "--quantile"),
    (["--layer", "nolayer"], "nolayer"),
])
def test_intervene_fails_before_work(gan, capsys, extra, message):
    out = gan / "res"
    argv = ["intervene", "--model", str(gan / "g.pth"), "--segmenter", SEG,
            "--num-samples", "12", "--out", str(out), "--no-progress", *extra]
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()                 # nothing dissected, nothing written


def test_paint_on_needs_the_high_level_before_work(gan, capsys):
    out = gan / "paint"
    argv = ["paint", "--model", str(gan / "g.pth"), "--segmenter", SEG, "--num-samples", "12",
            "--quantile", "0.001", "--edit", "green:on:0,0,1,1", "--out", str(out)]
    assert cli.main(argv) == 2
    assert "99.5%" in capsys.readouterr().err
    assert not out.exists()


def test_demo_checks_its_concepts_before_work(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--remove", "unicorn", "--out", str(out), "--no-progress"]) == 2
    assert "unknown concept 'unicorn'" in capsys.readouterr().err
    assert not out.exists()
