"""The result type of :func:`raysweep.eigen.top_eigenpairs` and its conventions.

Conventions shared by every method:

- ``eigvals``: float64, shape ``(k,)``, descending. For ``dense`` and ``block`` they are the
  float64 Rayleigh quotients ``vᵀKv`` of the returned vectors (from the final product; at
  least as accurate as the solver's own values); for ``nystrom`` the eigenvalues of the
  Nyström approximation.
- ``eigvecs``: shape ``(k, N)``, one eigenvector per **row** (row ``i`` belongs to
  ``eigvals[i]``), unit 2-norm, dtype of the matrix (float32 for float32 Grams).
- Sign: each row is flipped so that its entry of largest absolute value is positive; on ties
  the first such index decides (:func:`fix_signs`).
- ``residuals``: float64 ``(k,)``, ``‖K v_i − λ_i v_i‖₂`` of the *returned* pair (the float32
  row promoted to float64), from one final product with ``K`` accumulated in float64.
"""

from __future__ import annotations

import time
import warnings

import numpy as np

__all__ = ["ConvergenceWarning", "EigenPairs", "finalize_pairs", "fix_signs", "warn_unconverged"]


class ConvergenceWarning(UserWarning):
    """An iterative method stopped before every wanted pair met its residual tolerance."""


class EigenPairs(tuple):
    """``(eigvals, eigvecs)`` plus diagnostics; unpacks like a 2-tuple.

    Attributes:
      eigvals: float64 ``(k,)``, descending.
      eigvecs: ``(k, N)`` unit rows, dtype of K; row ``i`` is the eigenvector of
        ``eigvals[i]``, sign-normalized (largest-magnitude entry positive, first on ties).
      residuals: float64 ``(k,)``: ``‖K v − λ v‖₂`` per pair (absolute, not divided by λ).
      method: the resolved method, ``"dense"``, ``"block"`` or ``"nystrom"``.
      iterations: Rayleigh-Ritz cycles (``block``); 1 for the direct methods.
      matvecs: products of K with single vectors, i.e. the summed widths of all ``matmat``
        calls, *including* the final residual product (``dense``: only that product;
        ``nystrom``: the ``m`` indicator columns of a handle, an array's columns are read).
      converged: bool ``(k,)``: ``residuals <= tol * eigvals[0]``.
      tol: the relative tolerance the pairs were checked against.
      seconds: wall seconds by stage, ``{stage: s}``: ``block`` has ``products``,
        ``orthogonalization``, ``rayleigh_ritz`` and ``restart``; ``dense`` has ``lapack``;
        ``nystrom`` has ``nystrom``; every method has ``residual`` (the final float64 product).
    """

    def __new__(cls, eigvals, eigvecs, **info):
        return super().__new__(cls, (eigvals, eigvecs))

    def __init__(
        self,
        eigvals,
        eigvecs,
        *,
        residuals,
        method,
        iterations,
        matvecs,
        converged,
        tol,
        seconds=None,
    ):
        self.residuals = residuals
        self.seconds = dict(seconds or {})
        self.method = method
        self.iterations = int(iterations)
        self.matvecs = int(matvecs)
        self.converged = converged
        self.tol = float(tol)

    @property
    def eigvals(self) -> np.ndarray:
        return self[0]

    @property
    def eigvecs(self) -> np.ndarray:
        return self[1]

    def __reduce__(self):
        return (_rebuild, (self[0], self[1], dict(self.__dict__)))

    def __repr__(self) -> str:
        k, n = self[1].shape
        scale = max(float(self[0][0]), np.finfo(float).tiny) if k else 1.0
        return (
            f"EigenPairs(k={k}, N={n}, method={self.method!r}, iterations={self.iterations}, "
            f"matvecs={self.matvecs}, max residual/λmax={self.residuals.max() / scale:.2e})"
        )


def _rebuild(eigvals, eigvecs, info):
    return EigenPairs(eigvals, eigvecs, **info)


def fix_signs(rows: np.ndarray) -> np.ndarray:
    """Flip rows in place so each row's entry of largest magnitude is positive.

    Args:
      rows: ``(k, N)`` floating array (modified in place and returned). Ties in magnitude go to
        the first such index (``numpy.argmax``); an all-zero row is left as is.
    """
    if rows.size == 0:
        return rows
    lead = np.argmax(np.abs(rows), axis=1)
    signs = np.sign(rows[np.arange(rows.shape[0]), lead])
    signs[signs == 0] = 1
    rows *= signs.astype(rows.dtype)[:, None]
    return rows


def finalize_pairs(
    op,
    vectors: np.ndarray,
    *,
    method: str,
    iterations: int,
    tol: float,
    eigvals: np.ndarray | None = None,
    seconds: dict | None = None,
) -> EigenPairs:
    """Normalize, sign-fix, sort and measure approximate eigenvectors with one float64 product.

    Args:
      op: a :class:`raysweep.eigen.operator.KernelOperator` (its ``product64`` is the one final
        product; it counts toward ``matvecs``).
      vectors: ``(N, k)`` columns (any float dtype) spanning the returned pairs.
      method, iterations, tol: recorded on the result.
      eigvals: ``(k,)`` values to report; ``None`` uses the float64 Rayleigh quotients
        ``vᵀKv`` of the returned (rounded) vectors, which minimize each residual.
      seconds: the solver's stage seconds; this step adds ``residual``.

    Returns:
      :class:`EigenPairs` sorted by descending eigenvalue (stable), rows in ``op.dtype``.
    """
    started = time.perf_counter()
    v64 = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(v64, axis=0)
    norms[norms == 0] = 1.0
    rows = np.ascontiguousarray((v64 / norms).T).astype(op.dtype)
    fix_signs(rows)
    basis = rows.astype(np.float64).T  # exactly the returned vectors, as columns
    kv = op.product64(basis)
    if eigvals is None:
        vals = np.einsum("ij,ij->j", basis, kv)
    else:
        vals = np.asarray(eigvals, dtype=np.float64).copy()
    order = np.argsort(-vals, kind="stable")
    vals, rows, basis, kv = vals[order], rows[order], basis[:, order], kv[:, order]
    residuals = np.linalg.norm(kv - basis * vals, axis=0)
    scale = max(float(vals[0]), 0.0) if vals.size else 0.0
    return EigenPairs(
        vals,
        rows,
        residuals=residuals,
        method=method,
        iterations=iterations,
        matvecs=op.matvecs,
        converged=residuals <= tol * scale,
        tol=tol,
        seconds={**(seconds or {}), "residual": time.perf_counter() - started},
    )


def warn_unconverged(result: EigenPairs, reason: str) -> None:
    """Emit a :class:`ConvergenceWarning` naming the pairs above ``tol * eigvals[0]``."""
    bad = np.flatnonzero(~result.converged)
    if bad.size == 0:
        return
    scale = max(float(result.eigvals[0]), np.finfo(float).tiny)
    shown = ", ".join(f"#{i}: {result.residuals[i] / scale:.2e}" for i in bad[:8])
    more = f" (+{bad.size - 8} more)" if bad.size > 8 else ""
    warnings.warn(
        f"{result.method}: {bad.size} of {result.converged.size} pairs have residual "
        f"‖Kv−λv‖/λmax above tol={result.tol:g} ({reason}): {shown}{more}. "
        "Raise max_iter or loosen tol; see the residuals attribute.",
        ConvergenceWarning,
        stacklevel=3,
    )
