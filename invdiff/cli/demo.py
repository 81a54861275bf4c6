"""`invdiff demo`: Run the main job: CT and MRI reconstructions on held-out phantoms, baselines vs diffusion samplers."""
from __future__ import annotations

HELP = "Run the main job: CT and MRI reconstructions on held-out phantoms, baselines vs diffusion samplers."


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help=HELP, description=HELP)
    p.set_defaults(func=run)


def run(args) -> int:
    raise NotImplementedError("invdiff demo is not implemented yet")
