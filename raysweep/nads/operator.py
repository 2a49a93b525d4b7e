"""The mixed derivative M = ∇²_{x,θ} f as a matrix-free operator (never formed).

For a single-output model ``f(θ, x)`` with ``P`` parameters and inputs of ``d = prod(input_shape)``
entries, and points ``x_1 … x_n`` (the origin alone by default), the operator is the average

    M = (1/n) Σᵢ ∇²_{x,θ} f(θ, xᵢ)   ∈ R^{P × d},    M[p, j] = (1/n) Σᵢ ∂² f(θ, xᵢ) / ∂θ_p ∂x_j.

It is linear in the second derivative, so every product averages over the points (Theorem 1 of
the paper uses E_x[∇²_{x,θ} f(x)] for x ~ N(0, I); Appendix C.2 uses the origin alone):

* ``matvec``:  M v = ∇θ [ (1/n) Σᵢ ∇ₓ f(θ, xᵢ) · v ]  (v ∈ R^d) — a forward-mode derivative of
  the input along the tangent ``v`` (the same tangent for every point), inside the parameter
  gradient: ``jax.jvp`` over x of ``jax.grad`` over θ.
* ``rmatvec``: Mᵀ w = (1/n) Σᵢ ∇ₓ [ ∇θ f(θ, xᵢ) · w ]  (w ∈ R^P) — ``jax.jvp`` over θ along
  ``w`` of ``jax.grad`` over x, summed over the points.
* ``gram_matmat``: (MᵀM) V for ``V`` of shape ``(d, b)``: ``vmap`` over the columns of
  ``rmatvec ∘ matvec``; the d × d Gram whose top eigenvectors are the NADs.

Conventions: parameters are flattened with :func:`jax.flatten_util.ravel_pytree` (the order of
``jax.tree_util.tree_leaves``); vectors are float32 JAX arrays inside, and the SciPy view
(:meth:`MixedDerivative.linear_operator`) converts float64 ↔ float32 at its boundary. Points are
processed in batches of ``batch_size`` (the last batch zero-padded; a padded point gets weight 0).
Every product is jit-compiled once per (apply_fn, parameter structure, batch shape) and shared
by all operators of that model (``_products``), so the origin, another x0 and a data average of
one model reuse the compiled code.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

__all__ = ["GramHandle", "MixedDerivative"]


class MixedDerivative:
    """M = (1/n) Σᵢ ∇²_{x,θ} f(θ, xᵢ) as matvec / rmatvec / Gram products.

    Args:
      apply_fn: ``apply_fn(params, x) -> (m, 1)`` for ``x`` of shape ``(m, *input_shape)``; each
        output may depend on its own example only (true for every raysweep model: batch norm
        runs in inference mode).
      params: the parameter pytree θ (float32 leaves).
      points: ``(n, *input_shape)`` float array, the xᵢ (already validated by the caller).
      batch_size: points per compiled product (memory ~ batch_size activations of the model).

    Attributes:
      shape: ``(P, d)``. num_params: P. dim: d. input_shape: per-example shape.
      num_points: n. products: number of ``matvec`` + ``rmatvec`` applications so far (a Gram
        column counts 2).
    """

    def __init__(self, apply_fn: Callable, params: Any, points: Any, *, batch_size: int = 64):
        flat, unravel = ravel_pytree(params)
        self._flat_params = jnp.asarray(flat, jnp.float32)
        self._unravel = unravel
        points = np.asarray(points, dtype=np.float32)
        self.input_shape = tuple(int(s) for s in points.shape[1:])
        self.num_points = int(points.shape[0])
        self.num_params = int(flat.size)
        self.dim = int(math.prod(self.input_shape))
        self.shape = (self.num_params, self.dim)
        self.dtype = np.dtype(np.float32)
        self.products = 0
        self._grad: jax.Array | None = None
        batch = int(max(1, min(batch_size, self.num_points)))
        num_batches = -(-self.num_points // batch)
        pad = num_batches * batch - self.num_points
        padded = np.concatenate([points, np.zeros((pad, *self.input_shape), np.float32)])
        weights = np.concatenate([np.ones(self.num_points), np.zeros(pad)]) / self.num_points
        self._batches = jnp.asarray(padded.reshape(num_batches, batch, *self.input_shape))
        self._weights = jnp.asarray(weights.reshape(num_batches, batch), jnp.float32)
        self._matvec, self._rmatvec, self._gram = _products(apply_fn, params)

    # ------------------------------------------------------------------ products

    def matvec(self, v: Any) -> jax.Array:
        """M v: ``v`` of shape ``(d,)`` (or ``input_shape``) -> float32 ``(P,)`` (flat θ order)."""
        v = jnp.asarray(v, jnp.float32).reshape(self.dim)
        self.products += 1
        mv, grad = self._matvec(self._flat_params, self._batches, self._weights, v)
        self._grad = grad
        return mv

    def rmatvec(self, w: Any) -> jax.Array:
        """Mᵀ w: ``w`` flat ``(P,)`` or a pytree like ``params`` -> float32 ``(d,)``."""
        if not hasattr(w, "shape") or tuple(np.shape(w)) != (self.num_params,):
            w = ravel_pytree(w)[0]
        w = jnp.asarray(w, jnp.float32).reshape(self.num_params)
        self.products += 1
        return self._rmatvec(self._flat_params, self._batches, self._weights, w)

    def gram_matmat(self, vs: Any) -> jax.Array:
        """(MᵀM) V: ``V`` of shape ``(d, b)`` -> float32 ``(d, b)``."""
        vs = jnp.asarray(vs, jnp.float32)
        if vs.ndim == 1:
            return self.gram_matmat(vs[:, None])[:, 0]
        self.products += 2 * int(vs.shape[1])
        out, grad = self._gram(self._flat_params, self._batches, self._weights, vs)
        self._grad = grad
        return out

    def output_gradient(self) -> jax.Array:
        """∇θ (1/n) Σᵢ f(θ, xᵢ), float32 ``(P,)``: the gradient of the mean output.

        A by-product of every ``matvec``/``gram_matmat`` (the primal of their jvp), kept from
        the latest one; computed with one ``matvec`` of a zero vector if there was none yet.
        Its squared norm is the NTK value Θ(x₀, x₀) when there is one point; :func:`nads` uses
        it as the scale below which the mixed derivative counts as vanishing.
        """
        if self._grad is None:
            self.matvec(jnp.zeros((self.dim,), jnp.float32))
            self.products -= 1
        return self._grad

    def params_tree(self, flat: Any) -> Any:
        """A flat ``(P,)`` vector (e.g. ``matvec``'s output) as a pytree shaped like ``params``."""
        return self._unravel(jnp.asarray(flat, jnp.float32))

    # ------------------------------------------------------------------ views

    def dense_gram(self, *, block: int = 32) -> np.ndarray:
        """MᵀM as a float64 ``(d, d)`` array, built from ``d`` Gram columns in blocks of ``block``.

        Costs ``2d`` derivative products and ``d²`` float64 of memory; M itself (P × d) is never
        held. The result is symmetrized, ``(G + Gᵀ)/2``.
        """
        block = int(max(1, min(block, self.dim)))
        gram = np.empty((self.dim, self.dim), dtype=np.float64)
        eye = np.eye(self.dim, dtype=np.float32)
        for c0 in range(0, self.dim, block):
            cols = eye[:, c0 : c0 + block]
            width = cols.shape[1]
            if width < block:  # one compiled width
                cols = np.pad(cols, ((0, 0), (0, block - width)))
            out = np.asarray(self.gram_matmat(cols), dtype=np.float64)
            gram[:, c0 : c0 + width] = out[:, :width]
        return (gram + gram.T) / 2

    def linear_operator(self):
        """A float64 :class:`scipy.sparse.linalg.LinearOperator` of shape ``(P, d)`` for ``svds``.

        ``matvec``/``rmatvec`` convert float64 → float32, apply the compiled product and return
        float64; ``matmat``/``rmatmat`` loop over columns.
        """
        from scipy.sparse.linalg import LinearOperator

        def mv(v):
            return np.asarray(self.matvec(np.ravel(v)), dtype=np.float64)

        def rmv(w):
            return np.asarray(self.rmatvec(np.ravel(w)), dtype=np.float64)

        return LinearOperator(self.shape, matvec=mv, rmatvec=rmv, dtype=np.float64)

    def gram_handle(self, block: int = 32) -> GramHandle:
        """MᵀM as an operator handle for :func:`raysweep.eigen.top_eigenpairs`."""
        return GramHandle(self, block)


# ---------------------------------------------------------------------- compiled products


def _build_products(apply_fn: Callable, unravel: Callable) -> tuple[Callable, ...]:
    """Jitted ``(matvec, rmatvec, gram_columns)`` taking ``(theta, batches, weights, vec)``.

    ``theta`` is flat ``(P,)``, ``batches`` ``(B, b, *input_shape)``, ``weights`` ``(B, b)``
    (1/n per real point, 0 per padding point); shapes are read at trace time, so one build
    serves any number of points.
    """

    def weighted_output(theta, x, weights):
        """Σᵢ wᵢ f(θ, xᵢ) for one batch (a scalar)."""
        return jnp.sum(apply_fn(unravel(theta), x)[:, 0] * weights)

    grad_theta = jax.grad(weighted_output, argnums=0)
    grad_x = jax.grad(weighted_output, argnums=1)

    def matvec(theta, batches, weights, v):
        """(M v, ∇θ f̄): jvp over x of grad over θ; the gradient is the jvp's primal (free)."""
        shape = batches.shape[2:]

        def body(acc, item):
            x, wts = item
            tangent = jnp.broadcast_to(v.reshape(shape), x.shape)  # same v for every point
            grad, mv = jax.jvp(lambda xx: grad_theta(theta, xx, wts), (x,), (tangent,))
            return (acc[0] + mv, acc[1] + grad), None

        zeros = jnp.zeros_like(theta)
        return jax.lax.scan(body, (zeros, zeros), (batches, weights))[0]

    def rmatvec(theta, batches, weights, w):
        """Mᵀ w: jvp over θ along w of grad over x, summed over the points."""

        def body(acc, item):
            x, wts = item
            gx = jax.jvp(lambda th: grad_x(th, x, wts), (theta,), (w,))[1]
            return acc + jnp.sum(gx, axis=0).reshape(-1), None

        init = jnp.zeros((math.prod(batches.shape[2:]),), theta.dtype)
        return jax.lax.scan(body, init, (batches, weights))[0]

    def gram_columns(theta, batches, weights, vs):
        """((MᵀM) V, ∇θ f̄) for V of shape (d, b), one vmapped column per tangent.

        The output gradient does not depend on the column, so ``vmap`` leaves it unbatched
        (``out_axes=None``): it is computed once.
        """

        def column(v):
            mv, grad = matvec(theta, batches, weights, v)
            return rmatvec(theta, batches, weights, mv), grad

        return jax.vmap(column, in_axes=1, out_axes=(1, None))(vs)

    return jax.jit(matvec), jax.jit(rmatvec), jax.jit(gram_columns)


@functools.lru_cache(maxsize=8)
def _cached_products(apply_fn: Callable, treedef: Any, leaves: tuple) -> tuple[Callable, ...]:
    template = jax.tree_util.tree_unflatten(
        treedef, [jax.ShapeDtypeStruct(shape, dtype) for shape, dtype in leaves]
    )
    unravel = ravel_pytree(jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), template))[
        1
    ]
    return _build_products(apply_fn, unravel)


def _products(apply_fn: Callable, params: Any) -> tuple[Callable, ...]:
    """The compiled products of ``apply_fn``, shared by operators of the same model.

    Cached on ``(apply_fn, parameter structure)`` (the 8 most recent), so the origin, another
    x0 and the data average of one model compile once per batch shape. The cache holds a
    reference to ``apply_fn``; unhashable ``apply_fn`` objects are built uncached.
    """
    leaves, treedef = jax.tree_util.tree_flatten(params)
    key = tuple((tuple(np.shape(leaf)), np.dtype(leaf.dtype).name) for leaf in leaves)
    try:
        return _cached_products(apply_fn, treedef, key)
    except TypeError:
        return _build_products(apply_fn, ravel_pytree(params)[1])


class GramHandle:
    """The d × d Gram MᵀM behind ``matmat`` (the handle protocol of :mod:`raysweep.eigen`).

    Columns go to the compiled product in chunks of exactly ``block`` (the last one zero-padded),
    so a solver that varies its block width does not trigger recompilation.

    Attributes:
      shape: ``(d, d)``. dtype: float32. block: columns per compiled product.
    """

    def __init__(self, operator: MixedDerivative, block: int = 32):
        self.operator = operator
        self.shape = (operator.dim, operator.dim)
        self.dtype = np.dtype(np.float32)
        self.block = int(max(1, block))

    def matmat(self, vs: np.ndarray) -> np.ndarray:
        """(MᵀM) V for ``V`` of shape ``(d, b)``, as a float32 numpy array."""
        vs = np.asarray(vs, dtype=np.float32)
        single = vs.ndim == 1
        vs = vs[:, None] if single else vs
        out = np.empty(vs.shape, np.float32)
        for c0 in range(0, vs.shape[1], self.block):
            cols = vs[:, c0 : c0 + self.block]
            width = cols.shape[1]
            if width < self.block:
                cols = np.pad(cols, ((0, 0), (0, self.block - width)))
            out[:, c0 : c0 + width] = np.asarray(self.operator.gram_matmat(cols))[:, :width]
        return out[:, 0] if single else out

    def to_numpy(self) -> np.ndarray:
        """The dense Gram (``2d`` products); the eigen solver's ``auto`` may use it."""
        return self.operator.dense_gram(block=self.block).astype(np.float32)
