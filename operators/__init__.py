"""Forward operators ``y = A(x) + noise`` as deepinv ``Physics`` (``LinearPhysics`` when linear).

Imported as ``invdiff.operators`` (the folder ``operators/`` is mapped by setup.py).
``make(name, **kwargs)`` builds a registered operator; ``available()`` lists them.

Every operator made here has ``x_shape`` (one signal, no batch axis), ``y_shape``, an exact
adjoint ``A_adjoint`` and ``baseline(y)``: the classical reconstruction of its modality
(pseudo-inverse for ``Matrix``, filtered back-projection for ``CT``, zero-filled for
single-coil and SENSE for multi-coil MRI, Wiener for ``Blur2D``, slice-wise for ``Volume``).

Common to all (``operators.common``): the constructor arguments ``sigma``, ``gain``,
``noise_model``, ``generator``, ``device``, ``dtype`` with one rule for conflicts, and
``op.linear``. Complex signals are (real, imag) channels, converted only by
``operators.complex``. Operators with an SVD (single-coil MRI, ``Matrix``) expose deepinv's
decomposable interface (DDRM runs on them); ``operators.svd.decomposable(op)`` gives any small
linear operator one from its dense matrix.
"""
from invdiff.operators.registry import available, make, register
from invdiff.operators.matrix import Matrix
from invdiff.operators.ct import CT
from invdiff.operators.mri import MultiCoilMRI, SingleCoilMRI, birdcage_maps
from invdiff.operators.masks import cartesian_mask
from invdiff.operators.blur import Blur2D
from invdiff.operators.volume import Volume

__all__ = [
    "Blur2D",
    "CT",
    "Matrix",
    "MultiCoilMRI",
    "SingleCoilMRI",
    "Volume",
    "available",
    "birdcage_maps",
    "cartesian_mask",
    "make",
    "register",
]
