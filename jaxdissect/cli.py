"""The ``jaxdissect`` command: thin dispatch to ``jaxdissect.commands.<name>``.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``: it parses the arguments into a ``jaxdissect.pipeline``
configuration, calls one run function and prints. Command modules import no JAX at
module level, so ``jaxdissect --help`` and every ``jaxdissect COMMAND --help`` answer
at once; ``tests/test_cli_help.py`` holds them to it. Every option's help states its
default (argparse's ``ArgumentDefaultsHelpFormatter``; options whose default depends
on the model have ``argparse.SUPPRESS`` and say it in words).
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


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    """The ``jaxdissect`` parser and ``{command: module}`` (no JAX imported)."""
    parser = argparse.ArgumentParser(prog="jaxdissect", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
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
    if getattr(args, "batch_size", None) == "auto" and args.command != "dissect":
        print(f"jaxdissect {args.command}: error: --batch-size auto is for dissect only",
              file=sys.stderr)
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
