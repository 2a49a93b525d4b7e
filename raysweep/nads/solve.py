"""Neural anisotropy directions: the top right singular vectors of ∇²_{x,θ} f (Theorem 1).

Theorem 1 of the paper: for a unit u ∈ S^{d−1}, the linear predictor g_u(x) = uᵀx and
x ~ N(0, I), the alignment of g_u with the NTK Θ of f_θ₀ is

    α(g_u) = ‖ E_x[(uᵀx) ∇θ f(x)] ‖²  =  ‖ E_x[∇²_{x,θ} f(x)] u ‖²     (Lemma 1, Stein's lemma)

so the directions the NTK aligns with best are the right singular vectors of the P × d matrix
M = E_x[∇²_{x,θ} f(x)], ordered by the squared singular values σᵢ² = α(g_{uᵢ}). Appendix C.2
replaces the expectation by its first-order approximation M = ∇²_{x,θ} f(0) (the origin) and
uses GeLU activations: with ReLU and zero biases every pre-activation at the origin is 0 and
relu'(0) = relu''(0) = 0, so the mixed derivative at 0 vanishes.

:func:`nads` computes the top-k pairs matrix-free (:class:`~raysweep.nads.operator.
MixedDerivative`): ``M`` is never formed, only products M v and Mᵀ w (or Gram columns MᵀM v).

Conventions of the result:

* ``eigvals``: float64 ``(k,)``, descending: σᵢ² = ‖M uᵢ‖² (Rayleigh quotients of MᵀM at the
  returned directions for the iterative solvers, LAPACK eigenvalues for ``dense``).
* ``directions``: float32 ``(k, d)``, unit rows, d = prod(input_shape) in the C (row-major)
  order of ``x.reshape(n, -1)`` for NHWC inputs; ``directions.reshape(k, *input_shape)`` gives
  images. Sign: each row is flipped so that its entry of largest magnitude is positive (the
  first such index on ties) — :func:`raysweep.eigen.fix_signs`, the convention of the NTK
  eigenvectors.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from raysweep.eigen import fix_signs
from raysweep.nads.nad_checks import (
    METHODS,
    check_activation_hint,
    check_input_shape,
    check_k,
    check_model,
    check_points,
    check_positive_int,
)
from raysweep.nads.operator import MixedDerivative

__all__ = ["DEFAULT_DENSE_MAX_DIM", "NADs", "VANISHING_RTOL", "auto_method", "nad_products", "nads"]

VANISHING_RTOL = 1e-12
"""σ₁² ≤ VANISHING_RTOL · max(1, ‖∇θ f̄‖²) counts as a vanishing mixed derivative (warning)."""

DEFAULT_DENSE_MAX_DIM = 256
"""``method="auto"`` forms the d × d Gram (2d products) up to this d, and above it when
``svds`` would need more products (:func:`auto_method`); else it runs ``svds``.

``svds`` needs ~20k + 100 products whatever d is (175 for k = 10 on LeNet at 32×32×1), the
dense Gram 2d (2048 there) but is exact and free of iteration; compile time (~5 s per product
kind on a CPU) is the same order for both on small models."""


def auto_method(dim: int, k: int, dense_max_dim: int = DEFAULT_DENSE_MAX_DIM) -> str:
    """``nads(method="auto")``'s choice: the dense Gram when it is small or needs fewer
    products than ``svds`` would (2d against ~20k + 100), else ``svds``."""
    return "dense" if dim <= dense_max_dim or 2 * dim <= 20 * k + 100 else "svds"


def nad_products(dim: int, k: int, method: str = "auto") -> int:
    """About how many M/Mᵀ products :func:`nads` spends: 2d for the dense Gram, ~20k + 100 for
    ``svds`` (``"gram"`` is counted as ``svds``)."""
    resolved = auto_method(dim, k) if method == "auto" else method
    return 2 * dim if resolved == "dense" else 20 * k + 100


_BLOCK_BYTES = 2**28
"""Default Gram block: about this many bytes of per-column float32 parameter vectors (×3)."""

_RELU_MESSAGE = (
    "the mixed derivative of ReLU at 0 may vanish (relu'(0) = relu''(0) = 0 with zero biases), "
    "so its NADs are meaningless; use GeLU as the paper does "
    "(raysweep.models.get_model(name, activation='gelu'))"
)


class NADs(tuple):
    """``(eigvals, directions)`` plus diagnostics; unpacks like a 2-tuple.

    Attributes:
      eigvals: float64 ``(k,)`` squared singular values σᵢ², descending.
      directions: float32 ``(k, d)`` unit right singular vectors (module docstring for order
        and sign).
      singular_values: float64 ``(k,)``, ``sqrt(eigvals)``.
      residuals: float64 ``(k,)``, ``‖MᵀM uᵢ − σᵢ² uᵢ‖₂`` of the returned pairs.
      method: ``"dense"``, ``"svds"``, ``"gram"`` or ``"zero"`` (M vanished exactly).
      products: M/Mᵀ products spent (a Gram column counts 2).
      input_shape: per-example shape. where: ``"origin"``, ``"x0"`` or ``"samples"``.
      num_points: points averaged over (1 at the origin). scale: ``‖∇θ f̄‖²``, the gradient
        of the mean output (Θ(x₀, x₀) for one point). vanishing: whether σ₁² fell below
        :data:`VANISHING_RTOL` · max(1, scale).
    """

    def __new__(cls, eigvals, directions, **info):
        return super().__new__(cls, (eigvals, directions))

    def __init__(self, eigvals, directions, **info):
        self.__dict__.update(info)

    @property
    def eigvals(self) -> np.ndarray:
        return self[0]

    @property
    def directions(self) -> np.ndarray:
        return self[1]

    @property
    def singular_values(self) -> np.ndarray:
        return np.sqrt(np.maximum(self[0], 0.0))

    def images(self) -> np.ndarray:
        """The directions as ``(k, *input_shape)`` arrays (e.g. ``(k, 32, 32, 1)``)."""
        return self[1].reshape(len(self[1]), *self.input_shape)

    def __reduce__(self):
        return (_rebuild, (self[0], self[1], dict(self.__dict__)))

    def __repr__(self) -> str:
        k, d = self[1].shape
        return (
            f"NADs(k={k}, d={d}, where={self.where!r}, method={self.method!r}, "
            f"products={self.products}, sigma1^2={self[0][0]:.4g})"
        )


def _rebuild(eigvals, directions, info):
    return NADs(eigvals, directions, **info)


def _warn_relu(detail: str = "", stacklevel: int = 3) -> None:
    warnings.warn(f"{detail}{_RELU_MESSAGE}.", UserWarning, stacklevel=stacklevel)


def _solve_dense(op: MixedDerivative, k: int, block: int):
    from scipy.linalg import eigh

    gram = op.dense_gram(block=block)
    d = op.dim
    vals, vecs = eigh(gram, subset_by_index=[d - k, d - 1], driver="evx")  # top k, ascending
    vals, vecs = vals[::-1], vecs[:, ::-1].T  # (k,), (k, d)
    resid = np.linalg.norm(vecs @ gram - vals[:, None] * vecs, axis=1)
    return vals, vecs, resid


def _rayleigh(op: MixedDerivative, vecs: np.ndarray):
    """Rayleigh quotients ‖M u‖² and residuals ‖MᵀM u − λu‖ of unit rows ``vecs`` (k, d).

    Uses the already compiled ``matvec``/``rmatvec`` (2k products, float64 on the host).
    """
    vals = np.empty(len(vecs))
    resid = np.empty(len(vecs))
    for i, u in enumerate(vecs):
        mu = op.matvec(u.astype(np.float32))
        gu = np.asarray(op.rmatvec(mu), np.float64)
        vals[i] = float(np.sum(np.square(np.asarray(mu, np.float64))))
        resid[i] = float(np.linalg.norm(gu - vals[i] * u))
    return vals, resid


def _solve_svds(op: MixedDerivative, k: int, tol: float, seed: int):
    from scipy.sparse.linalg import svds

    v0 = np.random.default_rng(seed).standard_normal(op.dim)
    _, _, vt = svds(op.linear_operator(), k=k, tol=math.sqrt(tol), v0=v0, solver="arpack")
    vecs = vt / np.linalg.norm(vt, axis=1, keepdims=True)
    vals, resid = _rayleigh(op, vecs)
    return vals, vecs, resid


def _solve_gram(op: MixedDerivative, k: int, tol: float, seed: int, block: int):
    from raysweep.eigen import top_eigenpairs

    pairs = top_eigenpairs(op.gram_handle(block), k, method="block", tol=tol, seed=seed)
    return (
        np.asarray(pairs.eigvals, np.float64),
        np.asarray(pairs.eigvecs, np.float64),
        np.asarray(pairs.residuals, np.float64),
    )


def nads(
    apply_fn,
    params,
    input_shape,
    k: int,
    *,
    x0=None,
    samples=None,
    method: str = "auto",
    activation: str | None = None,
    batch_size: int = 64,
    block: int | None = None,
    tol: float = 1e-6,
    seed: int = 0,
    dense_max_dim: int = DEFAULT_DENSE_MAX_DIM,
) -> NADs:
    """Top-k squared singular values and right singular vectors (NADs) of ∇²_{x,θ} f.

    Args:
      apply_fn: ``apply_fn(params, x) -> (n, 1)`` float32 logits for ``x`` of shape
        ``(n, *input_shape)`` (NHWC for raysweep models; :func:`raysweep.models.make_apply_fn`).
      params: parameter pytree θ₀ (e.g. ``variables["params"]``).
      input_shape: per-example shape without the batch axis, e.g. ``(32, 32, 1)``;
        d = prod(input_shape).
      k: number of NADs, ``1 <= k < d``.
      x0: the point of the derivative, shape ``input_shape`` or ``(1, *input_shape)``; default
        the origin (the paper's choice, Appendix C.2).
      samples: ``(n, *input_shape)``: use the data average M = (1/n) Σᵢ ∇²_{x,θ} f(xᵢ) instead
        (Theorem 1's E_x with x ~ N(0, I): :func:`raysweep.nads.gaussian_samples`). Exclusive
        with ``x0``. Each product costs n example derivatives.
      method: ``"dense"`` — MᵀM (d × d) from 2d products in vmapped blocks of ``block``, then
        LAPACK ``eigh`` (exact to float32 rounding; memory d² float64); ``"svds"`` — SciPy
        ARPACK ``svds`` on a float64 ``LinearOperator`` (P, d) with jitted float32 products;
        ``"gram"`` — :func:`raysweep.eigen.top_eigenpairs` (block Lanczos) on the Gram handle;
        ``"auto"`` — ``dense`` if d ≤ ``dense_max_dim`` or if its 2d products are fewer than
        the ~20k + 100 of ``svds`` (k ≥ d/10: the NAD default's 512 of 1,024), else ``svds``.
      activation: optional hint, the model's activation name; ``"relu"`` warns at once.
      batch_size: points per compiled product (``samples`` only; the origin is one point).
      block: Gram columns per vmapped product (``dense``; memory ~ 3 × block × P float32);
        default ``min(64, 2**28 // (12 P))`` (64 for LeNet, 2 for ResNet18).
      tol: iterative solvers: relative residual target ‖MᵀMu − σ²u‖ ≤ tol · σ² (``svds`` gets
        ``sqrt(tol)`` as its singular-value tolerance).
      seed: start vector of the iterative solvers and of the vanishing probe.
      dense_max_dim: the ``auto`` threshold.

    Returns:
      :class:`NADs` — unpacks as ``(eigvals, directions)``: float64 ``(k,)`` descending and
      float32 ``(k, d)`` unit rows (largest-magnitude entry positive), with diagnostics.

    Raises:
      ValueError: ``k >= d`` or ``k < 1``; ``input_shape`` the model cannot take (the message
        shows the shape tried); ``x0``/``samples`` of the wrong shape or both given; unknown
        ``method``; a model that does not return ``(n, 1)``.
      TypeError: non-callable ``apply_fn``, non-int ``k``, non-floating parameters.

    Warns:
      UserWarning: ``activation="relu"``, or σ₁² ≤ :data:`VANISHING_RTOL` · max(1, ‖∇θ f̄‖²)
        (the mixed derivative vanishes, e.g. a ReLU network at the origin): use GeLU.
    """
    shape = check_input_shape(input_shape)
    dim = math.prod(shape)
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not supported; choose one of {list(METHODS)}.")
    hint = check_activation_hint(activation)
    batch_size = check_positive_int(batch_size, "batch_size")
    if block is not None:
        block = check_positive_int(block, "block")
    dense_max_dim = check_positive_int(dense_max_dim, "dense_max_dim")
    if not (isinstance(tol, int | float) and 0 < tol < 1):
        raise ValueError(f"tol must be a number in (0, 1), got {tol!r}.")
    points, where = check_points(x0, samples, shape)
    num_params = check_model(apply_fn, params, shape)
    k = check_k(k, dim, num_params)
    if block is None:
        block = int(min(64, max(1, _BLOCK_BYTES // (12 * num_params))))
    block = min(block, dim)
    warned = hint == "relu"
    if warned:
        _warn_relu("activation='relu': ")

    op = MixedDerivative(apply_fn, params, points, batch_size=batch_size)
    resolved = method if method != "auto" else auto_method(dim, k, dense_max_dim)
    if resolved == "dense":
        vals, vecs, resid = _solve_dense(op, k, block)
        exact_zero = vals[0] == 0.0 and not np.any(resid)
    else:
        # Probe M with a random unit vector first: ARPACK cannot start on a zero operator.
        probe = np.random.default_rng(seed).standard_normal(dim)
        mv = np.asarray(op.matvec(probe / np.linalg.norm(probe)), np.float64)
        exact_zero = not np.any(mv)
    if exact_zero:
        # M v = 0 for a random v: M is (almost surely) exactly 0; every unit vector is a right
        # singular vector with σ = 0; return the first k coordinate axes.
        resolved = "zero"
        vals, vecs, resid = np.zeros(k), np.eye(k, dim), np.zeros(k)
    elif resolved == "svds":
        vals, vecs, resid = _solve_svds(op, k, float(tol), int(seed))
    elif resolved == "gram":
        vals, vecs, resid = _solve_gram(op, k, float(tol), int(seed), block)
    scale = float(np.sum(np.square(np.asarray(op.output_gradient(), np.float64))))
    threshold = VANISHING_RTOL * max(1.0, scale)

    order = np.argsort(-vals, kind="stable")
    vals, vecs, resid = vals[order], vecs[order], resid[order]
    vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), np.finfo(float).tiny)
    directions = fix_signs(np.ascontiguousarray(vecs, dtype=np.float32))
    vanishing = bool(vals[0] <= threshold)
    if vanishing and not warned:
        _warn_relu(
            f"the mixed derivative at the {where} vanishes: sigma_1^2 = {vals[0]:.3g} <= "
            f"{threshold:.3g} ({VANISHING_RTOL:g} * max(1, |grad f|^2)); "
        )
    return NADs(
        np.maximum(vals.astype(np.float64), 0.0),
        directions,
        residuals=resid.astype(np.float64),
        method=resolved,
        products=int(op.products),
        input_shape=shape,
        where=where,
        num_points=int(op.num_points),
        scale=scale,
        vanishing=vanishing,
    )
