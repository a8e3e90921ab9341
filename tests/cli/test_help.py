"""The command line answers ``--help`` without importing JAX, and every option's help
states its default."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from jaxdissect import cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PROBE = r"""
import contextlib, io, json, sys
from jaxdissect import cli
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        cli.main(sys.argv[1:])
    except SystemExit as e:
        code = e.code
print(json.dumps({"code": code, "jax": sorted(m for m in sys.modules
                                              if m == "jax" or m.startswith(("jax.", "flax"))),
                  "text": out.getvalue()}))
"""


def _help(*argv):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", PROBE, *argv, "--help"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_help_of_every_command_without_jax():
    parser, commands = cli.build_parser()
    assert set(commands) == set(cli.COMMANDS)      # every command module imports
    for argv in [()] + [(name,) for name in cli.COMMANDS] + [("weights", "convert")]:
        r = _help(*argv)
        assert r["code"] == 0
        assert r["jax"] == [], f"jaxdissect {' '.join(argv)} --help imported {r['jax'][:5]}"
        assert "usage: jaxdissect" in r["text"]
    assert "serve" in _help()["text"]


def _options(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                yield from _options(sub)
        elif action.option_strings and not isinstance(
                action, (argparse._HelpAction, argparse._VersionAction)):
            yield parser.prog, action


def test_version_and_a_description_for_users():
    from jaxdissect import __version__
    r = _help()
    assert r["text"].startswith("usage: jaxdissect [-h] [--version] COMMAND")
    about = r["text"].split("\n\n")[1]
    assert about.startswith("jaxdissect finds what each unit")
    assert "jaxdissect demo" in r["text"] and "``" not in r["text"]
    assert "dispatch" not in r["text"] and "jaxdissect.commands" not in r["text"]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "jaxdissect.cli", "--version"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout == f"jaxdissect {__version__}\n"


def test_layer_help_names_the_default_layers():
    parser, _ = cli.build_parser()
    text = parser._subparsers._group_actions[0].choices["dissect"].format_help()
    text = " ".join(text.split())
    for layer in ("conv5_3", "layer4", "conv5", "default_layer"):
        assert layer in text.split("--layer LAYER layer to", 1)[1].split("--segmenter")[0], layer


def test_every_option_states_its_default():
    """argparse's ArgumentDefaultsHelpFormatter states each default; an option whose
    default depends on the model (SUPPRESS) states it in words, never as None."""
    parser, _ = cli.build_parser()
    seen = 0
    for prog, action in _options(parser):
        seen += 1
        text = _subparser(parser, prog)._get_formatter()._expand_help(action)
        assert "default" in text or "(required)" in text, (prog, action.dest, text)
        assert "(default: None)" not in text, (prog, action.option_strings, text)
    assert seen > 50


def test_weights_arch_names_the_registered_architectures(capsys, tmp_path):
    from jaxdissect.checkpoints import architecture_names
    assert set(architecture_names()) >= {"vgg16", "proggan", "resnet", "alexnet", "vit"}
    assert cli.main(["weights", "convert", str(tmp_path / "x.pth"), "--arch", "nope",
                     "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "'nope' is not a registered architecture" in err and "vgg16" in err


def _subparser(parser, prog):
    """The (sub)parser whose ``prog`` is ``prog``."""
    if parser.prog == prog:
        return parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found = _subparser(sub, prog)
                if found is not None:
                    return found
    return None


def test_serve_refuses_a_missing_folder_in_one_line(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for argv in (["serve", str(tmp_path / "nothing")], ["serve", str(tmp_path)],
                 ["serve", str(tmp_path), "--port", "70000"]):
        proc = subprocess.run([sys.executable, "-m", "jaxdissect.cli", *argv], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("jaxdissect serve: error:"), proc.stderr
        assert "Traceback" not in proc.stderr
