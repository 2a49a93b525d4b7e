"""Structured derivatives of dense layers, found by reading the model's jaxpr.

A dense layer ``y = a W`` evaluated on one example has the per-example gradient
``∂f/∂W = a dᵀ`` (an outer product), where ``a`` is the layer's input and ``d = ∂f/∂y`` the
cotangent at its output. Its contribution to the NTK is therefore

    Θ_W(x_i, x_j) = <a_i dᵢᵀ, a_j dⱼᵀ> = (a_i · a_j)(d_i · d_j),

i.e. ``(A Aᵀ) ⊙ (D Dᵀ)`` for a block of examples: the k x m weight Jacobian is never formed.

How the layers are found: the single-example function ``g(leaves, x_i) = f(θ, x_i[None])``
is traced to a jaxpr. A parameter leaf qualifies when it is a 2-D array used exactly once in
the whole program, as the right operand of a ``dot_general`` that contracts a ``(1, k)`` left
operand's last axis with the leaf's first axis (``nn.Dense`` and ``x @ W`` both trace to
this). Leaves used through ``jit`` calls are followed inside them. Every other leaf
(biases, convolutions, batch-norm scales, weights used twice) stays on the Jacobian
contraction path, so the method is exact for every model; it is only faster when dense
weights dominate the parameter count (the paper's MLP and LeNet5).

The program is re-evaluated by a small interpreter (JAX's documented "custom interpreter"
pattern: ``primitive.bind`` with ``get_bind_params``) that records ``a`` and adds a zero
perturbation to ``y``; the gradient with respect to that perturbation is ``d``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from jax.extend import core as jex_core

_CALL_PRIMITIVES = ("jit", "pjit", "closed_call", "core_call")


@dataclass(frozen=True)
class DenseSite:
    """One structured dense weight: its leaf index and the (k, m) shape of the kernel."""

    leaf: int
    eqn_id: int
    in_features: int
    out_features: int


def _read(env: dict, var: Any) -> Any:
    if isinstance(var, jex_core.Literal):
        return var.val
    return env[var]


def _sub_closed_jaxpr(eqn) -> Any:
    sub = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
    if sub is None:
        return None
    if isinstance(sub, jex_core.ClosedJaxpr):
        return sub
    return jex_core.ClosedJaxpr(sub, ())


def _walk_uses(jaxpr, arg_alias: list[int | None], uses: Counter, candidates: dict) -> None:
    """Count how each parameter leaf is used; collect dense sites (analysis pass)."""
    alias: dict = {v: a for v, a in zip(jaxpr.invars, arg_alias, strict=True) if a is not None}
    for eqn in jaxpr.eqns:
        in_alias = [None if isinstance(v, jex_core.Literal) else alias.get(v) for v in eqn.invars]
        sub = _sub_closed_jaxpr(eqn) if eqn.primitive.name in _CALL_PRIMITIVES else None
        if sub is not None:
            _walk_uses(sub.jaxpr, in_alias, uses, candidates)
            continue
        for a in in_alias:
            if a is not None:
                uses[a] += 1
        if eqn.primitive.name != "dot_general" or in_alias[1] is None or in_alias[0] is not None:
            continue
        lhs, rhs = (v.aval for v in eqn.invars)
        (contract, batch) = eqn.params["dimension_numbers"]
        if (
            len(rhs.shape) == 2
            and len(lhs.shape) == 2
            and lhs.shape[0] == 1
            and tuple(contract[0]) == (1,)
            and tuple(contract[1]) == (0,)
            and not batch[0]
            and not batch[1]
        ):
            candidates[in_alias[1]] = DenseSite(
                leaf=in_alias[1],
                eqn_id=id(eqn),
                in_features=int(rhs.shape[0]),
                out_features=int(rhs.shape[1]),
            )


def find_dense_sites(apply_fn, params, x_example) -> tuple[Any, list[DenseSite]]:
    """Trace ``apply_fn`` on one example and return (closed jaxpr, structured dense sites).

    ``x_example`` has the per-example shape (no batch axis). The jaxpr's inputs are the
    flattened parameter leaves followed by the example.
    """
    leaves, treedef = jax.tree_util.tree_flatten(params)

    def single(leaves, xi):
        out = apply_fn(jax.tree_util.tree_unflatten(treedef, leaves), xi[None])
        return jnp.reshape(out, ())

    closed = jax.make_jaxpr(single)(leaves, x_example)
    uses: Counter = Counter()
    candidates: dict[int, DenseSite] = {}
    arg_alias = list(range(len(leaves))) + [None]
    _walk_uses(closed.jaxpr, arg_alias, uses, candidates)
    sites = [site for leaf, site in sorted(candidates.items()) if uses[leaf] == 1]
    return closed, sites


def _bind(eqn, invals: list) -> Any:
    """``primitive.bind`` of one equation; older JAX returns ``(subfuns, params)``."""
    bind_params = eqn.primitive.get_bind_params(eqn.params)
    if isinstance(bind_params, tuple):
        subfuns, bind_params = bind_params
        return eqn.primitive.bind(*subfuns, *invals, **bind_params)
    return eqn.primitive.bind(*invals, **bind_params)


def _eval(jaxpr, consts, args, hooks: dict, perturb: dict, record: dict) -> list:
    """Evaluate ``jaxpr``; at hooked dense sites record the input and add the perturbation."""
    env: dict = {}
    for v, c in zip(jaxpr.constvars, consts, strict=True):
        env[v] = c
    for v, a in zip(jaxpr.invars, args, strict=True):
        env[v] = a
    for eqn in jaxpr.eqns:
        invals = [_read(env, v) for v in eqn.invars]
        sub = _sub_closed_jaxpr(eqn) if eqn.primitive.name in _CALL_PRIMITIVES else None
        if sub is not None:
            outvals = _eval(sub.jaxpr, sub.consts, invals, hooks, perturb, record)
        else:
            outvals = _bind(eqn, invals)
            if not eqn.primitive.multiple_results:
                outvals = [outvals]
            site = hooks.get(id(eqn))
            if site is not None:
                record[site.leaf] = invals[0][0]
                outvals = [outvals[0] + perturb[site.leaf][None]]
        for v, val in zip(eqn.outvars, outvals, strict=True):
            env[v] = val
    return [_read(env, v) for v in jaxpr.outvars]


def structured_feature_fn(apply_fn, params, x_example):
    """Per-example NTK factors with dense weights in factored form.

    ``params`` fixes the tree structure, shapes and dtypes (the program is traced with them);
    the values are not captured. Returns ``(feature_fn, sites, rest_index)``.
    ``feature_fn(leaves, x_block)`` takes the flattened parameter leaves
    (``jax.tree_util.tree_leaves(params)`` of any point with those shapes) and a block of
    examples ``(b, ...)``, and returns a dict with

    - ``"a"``: list, per dense site, of layer inputs ``(b, k)``;
    - ``"d"``: list, per dense site, of output cotangents ``(b, m)``;
    - ``"j"``: the Jacobian of all other leaves as column groups ``(b, P_g)`` (see
      :func:`jacobian_columns`; together ``(b, P_rest)``).

    ``rest_index`` lists the leaves on the contraction path. Θ of two blocks is
    ``Σ_sites (A₁A₂ᵀ) ⊙ (D₁D₂ᵀ) + J₁J₂ᵀ`` (see :func:`structured_kernel`).
    """
    closed, sites = find_dense_sites(apply_fn, params, x_example)
    num_leaves = len(jax.tree_util.tree_leaves(params))
    structured = {s.leaf for s in sites}
    rest_index = [i for i in range(num_leaves) if i not in structured]
    hooks = {s.eqn_id: s for s in sites}

    def one(rest_leaves, perturb, leaves, xi):
        full = list(leaves)
        for i, leaf in zip(rest_index, rest_leaves, strict=True):
            full[i] = leaf
        record: dict = {}
        (out,) = _eval(closed.jaxpr, closed.consts, [*full, xi], hooks, perturb, record)
        return out, record

    grad_one = jax.grad(one, argnums=(0, 1), has_aux=True)

    def feature_fn(leaves, x_block):
        leaves = list(leaves)
        if len(leaves) != num_leaves:
            raise ValueError(f"expected {num_leaves} parameter leaves, got {len(leaves)}.")
        rest = [leaves[i] for i in rest_index]
        zeros = {s.leaf: jnp.zeros((s.out_features,), leaves[s.leaf].dtype) for s in sites}

        def per_example(xi):
            (g_rest, g_perturb), record = grad_one(rest, zeros, leaves, xi)
            return {
                "a": [record[s.leaf] for s in sites],
                "d": [g_perturb[s.leaf] for s in sites],
                "j": list(g_rest),
            }

        feats = jax.vmap(per_example)(x_block)
        return {**feats, "j": jacobian_columns(feats["j"])}

    return feature_fn, sites, rest_index


# Jacobian leaves smaller than this are concatenated into one column group; larger ones stay
# separate (no copy of the big per-example gradients; one GEMM each).
SMALL_LEAF = 1 << 15


def jacobian_columns(grads: list) -> list:
    """Per-example gradients of some leaves ``(b, *shape)`` as 2-D column groups ``(b, P_g)``.

    Big leaves are reshaped (free), small ones concatenated into a single group, so the
    Jacobian block is never copied into one ``(b, P)`` array; ``J₁J₂ᵀ`` is the sum of one
    product per group (:func:`columns_product`).
    """
    flat = [jnp.reshape(g, (g.shape[0], -1)) for g in grads]
    big = [g for g in flat if g.shape[1] >= SMALL_LEAF]
    small = [g for g in flat if 0 < g.shape[1] < SMALL_LEAF]
    if len(small) > 1:
        small = [jnp.concatenate(small, axis=1)]
    return big + small


def columns_product(c1: list, c2: list, precision=None) -> jax.Array | None:
    """``Σ_g C1_g C2_gᵀ`` over column groups; ``None`` when there are none."""
    out = None
    for g1, g2 in zip(c1, c2, strict=True):
        t = jnp.matmul(g1, g2.T, precision=precision)
        out = t if out is None else out + t
    return out


def structured_kernel(f1: dict, f2: dict, precision=None) -> jax.Array:
    """Θ between two blocks of structured features: Σ (A₁A₂ᵀ)⊙(D₁D₂ᵀ) + J₁J₂ᵀ."""
    out = columns_product(f1["j"], f2["j"], precision=precision)
    for a1, a2, d1, d2 in zip(f1["a"], f2["a"], f1["d"], f2["d"], strict=True):
        term = jnp.matmul(a1, a2.T, precision=precision) * jnp.matmul(d1, d2.T, precision=precision)
        out = term if out is None else out + term
    if out is None:  # a model without parameters cannot reach here (check_params)
        raise ValueError("structured features hold no parameters.")
    return out
