"""Top-k eigenpairs from ``matmat`` alone: thick-restart block Lanczos with locking.

Why a block Krylov method: for the distributed Gram every product ``K @ V`` is a round trip to
the Ray workers, so the solver must send few, wide blocks (BLAS-3 on the workers) and use few
products in total. NTK spectra are a few large eigenvalues followed by a power law; there a
Krylov space ``span{X, KX, K²X, ...}`` with Rayleigh-Ritz extracts the best polynomial for every
eigenvector at once. Measured on the benchmark's float32 NTK-like matrices, to residual
``1e-6 · λmax``: 0.27 N products for N = 3000, k = 300 and 0.23 N for N = 12000, k = 1000
(one Rayleigh-Ritz each), against 0.9 N for Chebyshev-filtered subspace iteration (fixed
polynomials per column; our first implementation) and 0.2 N for ARPACK, which however
multiplies one vector at a time (memory-bound BLAS-2, one round trip per vector). LOBPCG
would need a ``3b``-wide, ill-conditioned Rayleigh-Ritz after every product, fragile in float32.

One cycle (``L`` locked pairs, ``d`` active basis columns, ``b`` the block width):

1. multiply the newest block, ``W = K @ Q_new`` (the only use of K);
2. extend ``T = QᵀKQ`` and ``M = QᵀQ`` (float64 ``(d, d)``) by the new rows and columns;
3. orthonormalize ``W`` against the locked vectors and the basis (two block Gram-Schmidt passes,
   rank-revealing SVQB that drops directions at the float32 noise level of ``K @ Q``; see
   :mod:`raysweep.eigen.basis`), topped up with random directions if that narrowed it: the
   next block; repeat from 1 until the basis is full (``L + d`` reaches ``max_basis``).
   In the first cycle, a first look (step 4 alone) once the basis holds ``early_check``
   columns: if every wanted pair has converged there, the solver stops early;
4. Rayleigh-Ritz in float64: ``eigh(T, M)`` (the generalized form absorbs the ~1e-7
   non-orthogonality of a float32 basis); Ritz vectors ``X = Q S`` and ``KX = (KQ) S`` need no
   product with K;
5. lock every wanted pair with ``‖KX_i − θ_i X_i‖ <= 0.5 · tol · λmax``: it leaves the basis and
   is never multiplied again (later blocks are only kept orthogonal to it);
6. thick restart: keep the ``k − L`` wanted plus ``guard`` extra Ritz vectors (with their
   ``KX``), and continue the Krylov space from their residual block ``KX − XΘ`` (rank <= b),
   narrowed to the number of unconverged wanted pairs when fewer than ``b`` remain.

Memory: ``2 · max_basis`` columns of ``N`` in K's dtype plus ``max_basis²`` float64.

Where the time goes (:attr:`BlockResult.seconds`; float32, 2 cores, k = 1,000): on the CIFAR
MLP Gram at N = 16,000 with the defaults (b = 250, one cycle, 4,000 products; README, "Paper
scale on one machine"), 14.6 s products, 11.7 s orthogonalization, 23.9 s Rayleigh-Ritz (the
first look at 3,000 columns, which does not converge on this spectrum, and the 4,000-column
step), 7.8 s the final float64 residual product: 58 s. With b = 100 and a 2,700-column basis
(the earlier defaults) the same Gram took 5 cycles, 8,500 products (76 s) and 51 s of
orthogonalization: the narrow blocks of the late cycles multiply the whole Gram for a few
columns each. At N = 60,000 the products dominate: 190 of 357 s.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable

import numpy as np
import scipy.linalg

from raysweep.eigen.basis import orthonormal_block, svqb
from raysweep.eigen.operator import KernelOperator
from raysweep.eigen.progress import EigenProgress
from raysweep.eigen.threads import one_blas_thread

__all__ = [
    "STAGES",
    "BlockResult",
    "block_eigenpairs",
    "default_block_size",
    "default_early_check",
    "default_guard",
    "default_max_basis",
    "suggested_max_iter",
]

# Lock when the float32/64 residual estimate is this fraction of the target, so the final
# float64 residual (which also sees the rounding of the returned vectors) stays below it.
_SAFETY = 0.5
# Directions of a projected product below this many ulps of λmax are rounding noise.
_NOISE_ULPS = 10.0
# Relative asymmetry of the first projected block QᵀKQ that flags a non-symmetric handle.
_HANDLE_ASYMMETRY = 1e-3
# Narrowest block once few wanted pairs are left unconverged.
_MIN_WIDTH = 8
# Stop after this many cycles that neither lock a pair nor cut the worst wanted residual by
# 10%, while that residual is within _FLOOR_ULPS ulps of λmax (the rounding floor of the
# working dtype): the target is below what the working precision can reach.
_STALL_CYCLES = 3
_FLOOR_ULPS = 1e3

# Projected eigenproblems from this size on use every BLAS thread.
_THREADED_RITZ = 2000
# From this N on, products dominate the solver's time: wide blocks (k // 4).
_WIDE_FROM_N = 8000

STAGES = ("products", "orthogonalization", "rayleigh_ritz", "restart")
"""The stages :attr:`BlockResult.seconds` splits the solver's wall time into."""


def default_block_size(k: int, n: int) -> int:
    """Block width ``b``: ``k // 4`` from N = 8,000 on, ``k // 10`` below; clipped to
    ``[16, 256]`` (and to N/4).

    Narrower blocks can converge in a smaller Krylov space (synthetic N = 3,000, k = 300: one
    cycle at 810 columns with b = 30, 0.9 s; b = 75 needed 1,200 columns, 1.3 s), which
    matters where products are cheap and Rayleigh-Ritz dominates. But they make more, narrower
    products (more round trips, lower BLAS-3 efficiency) and, on the CIFAR MLP Gram
    (N = 16,000, k = 1,000), needed 5 restart cycles and 8,500 products at b = 100 against
    one cycle and 4,000 products at b = 256 (148 s against 46 s in all).
    """
    width = k // 4 if n >= _WIDE_FROM_N else k // 10
    return max(1, min(max(16, width), 256, n // 4))


def default_guard(k: int) -> int:
    """Extra Ritz vectors kept at a restart beyond the ``k`` wanted: ``max(16, k // 4)``."""
    return max(16, k // 4)


def default_max_basis(k: int, n: int, block_size: int) -> int:
    """Basis columns (locked + active): ``4k`` (and ``k + guard + b`` at least), at most N.

    Measured to converge in one cycle on the CIFAR MLP Gram (N = 16,000, k = 1,000, b = 256;
    3,500 columns needed a restart); a smaller basis means restarts (more Rayleigh-Ritz steps
    and products), a larger one a costlier ``O(max_basis³)`` Rayleigh-Ritz. Spectra that
    converge sooner stop at :func:`default_early_check`.
    """
    return min(n, max(4 * k, k + default_guard(k) + block_size))


def default_early_check(k: int, n: int, block_size: int) -> int:
    """Basis size of the first cycle's early Rayleigh-Ritz step: ``2.5k + 2b``, at most N.

    Enough for the synthetic power-law spectra of ``benchmarks/bench_eigen.py`` (N = 12,000,
    k = 1,000 converged at 2,700 columns), which then skip the rest of the ``4k`` basis.
    """
    return min(n, (5 * k) // 2 + 2 * block_size)


def suggested_max_iter(k: int) -> int:
    """A generous bound on restart cycles (typical runs need 1-4)."""
    return 50 + 5 * math.ceil(math.log2(k + 1))


class BlockResult:
    """Raw output of :func:`block_eigenpairs`.

    Attributes:
      vectors: ``(N, k)`` columns in the working dtype, descending Ritz values.
      theta: float64 ``(k,)`` their Ritz values. iterations: Rayleigh-Ritz cycles.
      converged: whether all ``k`` pairs met the target.
      reason: why it stopped, e.g. ``"max_iter=5 reached"`` (for the warning).
      seconds: wall seconds by stage (:data:`STAGES`): ``products`` (``K @ V``, the Gram
        workers' share and the round trips), ``orthogonalization`` (block Gram-Schmidt and
        SVQB of each new block), ``rayleigh_ritz`` (projected eigenproblem, Ritz vectors,
        residuals, locking), ``restart`` (the kept basis and its residual block).
    """

    def __init__(self, vectors, theta, iterations, converged, reason, seconds=None):
        self.vectors, self.theta = vectors, theta
        self.iterations, self.converged, self.reason = iterations, converged, reason
        self.seconds = dict(seconds or {})


def _check_first_product(q: np.ndarray, w: np.ndarray, is_handle: bool) -> None:
    if not np.all(np.isfinite(w)):
        raise ValueError("K @ V returned NaN or inf for a random block V; K must be finite.")
    if is_handle:
        h = (q.T @ w).astype(np.float64)
        asym = float(np.max(np.abs(h - h.T)))
        if asym > _HANDLE_ASYMMETRY * float(np.max(np.abs(h))):
            raise ValueError(
                f"K does not act symmetrically: max|QᵀKQ − (QᵀKQ)ᵀ| = {asym:.3e} on a random "
                f"block (> {_HANDLE_ASYMMETRY:g} · max|QᵀKQ|). top_eigenpairs needs a symmetric "
                "PSD operator; check the handle's matmat."
            )


def _widen(new: np.ndarray, width: int, rng, bases) -> np.ndarray:
    """Top a block narrowed by rank-revealing orthonormalization up to ``width`` columns.

    The Krylov continuation of a block loses the directions that fell to rounding noise; fresh
    random directions (orthogonal to everything) keep every ``matmat`` as wide as planned, so
    the number of round trips stays ~``max_basis / block_size`` per cycle.
    """
    missing = width - new.shape[1]
    if missing <= 0:
        return new
    fresh = rng.standard_normal((new.shape[0], missing)).astype(new.dtype)
    fresh = orthonormal_block(fresh, (*bases, new), 0.0)
    return np.concatenate([new, fresh], axis=1)


def _ritz(t: np.ndarray, m: np.ndarray, count: int):
    """Top ``count`` pairs of ``T s = θ M s``: θ float64 descending, ``S`` ``(d, count)``.

    Below :data:`_THREADED_RITZ` columns on one BLAS thread (:mod:`raysweep.eigen.threads`);
    from there on every thread: the products with K are not running then, and the
    4,000-column problem took 11.3 s on one thread, 7.7 s on two.
    """
    d = t.shape[0]
    with one_blas_thread() if d < _THREADED_RITZ else contextlib.nullcontext():
        theta, s = scipy.linalg.eigh(
            t, m, subset_by_index=[d - count, d - 1], check_finite=False, driver="gvx"
        )
    return theta[::-1].copy(), s[:, ::-1]


def block_eigenpairs(
    op: KernelOperator,
    k: int,
    *,
    tol: float,
    max_iter: int,
    seed: int | None,
    block_size: int,
    max_basis: int,
    guard: int,
    early_check: int | None = None,
    progress: Callable[[EigenProgress], None] | None = None,
) -> BlockResult:
    """Top-``k`` eigenpairs of the symmetric PSD operator ``op`` (see the module docstring).

    Args:
      op: the operator (only ``op.matmat`` is used).
      k: wanted pairs, ``1 <= k < N``.
      tol: target residual ``‖Kv − θv‖ <= tol · λmax`` (λmax: the largest Ritz value).
      max_iter: Rayleigh-Ritz cycles at most.
      seed: seed of the ``(N, block_size)`` Gaussian start block.
      block_size: width ``b`` of each Krylov block, ``1 <= b``.
      max_basis: columns of the basis, locked included; ``k + guard + b <= max_basis <= N``
        (smaller values are raised to that).
      guard: Ritz vectors kept beyond the wanted ones at a restart.
      early_check: in the first cycle, a Rayleigh-Ritz step once the basis holds this many
        columns (below ``max_basis``): if every wanted pair has converged there, the solver
        stops without filling the rest of the basis; if not, that step is discarded and the
        basis grows on (no restart). ``None``: none.
      progress: called with an :class:`~raysweep.eigen.progress.EigenProgress` after every
        product and every Rayleigh-Ritz cycle (not after the last: the caller reports the end).

    Returns:
      :class:`BlockResult`; if not converged, the best ``k`` Ritz pairs at hand.
    """
    n, dtype = op.n, op.dtype
    cap = min(n, max(max_basis, k + guard + block_size))
    noise = _NOISE_ULPS * float(np.finfo(dtype).eps)
    rng = np.random.default_rng(seed)

    q = np.empty((n, cap), dtype=dtype)  # active basis, columns [:d]
    kq = np.empty((n, cap), dtype=dtype)  # K @ basis
    t = np.zeros((cap, cap))  # QᵀKQ
    m = np.zeros((cap, cap))  # QᵀQ
    locked_x = np.empty((n, 0), dtype=dtype)
    locked_theta = np.empty(0)
    d, lam_max, iterations, converged, reason = 0, 0.0, 0, False, "converged"
    worst, stalled = np.inf, 0
    width = min(block_size, cap)
    new = svqb(rng.standard_normal((n, width)).astype(dtype))
    started = time.perf_counter()
    matvecs, residual_now = 0, None
    early_at = early_check if early_check is not None and early_check < cap else None
    early_done = False
    seconds = dict.fromkeys(STAGES, 0.0)
    clock = time.perf_counter

    def report(d_now: int, cycle_start: float, cycle_from: int) -> None:
        if progress is None:
            return
        now = time.perf_counter()
        filled = d_now - cycle_from
        room = cap - locked_theta.size - d_now
        eta = None
        if filled > 0:  # the rest of this cycle at its rate so far, plus further cycles
            eta = (now - cycle_start) / filled * max(room, 0)
            if iterations > 0 and locked_theta.size > 0:
                per_cycle = locked_theta.size / iterations
                more = math.ceil((k - locked_theta.size) / per_cycle) - 1
                eta += max(more, 0) * (now - started) / iterations
        progress(
            EigenProgress(
                method="block",
                k=k,
                cycle=iterations,
                matvecs=matvecs,
                basis=locked_theta.size + d_now,
                capacity=cap,
                converged=int(locked_theta.size),
                residual=residual_now,
                elapsed_s=now - started,
                eta_s=eta,
            )
        )

    while True:
        cycle_start, cycle_from = time.perf_counter(), d
        while True:  # expand the Krylov basis by blocks until it is full
            r = new.shape[1]
            tick = clock()
            w = op.matmat(new)
            seconds["products"] += clock() - tick
            matvecs += r
            if iterations == 0 and d == 0:
                _check_first_product(new, w, op.array is None)
            tick = clock()
            q[:, d : d + r], kq[:, d : d + r] = new, w
            basis = q[:, : d + r]
            coeffs = [locked_x.T @ w, basis.T @ w]  # the second is the new columns of QᵀKQ
            t[: d + r, d : d + r] = coeffs[1]
            m[: d + r, d : d + r] = basis.T @ new
            t[d : d + r, :d] = t[:d, d : d + r].T
            m[d : d + r, :d] = m[:d, d : d + r].T
            d += r
            lam_max = max(lam_max, float(np.max(np.linalg.norm(w, axis=0))))
            room = cap - locked_theta.size - d
            if room > 0:
                new = orthonormal_block(w, (locked_x, q[:, :d]), noise * lam_max, coeffs)
                new = _widen(
                    new[:, : min(width, room)], min(width, room), rng, (locked_x, q[:, :d])
                )
            seconds["orthogonalization"] += clock() - tick
            report(d, cycle_start, cycle_from)
            if room <= 0 or new.shape[1] == 0:  # full, or it spans the whole space left
                break
            if early_at is not None and d >= early_at:  # a first look before filling it all
                early_at = None
                tick = clock()
                theta, s = _ritz(0.5 * (t[:d, :d] + t[:d, :d].T), m[:d, :d], k)
                s = s.astype(dtype)
                x = q[:, :d] @ s
                residual = np.linalg.norm(kq[:, :d] @ s - x * theta.astype(dtype), axis=0)
                early_done = bool(np.all(residual <= _SAFETY * tol * max(lam_max, theta[0])))
                seconds["rayleigh_ritz"] += clock() - tick
                if early_done:
                    break

        iterations += 1
        if early_done:  # every wanted pair converged at the first look
            locked_x, locked_theta, converged = x, theta, True
            break
        tick = clock()
        wanted = k - locked_theta.size
        count = min(d, wanted + guard)
        tt = 0.5 * (t[:d, :d] + t[:d, :d].T)
        theta, s = _ritz(tt, m[:d, :d], count)
        s = s.astype(dtype)
        x, kx = q[:, :d] @ s, kq[:, :d] @ s
        lam_max = max(lam_max, float(theta[0]))
        residual = np.linalg.norm(kx - x * theta.astype(dtype), axis=0)
        done = np.zeros(count, dtype=bool)
        done[:wanted] = residual[:wanted] <= _SAFETY * tol * lam_max
        if done.any():
            locked_x = np.concatenate([locked_x, x[:, done]], axis=1)
            locked_theta = np.concatenate([locked_theta, theta[done]])
            x, kx, theta = x[:, ~done], kx[:, ~done], theta[~done]
            wanted = k - locked_theta.size
        seconds["rayleigh_ritz"] += clock() - tick
        if wanted <= 0:
            converged = True
            break
        if iterations >= max_iter:
            reason = f"max_iter={max_iter} reached"
            break
        current = float(np.max(residual[~done][:wanted]))
        residual_now = current / lam_max if lam_max > 0 else None
        # A stall is blamed on rounding only near the floor; above it, slow convergence of
        # clustered eigenvalues goes on (up to max_iter).
        near_floor = current <= _FLOOR_ULPS * float(np.finfo(dtype).eps) * lam_max
        improving = done.any() or current < 0.9 * worst or not near_floor
        stalled = 0 if improving else stalled + 1
        worst = min(worst, current)
        if stalled >= _STALL_CYCLES:
            reason = (
                f"stalled for {_STALL_CYCLES} cycles at residual/λmax "
                f"{current / lam_max:.1e}: tol may be below the {dtype} rounding floor "
                f"(~{100 * np.finfo(dtype).eps:.0e})"
            )
            break

        # thick restart from the kept Ritz vectors; continue from their residual block
        tick = clock()
        keep = min(theta.size, wanted + guard, cap - locked_theta.size - 1)
        x, kx, theta = x[:, :keep], kx[:, :keep], theta[:keep]
        d = keep
        q[:, :d], kq[:, :d] = x, kx
        t[:d, :d] = (x.T @ kx).astype(np.float64)
        m[:d, :d] = (x.T @ x).astype(np.float64)
        width = min(block_size, max(wanted, _MIN_WIDTH), cap - locked_theta.size - d)
        res_block = kx - x * theta.astype(dtype)
        new = orthonormal_block(res_block, (locked_x, q[:, :d]), noise * lam_max)[:, :width]
        new = _widen(new, width, rng, (locked_x, q[:, :d]))
        seconds["restart"] += clock() - tick
        report(d, time.perf_counter(), d)

    wanted = max(k - locked_theta.size, 0)
    vectors = np.concatenate([locked_x, x[:, :wanted]], axis=1)
    values = np.concatenate([locked_theta, theta[:wanted]])
    order = np.argsort(-values, kind="stable")[:k]
    return BlockResult(vectors[:, order], values[order], iterations, converged, reason, seconds)
