"""Training loop for EDM diffusion priors: ``invdiff train --config FILE``.

One step: draw a batch of clean signals from the data generator, draw
``ln sigma ~ N(P_mean, P_std^2)``, minimise the EDM loss (:func:`invdiff.diffusion.edm.edm_loss`)
with AdamW (linear warm-up, gradient-norm clipping), and update an exponential moving average
(EMA) of the weights, ``theta_ema <- beta theta_ema + (1 - beta) theta``. The EMA weights are the
prior. Mixed precision (bf16 or fp16 autocast) is used on CUDA only; on the CPU everything is
float32.

Checkpoints (all written atomically, every ``checkpoint_every`` steps and at the end) in ``out``:

- ``model.safetensors``: the EMA weights (what :func:`load_checkpoint` and the zoo load),
- ``card.json``: network name and config, preconditioning, data generator and its parameters,
  seed, steps, final loss, package/torch versions, command line, parameter count,
- ``state.safetensors``: everything needed to continue exactly (raw weights, EMA, optimiser, the
  RNG states of the data generator and of torch, the loss history, the config), stored without
  pickle (:mod:`invdiff.diffusion.state`: a crafted file cannot run code); ``resume=True``
  continues from it and gives the same losses and weights as an uninterrupted run. Resuming with
  a different config (other than ``steps``, ``checkpoint_every``, ``threads``) or with fewer
  total steps than already done is refused, naming the difference.

Distributed: under ``torchrun`` (``WORLD_SIZE > 1``) the model is wrapped in
``DistributedDataParallel`` (NCCL on GPUs, gloo on CPUs); rank r draws its data from seed
``seed + 1000 r`` (the gradient average makes the global batch ``world_size * batch_size``),
and only rank 0 writes files.

>>> cfg = TrainConfig.from_dict({"name": "tiny", "network": {"name": "mlp", "dim": 2, "hidden": 16},
...     "data": {"generator": "gaussian", "params": {"dim": 2}}, "steps": 5, "batch_size": 8})
>>> # train(cfg, "/tmp/tiny-run", progress=False)
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from invdiff.diffusion.edm import EDMPrecond, edm_loss
from invdiff.diffusion.networks import build_network
from invdiff.diffusion.state import LEGACY_STATE_NAME, STATE_NAME, load_state, save_state
from invdiff.utils.io import atomic_path, remove_stale_temporaries
from invdiff.utils.progress import progress as _progress

__all__ = ["TrainConfig", "train", "load_checkpoint", "make_data", "build_prior", "TrainResult"]


@dataclasses.dataclass
class TrainConfig:
    """A training run, as read from a JSON config (every field is recorded in the card)."""

    name: str
    network: dict
    data: dict
    sigma_data: float = 0.5
    data_mean: float = 0.0
    P_mean: float = -1.2
    P_std: float = 1.2
    batch_size: int = 16
    steps: int = 1000
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup: int = 100
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    seed: int = 0
    checkpoint_every: int = 500
    amp: str = "bf16"
    threads: int | None = None

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"config: unknown keys {sorted(unknown)}; expected some of {sorted(names)}")
        missing = {"name", "network", "data"} - set(d)
        if missing:
            raise ValueError(f"config: missing required keys {sorted(missing)}")
        cfg = cls(**d)
        if not isinstance(cfg.name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", cfg.name):
            raise ValueError(f"config.name: expected letters, digits, '.', '_', '-' (it names the output folder), got {cfg.name!r}")
        if not isinstance(cfg.network, dict) or not isinstance(cfg.data, dict) or not isinstance(cfg.betas, (list, tuple)):
            raise ValueError("config: 'network' and 'data' must be JSON objects and 'betas' a list of two numbers")
        cfg.betas = tuple(cfg.betas)
        if "name" not in cfg.network or "generator" not in cfg.data:
            raise ValueError("config: 'network' needs a 'name' and 'data' needs a 'generator'")
        if cfg.amp not in ("bf16", "fp16", "none"):
            raise ValueError(f"config.amp: expected 'bf16', 'fp16' or 'none', got {cfg.amp!r}")
        for key in ("batch_size", "steps", "checkpoint_every"):
            if int(getattr(cfg, key)) < 1:
                raise ValueError(f"config.{key}: expected >= 1, got {getattr(cfg, key)}")
        if not 0 <= cfg.ema_decay < 1:
            raise ValueError(f"config.ema_decay: expected in [0, 1), got {cfg.ema_decay}")
        cfg._check_numbers()
        return cfg

    def _check_numbers(self) -> None:
        """Reject non-finite or out-of-range numbers (``grad_clip < 0`` would train uphill)."""
        positive = ("lr", "grad_clip", "sigma_data", "P_std")
        for key in positive + ("weight_decay", "warmup", "P_mean", "data_mean"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"config.{key}: expected a finite number, got {v!r}")
            if key in positive and v <= 0:
                raise ValueError(f"config.{key}: expected > 0, got {v}")
            if key in ("weight_decay", "warmup") and v < 0:
                raise ValueError(f"config.{key}: expected >= 0, got {v}")
        if len(self.betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in self.betas):
            raise ValueError(f"config.betas: expected two numbers in [0, 1), got {list(self.betas)}")
        for key in ("batch_size", "steps", "checkpoint_every", "seed"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"config.{key}: expected an integer, got {v!r}")

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "TrainConfig":
        with open(path) as f:
            return cls.from_dict(json.load(f))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d


def _gaussian_data(n: int, generator=None, device=None, dtype=torch.float32, dim: int = 2, mean: float = 0.0, std: float = 1.0):
    """Toy data ``N(mean, std^2 I_dim)``, for tests of the training loop."""
    from invdiff.utils.random import randn

    return mean + std * randn((n, dim), generator=generator, device=device, dtype=dtype)


def make_data(spec: dict) -> Callable[..., torch.Tensor]:
    """The data sampler ``sample(n, generator, device, dtype)`` of a config's ``data`` entry.

    ``{"generator": "ct-phantom" | "mri-phantom", "params": {"size": 64}}``, ``"hpsm"`` (channels,
    ``params`` of :func:`invdiff.datasets.channels.make_generator`), ``"ns-vorticity"`` (initial
    vorticity of the Navier-Stokes inverse problem, :mod:`invdiff.surrogates.ns_vorticity`), or
    ``"gaussian"`` (toy data ``N(mean, std^2 I_dim)``, for tests).
    """
    name, params = spec["generator"], dict(spec.get("params", {}))
    if name == "gaussian":
        return lambda n, generator=None, device=None, dtype=torch.float32: _gaussian_data(n, generator, device, dtype, **params)
    if name == "hpsm":  # wireless channels (datasets/channels_hpsm.md)
        from invdiff.datasets.channels import make_generator as make_channels

        return make_channels(name, **params)
    if name == "ns-vorticity":
        from invdiff.surrogates.ns_vorticity import make_generator as make_vorticity

        return make_vorticity(**params)
    from invdiff.datasets.phantoms import make_generator

    return make_generator(name, **params)


def build_prior(card: dict) -> EDMPrecond:
    """An (untrained) prior with the architecture and preconditioning of a card or config."""
    net_spec = dict(card["network"])
    net = build_network(net_spec.pop("name"), **net_spec)
    return EDMPrecond(net, sigma_data=card["sigma_data"], data_mean=card.get("data_mean", 0.0))


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` returns: the EMA prior, the loss history and the output folder."""

    prior: EDMPrecond
    losses: list[float]
    out: Path
    card: dict


def _dist_info() -> tuple[int, int, bool]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return rank, world, world > 1


def _save(out: Path, cfg: TrainConfig, model: EDMPrecond, ema: EDMPrecond, opt, gen, step, losses, command, started) -> dict:
    from safetensors.torch import save_file

    import invdiff

    tail = losses[-100:]
    card = {
        "name": cfg.name,
        "network": dict(cfg.network),
        "sigma_data": cfg.sigma_data,
        "data_mean": cfg.data_mean,
        "data": cfg.data,
        "seed": cfg.seed,
        "steps": step,
        "final_loss": float(sum(tail) / len(tail)) if tail else None,
        "final_loss_window": len(tail),
        "parameters": sum(p.numel() for p in model.parameters()),
        "training": cfg.to_dict(),
        "package_version": invdiff.__version__,
        "torch_version": torch.__version__,
        "command": command,
        "world_size": _dist_info()[1],
        "wall_seconds": round(time.time() - started, 1),
    }
    state = {
        "step": step,
        "config": cfg.to_dict(),
        "model": model.state_dict(),
        "ema": ema.state_dict(),
        "opt": opt.state_dict(),
        "data_rng": gen.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else None,
        "losses": torch.tensor(losses, dtype=torch.float64),
    }
    out.mkdir(parents=True, exist_ok=True)
    save_state(out / STATE_NAME, state)
    weights = {k: v.detach().float().cpu().contiguous() for k, v in ema.net.state_dict().items()}
    with atomic_path(out / "model.safetensors") as tmp:
        save_file(weights, str(tmp), metadata={"card": json.dumps(card)})
    with atomic_path(out / "card.json") as tmp:
        tmp.write_text(json.dumps(card, indent=2))
    return card


def train(
    config: TrainConfig | dict | str | os.PathLike,
    out: str | os.PathLike,
    steps: int | None = None,
    resume: bool = False,
    device: str | torch.device | None = None,
    progress: bool = True,
    command: str | None = None,
    stop_after: int | None = None,
) -> TrainResult:
    """Train the prior described by ``config``; write checkpoints to ``out``.

    ``steps`` overrides the config's total step count; ``resume`` continues from
    ``out/state.safetensors``; ``stop_after`` stops (with a checkpoint) after that many steps of this
    call, as if the run were killed there (used to test exact resumption).
    """
    if not isinstance(config, TrainConfig):
        config = TrainConfig.from_json(config) if isinstance(config, (str, os.PathLike)) else TrainConfig.from_dict(dict(config))
    cfg = config
    total = int(steps if steps is not None else cfg.steps)
    if total < 1:
        raise ValueError(f"steps: expected >= 1, got {total}")
    out = Path(out)
    if resume and not (out / STATE_NAME).exists():
        if (out / LEGACY_STATE_NAME).exists():
            load_state(out / LEGACY_STATE_NAME)  # raises: pickles are refused, never loaded
        raise FileNotFoundError(f"--resume: no checkpoint {out / STATE_NAME}")
    state = None
    if resume:
        state = load_state(out / STATE_NAME)
        _check_resume(state, cfg, total, out / STATE_NAME)
    rank, world, distributed = _dist_info()
    if distributed and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and (device is None or "cuda" in str(device)) else "gloo"
        torch.distributed.init_process_group(backend)
    if device is None:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:  # under torchrun: this rank's GPU
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))

    torch.manual_seed(cfg.seed)  # same initial weights on every rank
    model = build_prior(cfg.to_dict()).to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed + 1000 * rank)
    sample_data = make_data(cfg.data)
    step, losses = 0, []
    if state is not None:
        try:
            model.load_state_dict(state["model"])
            ema.load_state_dict(state["ema"])
            opt.load_state_dict(state["opt"])
            gen.set_state(state["data_rng"])
            torch.set_rng_state(state["torch_rng"])
            if state.get("cuda_rng") is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(state["cuda_rng"])
            step, losses = int(state["step"]), state["losses"].tolist()
        except (KeyError, TypeError, AttributeError, RuntimeError, ValueError, IndexError) as exc:
            raise ValueError(f"{out / STATE_NAME}: the checkpoint does not fit this model/optimiser "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})") from None
    ddp = model
    if distributed:
        ddp = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    use_amp = device.type == "cuda" and cfg.amp != "none"
    amp_dtype = torch.bfloat16 if cfg.amp == "bf16" else torch.float16
    scaler = torch.amp.GradScaler("cuda") if use_amp and cfg.amp == "fp16" else None
    command = command or " ".join(sys.argv)
    started = time.time()
    end = total if stop_after is None else min(total, step + stop_after)
    bar = _progress(range(step, end), enabled=progress and rank == 0, desc=f"train {cfg.name}", initial=step, total=total)
    model.train()
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = cfg.lr * min(1.0, (step + 1) / max(cfg.warmup, 1))
        x0 = sample_data(cfg.batch_size, generator=gen).to(device)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
            loss = edm_loss(ddp, x0, gen, cfg.P_mean, cfg.P_std) if not distributed else _ddp_loss(ddp, model, x0, gen, cfg)
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
        else:
            loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), model.parameters()):
                pe.lerp_(p, 1 - cfg.ema_decay)
        value = float(loss.detach())
        if distributed:  # log the mean loss over ranks
            t = torch.tensor([value], device=device)
            torch.distributed.all_reduce(t)
            value = float(t) / world
        if not math.isfinite(value):
            raise FloatingPointError(f"train: loss became {value} at step {step}")
        losses.append(value)
        if progress and rank == 0 and step % 10 == 0:
            bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}")
        if rank == 0 and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < end:
            _save(out, cfg, model, ema, opt, gen, step + 1, losses, command, started)
    step = end
    card = _save(out, cfg, model, ema, opt, gen, step, losses, command, started) if rank == 0 else {}
    if rank == 0:  # hidden temporaries of an earlier, killed run
        for name in (STATE_NAME, "model.safetensors", "card.json"):
            remove_stale_temporaries(out / name)
    if distributed:
        torch.distributed.barrier()
    ema.eval()
    return TrainResult(prior=ema, losses=losses, out=out, card=card)


_RESUMABLE_CHANGES = ("steps", "checkpoint_every", "threads")


def _check_resume(state: dict, cfg: TrainConfig, total: int, path: Path) -> None:
    """Refuse to resume with another config (naming each difference) or fewer total steps."""
    saved = state.get("config")
    if not isinstance(saved, dict):
        raise ValueError(f"{path}: the checkpoint records no config; cannot check that it matches")
    now = json.loads(json.dumps(cfg.to_dict()))  # tuples -> lists, as stored
    diff = [f"{k}: checkpoint {saved.get(k)!r}, now {now.get(k)!r}" for k in sorted(set(saved) | set(now))
            if k not in _RESUMABLE_CHANGES and saved.get(k) != now.get(k)]
    if diff:
        raise ValueError(f"--resume: the config differs from the checkpoint's ({'; '.join(diff)}); "
                         "use the original config or train into a new folder")
    done = int(state.get("step", 0))
    if total < done:
        raise ValueError(f"--resume: steps {total} is fewer than the {done} steps already done in {path.parent}")


def _ddp_loss(ddp: nn.Module, model: EDMPrecond, x0, gen, cfg: TrainConfig) -> torch.Tensor:
    """EDM loss through the DDP wrapper (so that gradients are all-reduced)."""

    class _Call:
        sigma_data = model.sigma_data

        def __call__(self, x, sigma):
            return ddp(x, sigma)

    return edm_loss(_Call(), x0, gen, cfg.P_mean, cfg.P_std)


def load_checkpoint(path: str | os.PathLike, device=None, dtype: torch.dtype = torch.float32) -> EDMPrecond:
    """Load a prior ``D(x, sigma)`` from a ``model.safetensors`` file (or its folder), in eval mode.

    The architecture comes from the card stored in the file's metadata.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if not path.is_file():
        raise ValueError(f"{path}: not a regular file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error type for a corrupt header
        raise ValueError(f"{path}: not a readable safetensors file ({exc})") from None
    if "card" not in meta:
        raise ValueError(f"{path}: safetensors file without an invdiff card in its metadata")
    try:
        card = json.loads(meta["card"])
        prior = build_prior(card)
        weights = {k: v.to(dtype) for k, v in load_file(str(path)).items()}
        prior.net.load_state_dict(weights)
    except (KeyError, TypeError, RuntimeError, ValueError) as exc:
        raise ValueError(f"{path}: the weights do not match the card's network ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:200] if str(exc) else ''})") from None
    prior.card = card
    return prior.to(device=device, dtype=dtype).eval().requires_grad_(False)
