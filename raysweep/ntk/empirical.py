"""neural-tangents' empirical kernel API, on current JAX and raysweep's engine.

A neural-tangents 0.6.5 user changes one import::

    import raysweep.ntk as nt          # was: import neural_tangents as nt

    ntk_fn = nt.empirical_ntk_fn(f, trace_axes=(), vmap_axes=0)
    k = ntk_fn(x1, x2, params)         # (N1, N2, C, C'), as neural-tangents returns it

Same arguments, defaults, output shapes (:mod:`raysweep.ntk.kernel_axes`), keyword-argument
splitting and ``vmap_axes`` (:mod:`raysweep.ntk.call_conventions`). Two paths compute the
same numbers (to float32 rounding):

- **Plain JAX** (:mod:`raysweep.ntk.traceable`) whenever an argument is a tracer (inside
  ``jax.jit``, ``jax.grad``, ``jax.vmap``), and for calls the engine does not cover; the
  result is a ``jax.Array``, differentiable like any JAX function.
- **The engine** (:class:`~raysweep.ntk.NTKEngine`, tiles within ``memory_budget_mb``) for
  eager calls with array inputs, one array output, ``vmap_axes=0`` (the promise that
  examples are independent), keyword arguments shared by x1 and x2, and the example axis
  neither traced nor diagonal. The result is a ``numpy.ndarray``, or ``out=`` (e.g. a
  ``numpy.memmap``) filled tile by tile.

Extra keyword arguments of the factories (``batch_size``, ``memory_budget_mb``,
``precision``) configure the engine; ``out`` is reserved in ``ntk_fn`` (not passed to f).
"""

from __future__ import annotations

import collections
import functools

import jax
import jax.numpy as jnp
import numpy as np

from raysweep.argcheck import check_positive_int
from raysweep.ntk.call_conventions import canonical_vmap_axes, resolve_implementation, split_kwargs
from raysweep.ntk.kernel_axes import canonical_axes, check_kernel_axes
from raysweep.ntk.multi_output import prepare_out
from raysweep.ntk.ntk_checks import check_inputs, check_params
from raysweep.ntk.tiled import engine_gram
from raysweep.ntk.traceable import (
    KernelCall,
    check_param_dtypes,
    has_tracers,
    nngp,
    ntk_contraction,
    ntk_vector_products,
)

_KERNELS = ("nngp", "ntk")


def _eval_shape(f, params, x, kwargs, name: str):
    try:
        return jax.eval_shape(lambda p, xx, kw: f(p, xx, **kw), params, x, kwargs)
    except Exception as err:  # noqa: BLE001 - re-raised with context
        shapes = jax.tree_util.tree_map(jnp.shape, x)
        raise ValueError(
            f"f(params, {name}, **kwargs) failed for {name} of shape {shapes}: {err}"
        ) from err


def resolve_call(f, x1, x2, params, kwargs, trace_axes, diagonal_axes, vmap_axes) -> KernelCall:
    """Split the keyword arguments, evaluate output shapes and canonicalize every axis."""
    if x1 is None:
        raise ValueError("x1 is None; pass the first batch of inputs (x2=None means x1).")
    check_param_dtypes(params)
    kwargs1, kwargs2 = split_kwargs(kwargs, x1, x2)
    fx1 = _eval_shape(f, params, x1, kwargs1, "x1")
    fx2 = fx1 if x2 is None else _eval_shape(f, params, x2, kwargs2, "x2")
    leaves1, tree1 = jax.tree_util.tree_flatten(fx1)
    leaves2, tree2 = jax.tree_util.tree_flatten(fx2)
    if tree1 != tree2:
        raise ValueError(f"f(x1) and f(x2) have different structures: {tree1} and {tree2}.")
    traces, diagonals = [], []
    for o1, o2 in zip(leaves1, leaves2, strict=True):
        trace = canonical_axes(trace_axes, len(o1.shape), "trace_axes")
        diagonal = canonical_axes(diagonal_axes, len(o1.shape), "diagonal_axes")
        check_kernel_axes(o1.shape, o2.shape, trace, diagonal)
        traces.append(trace)
        diagonals.append(diagonal)
    x_axis, fx_axis, kw_axes = canonical_vmap_axes(vmap_axes, x1, fx1, kwargs1)
    return KernelCall(
        f, x1, x2, kwargs1, kwargs2, x_axis, fx_axis, kw_axes, fx1, tuple(traces), tuple(diagonals)
    )


def _engine_applies(call: KernelCall) -> bool:
    """Whether the tiled engine computes this call (see the module docstring)."""
    arrays = (np.ndarray, jax.Array)
    x2 = call.x1 if call.x2 is None else call.x2
    if not (isinstance(call.x1, arrays) and isinstance(x2, arrays)):
        return False
    if np.ndim(call.x1) < 2 or np.shape(call.x1)[1:] != np.shape(x2)[1:]:
        return False
    if len(jax.tree_util.tree_leaves(call.fx1)) != 1 or not hasattr(call.fx1, "shape"):
        return False
    if call.x_axis != 0 or call.fx_axis != 0 or call.kw_axes:
        return False
    if call.x2 is not None and any(call.kwargs1[k] is not call.kwargs2[k] for k in call.kwargs1):
        return False
    return 0 not in call.trace[0] and 0 not in call.diagonal[0]


def _check_factory(trace_axes, diagonal_axes, batch_size, precision) -> None:
    """Argument types, checked when the kernel function is built (ranges need f's output)."""
    for name, axes in (("trace_axes", trace_axes), ("diagonal_axes", diagonal_axes)):
        canonical_axes(axes, 64, name)
    if batch_size is not None:
        check_positive_int(batch_size, "batch_size", hint=" or None")
    if precision not in ("highest", "default"):
        raise ValueError(f"precision={precision!r}; choose 'highest' or 'default'.")


def _matmul_precision(precision: str):
    return jax.default_matmul_precision("float32" if precision == "highest" else "default")


def empirical_ntk_fn(
    f,
    trace_axes=(-1,),
    diagonal_axes=(),
    vmap_axes=None,
    implementation=None,
    *,
    batch_size: int | None = None,
    memory_budget_mb: float = 2048,
    precision: str = "highest",
):
    """A function computing the empirical NTK of ``f``, as neural-tangents' function does.

    Θ = J(x1) J(x2)ᵀ with ``J = ∂f/∂params``, per output leaf of ``f`` (no cross terms).

    Args:
      f: ``f(params, x, **kwargs)`` returning an array or a pytree of arrays.
      trace_axes: output axes averaged over (the sum divided by their size).
      diagonal_axes: output axes of which only the diagonal is kept.
      vmap_axes: ``None`` (Jacobians of whole batches), an int (batch axis of x and of the
        outputs), a pytree, or ``(in_axes, out_axes, kwargs_axes)``. ``0`` enables the engine.
      implementation: ``None`` or ``0``/``"AUTO"`` (the engine picks), ``1``
        (``JACOBIAN_CONTRACTION``), ``2`` (``NTK_VECTOR_PRODUCTS``), ``3``
        (``STRUCTURED_DERIVATIVES``, any number of outputs), an
        :class:`~raysweep.ntk.NtkImplementation`, or an engine method name. Traced calls use
        ntvp for ``2`` and the Jacobian contraction otherwise.
      batch_size: engine tile side (examples); ``None`` derives it from the budget.
      memory_budget_mb, precision: engine options (see :class:`~raysweep.ntk.NTKEngine`).

    Returns:
      ``ntk_fn(x1, x2, params, *, out=None, **apply_fn_kwargs)``; ``x2=None`` means x1. The
      kernel's shape is ``zip(f(x1).shape, f(x2).shape)`` without traced axes and with
      diagonal axes once, e.g. ``(N1, N2)`` for ``(N, C)`` outputs and the default
      ``trace_axes=(-1,)``. Keyword arguments given as ``(value1, value2)`` pairs go to x1 and
      x2 respectively; ``rng`` is split. ``out`` (engine path only) receives the kernel.
    """
    method = resolve_implementation(implementation)
    _check_factory(trace_axes, diagonal_axes, batch_size, precision)

    def ntk_fn(x1, x2, params, *, out=None, **apply_fn_kwargs):
        call = resolve_call(
            f, x1, x2, params, apply_fn_kwargs, trace_axes, diagonal_axes, vmap_axes
        )
        traced = has_tracers((x1, x2, params, apply_fn_kwargs))
        if traced and out is not None:
            raise ValueError("out= needs concrete inputs; it cannot be filled inside a trace.")
        if not traced and _engine_applies(call):
            return _engine_ntk(call, params, method, out, batch_size, memory_budget_mb, precision)
        with _matmul_precision(precision):
            if method == "ntvp":
                result = ntk_vector_products(call, params)
            else:
                result = ntk_contraction(call, params, precision=precision)
        if out is None:
            return result
        if len(jax.tree_util.tree_leaves(result)) != 1:
            raise ValueError("out= takes one array; f returns several outputs.")
        out = prepare_out(out, jnp.shape(result), result.dtype)
        out[...] = np.asarray(result)
        return out

    return ntk_fn


def _engine_ntk(call, params, method, out, batch_size, memory_budget_mb, precision):
    check_inputs(call.x1, call.x2)
    check_params(params)
    kwargs = call.kwargs1
    apply_fn = call.f if not kwargs else (lambda p, x: call.f(p, x, **kwargs))
    options = dict(
        method=method,
        memory_budget_mb=memory_budget_mb,
        precision=precision,
        trace_axes=call.trace[0],
        diagonal_axes=call.diagonal[0],
    )
    args = (apply_fn, params, call.x1, call.x2)
    return engine_gram(*args, batch_size=batch_size, share=not kwargs, out=out, **options)


def empirical_nngp_fn(f, trace_axes=(-1,), diagonal_axes=()):
    """A function computing f(x1) f(x2)ᵀ (traced axes averaged), as neural-tangents' does.

    Returns ``nngp_fn(x1, x2, params, **apply_fn_kwargs)`` with the layout of
    :func:`empirical_ntk_fn` (always plain JAX: no Jacobians are involved).
    """
    _check_factory(trace_axes, diagonal_axes, None, "highest")

    def nngp_fn(x1, x2, params, **apply_fn_kwargs):
        call = resolve_call(f, x1, x2, params, apply_fn_kwargs, trace_axes, diagonal_axes, None)
        return nngp(call, params, precision="highest")

    return nngp_fn


def _canonical_get(get) -> tuple[tuple[str, ...], bool]:
    """(kernel names, whether one name was given as a string)."""
    if get is None:
        return _KERNELS, False
    single = isinstance(get, str)
    names = (get,) if single else tuple(get) if isinstance(get, tuple | list) else None
    if not names or any(not isinstance(g, str) for g in names):
        raise ValueError(f'get must be "ntk", "nngp", a tuple of them, or None; got {get!r}.')
    names = tuple(g.lower() for g in names)
    unknown = [g for g in names if g not in _KERNELS]
    if unknown or len(set(names)) != len(names):
        raise ValueError(
            f"get={get!r}: each entry must be one of {_KERNELS}, at most once"
            + (f" (unknown: {unknown})." if unknown else ".")
        )
    return names, single


@functools.cache
def _kernel_tuple(names: tuple[str, ...]):
    return collections.namedtuple("EmpiricalKernel", names)


def empirical_kernel_fn(
    f, trace_axes=(-1,), diagonal_axes=(), vmap_axes=None, implementation=None, **engine_options
):
    """NNGP and NTK together: ``kernel_fn(x1, x2, get, params, **apply_fn_kwargs)``.

    ``get`` is ``"ntk"``, ``"nngp"``, a tuple of them (an ``EmpiricalKernel`` namedtuple with
    those fields, in that order, per output leaf) or ``None`` (both). ``vmap_axes``,
    ``implementation`` and ``engine_options`` apply to the NTK (see
    :func:`empirical_ntk_fn`).
    """
    kernel_fns = {
        "nngp": empirical_nngp_fn(f, trace_axes, diagonal_axes),
        "ntk": empirical_ntk_fn(
            f, trace_axes, diagonal_axes, vmap_axes, implementation, **engine_options
        ),
    }

    def kernel_fn(x1, x2, get, params, **apply_fn_kwargs):
        names, single = _canonical_get(get)
        results = {g: kernel_fns[g](x1, x2, params, **apply_fn_kwargs) for g in names}
        if single:
            return results[names[0]]
        kernel_type = _kernel_tuple(names)
        return jax.tree_util.tree_map(lambda *ks: kernel_type(*ks), *(results[g] for g in names))

    return kernel_fn
