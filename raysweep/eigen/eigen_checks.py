"""Input validation at the public boundary of :mod:`raysweep.eigen`.

Every check runs before any long work and raises ``ValueError``/``TypeError`` naming what was
expected, what was received and what to do. Dense arrays are checked for NaN/inf in full (one
pass, no temporaries) and for symmetry in full up to ``N = 1024`` and on 256 random rows
beyond that (a full ``K − Kᵀ`` reads K column-wise: ~0.4 s at N = 3000, a third of a solve).
"""

from __future__ import annotations

import numbers

import numpy as np

from raysweep.argcheck import check_int

METHODS = ("auto", "dense", "block", "nystrom")
SYMMETRY_RTOL = 1e-5
_FULL_SYMMETRY_MAX_N = 1024
_SYMMETRY_SAMPLE_ROWS = 256


def check_method(method) -> None:
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not supported; choose one of {', '.join(METHODS)}.")


def check_k(k, n: int) -> int:
    """``1 <= k < N``."""
    k = check_int(k, "k", minimum=1, hint=" (the number of eigenpairs)")
    if k >= n:
        raise ValueError(
            f"k={k} must be smaller than N={n}; for all N eigenpairs use numpy.linalg.eigh(K)."
        )
    return k


def check_tol(tol) -> float:
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real):
        raise TypeError(f"tol must be a float, got {tol!r} of type {type(tol).__name__}.")
    tol = float(tol)
    if not (0.0 < tol < 1.0):
        raise ValueError(
            f"tol is relative to the largest eigenvalue and must lie in (0, 1), got {tol}; "
            "e.g. tol=1e-6."
        )
    return tol


def check_square_shape(shape, what: str) -> int:
    """``shape`` is ``(N, N)`` with ``N >= 2``; returns N."""
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError as err:
        raise TypeError(f"{what}.shape must be a tuple of ints, got {shape!r}.") from err
    if len(shape) != 2:
        raise ValueError(f"{what} must be 2-D (N, N), got shape {shape}.")
    if shape[0] != shape[1]:
        raise ValueError(f"{what} must be square (N, N), got shape {shape}.")
    if shape[0] < 2:
        raise ValueError(
            f"{what} must be at least 2 x 2 to have top-k < N eigenpairs, got {shape}."
        )
    return shape[0]


def check_real_dtype(dtype, what: str) -> np.dtype:
    dtype = np.dtype(dtype)
    if not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)):
        raise TypeError(
            f"{what} has dtype {dtype}; expected a real floating (float32/float64) or integer "
            "matrix. Symmetric PSD kernels are real; take .real only if that is what you mean."
        )
    return dtype


def check_array(k_matrix: np.ndarray) -> None:
    """Square, real, finite and symmetric to ``max|K−Kᵀ| <= 1e-5 max|K|``."""
    n = check_square_shape(k_matrix.shape, "K")
    check_real_dtype(k_matrix.dtype, "K")
    if not np.isfinite(np.sum(k_matrix, dtype=np.float64)):
        bad = next(i for i in range(n) if not np.all(np.isfinite(k_matrix[i])))
        col = int(np.flatnonzero(~np.isfinite(k_matrix[bad]))[0])
        raise ValueError(
            f"K contains NaN or inf (first at row {bad}, column {col}: {k_matrix[bad, col]}); "
            "recompute the Gram matrix or drop the offending examples."
        )
    scale = float(max(np.max(k_matrix), -np.min(k_matrix)))
    if n <= _FULL_SYMMETRY_MAX_N:
        rows = np.arange(n)
        asym = float(np.max(np.abs(k_matrix - k_matrix.T)))
    else:
        rows = np.sort(np.random.default_rng(0).choice(n, _SYMMETRY_SAMPLE_ROWS, replace=False))
        asym = float(np.max(np.abs(k_matrix[rows, :] - k_matrix[:, rows].T)))
    if asym > SYMMETRY_RTOL * scale:
        where = "" if rows.size == n else f" (checked on {rows.size} random rows)"
        raise ValueError(
            f"K is not symmetric: max|K − Kᵀ| = {asym:.3e} > {SYMMETRY_RTOL:g} · max|K| = "
            f"{SYMMETRY_RTOL * scale:.3e}{where}. Pass a symmetric PSD matrix, e.g. "
            "0.5 * (K + K.T)."
        )


def check_handle(handle) -> int:
    """An operator handle: ``.shape == (N, N)``, real ``.dtype`` and a callable ``matmat``."""
    missing = [a for a in ("shape", "dtype", "matmat") if not hasattr(handle, a)]
    if missing:
        raise TypeError(
            f"K of type {type(handle).__name__} lacks {', '.join(missing)}; pass a numpy array or "
            "an operator with .shape == (N, N), .dtype and matmat(V) -> K @ V (e.g. a "
            "scipy.sparse.linalg.LinearOperator)."
        )
    if not callable(handle.matmat):
        raise TypeError(f"K.matmat must be callable, got {type(handle.matmat).__name__}.")
    n = check_square_shape(handle.shape, "K")
    check_real_dtype(handle.dtype if handle.dtype is not None else np.float64, "K")
    return n


def check_num_landmarks(num_landmarks, k: int, n: int) -> int:
    return check_int(
        num_landmarks,
        "num_landmarks",
        minimum=k,
        maximum=n,
        hint=f" The Nyström approximation has rank <= num_landmarks, so it needs k={k} <= "
        f"num_landmarks <= N={n}.",
    )
