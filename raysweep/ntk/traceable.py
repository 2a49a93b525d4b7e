"""Empirical NNGP and NTK in plain JAX: traceable, differentiable, pytrees in and out.

This is the path :func:`raysweep.ntk.empirical_ntk_fn` takes inside ``jax.jit``,
``jax.grad`` or ``jax.vmap`` (and for calls the tiled engine does not cover). Everything is
built from ``jax.jacrev``, ``jax.vjp``, ``jax.jvp`` and ``jax.vmap``, so the kernels can be
differentiated with respect to the parameters and the inputs.

Per output leaf of ``f`` (cross terms between different output leaves are left out, as in
neural-tangents):

``contraction``
    Θ = J(x1) J(x2)ᵀ with ``J = jacrev(f)`` of the whole batch, or of one example at a time
    under ``vmap`` when batch axes are given; contracted over the parameters and the traced
    output axes (:func:`raysweep.ntk.kernel_axes.contract_kernel`).
``ntvp``
    The full kernel column by column: one ``vjp`` of a basis cotangent of ``f(x2)`` followed
    by one ``jvp`` through ``f(x1)``; then traced and diagonal axes are reduced
    (:func:`raysweep.ntk.kernel_axes.trace_and_diagonal`). No Jacobian is formed.

Shapes follow neural-tangents (see :mod:`raysweep.ntk.kernel_axes`); traced axes are
averaged. Batch axes (``x_axis``, ``fx_axis``, ``kw_axes``) come from
:func:`raysweep.ntk.call_conventions.canonical_vmap_axes`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from raysweep.ntk.kernel_axes import contract_kernel, trace_and_diagonal, trace_size

_tree = jax.tree_util


@dataclass(frozen=True)
class KernelCall:
    """One kernel evaluation, resolved: inputs, keyword arguments, axes (per output leaf)."""

    f: Any
    x1: Any
    x2: Any  # None: x1 (with kwargs1) on both sides
    kwargs1: dict
    kwargs2: dict
    x_axis: Any
    fx_axis: Any
    kw_axes: dict
    fx1: Any  # eval_shape of f(params, x1, **kwargs1)
    trace: tuple  # per output leaf (flattened order): canonical traced axes
    diagonal: tuple  # per output leaf: canonical diagonal axes

    @property
    def batched(self) -> bool:
        return any(a is not None for a in _tree.tree_leaves(self.x_axis)) or bool(self.kw_axes)

    def side(self, which: int) -> tuple[Any, dict]:
        if which == 2 and self.x2 is not None:
            return self.x2, self.kwargs2
        return self.x1, self.kwargs1


def has_tracers(tree) -> bool:
    """Whether any leaf is a JAX tracer (the call happens inside jit, grad, vmap, ...)."""
    return any(isinstance(leaf, jax.core.Tracer) for leaf in _tree.tree_leaves(tree))


def check_param_dtypes(params) -> None:
    """``params`` has leaves, all floating point (works on tracers: no values are read)."""
    leaves = _tree.tree_leaves_with_path(params)
    if not leaves:
        raise ValueError("params has no array leaves; pass the model's parameter pytree.")
    for path, leaf in leaves:
        dtype = getattr(leaf, "dtype", None) or jnp.asarray(leaf).dtype
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(
                f"parameter {_tree.keystr(path)} has dtype {dtype}; the NTK needs "
                "floating-point parameters (close over integer state in f instead)."
            )


def _expand(tree, axes):
    return _tree.tree_map(lambda a, ax: jnp.expand_dims(a, ax), tree, axes)


def output_function(call: KernelCall, x, kwargs: dict):
    """``p -> f(p, x, **kwargs)``; when batched, ``x`` is one example (neural-tangents' form).

    Batched: the batch axes are re-inserted (size 1) into ``x`` and the batched keyword
    arguments before ``f`` and removed from its outputs after.
    """
    if call.batched:
        if call.x_axis is not None:
            x = _expand(x, call.x_axis)
        kwargs = {
            k: _expand(v, call.kw_axes[k]) if k in call.kw_axes else v for k, v in kwargs.items()
        }

    def fp(params):
        out = call.f(params, x, **kwargs)
        if call.batched and call.fx_axis is not None:
            out = _tree.tree_map(lambda o, ax: jnp.squeeze(o, ax), out, call.fx_axis)
        return out

    return fp


def _split_batched(call: KernelCall, kwargs: dict) -> tuple[dict, dict]:
    """(batched keyword arguments, the rest)."""
    batched = {k: v for k, v in kwargs.items() if k in call.kw_axes}
    return batched, {k: v for k, v in kwargs.items() if k not in call.kw_axes}


def _per_example(call: KernelCall, fn, which: int):
    """``fn(x_i, kwargs_i)`` over the batch of side ``which`` (``vmap`` when batched)."""
    x, kwargs = call.side(which)
    if not call.batched:
        return lambda out_axes: fn(x, kwargs)
    batched, rest = _split_batched(call, kwargs)

    def mapped(out_axes):
        return jax.vmap(
            lambda xi, bi: fn(xi, {**rest, **bi}),
            in_axes=(call.x_axis, dict(call.kw_axes)),
            out_axes=out_axes,
        )(x, batched)

    return mapped


def ntk_contraction(call: KernelCall, params, precision=None):
    """Θ per output leaf by Jacobian contraction (see the module docstring)."""
    out_tree = _tree.tree_structure(call.fx1)
    fx_leaves = _tree.tree_leaves(call.fx1)

    def jacobian(which):
        def jac(x, kwargs):
            return jax.jacrev(output_function(call, x, kwargs))(params)

        return _per_example(call, jac, which)(call.fx_axis)

    j1 = jacobian(1)
    j2 = jacobian(2) if call.x2 is not None else j1
    kernels = []
    for i, (fx, g1, g2) in enumerate(
        zip(fx_leaves, out_tree.flatten_up_to(j1), out_tree.flatten_up_to(j2), strict=True)
    ):
        ndim, total = len(fx.shape), None
        for a1, a2 in zip(_tree.tree_leaves(g1), _tree.tree_leaves(g2), strict=True):
            a1 = a1.reshape(*a1.shape[:ndim], -1)
            a2 = a2.reshape(*a2.shape[:ndim], -1)
            t = contract_kernel(a1, a2, ndim, call.trace[i], call.diagonal[i], precision)
            total = t if total is None else total + t
        kernels.append(total / trace_size(fx.shape, call.trace[i]))
    return _tree.tree_unflatten(out_tree, kernels)


def full_kernels(f1, f2, params) -> list:
    """Per output leaf, ``Θ[(X...), (X'...)]`` of ``f1`` against ``f2`` (functions of params).

    One ``vjp`` per basis cotangent of ``f2``'s leaf, pushed through ``f1`` with ``jvp``.
    """
    out2, vjp2 = jax.vjp(f2, params)
    leaves2, tree2 = _tree.tree_flatten(out2)
    kernels = []
    for i, leaf in enumerate(leaves2):

        def column(ct, i=i):
            cts = [jnp.zeros_like(o) for o in leaves2]
            cts[i] = ct
            (tangent,) = vjp2(_tree.tree_unflatten(tree2, cts))
            return _tree.tree_leaves(jax.jvp(f1, (params,), (tangent,))[1])[i]

        basis = jnp.eye(leaf.size, dtype=leaf.dtype).reshape(leaf.size, *leaf.shape)
        cols = jax.vmap(column)(basis)  # (size2, *shape1)
        n1 = cols.ndim - 1
        full = cols.reshape(*leaf.shape, *cols.shape[1:])  # (X'..., X...)
        kernels.append(jnp.transpose(full, [*range(leaf.ndim, leaf.ndim + n1), *range(leaf.ndim)]))
    return kernels


def ntk_vector_products(call: KernelCall, params):
    """Θ per output leaf by NTK-vector products (see the module docstring)."""
    out_tree = _tree.tree_structure(call.fx1)
    fx_leaves = _tree.tree_leaves(call.fx1)
    if not call.batched:
        (x1, kw1), (x2, kw2) = call.side(1), call.side(2)
        full = full_kernels(output_function(call, x1, kw1), output_function(call, x2, kw2), params)
    else:
        (x1, kw1), (x2, kw2) = call.side(1), call.side(2)
        b1, rest1 = _split_batched(call, kw1)
        b2, rest2 = _split_batched(call, kw2)

        def pair(x1i, x2j, b1i, b2j):
            f1 = output_function(call, x1i, {**rest1, **b1i})
            f2 = output_function(call, x2j, {**rest2, **b2j})
            return full_kernels(f1, f2, params)

        fx_axes = out_tree.flatten_up_to(call.fx_axis)
        kw = dict(call.kw_axes)
        inner = jax.vmap(pair, in_axes=(call.x_axis, None, kw, None), out_axes=fx_axes)
        outer = jax.vmap(
            inner,
            in_axes=(None, call.x_axis, None, kw),
            out_axes=[a + len(fx.shape) for a, fx in zip(fx_axes, fx_leaves, strict=True)],
        )
        full = outer(x1, x2, b1, b2)
    kernels = [
        trace_and_diagonal(k, len(fx.shape), call.trace[i], call.diagonal[i])
        for i, (k, fx) in enumerate(zip(full, fx_leaves, strict=True))
    ]
    return _tree.tree_unflatten(out_tree, kernels)


def nngp(call: KernelCall, params, precision=None):
    """f(x1) f(x2)ᵀ per output leaf, traced axes averaged (no parameters contracted)."""
    (x1, kw1), (x2, kw2) = call.side(1), call.side(2)
    out1 = call.f(params, x1, **kw1)
    out2 = call.f(params, x2, **kw2) if call.x2 is not None else out1
    leaves1, out_tree = _tree.tree_flatten(out1)
    kernels = []
    for i, (o1, o2) in enumerate(zip(leaves1, out_tree.flatten_up_to(out2), strict=True)):
        k = contract_kernel(
            o1[..., None], o2[..., None], o1.ndim, call.trace[i], call.diagonal[i], precision
        )
        kernels.append(k / trace_size(o1.shape, call.trace[i]))
    return _tree.tree_unflatten(out_tree, kernels)
