"""Binary labels from eigenvectors, and how binary an eigenvector already is.

The paper trains networks on the "eigenfunction labels" ``y = sign(φ_j)`` and reports how much
of a unit eigenvector survives binarization: ``⟨sign(φ)/√N, φ⟩ = ‖φ‖₁/√N`` (1 for a vector
that is already ±1/√N, ``sqrt(2/π) ≈ 0.798`` for a Gaussian vector, ≈ 0.78 on CIFAR-10).

Convention: ``sign(0) = +1`` in both functions, so every label is exactly −1 or +1.
"""

from __future__ import annotations

import numpy as np

from raysweep.argcheck import check_int

__all__ = ["binarization_diagnostic", "eigen_labels"]


def _rows(eigvecs, where: str) -> np.ndarray:
    rows = np.asarray(eigvecs)
    if rows.ndim not in (1, 2) or rows.shape[-1] == 0:
        raise ValueError(
            f"{where}: eigvecs must be (k, N) rows (or one (N,) vector), got shape {rows.shape}."
        )
    if not np.issubdtype(rows.dtype, np.floating):
        raise TypeError(f"{where}: eigvecs must be floating, got dtype {rows.dtype}.")
    if not np.all(np.isfinite(rows)):
        raise ValueError(f"{where}: eigvecs contain NaN or inf.")
    return rows


def binarization_diagnostic(eigvecs) -> np.ndarray:
    """``⟨sign(φ)/√N, φ/‖φ‖⟩`` for each row ``φ``.

    Args:
      eigvecs: ``(k, N)`` rows (as returned by :func:`raysweep.eigen.top_eigenpairs`) or one
        ``(N,)`` vector; rows are normalized to unit 2-norm first. ``sign(0) = +1`` (a zero
        entry contributes 0 either way).

    Returns:
      float64 ``(k,)`` in ``[1/√N, 1]`` (a 0-d array for a single vector).
    """
    rows = _rows(eigvecs, "binarization_diagnostic").astype(np.float64)
    norms = np.linalg.norm(rows, axis=-1)
    if np.any(norms == 0):
        raise ValueError("binarization_diagnostic: an eigenvector row is all zeros.")
    return np.sum(np.abs(rows), axis=-1) / (norms * np.sqrt(rows.shape[-1]))


def eigen_labels(eigvecs, j, *, dtype=np.float32) -> np.ndarray:
    """Labels ``sign(φ_j)`` in ``{−1, +1}`` with ``sign(0) = +1``.

    Args:
      eigvecs: ``(k, N)`` rows (row ``j`` is used) or one ``(N,)`` vector (then ``j`` must be 0).
      j: row index, ``0 <= j < k`` (0 = top eigenvector).
      dtype: output dtype, ``numpy.float32`` (default, regression targets) or ``numpy.int8``.

    Returns:
      ``(N,)`` array of −1 and +1 in ``dtype``.
    """
    rows = _rows(eigvecs, "eigen_labels")
    rows = rows[None] if rows.ndim == 1 else rows
    j = check_int(j, "eigen_labels: j", minimum=0, hint=" (a row index)")
    if j >= rows.shape[0]:
        raise ValueError(
            f"eigen_labels: j={j} is out of range for {rows.shape[0]} eigenvector rows; "
            f"use 0 <= j < {rows.shape[0]}."
        )
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float32), np.dtype(np.int8), np.dtype(np.float64)):
        raise TypeError(f"eigen_labels: dtype must be float32, float64 or int8, got {dtype}.")
    return np.where(rows[j] >= 0, 1, -1).astype(dtype)
