"""The ``edgecond`` command. Thin: parsing and printing only; the work lives in the library.

Command groups live in ``edgecond/commands/<group>.py``; each exposes ``register(subparsers)``
and keeps heavy imports (torch) inside its handlers so ``edgecond --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from . import __version__
from .errors import EdgecondError

# One module per command group; a module adds its sub-commands to the parser.
COMMAND_MODULES: tuple[str, ...] = (
    "edgecond.commands.data",       # datasets, evaluate-real
    "edgecond.commands.condense",   # condense, evaluate
    "edgecond.commands.buffer",     # info, slice
    "edgecond.commands.show",       # show (image grid PNG)
    "edgecond.commands.export",     # export, deploy
    "edgecond.commands.edc",        # observers train, evaluate-edc
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgecond",
        description="Condense a dataset once into one multisize buffer; every prefix is a training set.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"edgecond {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # a usage error (bad or out-of-range value) returns 2; --help/--version exit
        if exc.code in (0, None):
            raise
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except EdgecondError as exc:
        print(f"edgecond {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"edgecond {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
