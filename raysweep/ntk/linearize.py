"""The linearization (and Taylor expansions) of a network around its initialization.

    f_lin(θ, x) = f(θ₀, x) + J(θ₀, x) (θ − θ₀)

computed with one ``jax.jvp`` per call (no Jacobian is formed). ``apply_lin`` has the same
signature as ``apply_fn``, so one optimizer and one training loop serve both. Batch-norm
models keep the statistics that ``apply_fn`` closes over (frozen at initialization, as in the
paper).

Both functions follow neural-tangents' ``linearize(f, params)`` and
``taylor_expand(f, params, degree)``: ``f(params, *args, **kwargs)`` may take any further
arguments and return any pytree of arrays (several outputs); the returned function takes the
same arguments.
"""

from __future__ import annotations

import math

import jax

from raysweep.argcheck import check_int
from raysweep.ntk.ntk_checks import check_params
from raysweep.ntk.traceable import check_param_dtypes, has_tracers

_tree = jax.tree_util


def _expansion_point(params0):
    """Check θ₀ (its values too, unless it is traced) and return its tree structure."""
    check_param_dtypes(params0)
    if not has_tracers(params0):
        check_params(params0)
    return _tree.tree_structure(params0)


def _delta(params, params0, treedef, name: str):
    if _tree.tree_structure(params) != treedef:
        raise ValueError(
            f"{name}(params, ...): params has a different structure from the expansion point "
            f"params0 ({_tree.tree_structure(params)} vs {treedef})."
        )
    return _tree.tree_map(lambda p, p0: p - p0, params, params0)


def linearize(apply_fn, params0):
    """First-order Taylor expansion of ``apply_fn`` in the parameters around ``params0``.

    Args:
      apply_fn: ``apply_fn(params, *args, **kwargs)`` returning an array or a pytree of
        arrays; the project's models are ``apply_fn(params, x) -> (n, 1)``.
      params0: the expansion point θ₀ (a pytree of floating-point arrays).

    Returns:
      ``apply_lin(params, *args, **kwargs)``, the same pytree as ``apply_fn``, with
      ``apply_lin(params0, ...) == apply_fn(params0, ...)`` and ``∇θ apply_lin(θ, x) =
      J(θ₀, x)`` for every θ. ``params`` must have the structure and shapes of ``params0``.
    """
    treedef = _expansion_point(params0)

    def apply_lin(params, *args, **kwargs):
        delta = _delta(params, params0, treedef, "apply_lin")
        f0, df = jax.jvp(lambda p: apply_fn(p, *args, **kwargs), (params0,), (delta,))
        return _tree.tree_map(lambda a, b: a + b, f0, df)

    return apply_lin


def taylor_expand(apply_fn, params0, degree: int):
    """Taylor expansion of ``apply_fn`` in the parameters, of order ``degree``, around θ₀.

        f_k(θ, x) = Σ_{i=0..k} Dⁱf(θ₀, x)[δ, ..., δ] / i!,   δ = θ − θ₀

    with the directional derivatives from nested ``jax.jvp`` (cost grows about as 2^k
    forward passes). ``degree=0`` is the constant f(θ₀), ``degree=1`` equals
    :func:`linearize`.

    Args:
      apply_fn: ``apply_fn(params, *args, **kwargs)`` returning an array or a pytree.
      params0: the expansion point θ₀.
      degree: a non-negative int.

    Returns:
      ``apply_taylor(params, *args, **kwargs)`` with the signature and outputs of apply_fn.
    """
    degree = check_int(degree, "degree", minimum=0)
    treedef = _expansion_point(params0)

    def apply_taylor(params, *args, **kwargs):
        delta = _delta(params, params0, treedef, "apply_taylor")

        def derivatives(order):  # q -> [D⁰f(q)[δ], ..., D^order f(q)[δ, ..., δ]]
            if order == 0:
                return lambda q: [apply_fn(q, *args, **kwargs)]
            lower = derivatives(order - 1)

            def with_next(q):
                values, tangents = jax.jvp(lower, (q,), (delta,))
                return [*values, tangents[-1]]

            return with_next

        terms = derivatives(degree)(params0)
        scaled = [
            _tree.tree_map(lambda t, i=i: t / math.factorial(i), term)
            for i, term in enumerate(terms)
        ]
        return _tree.tree_map(lambda *ts: sum(ts[1:], ts[0]), *scaled)

    return apply_taylor
