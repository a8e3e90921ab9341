"""``jaxdissect weights``: list, fetch and convert the reference's published checkpoints.

    jaxdissect weights list
    jaxdissect weights fetch vgg16_places365
    jaxdissect weights convert proggan_churchoutdoor-7e701dd5.pth --out DIR
    jaxdissect weights convert vit_small.safetensors --arch vit --out DIR
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jaxdissect.cli import UserError

# the checkpoint modules (and JAX) are imported when the command runs, not for --help
HELP = "list, fetch (download, verify, convert, cache) or convert published checkpoints"


def add_arguments(parser):
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    kw = dict(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub.add_parser("list", help="list the registry and what is cached", **kw)
    f = sub.add_parser("fetch", help="download NAME, verify, convert and cache it", **kw)
    f.add_argument("name", help="registry entry or group (see `jaxdissect weights list`)")
    f.add_argument("--no-progress", action="store_true", help="no progress bar")
    c = sub.add_parser("convert", help="convert a local .pth or .safetensors file to a "
                                       "jaxdissect checkpoint", **kw)
    c.add_argument("file", help="PyTorch .pth file (zip or legacy format) or .safetensors")
    c.add_argument("--arch", default=argparse.SUPPRESS,
                   help="a registered architecture, listed by `jaxdissect weights list` "
                        "(default: the one the file's keys identify)")
    c.add_argument("--out", required=True, default=argparse.SUPPRESS,
                   help="output directory, new or empty (required)")


def run(args) -> int:
    try:
        return _run(args)
    except FileNotFoundError:
        raise
    except OSError as e:  # network failures, existing output directories
        raise UserError(str(e)) from None


def _run(args) -> int:
    from jaxdissect.checkpoints.registry import convert_file, fetch
    if args.action == "list":
        from jaxdissect.checkpoints.registry import listing
        print("\n".join(listing()))
        return 0
    if args.action == "fetch":
        for path in fetch(args.name, progress=not args.no_progress,
                          log=lambda m: print(m, file=sys.stderr)):
            print(path)
        return 0
    if getattr(args, "arch", None) is not None:
        from jaxdissect.checkpoints.architectures import architecture_names
        if args.arch not in architecture_names():
            raise UserError(f"--arch {args.arch!r} is not a registered architecture; "
                            f"known: {', '.join(architecture_names())}")
    print(convert_file(Path(args.file), getattr(args, "arch", None), Path(args.out)))
    return 0
