"""Growing an orthonormal float32/float64 Krylov basis one block at a time.

A new block ``V`` (e.g. ``K @ Q_last``) is made orthonormal and orthogonal to the existing
basis by:

1. one pass of block classical Gram-Schmidt against every basis (``V −= A (Aᵀ V)``, BLAS-3);
2. SVQB (Stathopoulos & Wu 2002): ``Vᵀ V = U diag(s) Uᵀ`` in float64, keep the directions with
   ``sqrt(s) > drop`` and scale them to unit length. Directions at the rounding-noise level of
   the product (``drop`` ≈ a few ulps of ‖K‖) carry no information about K, so the block may
   come out *narrower* than it went in (rank-revealing, never ill-conditioned);
3. a second Gram-Schmidt pass ("twice is enough") and SVQB, because step 2 amplifies the
   leftover components along the basis (~eps ‖V‖) by up to ``‖V‖/drop``.

All products with the basis keep its dtype (float32 for float32 Grams); only the ``(b, b)``
Grams go to float64.
"""

from __future__ import annotations

import numpy as np

from raysweep.eigen.threads import one_blas_thread

__all__ = ["orthonormal_block", "project_out", "svqb"]


def project_out(v: np.ndarray, bases) -> np.ndarray:
    """``v − A (Aᵀ v)`` for each ``A`` in ``bases`` (orthonormal ``(N, m)`` blocks); in place."""
    for a in bases:
        if a.shape[1]:
            v -= a @ (a.T @ v)
    return v


def svqb(v: np.ndarray, drop: float = 0.0) -> np.ndarray:
    """Orthonormal basis of the directions of ``v`` with singular value above ``drop``.

    Args:
      v: ``(N, b)`` float32/float64 block.
      drop: absolute singular-value threshold (0 keeps every direction that is not exactly
        zero to float64 precision).

    Returns:
      ``(N, r)`` with ``r <= b`` orthonormal columns (dtype of ``v``), ordered by decreasing
      singular value.
    """
    gram = (v.T @ v).astype(np.float64)
    with one_blas_thread():
        s, u = np.linalg.eigh(gram)
    floor = max(drop * drop, float(s[-1]) * 1e-14 if s.size else 0.0)
    keep = s > floor
    if not keep.any():
        return v[:, :0].copy()
    s, u = s[keep][::-1], u[:, keep][:, ::-1]
    return v @ (u / np.sqrt(s)).astype(v.dtype)


def orthonormal_block(v: np.ndarray, bases, drop: float, coeffs=None) -> np.ndarray:
    """Orthonormalize ``v`` against ``bases`` and itself, dropping noise directions.

    Args:
      v: ``(N, b)`` new directions (overwritten).
      bases: orthonormal ``(N, m_i)`` blocks the result must be orthogonal to.
      drop: absolute threshold below which a direction of the projected ``v`` is noise.
      coeffs: optional precomputed ``[Aᵀ v for A in bases]`` (the caller may need them too,
        e.g. as new columns of ``QᵀKQ``); saves one pass of products.

    Returns:
      ``(N, r)``, ``r <= b``, orthonormal and orthogonal to every basis to working precision.
    """
    if coeffs is None:
        project_out(v, bases)
    else:
        for a, c in zip(bases, coeffs, strict=True):
            if a.shape[1]:
                v -= a @ c.astype(v.dtype, copy=False)
    q = svqb(v, drop)
    if q.shape[1] == 0:
        return q
    # svqb scaled the survivors up by <= ‖v‖/drop, and with them their leftover components
    # along the bases (~eps ‖v‖): a second pass brings those to ~eps again.
    project_out(q, bases)
    return svqb(q, 0.5)  # columns have norm ≈ 1 now: drop only what projection annihilated
