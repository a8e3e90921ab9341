"""The command line is a thin layer over the library: nothing outside ``cli.py`` and
``commands/`` imports ``jaxdissect.commands``, each command module is short and the
demo runs no other command; the pipeline's configurations state defaults and checks."""

from __future__ import annotations

import ast
import dataclasses
import pathlib

import pytest

from jaxdissect.errors import UserError
from jaxdissect.pipeline import config as K

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "jaxdissect"


def imported_modules(path: pathlib.Path) -> set[str]:
    """Every module ``path`` imports (``import a.b``, ``from a.b import c``: a.b, a.b.c)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_nothing_outside_the_cli_imports_the_commands():
    outside = [p for p in PACKAGE.rglob("*.py")
               if p != PACKAGE / "cli.py" and PACKAGE / "commands" not in p.parents]
    outside += [p for d in ("scripts", "benchmarks") for p in (ROOT / d).rglob("*.py")]
    outside += [p for p in (ROOT / "tests").rglob("*.py")
                if ROOT / "tests" / "cli" not in p.parents]
    offenders = [str(p.relative_to(ROOT)) for p in outside
                 if any(m == "jaxdissect.commands" or m.startswith("jaxdissect.commands.")
                        for m in imported_modules(p))]
    assert len(outside) > 100 and offenders == []


def test_command_modules_are_short_and_the_demo_runs_no_command():
    sizes = {p.name: len(p.read_text().splitlines())
             for p in (PACKAGE / "commands").glob("*.py")}
    assert max(sizes.values()) <= 66, sizes
    demo = imported_modules(PACKAGE / "commands" / "demo.py")
    assert {m for m in demo if m.startswith("jaxdissect.commands")} <= {
        "jaxdissect.commands._args", "jaxdissect.commands._args.add_force",
        "jaxdissect.commands._args.default"}


def test_the_cli_uses_no_private_argparse_or_jax():
    for path in [PACKAGE / "cli.py", *(PACKAGE / "commands").glob("*.py"),
                 PACKAGE / "runtime" / "hosts.py"]:
        text = path.read_text()
        assert "parser._actions" not in text and "argparse._" not in text, path
        assert "jax._src" not in text, path


@pytest.mark.parametrize("config,changes,message", [
    (K.DissectConfig, dict(quantile=1.5), "--quantile must be in (0, 1)"),
    (K.DissectConfig, dict(max_p=0), "--max-p must be in (0, 1]"),
    (K.DissectConfig, dict(significance=True, iou_rule="netdissect"), "pnas"),
    (K.DissectConfig, dict(num_images=0), "--num-images must be positive"),
    (K.AblateConfig, dict(ks=(0, 2)), "--ks must be positive"),
    (K.InterveneConfig, dict(quantile=0.001), "99.5% quantile"),
    (K.InterveneConfig, dict(max_remove=-1), "--max-remove must be >= 0"),
    (K.AttackConfig, dict(c=0), "--c must be positive"),
    (K.DemoConfig, dict(images=-3), "--images must be positive"),
])
def test_configurations_check_their_settings_once(config, changes, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        config(**changes)


def test_configurations_are_frozen_and_parse_ks():
    cfg = K.AblateConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.quantile = 0.5
    assert K.parse_ks("1, 2,20") == (1, 2, 20) and cfg.ks == K.DEFAULT_KS
    with pytest.raises(UserError, match="comma-separated integers"):
        K.parse_ks("1,x")
