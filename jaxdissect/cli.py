"""jaxdissect finds what each unit of a vision model's layer detects (network
dissection) and what the model does when those units are switched off or on.

Dissect a classifier or a generator (the shipped synthetic world's models, the
reference's ResNets, VGG-16, AlexNet, ViT and Progressive GANs, torchvision:NAME and
timm:NAME models, a .pth or .safetensors file, or your own Flax or PyTorch model as
py:MODULE:FACTORY), remove or insert units and measure the effect, label units with
any words (describe), paint with a generator's units, and explore a results folder in
the browser. Start with ``jaxdissect demo``; ``jaxdissect COMMAND --help`` tells each
command's options.

Each command is ``jaxdissect.commands.<name>``, a module that defines ``HELP`` (one
line), ``add_arguments(parser)`` and ``run(args) -> int``: it parses the arguments into
a ``jaxdissect.pipeline`` configuration, calls one run function and prints. Command
modules import no JAX at module level, so ``jaxdissect --help`` and every ``jaxdissect
COMMAND --help`` answer at once; ``tests/cli/test_help.py`` holds them to it. Every
option's help states its default (argparse's ``ArgumentDefaultsHelpFormatter``; options
whose default depends on the model have ``argparse.SUPPRESS`` and say it in words).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from jaxdissect.errors import UserError  # noqa: F401  (re-exported for the commands)

COMMANDS = {
    "demo": "jaxdissect.commands.demo",
    "dissect": "jaxdissect.commands.dissect",
    "describe": "jaxdissect.commands.describe",
    "ablate": "jaxdissect.commands.ablate",
    "intervene": "jaxdissect.commands.intervene",
    "weights": "jaxdissect.commands.weights",
    "attack": "jaxdissect.commands.attack",
    "paint": "jaxdissect.commands.paint",
    "serve": "jaxdissect.commands.serve",
}


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The top-level help: the description's paragraphs as written, defaults stated."""


def description() -> str:
    """The user-facing paragraphs of this module's docstring (``jaxdissect --help``)."""
    if not __doc__:                          # python -OO drops docstrings
        return "network dissection of vision models"
    first, body = __doc__.split("\n\n", 2)[:2]
    return first + "\n\n" + body.replace("``", "")


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    """The ``jaxdissect`` parser and ``{command: module}`` (no JAX imported)."""
    from jaxdissect import __version__
    parser = argparse.ArgumentParser(prog="jaxdissect", description=description(),
                                     formatter_class=_Formatter)
    parser.add_argument("--version", action="version", version=f"jaxdissect {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    available = {}
    for name, modname in COMMANDS.items():
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as e:
            if e.name == modname:  # command not built yet
                continue
            raise
        available[name] = mod
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP,
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        mod.add_arguments(p)
    return parser, available


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser, available = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if getattr(args, "distributed", False):  # commands with the --coordinator flags
            from jaxdissect.runtime import hosts
            hosts.initialize_from_args(args)
        return int(available[args.command].run(args) or 0)
    except (UserError, FileNotFoundError, ValueError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"jaxdissect {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    # run as jaxdissect.cli, not __main__, so that commands raise the UserError caught here
    from jaxdissect.cli import main as _main
    sys.exit(_main())
