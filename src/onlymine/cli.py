"""onlymine: protect images so that only the model you authorize can read them.

Each sub-command lives in ``onlymine.commands.<name>`` and exposes ``register(subparsers)``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

COMMANDS = ("protect", "verify", "models", "evaluate", "experiment", "serve", "enroll", "ablate")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="onlymine", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"onlymine.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted; rerun with --resume to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
