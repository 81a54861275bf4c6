r"""Training masked-diffusion priors with the MDLM loss, and loading the shipped ones.

A run is described by a JSON config (``configs/digits-mdlm.json``)::

    {"name": "digits-mdlm", "network": {"name": "conv", "width": 48, "blocks": 5, "dropout": 0.1},
     "data": {"dataset": "digits", "split": "train"}, "levels": 17, "lo": 0.0, "hi": 1.0,
     "schedule": "loglinear", "batch_size": 64, "steps": 2000, "lr": 0.002, "warmup": 50,
     "ema_decay": 0.995, "seed": 0, "threads": 1, "checkpoint_every": 250}

and run with ``python -m invdiff.diffusion.discrete.training --config configs/digits-mdlm.json
--out runs/digits-mdlm``; it writes (also every ``checkpoint_every`` steps, card marked ``partial``) ``<name>.safetensors`` (EMA weights, float16) and
``<name>.json`` (the card: config, data, steps, final train/test loss in nats per sequence,
the command, wall time); shipped priors are these two files copied into ``invdiff/assets/discrete``.
:func:`load_discrete_prior` loads a shipped prior as a :class:`DiscretePrior`.

>>> from invdiff.diffusion.discrete.training import load_discrete_prior
>>> prior = load_discrete_prior("digits-mdlm")          # doctest: +SKIP
>>> prior.x_shape, prior.vocab_size                     # doctest: +SKIP
((1, 8, 8), 17)
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import shlex
import sys
import time
from pathlib import Path

import torch
from torch import Tensor, nn

from invdiff.diffusion.discrete.loss import mdlm_loss
from invdiff.diffusion.discrete.networks import build_discrete_network
from invdiff.diffusion.discrete.tokenizers import Codebook, intensity_quantizer
from invdiff.utils.io import atomic_path

__all__ = ["DiscretePrior", "train_discrete", "load_discrete_prior", "discrete_data", "ASSETS"]

ASSETS = Path(__file__).resolve().parent.parent.parent / "assets" / "discrete"  # apart from the D(x, sigma) zoo


class DiscretePrior(nn.Module):
    """A trained masked-diffusion network with its codebook: ``logits(z)``, ``codebook``, ``x_shape``."""

    def __init__(self, net: nn.Module, codebook: Codebook, card: dict | None = None) -> None:
        super().__init__()
        self.net, self.codebook, self.card = net, codebook, card or {}
        self.x_shape = codebook.x_shape

    @property
    def vocab_size(self) -> int:
        return self.net.vocab_size

    @property
    def seq_len(self) -> int:
        return self.net.seq_len

    @property
    def mask_index(self) -> int:
        return self.vocab_size

    @torch.no_grad()
    def logits(self, z: Tensor) -> Tensor:
        return self.net.logits(z).double()


def discrete_data(spec: dict, levels: int | None = None) -> tuple[Tensor, tuple[int, ...]]:
    """Training tokens ``(N, L)`` and the signal shape of a config's ``data`` entry.

    ``{"dataset": "digits", "split": "train" | "test"}``: the 8x8 digits, one token per pixel
    (their 17 integer intensities). ``{"dataset": "ct-phantom", "size": 32, "n": 16384, "seed": 1,
    "split": "train" | "test"}``: ``n`` random-ellipse phantoms drawn from ``seed``
    (``datasets/phantoms.py``; the test split is the fixed held-out set ``test_set(name, n_test)``
    from ``TEST_SEED``), quantised to ``levels`` equally spaced intensities on [0, 1].
    """
    name = spec.get("dataset")
    if name == "digits":
        from invdiff.datasets.digits import load_digits

        images, _ = load_digits(spec.get("split", "train"))
        return images.reshape(images.shape[0], -1), (1, 8, 8)
    if name in ("ct-phantom",):
        from invdiff.datasets.phantoms import make_generator, test_set

        if levels is None:
            raise ValueError("phantom data: expected the number of quantisation levels")
        size = int(spec.get("size", 32))
        if spec.get("split", "train") == "test":
            x = test_set(name, int(spec.get("n_test", 256)), size)
        else:
            x = make_generator(name, size=size)(int(spec.get("n", 16384)), generator=torch.Generator().manual_seed(int(spec.get("seed", 1))))
        x_shape = tuple(x.shape[1:])
        return intensity_quantizer(int(levels), x_shape).encode(x), x_shape
    raise ValueError(f"data.dataset: expected 'digits' or 'ct-phantom', got {name!r}")


DATA_SOURCES = {"digits": "UCI optical digits (scikit-learn copy), invdiff/assets/digits-8x8.csv.gz",
                "ct-phantom": "random-ellipse CT phantoms, datasets/phantoms.py (ct_phantoms), drawn from data.seed; "
                              "test: test_set (TEST_SEED)"}


def _codebook(cfg: dict, x_shape) -> Codebook:
    return intensity_quantizer(int(cfg["levels"]), x_shape, cfg.get("lo", 0.0), cfg.get("hi", 1.0))


def train_discrete(cfg: dict, out_dir: str | Path, command: str | None = None, progress: bool = True) -> dict:
    """Train the config's network with the MDLM loss (AdamW, linear warm-up then cosine decay,
    EMA of the weights); write the EMA weights and the card into ``out_dir``; return the card."""
    threads = cfg.get("threads")
    if threads:
        torch.set_num_threads(int(threads))
    torch.manual_seed(int(cfg["seed"]))
    gen = torch.Generator().manual_seed(int(cfg["seed"]))
    tokens, x_shape = discrete_data(cfg["data"], cfg["levels"])
    test_tokens, _ = discrete_data({**cfg["data"], "split": "test"}, cfg["levels"])
    net_spec = dict(cfg["network"])
    net = build_discrete_network(net_spec.pop("name"), vocab_size=int(cfg["levels"]), seq_len=tokens.shape[1], **net_spec)
    ema = copy.deepcopy(net).eval().requires_grad_(False)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg["lr"], weight_decay=cfg.get("weight_decay", 0.0))
    steps, warm, bs = int(cfg["steps"]), int(cfg.get("warmup", 100)), int(cfg["batch_size"])
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    losses, t0 = [], time.time()
    for step in range(steps):
        idx = torch.randint(0, tokens.shape[0], (bs,), generator=gen)
        loss = mdlm_loss(net, tokens[idx], cfg.get("schedule", "loglinear"), generator=gen).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), cfg.get("grad_clip", 1.0))
        opt.step()
        sched.step()
        with torch.no_grad():
            d = cfg.get("ema_decay", 0.999)
            for pe, p in zip(ema.parameters(), net.parameters()):
                pe.lerp_(p, 1 - d)
        losses.append(loss.item())
        every = int(cfg.get("checkpoint_every", 0))
        if every and (step + 1) % every == 0 and step + 1 < steps:  # partial card: usable mid-run
            save(ema, {"name": cfg["name"], "config": cfg, "x_shape": list(x_shape), "seq_len": tokens.shape[1],
                       "steps": step + 1, "partial": True}, Path(out_dir))
        if progress and (step % 100 == 0 or step == steps - 1):
            print(f"step {step} loss {sum(losses[-100:]) / len(losses[-100:]):.3f} ({time.time() - t0:.0f}s)", flush=True)
    eval_gen = torch.Generator().manual_seed(12345)
    with torch.no_grad():
        reps, n_eval = int(cfg.get("eval_repeats", 20)), int(cfg.get("eval_train_n", 300))
        test_loss = float(torch.cat([mdlm_loss(ema, test_tokens, cfg.get("schedule", "loglinear"), generator=eval_gen)
                                     for _ in range(reps)]).mean())
        train_loss = float(torch.cat([mdlm_loss(ema, tokens[:n_eval], cfg.get("schedule", "loglinear"), generator=eval_gen)
                                      for _ in range(reps)]).mean())
    card = {"name": cfg["name"], "config": cfg, "x_shape": list(x_shape), "seq_len": tokens.shape[1],
            "data": {**cfg["data"], "n": tokens.shape[0], "n_test": test_tokens.shape[0], "source": DATA_SOURCES[cfg["data"]["dataset"]]},
            "seed": cfg["seed"], "steps": steps, "final_loss_last100": sum(losses[-100:]) / min(100, len(losses)),
            "ema_train_loss_nats_per_image": train_loss, "ema_test_loss_nats_per_image": test_loss,
            "parameters": sum(p.numel() for p in net.parameters()), "torch_version": torch.__version__,
            "wall_seconds": round(time.time() - t0, 1), "weights_dtype": "float16",
            "command": command or "python -m invdiff.diffusion.discrete.training " + " ".join(map(shlex.quote, sys.argv[1:]))}
    save(ema, card, Path(out_dir))
    return card


def save(net: nn.Module, card: dict, out_dir: Path) -> None:
    """Write ``<name>.safetensors`` (float16) and ``<name>.json`` into ``out_dir`` atomically."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in net.state_dict().items()}
    with atomic_path(out_dir / f"{card['name']}.safetensors") as tmp:
        save_file(state, str(tmp), metadata={"card": json.dumps(card)})
    with atomic_path(out_dir / f"{card['name']}.json") as tmp:
        Path(tmp).write_text(json.dumps(card, indent=2))


def load_discrete_prior(name: str, device=None) -> DiscretePrior:
    """The shipped masked-diffusion prior ``name`` (e.g. ``"digits-mdlm"``; or the path of a
    ``.safetensors`` file written by :func:`train_discrete`, its card beside it), eval mode, float32 weights."""
    from safetensors.torch import load_file

    path = Path(name) if str(name).endswith(".safetensors") else ASSETS / f"{name}.safetensors"
    if not path.exists():
        shipped = sorted(p.stem for p in ASSETS.glob("*.json") if json.loads(p.read_text()).get("config", {}).get("levels"))
        raise ValueError(f"unknown discrete prior {name!r}; shipped: {shipped} (or pass a path to a .safetensors file)")
    card = json.loads(path.with_suffix(".json").read_text())
    cfg = card["config"]
    spec = dict(cfg["network"])
    net = build_discrete_network(spec.pop("name"), vocab_size=int(cfg["levels"]), seq_len=int(card["seq_len"]), **spec)
    net.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    prior = DiscretePrior(net.eval().requires_grad_(False), _codebook(cfg, tuple(card["x_shape"])), card)
    return prior.to(device) if device is not None else prior


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Train a masked-diffusion prior with the MDLM loss.")
    p.add_argument("--config", required=True)
    p.add_argument("--out", required=True, help="output folder (weights and card)")
    p.add_argument("--steps", type=int, default=None, help="override the config's steps")
    a = p.parse_args(argv)
    cfg = json.loads(Path(a.config).read_text())
    if a.steps is not None:
        cfg["steps"] = a.steps
    cmd = f"python -m invdiff.diffusion.discrete.training --config {a.config} --out {a.out}" + (f" --steps {a.steps}" if a.steps else "")
    card = train_discrete(cfg, a.out, command=cmd)
    print(json.dumps({k: card[k] for k in ("steps", "ema_train_loss_nats_per_image", "ema_test_loss_nats_per_image", "wall_seconds")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
