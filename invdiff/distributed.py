r"""Running past one process: sharding over ``torchrun`` ranks and SMC with particles on many ranks.

Under ``torchrun`` (``WORLD_SIZE > 1``) every rank runs the same script; :func:`rank_world`
reads the rank and world size (initialising the process group, gloo on CPUs and NCCL on GPUs,
when needed). Two uses:

- **Data sharding** (``invdiff reconstruct --input-dir``): :func:`shard_bounds` gives rank
  ``r`` the contiguous block of items ``[start_r, stop_r)``; the blocks partition the items, so
  merging the ranks' results in rank order loses and duplicates nothing.
- **Particle sharding** (SMC): rank ``r`` holds particles ``k`` in its block of the ``N``
  particles (rows ``k * B + b`` of the working batch, ``B`` measurements). The network, the
  expensive part, runs on the local particles only. Resampling needs all weights: the
  log-weights (and the particles) are all-gathered, every rank computes the same ancestors
  from the same generator (:func:`sharded_resample`), and keeps its block. Random draws of
  the moves use :func:`local_randn` (the full draw, sliced), so the result equals the
  single-process run with the same seed. :class:`ParticleShard` bundles these for the SMC
  samplers (``make("smc", prior, shard_particles=True)``, and ``invdiff reconstruct --input``
  under ``torchrun``): bit for bit where the denoiser's rows do not depend on the batch size
  (``tests/test_distributed_smc.py``, an exact Gaussian mixture on 2 gloo ranks).

The ancestor rule is the one of :func:`invdiff.samplers.smc.resampling.resample`: when the
effective sample size of measurement ``b`` falls below ``ess_threshold * N``,

.. math:: a_k^b \sim \mathrm{Resample}(\mathrm{softmax}_k(\log w_k^b)),
          \qquad x_k^b \leftarrow x_{a_k^b}^b,\quad \log w_k^b \leftarrow 0.

Example (one process: every function is the identity on the data)::

    >>> import torch
    >>> lw, x = sharded_resample(torch.zeros(4), [torch.arange(4.0)], n_total=4, batch=1)
    >>> x[0].tolist()
    [0.0, 1.0, 2.0, 3.0]
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["rank_world", "shard_bounds", "shard_items", "all_gather_rows", "local_rows", "local_randn",
           "sharded_resample", "barrier", "ParticleShard"]


def _dist():
    return torch.distributed if torch.distributed.is_available() and torch.distributed.is_initialized() else None


def rank_world(init: bool = True) -> tuple[int, int]:
    """``(rank, world_size)``; under ``torchrun`` initialise the process group if needed (gloo on
    CPU, NCCL when CUDA is available), else ``(0, 1)``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and init and torch.distributed.is_available() and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    d = _dist()
    if d is not None:
        return d.get_rank(), d.get_world_size()
    return int(os.environ.get("RANK", "0")), 1


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    d = _dist()
    if d is not None:
        d.barrier()


def shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """Contiguous block ``[start, stop)`` of ``n`` items for ``rank``; sizes differ by at most one.

    >>> [shard_bounds(5, r, 2) for r in range(2)]
    [(0, 3), (3, 5)]
    """
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank/world: expected 0 <= rank < world, got rank {rank}, world {world}")
    q, r = divmod(int(n), world)
    start = rank * q + min(rank, r)
    return start, start + q + (1 if rank < r else 0)


def shard_items(items: Sequence, rank: int, world: int) -> list:
    """The block of ``items`` of ``rank`` (see :func:`shard_bounds`)."""
    s, e = shard_bounds(len(items), rank, world)
    return list(items[s:e])


def all_gather_rows(t: Tensor) -> Tensor:
    """Concatenate along dim 0 the tensors of every rank, in rank order (sizes may differ)."""
    d = _dist()
    if d is None or d.get_world_size() == 1:
        return t
    world = d.get_world_size()
    n = torch.tensor([t.shape[0]], device=t.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    d.all_gather(sizes, n)
    sizes = [int(s) for s in sizes]
    m = max(sizes)
    pad = torch.zeros((m - t.shape[0], *t.shape[1:]), dtype=t.dtype, device=t.device)
    parts = [torch.empty((m, *t.shape[1:]), dtype=t.dtype, device=t.device) for _ in range(world)]
    d.all_gather(parts, torch.cat([t.contiguous(), pad]))
    return torch.cat([p[:s] for p, s in zip(parts, sizes)])


def local_rows(t: Tensor, n_total: int, batch: int, rank: int | None = None, world: int | None = None) -> Tensor:
    """The rows ``k * batch + b`` of the particles ``k`` of this rank's block, from the full ``t``."""
    if rank is None or world is None:
        rank, world = rank_world(init=False)
    s, e = shard_bounds(n_total, rank, world)
    return t[s * batch:e * batch]


def local_randn(shape: Sequence[int], n_total: int, batch: int, generator: torch.Generator | None = None,
                device=None, dtype=None) -> Tensor:
    """Standard normal noise for this rank's particles: the full draw of shape ``(n_total * batch,
    *shape[1:])`` sliced to the local rows, so that any sharding gives the single-process numbers."""
    from invdiff.utils.random import randn

    full = randn((n_total * batch, *tuple(shape)[1:]), generator=generator, device=device, dtype=dtype)
    return local_rows(full, n_total, batch)


class ParticleShard:
    r"""This rank's block of the ``n_total`` particles of each of ``batch`` measurements.

    Rows ``k * batch + b`` of the working batch with ``k`` in ``[start, stop)``
    (:func:`shard_bounds`). Everything an SMC sampler does across particles goes through it:
    random draws (:meth:`randn`, :meth:`rand`: the full draw of ``n_total * batch`` rows, sliced,
    so the generator advances as in one process), weights and reductions over all particles
    (:meth:`gather`, :meth:`fold`) and resampling (:meth:`take`). With ``world == 1`` every method
    is the plain single-process operation (the same calls, bit for bit).

    >>> sh = ParticleShard(n_total=5, batch=2, rank=1, world=2)
    >>> sh.start, sh.stop, sh.n_local
    (3, 5, 2)
    >>> g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    >>> torch.equal(sh.randn((4, 3), g1), torch.randn(10, 3, generator=g2)[6:])
    True
    """

    def __init__(self, n_total: int, batch: int, rank: int = 0, world: int = 1) -> None:
        if not (isinstance(n_total, int) and n_total >= world >= 1 and batch >= 1):
            raise ValueError(f"particles: expected n_total >= world >= 1 and batch >= 1 (at least one particle per rank), "
                             f"got n_total {n_total!r}, world {world}, batch {batch}")
        self.n_total, self.batch, self.rank, self.world = int(n_total), int(batch), int(rank), int(world)
        self.start, self.stop = shard_bounds(self.n_total, self.rank, self.world)

    @classmethod
    def current(cls, n_total: int, batch: int) -> "ParticleShard":
        """The shard of this process under ``torchrun`` (one process: all particles)."""
        rank, world = rank_world()
        return cls(n_total, batch, rank, world)

    @property
    def n_local(self) -> int:
        """Particles per measurement on this rank."""
        return self.stop - self.start

    def __repr__(self) -> str:
        return f"ParticleShard(n_total={self.n_total}, batch={self.batch}, rank={self.rank}, world={self.world})"

    def _draw(self, fn, shape, generator, device, dtype) -> Tensor:
        shape = tuple(shape)
        if self.world == 1:
            return fn(shape, generator, device, dtype)
        if shape[0] != self.n_local * self.batch:
            raise ValueError(f"draw: expected {self.n_local} x {self.batch} local rows, got shape {shape}")
        return self.local(fn((self.n_total * self.batch, *shape[1:]), generator, device, dtype))

    def randn(self, shape, generator: torch.Generator | None = None, device=None, dtype=None) -> Tensor:
        """Standard normal noise for the local rows ``shape`` (the full draw, sliced)."""
        from invdiff.utils.random import randn

        return self._draw(randn, shape, generator, device, dtype)

    def rand(self, shape, generator: torch.Generator | None = None, device=None, dtype=None) -> Tensor:
        """Uniform [0, 1) draws for the local rows ``shape`` (the full draw, sliced)."""
        from invdiff.utils.random import rand

        return self._draw(rand, shape, generator, device, dtype)

    def gather(self, t: Tensor) -> Tensor:
        """All ``n_total * batch`` rows from every rank's local rows (rank order = particle order)."""
        return t if self.world == 1 else all_gather_rows(t)

    def local(self, t: Tensor) -> Tensor:
        """This rank's rows of a full ``(n_total * batch, ...)`` tensor."""
        return t if self.world == 1 else t[self.start * self.batch:self.stop * self.batch]

    def fold(self, t: Tensor) -> Tensor:
        """``(n_total * batch, ...) -> (n_total, batch, ...)``."""
        return t.reshape(self.n_total, self.batch, *t.shape[1:])

    def take(self, idx: Tensor, *tensors: Tensor) -> list[Tensor]:
        """Local rows after reindexing particles by ancestors ``idx`` ``(n_total, batch)``: row
        ``k * batch + b`` becomes row ``idx[k, b] * batch + b`` of the full (gathered) tensor."""
        rows = (idx * self.batch + torch.arange(self.batch, device=idx.device)[None, :]).reshape(-1)
        if self.world == 1:
            return [t[rows] for t in tensors]
        return [self.local(self.gather(t)[rows]) for t in tensors]

    def check_generator(self, generator: torch.Generator | None) -> None:
        """Refuse to run sharded without a generator, or with generators in different states
        (every rank must draw the same ancestors and the same full noise)."""
        if self.world == 1:
            return
        if generator is None:
            raise ValueError("particles sharded over ranks: pass a torch.Generator seeded alike on every rank "
                             "(the global random state differs between processes)")
        state = generator.get_state()
        states = all_gather_rows(state[None].to(_collective_device()))
        if not bool((states == states[:1]).all()):
            raise ValueError("particles sharded over ranks: the generators differ between ranks; seed them alike")


def _collective_device() -> torch.device:
    d = _dist()
    if d is not None and d.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def sharded_resample(local_log_w: Tensor, local_tensors: Sequence[Tensor], n_total: int, batch: int,
                     method: str = "systematic", generator: torch.Generator | None = None,
                     ess_threshold: float = 1.0) -> tuple[Tensor, list[Tensor]]:
    """Resample particles sharded over ranks; returns this rank's ``(log_w, tensors)``.

    ``local_log_w``: ``(n_local * batch,)``; ``local_tensors``: ``(n_local * batch, ...)`` each,
    rows ``k * batch + b``. The log-weights and tensors are all-gathered, the ancestors computed
    on every rank from ``generator`` (the same state on every rank), and each rank keeps its
    block. Measurements whose ESS is at least ``ess_threshold * n_total`` keep their particles
    and weights; the others get ``log_w = 0``. ``generator`` is advanced exactly as in one
    process (one call of the resampler), so later draws stay in step.
    """
    from invdiff.samplers.smc.resampling import ess, resample

    rank, world = rank_world(init=False)
    sh = ParticleShard(n_total, batch, rank, world)
    lw = sh.gather(local_log_w)
    if lw.shape[0] != n_total * batch:
        raise ValueError(f"log-weights: expected {n_total} x {batch} rows over all ranks, got {lw.shape[0]}")
    folded = sh.fold(lw)
    low = ess(folded) < ess_threshold * n_total
    if not bool(low.any()):
        return local_log_w, list(local_tensors)
    idx = resample(folded, method, generator)
    keep = torch.arange(n_total, device=idx.device)[:, None].expand_as(idx)
    idx = torch.where(low[None, :], idx, keep)
    new_lw = torch.where(low[None, :], torch.zeros_like(folded), folded.gather(0, idx)).reshape(-1)
    return sh.local(new_lw), sh.take(idx, *local_tensors)
