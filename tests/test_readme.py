"""The README's examples run as written, its links and the docs' links lead to files
that exist, and what it states about the command line is what the command line does."""

import pathlib
import re

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def block_after(marker: str) -> str:
    text = README.read_text()
    at = text.index(marker)
    return re.search(r"```python\n(.*?)```", text[at:], re.S).group(1)


@pytest.mark.slow
def test_own_model_example_runs_as_written(capsys):
    code = block_after("<!-- own-model example")
    assert len(code.strip().splitlines()) <= 30
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    result, metrics = namespace["result"], namespace["metrics"]
    from jaxdissect.world import LABELS
    assert result.num_units == 32 and result.iou.shape == (32, len(LABELS))
    assert metrics.balanced_accuracy.shape == (32, 11)
    assert "[" in capsys.readouterr().out


@pytest.mark.slow
def test_torch_example_runs_as_written(capsys):
    """The PyTorch example, checked against the torch module it wraps."""
    torch = pytest.importorskip("torch")
    code = block_after("<!-- torch example")
    assert len(code.strip().splitlines()) <= 20
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    net, images, acts = namespace["net"], namespace["images"], namespace["acts"]
    from jaxdissect.spec import IMAGENET_MEAN, IMAGENET_STD
    x = torch.from_numpy((images - np.float32(IMAGENET_MEAN)) / np.float32(IMAGENET_STD))
    x = x.permute(0, 3, 1, 2)                  # what the module sees: normalised, NCHW
    with torch.no_grad():
        want = net[:2](x).permute(0, 2, 3, 1)
        logits = net(x)
    np.testing.assert_allclose(np.asarray(acts["conv"]), want.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(namespace["logits"]), logits.numpy(), rtol=1e-4,
                               atol=1e-5)
    edited = np.asarray(namespace["edited"])
    assert edited.shape == (4, 2) and not np.allclose(edited, np.asarray(namespace["logits"]))
    assert "(4, 30, 30, 8)" in capsys.readouterr().out


def test_readme_is_short_and_keeps_the_quickstart_commands():
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    assert "```bash\npip install -e . && jaxdissect demo\n```" in text
    # .ci/run runs this line as written
    line = 'pip install -e ".[test]" && python -m pytest -q'
    assert f"```bash\n{line}\n```" in text
    ci = ROOT / ".ci" / "run"
    if ci.is_file():
        assert line in ci.read_text()


def test_links_lead_to_files_that_exist():
    pages = [README] + sorted((ROOT / "docs").glob("*.md"))
    assert len(pages) >= 8
    seen = 0
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path = (page.parent / target.split("#")[0]).resolve()
            assert path.exists(), f"{page.name} links to {target}, which does not exist"
            seen += 1
    assert seen >= 15


def test_the_command_table_and_defaults_are_the_command_lines():
    from jaxdissect import cli
    text = README.read_text()
    table = text[text.index("| command | what it does"):]
    table = table[:table.index("\n\n")]
    assert sorted(re.findall(r"^\| `(\w+)` \|", table, re.M)) == sorted(cli.COMMANDS)
    parser, _ = cli.build_parser()
    dissect = parser._subparsers._group_actions[0].choices["dissect"]
    defaults = {a.dest: a.default for a in dissect._actions}
    assert f"--quantile {defaults['quantile']} --miniou {defaults['miniou']}" in text
    assert "results/demo" in text
    demo = parser._subparsers._group_actions[0].choices["demo"]
    assert [a.default for a in demo._actions if a.dest == "out"] == ["results/demo"]
