"""`invdiff train`: Train a diffusion prior from a config file."""
from __future__ import annotations

HELP = "Train a diffusion prior from a config file."


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help=HELP, description=HELP)
    p.set_defaults(func=run)


def run(args) -> int:
    raise NotImplementedError("invdiff train is not implemented yet")
