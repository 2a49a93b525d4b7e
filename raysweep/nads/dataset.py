"""The linearly separable dataset D(u) of a direction u, and Gaussian inputs for Theorem 1.

D(u) (Appendix C.1 of the paper, after Ortiz-Jiménez et al. 2020, "Neural anisotropy
directions"): for a unit vector u ∈ R^d,

    x = ε · y · u + w,    w ~ N(0, σ (I − uuᵀ)),    y ~ U{−1, +1},                       (1)

so the only discriminative information lies along u: uᵀx = ε·y exactly and the noise w is
orthogonal to u. The paper uses ε = σ = 1, 10,000 training and 10,000 test samples.

Convention for σ: as in equation (1), ``sigma`` is the *variance* scale — the covariance of w
is σ(I − uuᵀ), i.e. w = √σ · (I − uuᵀ) g with g ~ N(0, I). (For the paper's σ = 1 the variance
and standard-deviation readings agree.) :func:`gaussian_samples`, in contrast, takes the
*standard deviation*: x ~ N(0, sigma² I), the input distribution of Theorem 1 for sigma = 1.

Randomness: NumPy ``Generator`` (PCG64) streams derived from ``seed`` with
``numpy.random.SeedSequence(seed).spawn(2)`` — one stream for the training split, one for the
test split — so the same seed gives bit-identical arrays and the test split does not depend on
``num_train``.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from raysweep.argcheck import check_int
from raysweep.nads.nad_checks import check_input_shape, check_positive_int

__all__ = ["gaussian_samples", "nad_dataset", "unit_direction"]

_CHUNK = 4096  # rows generated (float64) at once


def _check_seed(seed: Any) -> int:
    return check_int(seed, "seed", minimum=0)


def _check_positive_number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a positive number, got {value!r}.")
    if not (math.isfinite(float(value)) and float(value) > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}.")
    return float(value)


def unit_direction(u: Any, input_shape: tuple[int, ...]) -> np.ndarray:
    """``u`` flattened to float64 ``(d,)`` and normalized to unit 2-norm.

    Args:
      u: ``(d,)`` or ``input_shape``-shaped array (e.g. one row of ``nads(...).directions``).
      input_shape: per-example shape, d = prod(input_shape).

    Raises:
      ValueError: wrong size, NaN/inf entries, or u = 0 (no direction to separate along).
    """
    shape = check_input_shape(input_shape)
    dim = math.prod(shape)
    arr = np.asarray(u, dtype=np.float64)
    if arr.size != dim:
        raise ValueError(
            f"u must have d = prod(input_shape) = {dim} entries (shape ({dim},) or {shape}), got "
            f"shape {arr.shape}; pass one NAD, e.g. nads(...).directions[j]."
        )
    arr = arr.reshape(dim)
    if not np.all(np.isfinite(arr)):
        raise ValueError("u contains NaN or inf.")
    norm = float(np.linalg.norm(arr))
    if norm == 0.0:
        raise ValueError("u is the zero vector; D(u) needs a nonzero direction.")
    return arr / norm


def _split(rng: np.random.Generator, u: np.ndarray, n: int, eps: float, sigma: float):
    dim = u.size
    y = np.where(rng.integers(0, 2, size=n) == 1, 1.0, -1.0)
    x = np.empty((n, dim), dtype=np.float32)
    root = math.sqrt(sigma)
    for r0 in range(0, n, _CHUNK):
        g = rng.standard_normal((min(_CHUNK, n - r0), dim))
        w = root * (g - np.outer(g @ u, u))  # w = √σ (I − uuᵀ) g
        w -= np.outer(w @ u, u)  # second projection: uᵀw at float64 rounding
        x[r0 : r0 + len(g)] = eps * y[r0 : r0 + len(g), None] * u[None, :] + w
    return x, y.astype(np.float32)


def nad_dataset(
    u: Any,
    input_shape: Any,
    *,
    num_train: int = 10000,
    num_test: int = 10000,
    epsilon: float = 1.0,
    sigma: float = 1.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sample the train and test splits of D(u), equation (1).

    Args:
      u: the direction, ``(d,)`` or ``input_shape``; normalized here (any nonzero scale).
      input_shape: per-example model input shape, e.g. ``(32, 32, 1)`` (NHWC without n).
      num_train, num_test: split sizes (paper: 10,000 each).
      epsilon: ε, the margin: uᵀx = ±ε.
      sigma: σ, the noise *variance* scale (module docstring), covariance σ(I − uuᵀ).
      seed: non-negative int; same seed -> identical arrays.

    Returns:
      ``(x_train, y_train, x_test, y_test)``: ``x_*`` float32 ``(n, *input_shape)`` in the
      flattening order of u (C order, as ``x.reshape(n, -1)``); ``y_*`` float32 ``(n,)`` with
      entries ±1 (pass ``y[None]`` to :func:`raysweep.training.train_pack`, which takes
      ``(T, n)``). uᵀx = ε·y up to float32 rounding of x; the classifier sign(uᵀx) is perfect.

    Raises:
      ValueError / TypeError: u of the wrong size, zero or non-finite; non-positive sizes,
        ε or σ; a negative or non-int seed — all before sampling.
    """
    shape = check_input_shape(input_shape)
    direction = unit_direction(u, shape)
    num_train = check_positive_int(num_train, "num_train")
    num_test = check_positive_int(num_test, "num_test")
    eps = _check_positive_number(epsilon, "epsilon")
    var = _check_positive_number(sigma, "sigma")
    train_seq, test_seq = np.random.SeedSequence(_check_seed(seed)).spawn(2)
    x_tr, y_tr = _split(np.random.default_rng(train_seq), direction, num_train, eps, var)
    x_te, y_te = _split(np.random.default_rng(test_seq), direction, num_test, eps, var)
    return x_tr.reshape(num_train, *shape), y_tr, x_te.reshape(num_test, *shape), y_te


def gaussian_samples(input_shape: Any, n: int, sigma: float = 1.0, seed: int = 0) -> np.ndarray:
    """``n`` inputs x ~ N(0, sigma² I), float32 ``(n, *input_shape)`` (sigma: standard deviation).

    For ``nads(..., samples=gaussian_samples(shape, n))`` — the data average of Theorem 1 — and
    for Monte Carlo checks of the alignment. Deterministic in ``seed`` (PCG64).
    """
    shape = check_input_shape(input_shape)
    n = check_positive_int(n, "n")
    std = _check_positive_number(sigma, "sigma")
    rng = np.random.default_rng(_check_seed(seed))
    return (std * rng.standard_normal((n, *shape))).astype(np.float32)
