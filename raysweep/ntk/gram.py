"""Empirical NTK Gram matrices, tile by tile.

Θ(x1, x2) = J(x1) J(x2)ᵀ with J(x) = ∇θ f(θ, x) the per-example Jacobian of a single-logit
model ``apply_fn(params, x) -> (n, 1)``. Three methods compute the same matrix:

``contraction``
    Per-example Jacobian blocks ``(b, P)`` (``vmap`` of ``grad``), then one GEMM per tile.
``structured``
    Dense weights in factored form (see :mod:`raysweep.ntk.structured`):
    ``Σ (A₁A₂ᵀ) ⊙ (D₁D₂ᵀ)`` plus the contraction of the remaining leaves. Exact for every
    model; much cheaper when dense weights dominate (MLP, LeNet5).
``ntvp``
    Matrix-free NTK-vector products: per-example gradients of a few columns at a time, pushed
    through the rows with ``jvp``. Memory is a few parameter vectors, never ``(b, P)``.

``method="auto"`` estimates the per-tile cost and memory of each and picks the cheapest that
fits ``memory_budget_mb``.

Work is organised in *panels*: a row block's features are computed once and reused against
every column block of the panel (:meth:`NTKEngine.panel`); blocks are padded to one fixed
size so ``jax.jit`` compiles each function once. :class:`NTKEngine` is the tile-level entry
point used by the distributed Gram.

Precision: matrix products run at ``precision="highest"`` by default, so GPUs do not drop to
TF32; results are float32 (float64 when the parameters and inputs are float64 with
``jax_enable_x64``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from raysweep.ntk.checks import check_inputs, check_method, check_params, check_single_output
from raysweep.ntk.structured import structured_feature_fn, structured_kernel

_MIN_BLOCK = 8


def _num_params(params) -> int:
    return sum(int(np.size(leaf)) for leaf in jax.tree_util.tree_leaves(params))


class NTKEngine:
    """Compiled per-example features and tile kernels for one model and parameter point.

    Args:
      apply_fn: ``apply_fn(params, x) -> (n, 1)``.
      params: parameter pytree θ (differentiated; anything else is closed over by apply_fn).
      x_example: one example ``(...)`` or a batch ``(n, ...)`` giving the per-example shape.
      method: ``"auto"``, ``"contraction"``, ``"structured"`` or ``"ntvp"``.
      block_size: examples per block; ``None`` derives it from ``memory_budget_mb``.
      memory_budget_mb: bound on the feature blocks held at once (two blocks of a panel).
      precision: matmul precision inside the kernels (``"highest"`` = true float32).

    Attributes:
      method: the resolved method. block_size: the resolved block size. num_params: P.
    """

    def __init__(
        self,
        apply_fn,
        params,
        x_example,
        *,
        method: str = "auto",
        block_size: int | None = None,
        memory_budget_mb: float = 2048,
        precision: str = "highest",
    ):
        check_method(method)
        if precision not in ("highest", "default"):
            raise ValueError(f"precision={precision!r}; choose 'highest' or 'default'.")
        x_example = np.asarray(x_example)
        self.example_shape = tuple(x_example.shape[1:]) if x_example.ndim > 1 else ()
        self.apply_fn = apply_fn
        self.params = params
        self.precision = precision
        self.num_params = _num_params(params)
        self.dtype = jax.tree_util.tree_leaves(params)[0].dtype
        budget = float(memory_budget_mb) * 2**20
        self.memory_budget_bytes = budget
        itemsize = np.dtype(self.dtype).itemsize
        example = jnp.zeros(self.example_shape, x_example.dtype)

        sites, rest_index, structured_fn = [], [], None
        if method in ("auto", "structured"):
            structured_fn, sites, rest_index = structured_feature_fn(apply_fn, params, example)
        leaves = jax.tree_util.tree_leaves(params)
        rest_params = sum(int(np.size(leaves[i])) for i in rest_index)
        structured_width = rest_params + sum(s.in_features + s.out_features for s in sites)
        self.structured_sites = sites

        if method == "auto":
            if sites and structured_width < self.num_params:
                method = "structured"
            elif self.num_params * itemsize * 2 * _MIN_BLOCK <= budget:
                method = "contraction"
            else:
                method = "ntvp"
        self.method = method

        width = {"contraction": self.num_params, "structured": structured_width}.get(method)
        if block_size is None:
            if width is None:  # ntvp: rows are inputs; columns go through in chunks
                block_size = 256
            else:
                block_size = int(budget // (2 * max(width, 1) * itemsize))
                block_size = max(_MIN_BLOCK, min(block_size, 4096))
        if block_size <= 0:
            raise ValueError(f"block_size must be positive, got {block_size}.")
        self.block_size = int(block_size)
        self.feature_width = width
        # ntvp: per-example gradients of `chunk` columns are held at once
        self._ntvp_chunk = max(1, min(64, int(budget // (4 * self.num_params * itemsize))))

        prec = precision
        if method == "structured":
            feat = structured_fn

            def kernel(f1, f2):
                return structured_kernel(f1, f2, precision=prec)

        elif method == "contraction":
            feat = self._contraction_features

            def kernel(f1, f2):
                return jnp.matmul(f1, f2.T, precision=prec)

        else:
            feat = None
            kernel = self._ntvp_kernel

        def with_precision(fn):
            def wrapped(*args):
                with jax.default_matmul_precision("float32" if prec == "highest" else "default"):
                    return fn(*args)

            return wrapped

        self._features = jax.jit(with_precision(feat)) if feat is not None else None
        self._kernel = jax.jit(with_precision(kernel))

    # ----------------------------------------------------------------- feature functions

    def _contraction_features(self, x_block):
        apply_fn = self.apply_fn

        def scalar(params, xi):
            return jnp.reshape(apply_fn(params, xi[None]), ())

        def row(xi):
            return ravel_pytree(jax.grad(scalar)(self.params, xi))[0]

        return jax.vmap(row)(x_block)

    def _ntvp_kernel(self, x_rows, x_cols):
        apply_fn, params = self.apply_fn, self.params

        def scalar(p, xi):
            return jnp.reshape(apply_fn(p, xi[None]), ())

        def column(xj):
            g = jax.grad(scalar)(params, xj)
            _, tangent_out = jax.jvp(lambda p: apply_fn(p, x_rows)[:, 0], (params,), (g,))
            return tangent_out

        n_cols = x_cols.shape[0]
        chunk = min(self._ntvp_chunk, n_cols)
        pad = (-n_cols) % chunk
        xc = jnp.concatenate([x_cols, jnp.zeros((pad, *x_cols.shape[1:]), x_cols.dtype)])
        xc = xc.reshape(-1, chunk, *x_cols.shape[1:])
        cols = jax.lax.map(jax.vmap(column), xc)  # (n_chunks, chunk, n_rows)
        return cols.reshape(-1, x_rows.shape[0])[:n_cols].T

    # ----------------------------------------------------------------- blocks and tiles

    def fit_block_size(self, n: int, *, min_blocks: int = 1, min_size: int = 256) -> int:
        """Shrink ``block_size`` to split ``n`` examples into equal blocks (less padding).

        Uses at least ``min_blocks`` blocks while blocks stay ``>= min_size`` examples (a
        symmetric Gram computes only the upper triangle of tiles, so more blocks skip more of
        the lower triangle). Sizes are rounded up to a multiple of 8. Returns the new size.
        """
        num_blocks = max(math.ceil(n / self.block_size), min(min_blocks, n // min_size))
        balanced = math.ceil(math.ceil(n / max(num_blocks, 1)) / 8) * 8
        self.block_size = int(max(1, min(self.block_size, balanced)))
        return self.block_size

    def fits_in_budget(self, n: int) -> bool:
        """Whether the features of ``n`` examples fit the memory budget at once."""
        if self.feature_width is None:
            return False
        itemsize = np.dtype(self.dtype).itemsize
        return n * self.feature_width * itemsize <= self.memory_budget_bytes

    def _pad(self, x_block) -> tuple[jax.Array, int]:
        n = x_block.shape[0]
        if n > self.block_size:
            raise ValueError(f"block of {n} examples exceeds block_size={self.block_size}.")
        pad = self.block_size - n
        x_block = jnp.asarray(x_block)
        if pad:
            x_block = jnp.concatenate(
                [x_block, jnp.zeros((pad, *x_block.shape[1:]), x_block.dtype)]
            )
        return x_block, n

    def features(self, x_block):
        """Per-example features of one block (padded to ``block_size``) and its true length."""
        xb, n = self._pad(x_block)
        if self._features is None:
            return xb, n
        return self._features(xb), n

    def tile(self, f_rows, f_cols) -> jax.Array:
        """Θ between two feature blocks from :meth:`features` (sliced to the true lengths)."""
        (f1, n1), (f2, n2) = f_rows, f_cols
        return self._kernel(f1, f2)[:n1, :n2]

    def panel(self, x_rows, x_col_blocks: Sequence) -> Iterator[jax.Array]:
        """Tiles Θ(x_rows, x_cols) for each column block; row features computed once."""
        f_rows = self.features(x_rows)
        for x_cols in x_col_blocks:
            yield self.tile(f_rows, self.features(x_cols))


def block_slices(n: int, block_size: int) -> list[slice]:
    """Contiguous slices of ``range(n)`` of length ``block_size`` (the last may be shorter)."""
    return [slice(i, min(i + block_size, n)) for i in range(0, n, block_size)]


def ntk_gram(
    apply_fn,
    params,
    x1,
    x2=None,
    *,
    method: str = "auto",
    batch_size: int | None = None,
    memory_budget_mb: float = 2048,
    precision: str = "highest",
) -> np.ndarray:
    """Empirical NTK Gram matrix Θ(x1, x2) = ∇θf(x1) · ∇θf(x2)ᵀ of a single-logit model.

    Args:
      apply_fn: ``apply_fn(params, x) -> (n, 1)`` (inference mode; batch-norm statistics are
        whatever apply_fn closes over, i.e. frozen).
      params: any pytree of floating-point arrays; the Jacobian is taken with respect to all
        of its leaves.
      x1: ``(n1, ...)`` inputs (NHWC for images).
      x2: ``(n2, ...)`` inputs with the same per-example shape, or ``None`` for x1 with itself
        (then only the upper triangle of tiles is computed and mirrored; the result is exactly
        symmetric).
      method: ``"auto"``, ``"contraction"``, ``"structured"`` or ``"ntvp"`` (module docstring).
      batch_size: examples per tile side; ``None`` derives it from ``memory_budget_mb``.
      memory_budget_mb: bound on the per-example feature blocks held at once; the N x P
        Jacobian is never formed.
      precision: ``"highest"`` (float32 matmuls, the default) or ``"default"``.

    Returns:
      ``numpy.ndarray`` of shape ``(n1, n2)``, the dtype of the parameters (float32 by
      default). Row i, column j is Θ(x1[i], x2[j]).
    """
    check_method(method)
    check_inputs(x1, x2)
    check_params(params)
    check_single_output(apply_fn, params, x1)
    x1 = np.asarray(x1)
    symmetric = x2 is None
    x2 = x1 if symmetric else np.asarray(x2)
    engine = NTKEngine(
        apply_fn,
        params,
        x1[:1],
        method=method,
        block_size=batch_size,
        memory_budget_mb=memory_budget_mb,
        precision=precision,
    )
    if batch_size is None:
        engine.fit_block_size(max(len(x1), len(x2)), min_blocks=4 if symmetric else 1)
    return gram_with_engine(engine, x1, None if symmetric else x2)


def gram_with_engine(engine: NTKEngine, x1, x2=None) -> np.ndarray:
    """Θ(x1, x2) with an existing engine (compiled functions are reused)."""
    symmetric = x2 is None
    x2 = x1 if symmetric else x2
    n1, n2 = x1.shape[0], x2.shape[0]
    rows = block_slices(n1, engine.block_size)
    cols = block_slices(n2, engine.block_size)
    out = np.empty((n1, n2), dtype=np.dtype(engine.dtype))
    # Keep every column block's features when they all fit the budget (each block's features
    # are then computed once); otherwise stream them, once per row panel.
    cache_cols = engine.fits_in_budget(len(cols) * engine.block_size)
    col_cache: dict[int, tuple] = {}
    for bi, rs in enumerate(rows):
        f_rows = col_cache.get(bi) if symmetric else None
        if f_rows is None:
            f_rows = engine.features(x1[rs])
        for bj, cs in enumerate(cols):
            if symmetric and bj < bi:
                continue
            if symmetric and bj == bi:
                f_cols = f_rows
            elif cache_cols and bj in col_cache:
                f_cols = col_cache[bj]
            else:
                f_cols = engine.features(x2[cs])
                if cache_cols:
                    col_cache[bj] = f_cols
            tile = np.asarray(engine.tile(f_rows, f_cols))
            if symmetric and bj == bi:
                tile = 0.5 * (tile + tile.T)
            out[rs, cs] = tile
            if symmetric and bj != bi:
                out[cs, rs] = tile.T
    return out
