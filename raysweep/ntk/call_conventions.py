"""neural-tangents' calling conventions: implementations, keyword arguments, ``vmap_axes``.

Three small pieces that make ``ntk_fn(x1, x2, params, **apply_fn_kwargs)`` read its
arguments the way neural-tangents 0.6.5 does:

- :class:`NtkImplementation` and :func:`resolve_implementation`: its integers ``0..3`` and
  names, mapped to the engine's methods.
- :func:`split_kwargs`: keyword arguments for ``f(params, x1, ...)`` and ``f(params, x2,
  ...)``; a tuple of two values is a pair (first for x1, second for x2), ``rng`` is split
  into two keys.
- :func:`canonical_vmap_axes`: ``vmap_axes`` as per-leaf axes of x, of ``f(x)`` and of the
  keyword arguments.
"""

from __future__ import annotations

import enum

import jax
import jax.numpy as jnp

from raysweep.ntk.ntk_checks import METHODS


class NtkImplementation(enum.IntEnum):
    """neural-tangents' implementation codes, accepted as ``implementation=``.

    AUTO (0) lets the engine pick (cheapest method that fits the memory budget);
    JACOBIAN_CONTRACTION (1) is the engine's ``"contraction"``; NTK_VECTOR_PRODUCTS (2) is
    ``"ntvp"``; STRUCTURED_DERIVATIVES (3) is ``"structured"`` (any number of outputs).
    """

    AUTO = 0
    JACOBIAN_CONTRACTION = 1
    NTK_VECTOR_PRODUCTS = 2
    STRUCTURED_DERIVATIVES = 3


_METHOD_OF = {
    NtkImplementation.AUTO: "auto",
    NtkImplementation.JACOBIAN_CONTRACTION: "contraction",
    NtkImplementation.NTK_VECTOR_PRODUCTS: "ntvp",
    NtkImplementation.STRUCTURED_DERIVATIVES: "structured",
}


def resolve_implementation(implementation) -> str:
    """The engine method for ``implementation``.

    Accepts ``None`` (``"auto"``), an :class:`NtkImplementation` or its integer ``0..3``, its
    name (``"NTK_VECTOR_PRODUCTS"``, any case), or an engine method name (``"auto"``,
    ``"contraction"``, ``"structured"``, ``"ntvp"``).
    """
    if implementation is None:
        return "auto"
    if isinstance(implementation, str):
        name = implementation.strip()
        if name.upper() in NtkImplementation.__members__:
            return _METHOD_OF[NtkImplementation[name.upper()]]
        if name.lower() in METHODS:
            return name.lower()
    elif isinstance(implementation, int) and not isinstance(implementation, bool):
        if implementation in tuple(NtkImplementation):
            return _METHOD_OF[NtkImplementation(implementation)]
    names = ", ".join(f"{m.value} ({m.name})" for m in NtkImplementation)
    raise ValueError(
        f"implementation={implementation!r} is not supported; use None, one of {names}, or a "
        f"method name ({', '.join(METHODS)})."
    )


def _same_values(a, b, eps: float = 1e-12):
    """neural-tangents' ``x1_is_x2``: equal shapes and entries within ``eps`` (traceable)."""
    leaves_a, tree_a = jax.tree_util.tree_flatten(a)
    leaves_b, tree_b = jax.tree_util.tree_flatten(b)
    if tree_a != tree_b:
        return False
    result = True
    for u, v in zip(leaves_a, leaves_b, strict=True):
        if u is v:
            continue
        if jnp.shape(u) != jnp.shape(v):
            return False
        if jnp.issubdtype(jnp.asarray(u).dtype, jax.dtypes.prng_key):
            same = jnp.all(jax.random.key_data(u) == jax.random.key_data(v))
        else:
            same = jnp.all(jnp.abs(jnp.asarray(u) - jnp.asarray(v)) < eps)
        result = jnp.logical_and(result, same)
    return result


def _split_key(key, x1, x2):
    """Keys for x1 and x2: equal when x1 equals x2, different otherwise (as neural-tangents)."""
    if isinstance(key, tuple) and len(key) == 2:
        key1, key2 = key
        renamed = jnp.where(_same_values(key1, key2), jax.random.fold_in(key2, 1), key2)
        return key1, jnp.where(_same_values(x1, x2), key1, renamed)
    if isinstance(key, jax.Array) or hasattr(key, "shape"):
        key = jnp.asarray(key)
        return key, jnp.where(_same_values(x1, x2), key, jax.random.fold_in(key, 1))
    raise TypeError(
        f"rng must be a PRNG key or a pair of keys; got {type(key).__name__}. Pass "
        "rng=jax.random.PRNGKey(0) (split between x1 and x2) or rng=(key1, key2)."
    )


def split_kwargs(kwargs: dict, x1, x2) -> tuple[dict, dict]:
    """Keyword arguments for ``f(params, x1, ...)`` and ``f(params, x2, ...)``.

    As neural-tangents' ``split_kwargs``: ``rng`` (when x2 is given and the key is not None)
    becomes two keys, equal exactly when x1 equals x2; a tuple of two values is split, the
    first for x1 and the second for x2; anything else goes to both.
    """
    kwargs1, kwargs2 = {}, {}
    for k, v in kwargs.items():
        if k == "rng" and x2 is not None and v is not None:
            kwargs1[k], kwargs2[k] = _split_key(v, x1, x2)
        elif isinstance(v, tuple) and len(v) == 2:
            kwargs1[k], kwargs2[k] = v
        else:
            kwargs1[k] = kwargs2[k] = v
    return kwargs1, kwargs2


def _per_leaf_axes(axis, tree, what: str):
    """``axis`` (int, None or a pytree of ints) as non-negative axes, one per leaf of ``tree``."""
    if axis is None:
        return None
    if isinstance(axis, int) and not isinstance(axis, bool):
        axis = jax.tree_util.tree_map(lambda _: axis, tree)
    try:
        return jax.tree_util.tree_map(
            lambda a, x: _mod_axis(a, len(jnp.shape(x)), what), axis, tree
        )
    except ValueError as err:
        if "vmap_axes" in str(err):
            raise
        raise ValueError(
            f"vmap_axes for {what} has structure {jax.tree_util.tree_structure(axis)}, which "
            f"does not match {what} ({jax.tree_util.tree_structure(tree)}); give one int per "
            "leaf, or a single int."
        ) from err


def _mod_axis(a, ndim: int, what: str) -> int:
    if isinstance(a, bool) or not isinstance(a, int):
        raise TypeError(f"vmap_axes for {what} must hold ints; got {a!r}.")
    if not -ndim <= a < ndim:
        raise ValueError(f"vmap_axes names axis {a} of {what}, which has {ndim} axes.")
    return a % ndim


def canonical_vmap_axes(vmap_axes, x, fx, kwargs: dict):
    """``(x_axis, fx_axis, kw_axes)`` for ``vmap_axes`` (neural-tangents' convention).

    ``vmap_axes`` is ``None`` (no batch axis: Jacobians of the whole batch), an int (the
    batch axis of x and of every output leaf), a pytree (the same for x and f(x)), or a triple
    ``(in_axes, out_axes, kwargs_axes)`` with ``kwargs_axes`` a dict naming the batched
    keyword arguments. Returns per-leaf non-negative axes (or None) and a dict.
    """
    if isinstance(vmap_axes, tuple) and len(vmap_axes) == 3:
        x_axis, fx_axis, kw_axes = vmap_axes
    else:
        x_axis, fx_axis, kw_axes = vmap_axes, vmap_axes, {}
    if isinstance(kw_axes, int) and not isinstance(kw_axes, bool):
        kw_axes = {k: kw_axes for k in kwargs}
    if not isinstance(kw_axes, dict):
        raise TypeError(
            f"the kwargs part of vmap_axes must be a dict such as {{'mask': 0}}; got {kw_axes!r}."
        )
    missing = sorted(set(kw_axes) - set(kwargs))
    if missing:
        raise ValueError(
            f"vmap_axes batches keyword argument(s) {missing}, but f was called with "
            f"{sorted(kwargs)}."
        )
    kw = {k: _per_leaf_axes(a, kwargs[k], f"keyword argument {k!r}") for k, a in kw_axes.items()}
    kw = {k: a for k, a in kw.items() if a is not None}
    return _per_leaf_axes(x_axis, x, "x"), _per_leaf_axes(fx_axis, fx, "f(x)"), kw
