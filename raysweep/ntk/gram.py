"""The NTK engine: per-example features and tile kernels, compiled once per shape.

Θ(x1, x2) = J(x1) J(x2)ᵀ with J(x) = ∇θ f(θ, x) the per-example Jacobian of a single-logit
model ``apply_fn(params, x) -> (n, 1)``. Three methods compute the same matrix:

``contraction``
    Per-example Jacobian blocks ``(b, P)`` (``vmap`` of ``grad``, kept as per-leaf column
    groups, never copied into one array), then one GEMM per group and tile.
``structured``
    Dense weights in factored form (see :mod:`raysweep.ntk.structured`):
    ``Σ (A₁A₂ᵀ) ⊙ (D₁D₂ᵀ)`` plus the contraction of the remaining leaves, whose convolution
    kernels' per-example gradients are built from input patches and output cotangents.
    Exact for every model; much cheaper when dense weights dominate (MLP, LeNet5), and faster
    per-example Jacobians for convolutions (ResNet18).
``ntvp``
    Matrix-free NTK-vector products: per-example gradients of a few columns at a time, pushed
    through the rows with ``jvp``. Memory is a few parameter vectors, never ``(b, P)``.

``method="auto"`` estimates the per-tile cost and memory of each and picks the cheapest that
fits ``memory_budget_mb``.

Two ways through a Gram matrix:

- *whole*: when every example fits one block (the features of all inputs fit the budget),
  one compiled program computes the features and the whole matrix. For ``x2=None`` it
  computes only the upper triangle of sub-blocks of every product and mirrors it, which
  saves up to half of the flops, and the result is exactly symmetric.
- *tiles*: work is organised in *panels*: a row block's features are computed once and
  reused against every column block of the panel (:meth:`NTKEngine.panel`); blocks are
  padded to one fixed size so ``jax.jit`` compiles each function once. :class:`NTKEngine` is
  the tile-level entry point used by the distributed Gram; :mod:`raysweep.ntk.tiled` walks
  the tiles of a whole matrix (:func:`~raysweep.ntk.tiled.ntk_gram`).

Parameters are arguments of every compiled function, never constants baked into it: a new
parameter point of the same shapes reuses the compiled programs (``params=`` on
:meth:`NTKEngine.features` / :meth:`NTKEngine.panel` / :func:`gram_with_engine`;
:func:`ntk_gram` keeps a few engines per ``apply_fn`` and shape signature).

Models with C outputs per example (``apply_fn(params, x) -> (n, *S)``): every method
computes neural-tangents' kernel layout for ``trace_axes`` / ``diagonal_axes``
(:mod:`raysweep.ntk.multi_output`); tiles are ``(b1, b2, *tail)``, features hold ``C·P``
numbers per example and the budget counts them (and the ``C²`` entries of a tile).

Precision: matrix products run at ``precision="highest"`` by default, so GPUs do not drop to
TF32 (on CPU it compiles to the same float32 kernel as the default); results are float32
(float64 when the parameters and inputs are float64 with ``jax_enable_x64``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from raysweep.ntk.multi_output import (
    OutputSpec,
    block_for_tiles,
    columns_kernel,
    jacobian_features,
    ntvp_tile,
)
from raysweep.ntk.ntk_checks import check_method
from raysweep.ntk.structured import (
    ConvSite,
    DenseSite,
    columns_product,
    jacobian_columns,
    structured_feature_fn,
    structured_kernel,
)

_MIN_BLOCK = 8
_MAX_BLOCK = 4096
# Rows per sub-block of a symmetric whole-matrix product: smaller sub-blocks skip more of the
# lower triangle but run each GEMM less efficiently (measured on CPU; GPUs need larger ones).
_TRIANGLE_ROWS = {"cpu": 200}
_TRIANGLE_ROWS_OTHER = 1024
_MAX_TRIANGLE_BLOCKS = 8
# On CPU, per-example gradients of convolution-like leaves run faster as a few independent
# chunks of a whole-matrix program (XLA runs them side by side); used by the structured
# method when its contraction part is at least this wide (LeNet5: 3,077; the MLP: 201).
_CPU_FEATURE_CHUNKS = 4
_CHUNK_ROWS = 250
_CHUNK_MIN_WIDTH = 1024


def _num_params(params) -> int:
    return sum(int(np.size(leaf)) for leaf in jax.tree_util.tree_leaves(params))


def leaf_spec(leaf) -> tuple:
    return tuple(np.shape(leaf)), np.dtype(getattr(leaf, "dtype", np.asarray(leaf).dtype))


def triangle_blocks(n: int, platform: str | None = None) -> int:
    """Sub-blocks per side for the upper-triangle product of ``n`` examples with themselves."""
    platform = platform or jax.default_backend()
    rows = _TRIANGLE_ROWS.get(platform, _TRIANGLE_ROWS_OTHER)
    return int(max(1, min(_MAX_TRIANGLE_BLOCKS, n // rows)))


def symmetric_product(kernel, feats, num_blocks: int, swap=None) -> jax.Array:
    """``kernel(feats, feats)`` from its upper triangle of ``num_blocks²`` sub-blocks.

    ``feats`` is a pytree of arrays with the examples on the leading axis; ``kernel(f1, f2)``
    maps two such pytrees to their ``(n1, n2, ...)`` block, and ``swap`` maps a block of
    (x1, x2) to the block of (x2, x1) (default: the matrix transpose). Off-diagonal sub-blocks
    are computed once and mirrored, diagonal ones symmetrized as ``0.5 (T + swap(T))``: the
    result is exactly symmetric and costs ``(num_blocks + 1) / (2 num_blocks)`` of the full
    product.
    """
    swap = swap or (lambda t: t.T)
    n = jax.tree_util.tree_leaves(feats)[0].shape[0]
    bounds = [round(i * n / num_blocks) for i in range(num_blocks + 1)]
    parts = [
        jax.tree_util.tree_map(lambda a, b0=b0, b1=b1: a[b0:b1], feats)
        for b0, b1 in zip(bounds[:-1], bounds[1:], strict=True)
    ]
    tiles = {}
    for i in range(num_blocks):
        for j in range(i, num_blocks):
            t = kernel(parts[i], parts[j])
            tiles[i, j] = 0.5 * (t + swap(t)) if i == j else t
    if num_blocks == 1:
        return tiles[0, 0]
    rows = [
        jnp.concatenate(
            [tiles[i, j] if j >= i else swap(tiles[j, i]) for j in range(num_blocks)], axis=1
        )
        for i in range(num_blocks)
    ]
    return jnp.concatenate(rows, axis=0)


def _concat_features(parts: list):
    return jax.tree_util.tree_map(lambda *a: jnp.concatenate(a, axis=0), *parts)


def chunked_features(feat, leaves, x, num_chunks: int):
    """``feat(leaves, x)`` computed on ``num_chunks`` contiguous chunks, concatenated."""
    n = x.shape[0]
    if num_chunks <= 1:
        return feat(leaves, x)
    bounds = [round(i * n / num_chunks) for i in range(num_chunks + 1)]
    parts = [feat(leaves, x[b0:b1]) for b0, b1 in zip(bounds[:-1], bounds[1:], strict=True)]
    return _concat_features(parts)


class NTKEngine:
    """Compiled per-example features and tile kernels for one model and parameter shapes.

    The parameters are an argument of every compiled function: ``params`` given here is the
    default parameter point (and fixes the shapes); any other point with the same tree
    structure, shapes and dtypes can be passed as ``params=`` to :meth:`features`,
    :meth:`panel` and :func:`gram_with_engine` without recompiling.

    Args:
      apply_fn: ``apply_fn(params, x) -> (n, 1)``, or ``(n, *S)`` for C = prod(S) outputs.
      params: parameter pytree θ (differentiated; anything else is closed over by apply_fn).
      x_example: one example ``(...)`` or a batch ``(n, ...)`` giving the per-example shape.
      method: ``"auto"``, ``"contraction"``, ``"structured"`` or ``"ntvp"``.
      block_size: examples per block; ``None`` derives it from ``memory_budget_mb``.
      memory_budget_mb: bound on the feature blocks held at once (two blocks of a panel).
      precision: matmul precision inside the kernels (``"highest"`` = true float32).
      trace_axes, diagonal_axes: neural-tangents' kernel layout over the output axes
        ``(n, *S)`` (axis 0 must stay free); the default traces the last axis, so a
        single-logit model gives the ``(b1, b2)`` Gram matrix.

    Attributes:
      method: the resolved method. block_size: the resolved block size. num_params: P.
      outputs: the :class:`~raysweep.ntk.multi_output.OutputSpec` (S and the layout);
      ``outputs.tail`` is the shape of a tile after ``(b1, b2)``.
      params: the default parameter point (``None`` for engines shared by :func:`ntk_gram`).
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
        trace_axes=(-1,),
        diagonal_axes=(),
    ):
        check_method(method)
        if precision not in ("highest", "default"):
            raise ValueError(f"precision={precision!r}; choose 'highest' or 'default'.")
        x_example = np.asarray(x_example)
        self.example_shape = tuple(x_example.shape[1:]) if x_example.ndim > 1 else ()
        self.apply_fn = apply_fn
        self.precision = precision
        leaves, self._treedef = jax.tree_util.tree_flatten(params)
        self._leaf_specs = tuple(leaf_spec(leaf) for leaf in leaves)
        self.num_params = _num_params(params)
        self.dtype = self._leaf_specs[0][1]
        self.params = None
        self._default_leaves = None
        self.set_params(params)
        budget = float(memory_budget_mb) * 2**20
        self.memory_budget_bytes = budget
        itemsize = np.dtype(self.dtype).itemsize
        example = jnp.zeros(self.example_shape, x_example.dtype)
        self.outputs = _output_spec(apply_fn, params, example, trace_axes, diagonal_axes)
        outputs = self.outputs.size
        # several outputs: cotangents and Jacobian columns are C per example
        out_shape = self.outputs.shape if outputs > 1 else ()
        full_layout = self.outputs.entries > 1

        sites, rest_index, structured_fn = [], [], None
        if method in ("auto", "structured"):
            structured_fn, sites, rest_index = structured_feature_fn(
                apply_fn, params, example, out_shape, full_layout
            )
        dense = [s for s in sites if isinstance(s, DenseSite)]
        # per-example gradient columns: leaves through grad, convolution kernels from patches
        convs = [s for s in sites if isinstance(s, ConvSite)]
        factored = [s.factored_for(outputs, full_layout) for s in convs]
        widths = [s.width_for(outputs, full_layout) for s in convs]
        rest_params = outputs * sum(int(np.prod(self._leaf_specs[i][0])) for i in rest_index)
        rest_params += sum(w for w, f in zip(widths, factored, strict=True) if not f)
        structured_width = rest_params + sum(w for w, f in zip(widths, factored, strict=True) if f)
        structured_width += sum(s.in_features + outputs * s.out_features for s in dense)
        self.structured_sites = sites

        if method == "auto":

            def fits(width):  # two blocks of the smallest size
                return width * itemsize * 2 * _MIN_BLOCK <= budget

            # convolution kernels are cheaper from patches even at the full width
            cheaper = structured_width < self.num_params * outputs or bool(convs)
            if sites and cheaper and fits(structured_width):
                method = "structured"
            elif fits(self.num_params * outputs):
                method = "contraction"
            else:
                method = "ntvp"
        self.method = method

        widths = {"contraction": self.num_params * outputs, "structured": structured_width}
        width = widths.get(method)
        if width is None:  # ntvp: rows are inputs; columns go through in chunks
            budget_block = 256
        else:
            budget_block = int(budget // (2 * max(width, 1) * itemsize))
        # a tile holds up to C² entries per pair of examples
        budget_block = min(budget_block, block_for_tiles(self.outputs, budget, itemsize))
        budget_block = max(_MIN_BLOCK, min(budget_block, _MAX_BLOCK))
        self._budget_block_size = budget_block if block_size is None else int(block_size)
        if block_size is None:
            block_size = budget_block
        if block_size <= 0:
            raise ValueError(f"block_size must be positive, got {block_size}.")
        self.block_size = int(block_size)
        self.feature_width = width
        # ntvp: C per-example gradients of `chunk` columns are held at once
        per_column = 4 * self.num_params * itemsize * outputs
        self._ntvp_chunk = max(1, min(64, int(budget // per_column)))

        prec = precision
        spec, treedef = self.outputs, self._treedef
        if outputs > 1 and method == "contraction":

            def feat(leaves, x_block):
                return jacobian_features(apply_fn, treedef, leaves, x_block, spec)

            def kernel(f1, f2):
                return columns_kernel(f1, f2, spec, precision=prec)

        elif method == "structured":
            feat = structured_fn
            layout = spec if outputs > 1 else None

            def kernel(f1, f2):
                return structured_kernel(f1, f2, prec, structured_fn.gathers, layout)

        elif method == "contraction":
            feat = self._contraction_features

            def kernel(f1, f2):
                return columns_product(f1, f2, precision=prec)

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
        self._whole_self = self._whole_cross = None
        chunky = method == "structured" and rest_params >= _CHUNK_MIN_WIDTH
        if feat is not None:

            def chunks(n):
                if not chunky or jax.default_backend() != "cpu":
                    return 1
                return max(1, min(_CPU_FEATURE_CHUNKS, n // _CHUNK_ROWS))

            def whole_self(leaves, x):
                f = chunked_features(feat, leaves, x, chunks(x.shape[0]))
                swap = spec.swap if outputs > 1 else None
                return symmetric_product(kernel, f, triangle_blocks(x.shape[0]), swap)

            def whole_cross(leaves, x1, x2):
                f1 = chunked_features(feat, leaves, x1, chunks(x1.shape[0]))
                f2 = chunked_features(feat, leaves, x2, chunks(x2.shape[0]))
                return kernel(f1, f2)

            self._whole_self = jax.jit(with_precision(whole_self))
            self._whole_cross = jax.jit(with_precision(whole_cross))

    # ----------------------------------------------------------------- parameters

    def set_params(self, params) -> None:
        """Replace the default parameter point (same structure, shapes and dtypes)."""
        self._default_leaves = None if params is None else self.leaves(params)
        self.params = params

    def leaves(self, params=None) -> list:
        """Validated parameter leaves on the device (``None``: the default point)."""
        if params is None:
            if self._default_leaves is None:
                raise ValueError("this engine holds no default parameters; pass params=.")
            return self._default_leaves
        leaves, treedef = jax.tree_util.tree_flatten(params)
        if treedef != self._treedef:
            raise ValueError(
                f"params has structure {treedef}, but the engine was built for {self._treedef}."
            )
        specs = tuple(leaf_spec(leaf) for leaf in leaves)
        if specs != self._leaf_specs:
            pairs = zip(specs, self._leaf_specs, strict=True)
            bad = next(i for i, (a, b) in enumerate(pairs) if a != b)
            raise ValueError(
                f"parameter leaf {bad} has shape/dtype {specs[bad]}, but the engine was built "
                f"for {self._leaf_specs[bad]}; build a new engine for other shapes."
            )
        return jax.device_put(leaves)

    # ----------------------------------------------------------------- feature functions

    def _contraction_features(self, leaves, x_block):
        apply_fn, treedef = self.apply_fn, self._treedef

        def scalar(params, xi):
            return jnp.reshape(apply_fn(params, xi[None]), ())

        params = jax.tree_util.tree_unflatten(treedef, leaves)

        def row(xi):
            return jax.tree_util.tree_leaves(jax.grad(scalar)(params, xi))

        return jacobian_columns(jax.vmap(row)(x_block))

    def _ntvp_kernel(self, leaves, x_rows, x_cols):
        apply_fn = self.apply_fn
        if self.outputs.size > 1:
            args = (apply_fn, self._treedef, leaves, x_rows, x_cols)
            return ntvp_tile(*args, self.outputs, self._ntvp_chunk)
        params = jax.tree_util.tree_unflatten(self._treedef, leaves)

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
        """Set ``block_size`` to split ``n`` examples into equal blocks (less padding).

        Starts from the size the engine was built with (``block_size`` or the budget's), so
        calling it again for another ``n`` gives the same result as a fresh engine. Uses at
        least ``min_blocks`` blocks while blocks stay ``>= min_size`` examples (a symmetric
        Gram computes only the upper triangle of tiles, so more blocks skip more of the lower
        triangle). Sizes are rounded up to a multiple of 8. Returns the new size.
        """
        base = self._budget_block_size
        num_blocks = max(math.ceil(n / base), min(min_blocks, n // min_size))
        balanced = math.ceil(math.ceil(n / max(num_blocks, 1)) / 8) * 8
        self.block_size = int(max(1, min(base, balanced)))
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

    def features(self, x_block, params=None):
        """Per-example features of one block (padded to ``block_size``) and its true length.

        ``params``: the parameter point (default: the engine's); for ntvp the "features" are
        the inputs and the parameters travel with them.
        """
        return self._block_features(x_block, self.leaves(params))

    def _block_features(self, x_block, leaves):
        xb, n = self._pad(x_block)
        if self._features is None:
            return (leaves, xb), n
        return self._features(leaves, xb), n

    def tile(self, f_rows, f_cols) -> jax.Array:
        """Θ between two feature blocks from :meth:`features` (sliced to the true lengths).

        Shape ``(n1, n2, *outputs.tail)``: ``(n1, n2)`` for one output and the default layout.
        """
        (f1, n1), (f2, n2) = f_rows, f_cols
        if self._features is None:  # ntvp: (leaves, x) pairs
            return self._with_tail(self._kernel(f1[0], f1[1], f2[1])[:n1, :n2])
        return self._with_tail(self._kernel(f1, f2)[:n1, :n2])

    def _with_tail(self, t):
        """One-output tiles in the requested layout (a reshape: every layout of C = 1 is)."""
        if self.outputs.size == 1 and t.ndim != 2 + len(self.outputs.tail):
            return t.reshape(*t.shape[:2], *self.outputs.tail)
        return t

    def panel(self, x_rows, x_col_blocks: Sequence, params=None) -> Iterator[jax.Array]:
        """Tiles Θ(x_rows, x_cols) for each column block; row features computed once."""
        leaves = self.leaves(params)
        f_rows = self._block_features(x_rows, leaves)
        for x_cols in x_col_blocks:
            yield self.tile(f_rows, self._block_features(x_cols, leaves))

    def can_do_whole(self, n1: int, n2: int | None = None) -> bool:
        """Whether :meth:`whole` applies: every example in one block (not for ntvp)."""
        n = max(n1, n2 or 0)
        return self._whole_self is not None and n <= self.block_size

    def whole(self, x1, x2=None, params=None) -> jax.Array:
        """Θ(x1, x2) in one compiled program (``x2=None``: upper triangle, mirrored).

        Compiled once per input shape; requires :meth:`can_do_whole`.
        """
        if not self.can_do_whole(len(x1), None if x2 is None else len(x2)):
            raise ValueError(
                f"whole(): {len(x1)} (and {0 if x2 is None else len(x2)}) examples exceed "
                f"block_size={self.block_size}, or method={self.method!r} has no features."
            )
        leaves = self.leaves(params)
        if x2 is None:
            return self._with_tail(self._whole_self(leaves, jnp.asarray(x1)))
        return self._with_tail(self._whole_cross(leaves, jnp.asarray(x1), jnp.asarray(x2)))


def _output_spec(apply_fn, params, example, trace_axes, diagonal_axes) -> OutputSpec:
    """The output layout of ``apply_fn`` on one example (``(1, *S)`` expected)."""
    try:
        out = jax.eval_shape(apply_fn, params, example[None])
    except Exception as err:  # noqa: BLE001 - re-raised with context
        raise ValueError(
            f"apply_fn(params, x) failed on one example of shape {example.shape}: {err}"
        ) from err
    shape = getattr(out, "shape", None)
    if shape is None or len(shape) < 1 or shape[0] != 1:
        raise ValueError(
            "apply_fn must return one array with the examples on axis 0, (n, *S); on one "
            f"example it returned {shape if shape is not None else type(out).__name__}."
        )
    return OutputSpec.build(shape, trace_axes, diagonal_axes)
