"""The ``curator`` command: a thin dispatcher over ``curator.commands``.

Every subcommand lives in its own module and loads its wing lazily; this file only parses,
sets up logging, and turns a :class:`CuratorError` into a one-line message and exit status 2.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional

from . import __version__
from .errors import CuratorError

EXAMPLES = """examples:
  curator demo                                           # the whole flow on real sample images
  curator samples fetch                                  # real labelled images, from Debian's archive
  curator build-index --input ~/.cache/curator/samples/tuxpaint --out idx \\
      --encoder packaged:efficientnet-lite2
  curator search --index idx --image cat.png -k 5
"""


def make_parser() -> argparse.ArgumentParser:
    from .commands import COMMANDS

    parser = argparse.ArgumentParser(
        prog="curator", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES,
        description="Curate task-specific transfer sets from a web-scale image pool, and distil vision "
                    "foundation models into small task-specific models.")
    parser.add_argument("--version", action="version", version=f"curator {__version__}")
    verbosity = argparse.ArgumentParser(add_help=False)  # accepted before and after the subcommand
    verbosity.add_argument("--verbose", "-v", action="store_true", default=argparse.SUPPRESS, help="debug logging")
    verbosity.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                           help="show a traceback on errors")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true", help="show a traceback on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    original = sub.add_parser

    def add_parser(*args, **kwargs):  # every subcommand (and sub-subcommand) takes -v and --debug
        kwargs.setdefault("parents", [verbosity])
        return original(*args, **kwargs)
    sub.add_parser = add_parser
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = make_parser().parse_args(argv)
    args.argv = argv  # the exact command, for reports that must be reproducible
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("faiss.loader", "httpx"):  # optional-AVX-build notes; one line per client request
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return args.run(args)
    except CuratorError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
