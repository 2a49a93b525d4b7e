"""Run small dense LAPACK problems on one BLAS thread.

The projected problems of the iterative solvers (``eigh`` of a ``(b, b)`` Rayleigh quotient,
Cholesky of a ``(b, b)`` Gram, ``b`` up to ~1500) have many synchronization points per flop.
With OpenBLAS' threads sharing cores with other processes (Ray workers on the driver's node,
other jobs) they run 3-8x *slower* on two threads than on one; on idle cores one thread
costs at most ~2x on these small problems, which are a few percent of a solve. So they run on
one thread, while the large ``matmat`` products keep every thread.

Uses ``threadpoolctl`` (installed with scikit-learn) when present; otherwise a no-op.
"""

from __future__ import annotations

import contextlib

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
    threadpool_limits = None

__all__ = ["one_blas_thread"]


def one_blas_thread():
    """Context manager limiting BLAS/LAPACK (numpy's and scipy's) to one thread."""
    if threadpool_limits is None:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")
