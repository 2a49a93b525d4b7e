"""Top-k eigenpairs from ``matmat`` alone: Chebyshev-filtered subspace iteration with locking.

Why this method (and not block Krylov or LOBPCG): for the distributed Gram every product
``K @ V`` is a round trip to the Ray workers, so the solver must (1) send few, wide blocks,
(2) keep a fixed, small memory (three ``(N, b)`` blocks in the filter), and (3) stay stable in
float32, the dtype NTK Grams are stored in. Chebyshev filtering (Zhou & Saad 2007; ChASE,
Berljafa & Di Napoli 2015) spends almost all of its time in ``matmat`` with many columns,
converges like ``exp(−d · acosh t)`` per column instead of the ``(λ_{b+1}/λ_i)^d`` of subspace
iteration, and needs a Rayleigh-Ritz step only every ``d`` products. Block Krylov methods reach
a given accuracy in fewer products but need a basis ``q`` times wider; LOBPCG needs a ``3b``-wide,
ill-conditioned Rayleigh-Ritz every product, which breaks down in float32.

One outer iteration (``b`` = active columns, ``L`` = locked ones):

1. per-column degrees from each residual and Ritz value (:func:`choose_degrees`);
2. filter the Ritz vectors (:func:`filter_block`); ``K @ X`` is reused from step 5, and every
   product is projected off the locked vectors so they cannot regrow;
3. orthonormalize by Cholesky-QR with a float64 Gram (QR fallback when Cholesky fails);
4. ``W = K @ Q`` (the products of step 5 and the next step 2);
5. Rayleigh-Ritz in float64: ``eigh(QᵀW, QᵀQ)``, rotate ``X = Q S``, ``KX = W S``;
6. lock every wanted pair with ``‖KX_i − θ_i X_i‖ ≤ target``: it is never multiplied again.

Stops when ``k`` pairs are locked, or after ``max_iter`` outer iterations. The caller measures
the returned vectors with one float64 product (:func:`raysweep.eigen.pairs.finalize_pairs`).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg

from raysweep.eigen.chebyshev import choose_degrees, filter_block
from raysweep.eigen.operator import KernelOperator
from raysweep.eigen.threads import one_blas_thread

__all__ = ["BlockResult", "block_eigenpairs", "default_block_size"]

# Iterate until the float32/64 residual estimate is this fraction of the target, so the final
# float64 residual (which also sees the rounding of the returned vectors) stays below it.
_SAFETY = 0.5
_DEBUG = False
_RR64 = True
_STEP_DEFLATE = True
_GRAM64 = True
# How much faster one column may grow than another inside one filter (module chebyshev).
_DYNAMIC_RANGE = {np.dtype(np.float32): 1e4, np.dtype(np.float64): 1e10}
# Relative asymmetry of the first projected matrix QᵀKQ that flags a non-symmetric handle.
_HANDLE_ASYMMETRY = 1e-3


def default_block_size(k: int, n: int) -> int:
    """``k`` wanted columns plus ``max(16, k // 4)`` guard columns, at most N."""
    return min(n, k + max(16, k // 4))


class BlockResult:
    """Raw output of :func:`block_eigenpairs`.

    Attributes:
      vectors: ``(N, k)`` columns in the working dtype, descending Ritz values.
      theta: float64 ``(k,)`` their Ritz values. iterations: outer iterations.
      converged: whether all ``k`` pairs met the target.
    """

    def __init__(self, vectors, theta, iterations, converged):
        self.vectors, self.theta = vectors, theta
        self.iterations, self.converged = iterations, converged


def _orthonormalize(y: np.ndarray) -> np.ndarray:
    """Orthonormal basis of the columns of ``y`` (same shape and dtype).

    Cholesky-QR of the column-scaled float64 Gram (one pass: the Rayleigh-Ritz step works with
    the Gram ``QᵀQ``, so the residual non-orthogonality does not matter); Householder QR when
    the Gram is numerically singular.
    """
    if _GRAM64:
        y64 = y.astype(np.float64)
        scale = np.linalg.norm(y64, axis=0)
        scale[scale == 0] = 1.0
        y64 /= scale
        gram = y64.T @ y64
    else:
        gram = (y.T @ y).astype(np.float64)
        scale = np.sqrt(np.diag(gram)).copy()
        scale[scale == 0] = 1.0
        gram /= scale[:, None] * scale[None, :]
    with one_blas_thread():
        try:
            r = scipy.linalg.cholesky(gram, lower=False, check_finite=False)
            if np.min(np.abs(np.diag(r))) < 1e-7:  # rank-deficient: R⁻¹ would amplify noise
                raise np.linalg.LinAlgError
        except np.linalg.LinAlgError:
            r = None
        if r is not None:
            rinv = scipy.linalg.solve_triangular(r, np.eye(r.shape[0]), check_finite=False)
    if r is None:
        return np.linalg.qr(y)[0]
    # Q = (Y / scale) R⁻¹
    return y @ (rinv / scale[:, None]).astype(y.dtype)


def _rayleigh_ritz(q: np.ndarray, w: np.ndarray, check_symmetry: bool):
    """Ritz pairs of span(q): ``theta`` float64 descending and the ``(b, b)`` rotation ``S``."""
    if _RR64:
        q64, w64 = q.astype(np.float64), w.astype(np.float64)
        h = q64.T @ w64
        m = q64.T @ q64
    else:
        h = (q.T @ w).astype(np.float64)
        m = (q.T @ q).astype(np.float64)
    if check_symmetry:
        asym = float(np.max(np.abs(h - h.T)))
        if asym > _HANDLE_ASYMMETRY * float(np.max(np.abs(h))):
            raise ValueError(
                f"K does not act symmetrically: max|QᵀKQ − (QᵀKQ)ᵀ| = {asym:.3e} on a random "
                f"subspace (> {_HANDLE_ASYMMETRY:g} · max|QᵀKQ|). top_eigenpairs needs a "
                "symmetric PSD operator; check the handle's matmat."
            )
    h = 0.5 * (h + h.T)
    with one_blas_thread():
        theta, s = scipy.linalg.eigh(h, m, check_finite=False)
    return theta[::-1].copy(), s[:, ::-1]


def block_eigenpairs(
    op: KernelOperator,
    k: int,
    *,
    tol: float,
    max_iter: int,
    seed: int,
    block_size: int,
    max_degree: int,
) -> BlockResult:
    """Top-``k`` eigenpairs of the PSD operator ``op`` (see the module docstring).

    Args:
      op: the operator (only ``op.matmat`` is used).
      k: wanted pairs, ``1 <= k < N``.
      tol: target residual ``‖Kv − θv‖ <= tol · λmax`` (λmax: the largest Ritz value).
      max_iter: outer iterations at most.
      seed: seed of the ``(N, block_size)`` Gaussian start block.
      block_size: columns in the first iteration (``k`` wanted + guards), ``k < b <= N``.
      max_degree: largest Chebyshev degree of any column in one outer iteration.

    Returns:
      :class:`BlockResult`; if not converged, the best ``k`` Ritz pairs at hand.
    """
    n, dtype = op.n, op.dtype
    rng = np.random.default_rng(seed)
    q = _orthonormalize(rng.standard_normal((n, block_size)).astype(dtype))
    w = op.matmat(q)
    if not np.all(np.isfinite(w)):
        raise ValueError("K @ V returned NaN or inf for a random block V; K must be finite.")
    theta, s = _rayleigh_ritz(q, w, check_symmetry=op.array is None)

    locked_x = np.empty((n, 0), dtype=dtype)
    locked_theta = np.empty(0)
    iterations, converged = 1, False
    lam_max = max(float(theta[0]), np.finfo(float).tiny)
    while True:
        x = q @ s.astype(dtype)
        kx = w @ s.astype(dtype)
        lam_max = max(lam_max, float(theta[0]))
        target = _SAFETY * tol * lam_max
        residual = np.linalg.norm((kx - x * theta.astype(dtype)).astype(np.float64), axis=0)

        n_wanted = k - locked_theta.size
        done = np.zeros(theta.size, dtype=bool)
        done[:n_wanted] = residual[:n_wanted] <= target
        if done.any():
            locked_x = np.concatenate([locked_x, x[:, done]], axis=1)
            locked_theta = np.concatenate([locked_theta, theta[done]])
            x, kx, theta, residual = x[:, ~done], kx[:, ~done], theta[~done], residual[~done]
            n_wanted = k - locked_theta.size
        if n_wanted <= 0:
            converged = True
            break
        if iterations >= max_iter:
            break

        cut = float(theta[-1])
        needed = np.full(theta.size, np.nan)
        needed[:n_wanted] = np.maximum(residual[:n_wanted] / target, 1.0 + 1e-3)
        degrees = choose_degrees(
            theta,
            needed,
            cut=cut,
            lo=0.0,
            max_degree=max_degree,
            dynamic_range=_DYNAMIC_RANGE[np.dtype(dtype)],
        )
        if _DEBUG:
            print(f"it{iterations} locked={locked_theta.size} active={theta.size} cut={cut:.3g} "
                  f"top={theta[0]:.3g} deg={np.bincount(degrees).tolist()} "
                  f"maxneed={np.nanmax(needed):.2e}")
        deflate = None
        if locked_theta.size:
            lx = locked_x

            def deflate(v, lx=lx):
                return v - lx @ (lx.T @ v)

        y = filter_block(op.matmat, x, kx, theta, degrees, cut=cut, lo=0.0,
                         deflate=deflate if _STEP_DEFLATE else None)
        if deflate is not None:
            y = deflate(y)
        q = _orthonormalize(y)
        w = op.matmat(q)
        theta, s = _rayleigh_ritz(q, w, check_symmetry=False)
        iterations += 1

    vectors = np.concatenate([locked_x, x[:, : max(n_wanted, 0)]], axis=1)
    values = np.concatenate([locked_theta, theta[: max(n_wanted, 0)]])
    order = np.argsort(-values, kind="stable")[:k]
    return BlockResult(vectors[:, order], values[order], iterations, converged)


def suggested_max_iter(k: int) -> int:
    """A generous default bound on outer iterations (typical runs need 5-20)."""
    return 100 + 10 * math.ceil(math.log2(k + 1))
