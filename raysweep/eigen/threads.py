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
    from threadpoolctl import ThreadpoolController
except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
    ThreadpoolController = None

__all__ = ["one_blas_thread"]

_controller = None


def one_blas_thread():
    """Context manager limiting BLAS/LAPACK (numpy's and scipy's) to one thread.

    The loaded BLAS libraries are scanned once per process (a scan costs ~1 ms).
    """
    global _controller
    if ThreadpoolController is None:
        return contextlib.nullcontext()
    if _controller is None:
        _controller = ThreadpoolController()
    return _controller.limit(limits=1, user_api="blas")
