"""The engine's contraction and NTK-vector-product methods for models with C outputs.

A model ``apply_fn(params, x) -> (n, *S)`` has ``C = prod(S)`` outputs per example (S =
``(10,)`` for ten logits). Its kernel between two blocks follows neural-tangents' layout
(:mod:`raysweep.ntk.kernel_axes`): ``(b1, b2, ...)`` with the traced axes of S averaged,
diagonal axes once and the others interleaved, e.g. ``(b1, b2, C, C')`` for
``trace_axes=()``. The batch axis (axis 0) is never traced or diagonal here.

:class:`OutputSpec` holds that layout. The two methods:

``contraction``
    Per-example Jacobians ``(b, *S, P_g)`` (``vmap`` of ``jacrev``: C reverse passes per
    example), kept as column groups like the single-output engine
    (:func:`output_columns`); a tile is one ``einsum`` per group (:func:`columns_kernel`).
    Features hold ``C·P`` numbers per example, which the memory budget counts.
``ntvp``
    For each column example, C ``vjp`` s (one per output) give C parameter tangents; one
    ``jvp`` each through the row block gives ``Θ[:, j]`` for all outputs at once
    (:func:`ntvp_tile`). Memory is ``C`` parameter vectors per column example in flight.

The structured method (:mod:`raysweep.ntk.structured`) takes C outputs too: layer inputs
and patches stay one per example, cotangents and the remaining Jacobian columns become C per
example, and each term's cotangent product takes the layout
(:func:`~raysweep.ntk.structured.structured_kernel` given the ``spec``). With ``C = 1`` the
engine keeps its single-output programs for every layout, since any layout of a one-output
kernel is a reshape of the ``(b1, b2)`` Gram matrix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from raysweep.ntk.kernel_axes import (
    canonical_axes,
    check_kernel_axes,
    contract_kernel,
    kernel_shape,
    swap_kernel,
    trace_and_diagonal,
    trace_size,
)
from raysweep.ntk.structured import jacobian_columns

_tree = jax.tree_util


@dataclass(frozen=True)
class OutputSpec:
    """Per-example output shape S and the kernel layout (axes count the batch axis as 0)."""

    shape: tuple[int, ...]  # S, without the batch axis
    trace: tuple[int, ...]  # canonical axes of (n, *S)
    diagonal: tuple[int, ...]

    @classmethod
    def build(cls, out_shape, trace_axes=(-1,), diagonal_axes=()) -> OutputSpec:
        """From the output shape ``(n, *S)`` of a batch and NT-style axes."""
        out_shape = tuple(int(s) for s in out_shape)
        ndim = len(out_shape)
        if ndim < 1:
            raise ValueError("apply_fn must return an array with a leading example axis.")
        trace = canonical_axes(trace_axes, ndim, "trace_axes")
        diagonal = canonical_axes(diagonal_axes, ndim, "diagonal_axes")
        check_kernel_axes(out_shape, out_shape, trace, diagonal)
        if 0 in trace or 0 in diagonal:
            raise ValueError(
                "the engine keeps the example axis (axis 0) as a pair of kernel axes; "
                f"trace_axes={trace} / diagonal_axes={diagonal} name it. Call the function "
                "inside jax.jit (plain JAX path) to trace or diagonalize the example axis."
            )
        return cls(out_shape[1:], trace, diagonal)

    @property
    def ndim(self) -> int:
        """Axes of a block of outputs, the example axis included."""
        return 1 + len(self.shape)

    @property
    def size(self) -> int:
        """C: outputs per example."""
        return math.prod(self.shape)

    @property
    def tail(self) -> tuple[int, ...]:
        """Kernel axes after (b1, b2)."""
        return kernel_shape((1, *self.shape), (1, *self.shape), self.trace, self.diagonal)[2:]

    @property
    def entries(self) -> int:
        """Kernel entries per pair of examples."""
        return math.prod(self.tail)

    @property
    def divisor(self) -> int:
        return trace_size((1, *self.shape), self.trace)

    def swap(self, k):
        """Θ(x2, x1) from a tile Θ(x1, x2) (numpy or jax)."""
        return swap_kernel(k, self.ndim, self.trace, self.diagonal)


def output_columns(jacs: list, ndim: int) -> list:
    """Per-example Jacobians ``(b, *S, *leaf)`` as column groups ``(b, *S, P_g)``.

    Leaves with fewer than ``SMALL_LEAF`` columns are concatenated into one group (see
    :func:`raysweep.ntk.structured.jacobian_columns`).
    """
    return jacobian_columns(jacs, ndim)


def jacobian_features(apply_fn, treedef, leaves, x_block, spec: OutputSpec) -> list:
    """Column groups ``(b, *S, P_g)`` of the per-example Jacobians of one block."""
    params = _tree.tree_unflatten(treedef, leaves)

    def one(xi):
        jac = jax.jacrev(lambda p: apply_fn(p, xi[None])[0])(params)
        return _tree.tree_leaves(jac)

    return output_columns(jax.vmap(one)(x_block), spec.ndim)


def columns_kernel(c1: list, c2: list, spec: OutputSpec, precision=None) -> jax.Array:
    """Tile ``(b1, b2, *tail)`` from two blocks of column groups."""
    total = None
    for g1, g2 in zip(c1, c2, strict=True):
        t = contract_kernel(g1, g2, spec.ndim, spec.trace, spec.diagonal, precision)
        total = t if total is None else total + t
    return total / spec.divisor


def ntvp_tile(apply_fn, treedef, leaves, x_rows, x_cols, spec: OutputSpec, chunk: int):
    """Tile ``(b_rows, b_cols, *tail)`` by NTK-vector products, ``chunk`` columns at a time."""
    params = _tree.tree_unflatten(treedef, leaves)
    c, shape = spec.size, spec.shape

    def column(xj):  # Θ(x_rows, xj) for every pair of outputs: (C_col, b_rows, *S)
        out, vjp_fn = jax.vjp(lambda p: apply_fn(p, xj[None])[0], params)
        basis = jnp.eye(c, dtype=out.dtype).reshape(c, *shape)
        tangents = jax.vmap(lambda ct: vjp_fn(ct)[0])(basis)

        def push(g):
            return jax.jvp(lambda p: apply_fn(p, x_rows), (params,), (g,))[1]

        return jax.vmap(push)(tangents)

    n_cols = x_cols.shape[0]
    chunk = min(chunk, n_cols)
    pad = (-n_cols) % chunk
    xc = jnp.concatenate([x_cols, jnp.zeros((pad, *x_cols.shape[1:]), x_cols.dtype)])
    xc = xc.reshape(-1, chunk, *x_cols.shape[1:])
    cols = jax.lax.map(jax.vmap(column), xc)  # (n_chunks, chunk, C, b_rows, *S)
    cols = cols.reshape(-1, *shape, *cols.shape[3:])[:n_cols]  # (b_cols, *S', b_rows, *S)
    k = spec.ndim
    full = jnp.transpose(cols, [*range(k, 2 * k), *range(k)])  # (b_rows, *S, b_cols, *S')
    return trace_and_diagonal(full, k, spec.trace, spec.diagonal)


def tile_bytes(spec: OutputSpec, rows: int, cols: int, itemsize: int) -> int:
    """Bytes of one kernel tile, counted as the full ``(C, C')`` tile the ntvp method holds."""
    return rows * cols * spec.size**2 * itemsize


def block_for_tiles(spec: OutputSpec, budget_bytes: float, itemsize: int) -> int:
    """The largest block size whose square tile takes at most half of the budget."""
    per_pair = tile_bytes(spec, 1, 1, itemsize)
    return int(math.isqrt(int(max(budget_bytes, 0) // (2 * per_pair))))


def prepare_out(out, shape: tuple, dtype) -> np.ndarray:
    """``out`` checked against the kernel's shape and dtype, or a new array."""
    if out is None:
        return np.empty(shape, dtype=dtype)
    if tuple(np.shape(out)) != tuple(shape) or np.dtype(out.dtype) != np.dtype(dtype):
        raise ValueError(
            f"out= has shape {tuple(np.shape(out))} and dtype {np.dtype(out.dtype)}; this "
            f"kernel needs shape {tuple(shape)} and dtype {np.dtype(dtype)} (e.g. "
            f"numpy.lib.format.open_memmap(path, 'w+', {np.dtype(dtype).name!r}, {tuple(shape)}))."
        )
    return out
