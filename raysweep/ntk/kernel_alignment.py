"""Kernel alignment of target functions (Lemma 1) and energy concentration (Table 1).

Alignment of a target function y sampled on n points with the NTK of f at θ:

    α(y) = ‖ (1/n) Σᵢ y(xᵢ) ∇θ f(θ, xᵢ) ‖²  =  yᵀ Θ y / n²,

computed from vector-Jacobian products with the targets as cotangents, so the n x n Gram
matrix is never formed and memory stays bounded (targets in chunks, data in batches).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from raysweep.ntk.ntk_checks import check_inputs, check_params, check_single_output


def _make_accumulator(apply_fn, precision: str):
    """``accumulate(params, acc, xb, tb) = acc + [vjp of targets tb at inputs xb]``, jitted.

    The parameters are an argument, so one compiled program serves every parameter point of
    the same shapes.
    """
    matmul = "float32" if precision == "highest" else "default"

    @jax.jit
    def accumulate(params, acc, xb, tb):
        with jax.default_matmul_precision(matmul):
            _, vjp_fn = jax.vjp(lambda p: apply_fn(p, xb), params)

            def one(t):
                return ravel_pytree(vjp_fn(t[:, None].astype(acc.dtype))[0])[0]

            return acc + jax.vmap(one)(tb)

    return accumulate


_shared_accumulator = functools.lru_cache(maxsize=8)(_make_accumulator)


def _accumulator(apply_fn, precision: str):
    """The compiled accumulator of ``apply_fn``, shared across calls (if hashable)."""
    try:
        return _shared_accumulator(apply_fn, precision)
    except TypeError:  # unhashable apply_fn
        return _make_accumulator(apply_fn, precision)


def alignment(
    apply_fn,
    params,
    x,
    targets,
    *,
    batch_size: int = 256,
    target_chunk: int | None = None,
    memory_budget_mb: float = 2048,
    precision: str = "highest",
) -> np.ndarray:
    """α = ‖(1/n) Σᵢ targets[:, i] ∇θf(xᵢ)‖² for m target functions at once.

    Args:
      apply_fn: ``apply_fn(params, x) -> (n, 1)``.
      params: parameter pytree θ at which the NTK is taken.
      x: ``(n, ...)`` inputs.
      targets: ``(m, n)`` (or ``(n,)`` for one target): target values on the n inputs.
      batch_size: inputs per VJP.
      target_chunk: targets per vmapped VJP; ``None`` fits ``memory_budget_mb`` (each target
        holds one parameter-sized accumulator).
      precision: ``"highest"`` (float32 matmuls, also on GPUs) or ``"default"``.

    Returns:
      ``numpy.ndarray`` of shape ``(m,)`` (float64 accumulation of float32 products).

    The compiled program takes the parameters as an argument and is reused by later calls
    with the same ``apply_fn`` object and shapes, whatever the parameter values.
    """
    check_inputs(x)
    check_params(params)
    check_single_output(apply_fn, params, x)
    if precision not in ("highest", "default"):
        raise ValueError(f"precision={precision!r}; choose 'highest' or 'default'.")
    targets = np.asarray(targets)
    if targets.ndim == 1:
        targets = targets[None]
    n = np.shape(x)[0]
    if targets.ndim != 2 or targets.shape[1] != n:
        raise ValueError(
            f"targets must have shape (m, n) with n = len(x) = {n}; got {targets.shape}."
        )
    if not np.all(np.isfinite(targets)):
        raise ValueError("targets contain NaN or inf.")
    m = targets.shape[0]
    dtype = jax.tree_util.tree_leaves(params)[0].dtype
    num_params = sum(int(np.size(leaf)) for leaf in jax.tree_util.tree_leaves(params))
    if target_chunk is None:
        per_target = 3 * num_params * np.dtype(dtype).itemsize
        target_chunk = int(max(1, min(m, 256, memory_budget_mb * 2**20 // per_target)))
    batch_size = int(min(batch_size, n))
    accumulate = _accumulator(apply_fn, precision)
    params = jax.device_put(params)

    x = np.asarray(x)
    out = np.empty(m, dtype=np.float64)
    for c0 in range(0, m, target_chunk):
        tc = targets[c0 : c0 + target_chunk]
        c = tc.shape[0]
        tc = np.pad(tc, ((0, target_chunk - c), (0, 0)))  # one compiled shape
        acc = jnp.zeros((target_chunk, num_params), dtype)
        for b0 in range(0, n, batch_size):
            xb = x[b0 : b0 + batch_size]
            tb = tc[:, b0 : b0 + batch_size]
            pad = batch_size - xb.shape[0]
            if pad:  # zero cotangents contribute nothing
                xb = np.concatenate([xb, np.zeros((pad, *xb.shape[1:]), xb.dtype)])
                tb = np.pad(tb, ((0, 0), (0, pad)))
            acc = accumulate(params, acc, xb, tb)
        acc = np.asarray(acc[:c], dtype=np.float64) / n
        out[c0 : c0 + c] = np.sum(acc * acc, axis=1)
    return out


def energy_concentration(eigvecs, y, k: int) -> float | np.ndarray:
    """Fraction of the energy of labels y on the top-k eigenvectors: ‖Φ_k y‖² / ‖y‖².

    Args:
      eigvecs: ``(K, N)`` eigenvectors as unit rows, in descending eigenvalue order.
      y: ``(N,)`` labels (or ``(m, N)`` for several label vectors).
      k: number of leading eigenvectors, ``1 <= k <= K``.

    Returns:
      A float in [0, 1] (an ``(m,)`` array for 2-D ``y``). 1 when y lies in the span of the
      top-k eigenvectors; ≈ k/N for a random y.
    """
    eigvecs = np.asarray(eigvecs)
    y = np.asarray(y, dtype=np.float64)
    if eigvecs.ndim != 2:
        raise ValueError(f"eigvecs must be (K, N) with unit rows; got shape {eigvecs.shape}.")
    if not (isinstance(k, int | np.integer) and 1 <= k <= eigvecs.shape[0]):
        raise ValueError(f"k must be an integer in [1, {eigvecs.shape[0]}]; got {k!r}.")
    single = y.ndim == 1
    y2 = y[None] if single else y
    if y2.ndim != 2 or y2.shape[1] != eigvecs.shape[1]:
        raise ValueError(
            f"y must have length N = {eigvecs.shape[1]} (eigvecs has shape {eigvecs.shape}); "
            f"got shape {y.shape}."
        )
    norms = np.sum(y2 * y2, axis=1)
    if np.any(norms == 0):
        raise ValueError("y is zero: the energy concentration of a zero label is undefined.")
    proj = y2 @ np.asarray(eigvecs[:k], dtype=np.float64).T
    ratio = np.sum(proj * proj, axis=1) / norms
    return float(ratio[0]) if single else ratio
