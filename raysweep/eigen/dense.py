"""Top-k eigenpairs of a dense matrix with LAPACK's subset drivers.

``scipy.linalg.eigh(K, subset_by_index=[N − k, N − 1])``: tridiagonal reduction (``O(N³)``,
about half of it matrix-vector work) then only the wanted eigenvectors (``?syevr``: MRRR,
``?syevx``: bisection + inverse iteration). Runs in the dtype of K (``ssyevr`` for float32).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from raysweep.eigen.operator import KernelOperator

__all__ = ["DENSE_DRIVERS", "dense_eigenpairs"]

DENSE_DRIVERS = ("evr", "evx")


def dense_eigenpairs(op: KernelOperator, k: int, *, driver: str = "evr"):
    """Top-``k`` eigenpairs of ``op.to_dense()``.

    Args:
      op: the operator; arrays are used as they are, handles through ``to_numpy()``.
      k: ``1 <= k < N``.
      driver: ``"evr"`` (default, MRRR) or ``"evx"``.

    Returns:
      ``(vectors, eigvals)``: ``(N, k)`` columns in the working dtype and float64 ``(k,)``
      values, both descending.
    """
    if driver not in DENSE_DRIVERS:
        raise ValueError(
            f"dense driver={driver!r} is not supported; choose one of {DENSE_DRIVERS}."
        )
    matrix = op.to_dense()
    n = op.n
    values, vectors = scipy.linalg.eigh(
        matrix, subset_by_index=[n - k, n - 1], driver=driver, check_finite=False
    )
    return vectors[:, ::-1], values[::-1].astype(np.float64)
