"""Small, fast configurations of every registered operator, shared by the operator tests."""
from __future__ import annotations

import inspect

from invdiff import operators
from invdiff.operators.registry import _REGISTRY

PDE_SOLVER = dict(t_final=0.02, n_frames=3)
SMALL = {
    "matrix": dict(m=5, n=7),
    "ct-sparse-view": dict(size=12, views=4),
    "ct-limited-angle": dict(size=12, views=6),
    "ct-fan": dict(size=12, views=6),
    "mri-4x": dict(size=12),
    "mri-multicoil-8x": dict(size=12, coils=2, acceleration=3),
    "blur-gaussian": dict(size=12, blur_sigma=0.8),
    "blur-motion": dict(size=12, kernel_size=5),
    "blur-uniform": dict(size=12, kernel_size=3),
    "volume-ct": dict(size=8, depth=3, views=3),
    "volume-mri": dict(size=8, depth=3),
    "volume-ct-limited-angle": dict(size=8, depth=3, views=4),
    "volume-mri-slices": dict(size=8, depth=3),
    "channel-hybrid-bf": dict(nr=4, nt=4, frames=4, rf_chains=2, tx_rf_chains=2),
    "pde-burgers": dict(n=16, **PDE_SOLVER),
    "pde-burgers-dirichlet": dict(n=9, **PDE_SOLVER),
    "pde-ns2d": dict(n=8, **PDE_SOLVER),
    "pde-heat": dict(grid=(16,), n_frames=3),
    "pde-observed": dict(solver_kwargs=dict(n=16, **PDE_SOLVER), n_sensors=4),
    "pde-sensors": dict(grid=(16,), n_sensors=4),
    "pde-subsample-space": dict(grid=(16,)),
    "pde-subsample-time": dict(grid=(16,), n_frames=5),
    "pde-time-window": dict(grid=(16,), n_frames=5, start=1, stop=3),
}


def small(name: str, **kw):
    """The operator ``name`` at a small size (``size=8`` for operators not listed in SMALL)."""
    args = dict(SMALL.get(name, {}))
    if name not in SMALL and "size" in inspect.signature(_REGISTRY.get(name)).parameters:
        args["size"] = 8
    args.update(kw)
    return operators.make(name, **args)
