"""`dancewire` console command. Each package registers its own subcommands.

A package's ``cli`` module exposes ``register(subparsers)``; each subcommand sets
``func(args) -> int``. Heavy imports happen inside the handlers so ``--help`` is instant.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from dancewire import __version__
from dancewire.errors import DancewireError
from dancewire.log import setup as setup_logging

# Packages that own subcommands, in help order.
COMMAND_MODULES = ("dancewire.up", "edge.cli", "cloud.cli", "calibrate.cli", "proto.cli", "benchmarks.cli")

log = logging.getLogger("dancewire")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dancewire", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"dancewire {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # package not written yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except DancewireError as exc:
        log.debug("error", exc_info=True)
        print(f"dancewire: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dancewire: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
