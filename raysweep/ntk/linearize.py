"""The linearization of a network around its initialization.

    f_lin(θ, x) = f(θ₀, x) + J(θ₀, x) (θ − θ₀)

computed with one ``jax.jvp`` per call (no Jacobian is formed). ``apply_lin`` has the same
signature as ``apply_fn``, so one optimizer and one training loop serve both. Batch-norm
models keep the statistics that ``apply_fn`` closes over (frozen at initialization, as in the
paper).
"""

from __future__ import annotations

import jax

from raysweep.ntk.checks import check_params


def linearize(apply_fn, params0):
    """First-order Taylor expansion of ``apply_fn`` in the parameters around ``params0``.

    Args:
      apply_fn: ``apply_fn(params, x) -> (n, 1)``.
      params0: the expansion point θ₀ (a pytree of floating-point arrays).

    Returns:
      ``apply_lin(params, x) -> (n, 1)`` with ``apply_lin(params0, x) == apply_fn(params0, x)``
      and ``∇θ apply_lin(θ, x) = J(θ₀, x)`` for every θ. ``params`` must have the structure
      and shapes of ``params0``.
    """
    check_params(params0)
    treedef = jax.tree_util.tree_structure(params0)

    def apply_lin(params, x):
        if jax.tree_util.tree_structure(params) != treedef:
            raise ValueError(
                "apply_lin(params, x): params has a different structure from the expansion "
                f"point params0 ({jax.tree_util.tree_structure(params)} vs {treedef})."
            )
        delta = jax.tree_util.tree_map(lambda p, p0: p - p0, params, params0)
        f0, df = jax.jvp(lambda p: apply_fn(p, x), (params0,), (delta,))
        return f0 + df

    return apply_lin
