"""``top_eigenpairs``: the top-k eigenpairs of a symmetric PSD kernel matrix or operator.

Methods (``method=``):

``"dense"``
    LAPACK subset ``eigh`` (``?syevr``) of the dense matrix (numpy arrays, or handles with
    ``to_numpy()``). ``O(N³)`` time, ``N²`` memory. A float32 K of up to 4,096 rows is solved
    in float64 (:mod:`raysweep.eigen.dense`); larger ones in float32, accurate to its
    precision (residual ~3e-7 · λmax at N = 3000 but ~1.5e-5 at N = 12000, which misses the
    default tol and warns).
``"block"``
    thick-restart block Lanczos with locking over ``matmat`` only
    (:mod:`raysweep.eigen.block`): the distributed workhorse, and on one machine several times
    faster than LAPACK when ``k`` is a small fraction of ``N``.
``"nystrom"``
    The paper's Nyström approximation from ``num_landmarks`` columns
    (:mod:`raysweep.eigen.nystrom`); residuals against the true K show its accuracy.
``"auto"``
    ``"dense"`` when the dense matrix is at hand (array, or a handle with ``to_numpy()`` whose
    ``N²`` entries fit in ``max_dense_bytes``) *and* LAPACK is the faster choice:
    ``N <= 600`` or ``k > dense_fraction(N) · N`` with
    ``dense_fraction(N) = min(0.3, 0.07 · sqrt(N / 1000))``; ``"block"`` otherwise. Measured
    crossovers (one BLAS thread, float32, NTK-like spectrum): LAPACK wins at every k for
    N = 500; block wins up to k/N ≈ 0.07 at N = 1000, ≈ 0.14 at N = 2000, and is 1.4x faster
    at k/N = 0.1 for N = 3000, 3x at k/N = 0.083 for N = 12000.

Every method ends with one product of K and the returned vectors accumulated in float64, which
gives the reported residuals (and, for ``dense``/``block``, the eigenvalues: float64 Rayleigh
quotients of the returned vectors).
"""

from __future__ import annotations

import numbers
import time
from collections.abc import Callable

import numpy as np

from raysweep.atomic import available_memory_bytes
from raysweep.eigen.block import (
    block_eigenpairs,
    default_block_size,
    default_early_check,
    default_guard,
    default_max_basis,
    suggested_max_iter,
)
from raysweep.eigen.dense import DENSE_DRIVERS, dense_eigenpairs
from raysweep.eigen.eigen_checks import (
    check_int,
    check_k,
    check_method,
    check_num_landmarks,
    check_tol,
)
from raysweep.eigen.nystrom import default_num_landmarks, nystrom_eigenpairs
from raysweep.eigen.operator import KernelOperator
from raysweep.eigen.pairs import EigenPairs, finalize_pairs, warn_unconverged
from raysweep.eigen.progress import EigenProgress

__all__ = ["DEFAULT_TOL", "DENSE_MAX_N", "dense_fraction", "resolve_method", "top_eigenpairs"]

DEFAULT_TOL = 1e-6
DENSE_MAX_N = 600


def dense_fraction(n: int) -> float:
    """``k / N`` above which LAPACK beats the block solver: ``min(0.3, 0.07 sqrt(N / 1000))``."""
    return min(0.3, 0.07 * (n / 1000.0) ** 0.5)


def resolve_method(op: KernelOperator, k: int, method: str, max_dense_bytes: int) -> str:
    """The method ``"auto"`` stands for (others are returned unchanged); see module docstring."""
    if method != "auto":
        return method
    dense_at_hand = op.array is not None or (op.has_dense and op.dense_bytes() <= max_dense_bytes)
    lapack_wins = op.n <= DENSE_MAX_N or k > dense_fraction(op.n) * op.n
    return "dense" if dense_at_hand and lapack_wins else "block"


def top_eigenpairs(
    K,
    k: int,
    *,
    method: str = "auto",
    tol: float = DEFAULT_TOL,
    max_iter: int | None = None,
    seed: int | None = 0,
    block_size: int | None = None,
    max_basis: int | None = None,
    num_landmarks: int | None = None,
    driver: str = "evr",
    max_dense_bytes: int | None = None,
    progress: Callable[[EigenProgress], None] | None = None,
) -> EigenPairs:
    """Top-``k`` eigenpairs of a symmetric positive semi-definite ``K``.

    Args:
      K: ``(N, N)`` numpy array (or array-like; float32 stays float32, other dtypes compute in
        float64), or an operator handle with ``.shape == (N, N)``, ``.dtype`` and
        ``matmat(V) -> K @ V`` for ``V`` ``(N, b)``, optionally ``to_numpy()`` (a
        ``scipy.sparse.linalg.LinearOperator`` qualifies). Arrays are checked for NaN/inf and
        symmetry (``max|K − Kᵀ| <= 1e-5 max|K|``) before any work.
      k: number of pairs, ``1 <= k < N``.
      method: ``"auto"``, ``"dense"``, ``"block"`` or ``"nystrom"`` (module docstring).
      tol: relative residual target: pair ``i`` is converged when
        ``‖K v_i − λ_i v_i‖₂ <= tol · λ_max``. The block method iterates until every pair meets
        it; ``dense`` only checks it and warns (float32 LAPACK reaches ~3e-7 · λ_max at
        N = 3000 but only ~1.5e-5 at N = 12000); ``nystrom`` only records it (an approximation
        is not expected to meet it). Default ``1e-6``, reliably reached by ``block`` from
        float32 Grams (their rounding floor is ~1e-7 · λ_max; a lower tol stops with a
        :class:`ConvergenceWarning` once progress stalls).
      max_iter: block: Rayleigh-Ritz cycles at most (default ``50 + 5 log2(k + 1)``; NTK-like
        spectra take 1-3). When exhausted, a :class:`ConvergenceWarning` names the pairs
        above ``tol``.
      seed: block: seed of the random start block; nystrom: seed of the landmark sample. Same
        seed and input -> the same result. ``None`` draws fresh entropy.
      block_size: block: width of each Krylov block, ``1 <= block_size <= N`` (default
        ``k // 4`` from N = 8,000 on, ``k // 10`` below, clipped to ``[16, 256]``); each
        ``matmat`` gets at most this many columns.
      max_basis: block: basis columns kept (locked included) before a restart, default
        ``min(N, 4k)``, with a first look at ``2.5k + 2 block_size`` columns that stops there
        when every pair has converged; memory is ``2 · max_basis · N`` of K's dtype.
      num_landmarks: nystrom: landmark columns ``m``, ``k <= m <= N`` (default ``min(N, 4k)``).
      driver: dense: LAPACK driver, ``"evr"`` (default) or ``"evx"``.
      max_dense_bytes: auto: largest dense matrix a handle's ``to_numpy()`` may produce
        (default a quarter of the available physical memory).
      progress: called with an :class:`~raysweep.eigen.progress.EigenProgress`: by the block
        method after every product and Rayleigh-Ritz cycle (iterations, converged pairs, an
        estimate of the time left), and by every method once at the end (``done``);
        :func:`~raysweep.eigen.progress.progress_reporter` makes console lines and a file of it.

    Returns:
      :class:`EigenPairs` ``(eigvals, eigvecs)``: float64 ``(k,)`` descending and ``(k, N)``
      unit rows in K's working dtype (row ``i`` belongs to ``eigvals[i]``), each flipped so
      its largest-magnitude entry is positive (first index on ties); plus ``.residuals``
      ``(k,)``, ``.method``, ``.iterations``, ``.matvecs`` (all K-vector products, the final
      residual product included), ``.converged``, ``.tol``, ``.seconds`` (wall seconds by
      stage: where the time went).

    Raises:
      ValueError / TypeError: invalid K, k or options (before any work).
    """
    check_method(method)
    op = KernelOperator(K)
    n = op.n
    k = check_k(k, n)
    tol = check_tol(tol)
    max_iter = (
        suggested_max_iter(k) if max_iter is None else check_int(max_iter, "max_iter", minimum=1)
    )
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise TypeError(f"seed must be an int or None, got {seed!r}.")
    block_size = (
        default_block_size(k, n)
        if block_size is None
        else check_int(block_size, "block_size", minimum=1, maximum=n)
    )
    max_basis = (
        default_max_basis(k, n, block_size)
        if max_basis is None
        else check_int(max_basis, "max_basis", minimum=k + 1, maximum=n)
    )
    if method == "nystrom":
        num_landmarks = (
            default_num_landmarks(k, n)
            if num_landmarks is None
            else check_num_landmarks(num_landmarks, k, n)
        )
    elif num_landmarks is not None:
        raise ValueError(
            f"num_landmarks={num_landmarks} only applies to method='nystrom', got "
            f"method={method!r}."
        )
    if driver not in DENSE_DRIVERS:
        raise ValueError(f"driver={driver!r} is not supported; choose one of {DENSE_DRIVERS}.")
    if max_dense_bytes is None:
        max_dense_bytes = available_memory_bytes() // 4
    method = resolve_method(op, k, method, int(max_dense_bytes))
    started = time.perf_counter()

    def finished(result: EigenPairs) -> EigenPairs:
        if progress is not None:
            converged = int(np.sum(result.residuals <= tol * result.eigvals[0]))
            progress(
                EigenProgress(
                    method=result.method,
                    k=k,
                    cycle=int(result.iterations),
                    matvecs=int(result.matvecs),
                    basis=0,
                    capacity=0,
                    converged=converged,
                    residual=float(np.max(result.residuals) / result.eigvals[0]),
                    elapsed_s=time.perf_counter() - started,
                    eta_s=0.0,
                    done=True,
                )
            )
        return result

    if method == "dense":
        vectors, _ = dense_eigenpairs(op, k, driver=driver)
        spent = {"lapack": time.perf_counter() - started}
        result = finalize_pairs(op, vectors, method="dense", iterations=1, tol=tol, seconds=spent)
        # float32 LAPACK loses accuracy with N (1.5e-5 · λmax at N = 12000): say so
        warn_unconverged(result, f"LAPACK in {op.dtype}; pass K in float64 or use 'block'")
        return finished(result)
    if method == "nystrom":
        vectors, values = nystrom_eigenpairs(op, k, num_landmarks=num_landmarks, seed=seed)
        spent = {"nystrom": time.perf_counter() - started}
        return finished(
            finalize_pairs(
                op,
                vectors,
                method="nystrom",
                iterations=1,
                tol=tol,
                eigvals=values,
                seconds=spent,
            )
        )
    raw = block_eigenpairs(
        op,
        k,
        tol=tol,
        max_iter=max_iter,
        seed=seed,
        block_size=block_size,
        max_basis=max_basis,
        guard=default_guard(k),
        early_check=default_early_check(k, n, block_size),
        progress=progress,
    )
    result = finalize_pairs(
        op, raw.vectors, method="block", iterations=raw.iterations, tol=tol, seconds=raw.seconds
    )
    warn_unconverged(result, raw.reason)
    return finished(result)
