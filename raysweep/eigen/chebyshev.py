"""Chebyshev polynomial filters for the top of a PSD spectrum, one degree per column.

The filter for column ``i`` is ``T_{d_i}(t(K)) / T_{d_i}(t(θ_i))`` with
``t(λ) = (λ − c) / e``, ``c = (cut + lo) / 2``, ``e = (cut − lo) / 2``: eigenvalues in the
damped interval ``[lo, cut]`` (``lo = 0`` for PSD K, ``cut`` ≈ the smallest Ritz value of the
block) map into ``[−1, 1]`` where ``|T_d| ≤ 1``, while an eigenvalue ``λ > cut`` grows like
``cosh(d · acosh t(λ))``, far faster than the ``(λ / cut)^d`` of plain powers.
The division by ``T_{d_i}(t(θ_i))`` (the scaled three-term recurrence of Zhou & Saad, 2007)
keeps each column's own component near 1, so nothing overflows in float32.

Degrees are chosen per column (as in ChASE, Berljafa & Di Napoli 2015): a column whose Ritz
value is far above the cut needs few steps, one near the cut needs many. Columns are processed
in order of increasing degree, so every step multiplies K only by the columns still running:
the matmat widths shrink within one filter.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["choose_degrees", "filter_block"]


def _acosh_ge1(t: np.ndarray) -> np.ndarray:
    return np.arccosh(np.maximum(t, 1.0))


def choose_degrees(
    theta: np.ndarray,
    needed: np.ndarray,
    *,
    cut: float,
    lo: float,
    max_degree: int,
    dynamic_range: float,
) -> np.ndarray:
    """Per-column filter degrees.

    Args:
      theta: float64 ``(b,)`` Ritz values of the active columns, descending.
      needed: float64 ``(b,)`` wanted reduction of each column's residual (``residual /
        target``, > 1 for unconverged wanted columns); guard columns (beyond the wanted ones)
        pass ``nan`` and get the largest degree of the wanted ones.
      cut, lo: the damped interval ``[lo, cut]``.
      max_degree: upper bound on every degree.
      dynamic_range: bound on ``T_d(t(θ_0)) / T_d(t(θ_i))``: how much faster the top active
        column may grow than column ``i`` (float32 keeps ~7 digits, so a column dominated by
        another's direction loses its own).

    Returns:
      int ``(b,)``, each in ``[1, max_degree]``.
    """
    e = (cut - lo) / 2.0
    c = (cut + lo) / 2.0
    rate = _acosh_ge1((theta - c) / e)  # growth exponent per degree; 0 at or below the cut
    wanted = np.isfinite(needed)
    with np.errstate(divide="ignore", invalid="ignore"):
        degree = np.where(rate > 0, np.arccosh(np.maximum(needed, 1.0)) / rate, max_degree)
    degree = np.where(wanted, np.ceil(degree), 0)
    top = float(degree[wanted].max()) if wanted.any() else max_degree
    degree = np.where(wanted, degree, top)
    # growth of the top column over column i after d steps ~ exp(d (rate_0 − rate_i))
    spread = rate[0] - rate
    with np.errstate(divide="ignore"):
        cap = np.where(spread > 0, np.log(dynamic_range) / spread, max_degree)
    degree = np.minimum(degree, np.floor(cap))
    return np.clip(degree, 1, max_degree).astype(np.int64)


def filter_block(
    matmat: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    kx: np.ndarray,
    theta: np.ndarray,
    degrees: np.ndarray,
    *,
    cut: float,
    lo: float,
    deflate: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """Apply the scaled Chebyshev filter of degree ``degrees[i]`` to column ``i`` of ``x``.

    Args:
      matmat: ``V (N, b) -> K @ V``.
      x: ``(N, b)`` columns to filter (float32 or float64).
      kx: ``K @ x`` (already known from the Rayleigh-Ritz step: the first filter step is free).
      theta: float64 ``(b,)`` the normalization point of each column (its Ritz value); columns
        at or below the cut are normalized at the cut (plain ``T_d``).
      degrees: int ``(b,)`` in ``[1, ...]``; any order (columns are processed sorted).
      cut, lo: the damped interval ``[lo, cut]``, ``lo < cut``.
      deflate: optional ``V -> V`` applied to every product ``K @ V`` (projection onto the
        complement of locked eigenvectors, so their directions cannot regrow).

    Returns:
      ``(N, b)`` filtered columns in the dtype and column order of ``x``. ``K`` is applied to
      ``sum(degrees) − b`` columns in ``max(degrees) − 1`` calls of ``matmat``.
    """
    dtype = x.dtype
    e = (cut - lo) / 2.0
    c = (cut + lo) / 2.0
    order = np.argsort(degrees, kind="stable")
    deg = degrees[order]
    x, kx = x[:, order], kx[:, order]
    sigma1 = 1.0 / np.maximum((theta[order] - c) / e, 1.0)  # 1 / t(θ) per column
    sigma = sigma1.copy()

    def step_input(prod):
        return deflate(prod) if deflate is not None else prod

    y_prev = x
    y = (step_input(kx) - c * x) * (sigma1 / e).astype(dtype)
    out = np.empty_like(x)
    start = 0  # columns [start:] are still running
    for step in range(1, int(deg.max()) + 1):
        stop = int(np.searchsorted(deg, step, side="right"))  # these finish at this degree
        if stop > start:
            out[:, start:stop] = y[:, : stop - start]
            y, y_prev = y[:, stop - start :], y_prev[:, stop - start :]
            sigma1, sigma = sigma1[stop - start :], sigma[stop - start :]
            start = stop
        if start == deg.size:
            break
        sigma_new = 1.0 / (2.0 / sigma1 - sigma)
        ky = step_input(matmat(y))
        y_next = (ky - c * y) * (2.0 * sigma_new / e).astype(dtype)
        y_next -= y_prev * (sigma * sigma_new).astype(dtype)
        y_prev, y, sigma = y, y_next, sigma_new
    result = np.empty_like(out)
    result[:, order] = out
    return result
