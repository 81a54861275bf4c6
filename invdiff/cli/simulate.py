"""`invdiff simulate`: Simulate PDE trajectory datasets (burgers, ns2d, heat)."""
from __future__ import annotations

HELP = "Simulate PDE trajectory datasets (burgers, ns2d, heat)."


def register(subparsers) -> None:
    p = subparsers.add_parser("simulate", help=HELP, description=HELP)
    p.set_defaults(func=run)


def run(args) -> int:
    raise NotImplementedError("invdiff simulate is not implemented yet")
