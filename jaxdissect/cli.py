"""The ``jaxdissect`` command: thin dispatch to ``jaxdissect.commands.<name>``.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``. Modules are imported only when their command runs, so a
broken optional dependency of one command does not break the others.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "demo": "jaxdissect.commands.demo",
    "dissect": "jaxdissect.commands.dissect",
    "ablate": "jaxdissect.commands.ablate",
    "intervene": "jaxdissect.commands.intervene",
    "weights": "jaxdissect.commands.weights",
    "attack": "jaxdissect.commands.attack",
    "paint": "jaxdissect.commands.paint",
}


class UserError(Exception):
    """An error caused by bad input; printed without a traceback, exit status 2."""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="jaxdissect", description=__doc__.splitlines()[0])
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
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if hasattr(args, "coordinator"):  # commands with the --coordinator flags
            from jaxdissect.runtime import hosts
            hosts.initialize_from_args(args)
        return int(available[args.command].run(args) or 0)
    except (UserError, FileNotFoundError, ValueError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"jaxdissect {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
