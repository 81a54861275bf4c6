"""Two-process gloo groups on this machine for the distributed tests (``torch.multiprocessing`` ranks)."""
from __future__ import annotations

import contextlib
import os
import socket

import torch


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def gloo_group(rank: int, world: int, port: int):
    """One thread, ``RANK``/``WORLD_SIZE`` set, a gloo process group for the body, destroyed after it."""
    torch.set_num_threads(1)
    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank))
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        yield
    finally:
        torch.distributed.destroy_process_group()
