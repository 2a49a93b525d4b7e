"""The Nyström approximation of K and its exact top-k eigenpairs.

With ``m`` landmark indices ``I`` (sampled uniformly without replacement), ``C = K[:, I]``
``(N, m)`` and ``W = K[I][:, I]`` ``(m, m)``::

    K ≈ K̃ = C W⁺ Cᵀ = B Bᵀ,   B = C U_r diag(s_r)^(-1/2)   (W = U diag(s) Uᵀ, s_r > cutoff)

and the top-k eigenpairs of ``K̃`` follow exactly from ``B = Q R`` (thin QR) and the small
``eigh(R Rᵀ)``: ``K̃ = Q (R Rᵀ) Qᵀ``. Cost: ``m`` products with K (one ``matmat`` of indicator
columns, or a column gather for arrays), ``O(N m²)`` dense work. With ``m = N`` the
approximation is K itself and the pairs are exact up to rounding.

All dense work is float64. The pseudo-inverse drops eigenvalues of ``W`` at or below
``rcond · max(s)`` (default ``sqrt(m) · eps`` of K's dtype, the typical size of the rounding
error in the eigenvalues of ``W``: below that they are noise, and ``s^(-1/2)`` would amplify it).
"""

from __future__ import annotations

import contextlib

import numpy as np
import scipy.linalg

from raysweep.eigen.operator import KernelOperator
from raysweep.eigen.threads import one_blas_thread

__all__ = ["default_num_landmarks", "nystrom_eigenpairs"]

# Above this size the small eigh has enough work per synchronization for every BLAS thread.
_ONE_THREAD_MAX_M = 2048


def default_num_landmarks(k: int, n: int) -> int:
    """``min(N, 4k)``."""
    return min(n, 4 * k)


def nystrom_eigenpairs(
    op: KernelOperator,
    k: int,
    *,
    num_landmarks: int,
    seed: int | None,
    rcond: float | None = None,
):
    """Top-``k`` eigenpairs of the Nyström approximation of ``op`` (module docstring).

    Args:
      op: the operator; handles are sampled with one ``matmat`` of ``m`` indicator columns.
      k: ``1 <= k <= num_landmarks``.
      num_landmarks: ``m``, ``k <= m <= N``.
      seed: seed of the landmark sample (``numpy.random.default_rng(seed).choice``).
      rcond: relative cutoff of the pseudo-inverse of ``W``; ``None`` = ``sqrt(m) · eps(dtype)``.

    Returns:
      ``(vectors, eigvals)``: ``(N, k)`` float64 columns and float64 ``(k,)`` eigenvalues of
      ``K̃``, descending.

    Raises:
      ValueError: if ``W`` has fewer than ``k`` eigenvalues above the cutoff (``K̃`` has rank
        below ``k``): more landmarks are needed.
    """
    n, m = op.n, num_landmarks
    index = np.sort(np.random.default_rng(seed).choice(n, size=m, replace=False))
    c = np.asarray(op.columns(index), dtype=np.float64)
    w = c[index]
    w = 0.5 * (w + w.T)
    if rcond is None:
        rcond = np.sqrt(m) * float(np.finfo(op.dtype).eps)
    with one_blas_thread() if m <= _ONE_THREAD_MAX_M else contextlib.nullcontext():
        s, u = scipy.linalg.eigh(w, check_finite=False)
    keep = s > rcond * max(float(s[-1]), 0.0)
    rank = int(keep.sum())
    if rank < k:
        raise ValueError(
            f"the Nyström approximation from num_landmarks={m} landmarks has rank {rank} < "
            f"k={k} (eigenvalues of K[I][:, I] above rcond={rcond:.1e} · max); increase "
            "num_landmarks or use method='block'."
        )
    b = c @ (u[:, keep] / np.sqrt(s[keep]))
    q, r = np.linalg.qr(b)
    with one_blas_thread() if rank <= _ONE_THREAD_MAX_M else contextlib.nullcontext():
        values, z = scipy.linalg.eigh(r @ r.T, subset_by_index=[rank - k, rank - 1])
    return q @ z[:, ::-1], values[::-1].copy()
