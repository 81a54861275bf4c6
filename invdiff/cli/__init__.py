"""The ``invdiff`` command line.

Each subcommand lives in its own module (``invdiff/cli/<name>.py``) with
``register(subparsers)``, which adds its parser and sets ``func(args) -> int``.
Heavy imports (torch, deepinv) happen inside ``func`` so that ``invdiff --help`` is instant.
Unknown subcommands and bad arguments exit with code 2 and a message (argparse's convention).
"""
from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = ("demo", "reconstruct", "train", "simulate", "bench")


def build_parser() -> argparse.ArgumentParser:
    from invdiff import __version__

    parser = argparse.ArgumentParser(
        prog="invdiff",
        description="Inverse problems with diffusion priors: operators, priors, posterior samplers, PDE surrogates.",
    )
    parser.add_argument("--version", action="version", version=f"invdiff {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f"invdiff.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, TypeError) as exc:  # user errors: message, no traceback
        print(f"invdiff {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"invdiff {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
