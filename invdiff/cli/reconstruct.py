"""`invdiff reconstruct`: Reconstruct from a measurement file with a chosen operator, sampler and prior."""
from __future__ import annotations

HELP = "Reconstruct from a measurement file with a chosen operator, sampler and prior."


def register(subparsers) -> None:
    p = subparsers.add_parser("reconstruct", help=HELP, description=HELP)
    p.set_defaults(func=run)


def run(args) -> int:
    raise NotImplementedError("invdiff reconstruct is not implemented yet")
