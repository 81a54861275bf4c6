"""`invdiff train`: Train a diffusion prior from a config file."""
from __future__ import annotations

HELP = "Train a diffusion prior from a config file."


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help=HELP,
        description=HELP + " Writes model.safetensors (EMA weights), card.json and state.safetensors (the resumable state, no pickle) to --out. "
        "Multi-GPU / multi-node: launch with torchrun (DDP).",
    )
    p.add_argument("--config", required=True, help="JSON training config (see configs/)")
    p.add_argument("--out", default=None, help="output folder (default: runs/<config name>)")
    p.add_argument("--steps", type=int, default=None, help="total training steps (overrides the config)")
    p.add_argument("--resume", action="store_true", help="continue exactly from OUT/state.safetensors (same config required)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    import shlex
    import sys

    from invdiff.diffusion.training import TrainConfig, train

    from invdiff.utils.io import check_output_dir

    cfg = TrainConfig.from_json(args.config)
    out = check_output_dir(args.out or f"runs/{cfg.name}", what="--out")
    command = "invdiff " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["train"] else None
    res = train(cfg, out, steps=args.steps, resume=args.resume, device=args.device, progress=not args.no_progress, command=command)
    if res.card:
        print(f"trained {cfg.name}: {res.card['steps']} steps, final loss {res.card['final_loss']:.4f} -> {res.out}")
    return 0
