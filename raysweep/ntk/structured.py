"""Structured derivatives of dense and convolution layers, found by reading the model's jaxpr.

A dense layer ``y = a W`` evaluated on one example has the per-example gradient
``∂f/∂W = a dᵀ`` (an outer product), where ``a`` is the layer's input and ``d = ∂f/∂y`` the
cotangent at its output. Its contribution to the NTK is therefore

    Θ_W(x_i, x_j) = <a_i dᵢᵀ, a_j dⱼᵀ> = (a_i · a_j)(d_i · d_j),

i.e. ``(A Aᵀ) ⊙ (D Dᵀ)`` for a block of examples: the k x m weight Jacobian is never formed.

How the layers are found: the single-example function ``g(leaves, x_i) = f(θ, x_i[None])``
is traced to a jaxpr. A parameter leaf qualifies when it is a 2-D array used exactly once in
the whole program, as the right operand of a ``dot_general`` that contracts a ``(1, k)`` left
operand's last axis with the leaf's first axis (``nn.Dense`` and ``x @ W`` both trace to
this). Leaves used through ``jit`` calls are followed inside them.

Convolutions (``lax.conv_general_dilated`` with a parameter leaf as its kernel, used once, one
feature group) are found the same way. Their per-example kernel gradient is the sum over
output positions of (input patch) ⊗ (output cotangent), computed here from the recorded
input and cotangent as one batched product per block (``vmap`` of ``grad`` computes the same
numbers through a grouped convolution, which XLA runs several times slower on a CPU). These
gradients join the Jacobian columns of the other leaves (their column order differs from the
kernel's layout, which Θ does not see). A layer with few output positions and many channels
stays factored instead, like a dense layer with one term per pair of positions (see
:class:`ConvSite`).

Every other leaf (biases, batch-norm scales, weights used twice or transformed before use)
stays on the Jacobian contraction path, so the method is exact for every model.

The program is re-evaluated by a small interpreter (JAX's documented "custom interpreter"
pattern: ``primitive.bind`` with ``get_bind_params``) that records ``a`` and adds a zero
perturbation to ``y``; the gradient with respect to that perturbation is ``d``.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core as jex_core

from raysweep.ntk.kernel_axes import contract_kernel

_CALL_PRIMITIVES = ("jit", "pjit", "closed_call", "core_call")


@dataclass(frozen=True)
class DenseSite:
    """One structured dense weight: its leaf index and the (k, m) shape of the kernel."""

    leaf: int
    eqn_id: int
    in_features: int
    out_features: int


@dataclass(frozen=True)
class ConvSite:
    """One convolution kernel, handled through its input patches and output cotangents.

    The other fields are the convolution's static parameters: ``lhs_spec``, ``rhs_spec``,
    ``out_spec`` (dimension indices as in ``lax.ConvDimensionNumbers``), ``strides``,
    ``padding`` (low, high) pairs, ``lhs_dilation``, ``rhs_dilation``, and the ``out_shape``
    and ``rhs_shape`` of one example.

    With S output positions, K = patch size and C output features, the per-example kernel
    gradient has K·C entries and Θ costs K·C per pair of examples; in *factored* form
    (patches ``(S, K)`` and cotangents ``(S, C)`` per example) Θ costs S²(K + C) per pair and
    the features hold S(K + C) numbers. The cheaper form is used: factored for deep layers
    with few positions and many channels (ResNet18's last stage), gradients elsewhere.

    *Input form* of a factored convolution: a patch holds the input at W filter offsets, so
    the patch Gram is a sum of W shifted blocks of the inputs' Gram,
    ``(P₁P₂ᵀ)[s, t] = Σ_o (X₁X₂ᵀ)[u(s, o), u(t, o)]`` with ``u(s, o)`` the input position
    that offset o of output position s reads (zero in the padding). With U input positions
    and C_in input features that costs U²·C_in + W·S² per pair instead of S²·K = S²·W·C_in,
    and the features hold the U·C_in inputs instead of the S·K patches: 6.6x fewer
    products for ResNet18's stride-1 4x4 layers. Used when cheaper (never for transposed
    convolutions, ``lhs_dilation > 1``).
    """

    leaf: int
    eqn_id: int
    lhs_spec: tuple[int, ...]
    rhs_spec: tuple[int, ...]
    out_spec: tuple[int, ...]
    strides: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]
    lhs_dilation: tuple[int, ...]
    rhs_dilation: tuple[int, ...]
    out_shape: tuple[int, ...]
    rhs_shape: tuple[int, ...]
    lhs_shape: tuple[int, ...]

    @property
    def dims(self) -> tuple[int, int, int]:
        """(S, K, C): output positions, patch size, output features."""
        positions = math.prod(self.out_shape[d] for d in self.out_spec[2:])
        c_out = self.rhs_shape[self.rhs_spec[0]]
        return positions, math.prod(self.rhs_shape) // c_out, c_out

    @property
    def window(self) -> int:
        """W: filter offsets."""
        return math.prod(self.rhs_shape[d] for d in self.rhs_spec[2:])

    @property
    def input_size(self) -> tuple[int, int]:
        """(U, C_in): input positions and input features of one example."""
        positions = math.prod(self.lhs_shape[d] for d in self.lhs_spec[2:])
        return positions, self.lhs_shape[self.lhs_spec[1]]

    def _input_cost(self) -> int | None:
        """Products per pair for the patch Gram in input form (``None``: not applicable)."""
        if any(d != 1 for d in self.lhs_dilation):
            return None
        u, c_in = self.input_size
        return u * u * c_in + self.window * self.dims[0] ** 2

    @property
    def input_form(self) -> bool:
        """Whether the patch Gram comes cheaper from the inputs' Gram (class docstring)."""
        positions, k, _ = self.dims
        cost = self._input_cost()
        return cost is not None and cost < positions * positions * k

    def _position_cost(self) -> int:
        """Products per pair of examples for the (S, S) patch Gram, in the cheaper form."""
        positions, k, _ = self.dims
        return min(c for c in (positions * positions * k, self._input_cost()) if c is not None)

    def input_gather(self) -> np.ndarray:
        """``(W, S)`` int32: the input position ``u(s, o)`` each offset o of output position
        s reads, in the channels-last row-major order of the inputs and cotangents; ``U``
        (a zero row) where it reads the padding."""
        out_spatial = [self.out_shape[d] for d in self.out_spec[2:]]
        in_spatial = [self.lhs_shape[d] for d in self.lhs_spec[2:]]
        window = [self.rhs_shape[d] for d in self.rhs_spec[2:]]
        rows = []
        for offset in itertools.product(*(range(w) for w in window)):
            coords = [
                np.arange(n) * st + o * dil - lo
                for n, st, o, dil, (lo, _) in zip(
                    out_spatial, self.strides, offset, self.rhs_dilation, self.padding, strict=True
                )
            ]
            grids = np.meshgrid(*coords, indexing="ij")
            valid = np.ones(grids[0].shape, bool)
            for g, size in zip(grids, in_spatial, strict=True):
                valid &= (g >= 0) & (g < size)
            index = np.ravel_multi_index(
                [np.clip(g, 0, n - 1) for g, n in zip(grids, in_spatial, strict=True)], in_spatial
            )
            rows.append(np.where(valid, index, math.prod(in_spatial)).ravel())
        return np.asarray(rows, np.int32)

    @property
    def factored(self) -> bool:
        return self.factored_for(1)

    def factored_for(self, outputs: int = 1, full_layout: bool = False) -> bool:
        """Whether the factored form is cheaper for a model with ``outputs`` outputs.

        With C outputs the patches stay one per example and the cotangents become C per
        example: per pair of examples the factored form costs the patch Gram's products (S²·K,
        or U²·C_in + W·S² in input form) plus S²·C·C_out, against C·K·C_out for kernel
        gradients (traced layout). Kernel layouts that keep pairs of
        outputs (``full_layout``) use gradients: the factored form would hold S² position
        pairs times C² output pairs per tile.
        """
        if outputs > 1 and full_layout:
            return False
        positions, k, c = self.dims
        return self._position_cost() + positions * positions * outputs * c < outputs * k * c

    def width_for(self, outputs: int = 1, full_layout: bool = False) -> int:
        """Feature numbers per example with ``outputs`` outputs."""
        positions, k, c = self.dims
        if not self.factored_for(outputs, full_layout):
            return outputs * k * c
        u, c_in = self.input_size
        return (u * c_in if self.input_form else positions * k) + positions * outputs * c

    @property
    def width(self) -> int:
        """Feature numbers per example (one output)."""
        return self.width_for(1)


def _conv_site(eqn, leaf: int) -> ConvSite | None:
    """A :class:`ConvSite` when this ``conv_general_dilated`` equation qualifies."""
    p = eqn.params
    lhs, rhs = (v.aval for v in eqn.invars)
    dn = p["dimension_numbers"]
    if (
        p.get("feature_group_count", 1) != 1
        or p.get("batch_group_count", 1) != 1
        or lhs.shape[dn.lhs_spec[0]] != 1
        or lhs.dtype != rhs.dtype
        or eqn.outvars[0].aval.dtype != rhs.dtype
    ):
        return None
    spatial = len(lhs.shape) - 2
    return ConvSite(
        leaf=leaf,
        eqn_id=id(eqn),
        lhs_spec=tuple(dn.lhs_spec),
        rhs_spec=tuple(dn.rhs_spec),
        out_spec=tuple(dn.out_spec),
        strides=tuple(p["window_strides"]),
        padding=tuple((int(lo), int(hi)) for lo, hi in p["padding"]),
        lhs_dilation=tuple(p.get("lhs_dilation") or (1,) * spatial),
        rhs_dilation=tuple(p.get("rhs_dilation") or (1,) * spatial),
        out_shape=tuple(eqn.outvars[0].aval.shape),
        rhs_shape=tuple(rhs.shape),
        lhs_shape=tuple(lhs.shape),
    )


def _channels_last(a, spec):
    """``(b, *one example)`` -> ``(b, *spatial, features)`` (the size-1 batch axis dropped)."""
    perm = [0, *(1 + d for d in spec[2:]), 1 + spec[1], 1 + spec[0]]
    a = jnp.transpose(a, perm)
    return a.reshape(a.shape[:-1])


def conv_patches(site: ConvSite, lhs) -> jax.Array:
    """Input patches ``(b, S, K)`` of one convolution from its recorded inputs.

    ``lhs``: ``(b, *input shape of one example)`` (with the convolution's size-1 batch
    axis). Patch entries are ordered (filter offset, input feature), not the kernel's layout.
    """
    x = _channels_last(lhs, site.lhs_spec)
    b = x.shape[0]
    out_spatial = [site.out_shape[d] for d in site.out_spec[2:]]
    config = [(0, 0, 0)]
    for (lo, hi), dil in zip(site.padding, site.lhs_dilation, strict=True):
        config.append((lo, hi, dil - 1))
    x = lax.pad(x, jnp.zeros((), x.dtype), [*config, (0, 0, 0)])
    window = [site.rhs_shape[k] for k in site.rhs_spec[2:]]
    patches = []
    for offset in itertools.product(*(range(w) for w in window)):
        start = [o * r for o, r in zip(offset, site.rhs_dilation, strict=True)]
        limit = [
            st + (n - 1) * step + 1
            for st, n, step in zip(start, out_spatial, site.strides, strict=True)
        ]
        patches.append(
            lax.slice(x, (0, *start, 0), (b, *limit, x.shape[-1]), (1, *site.strides, 1))
        )
    positions = math.prod(out_spatial)
    return jnp.stack(patches, axis=-2).reshape(b, positions, -1)


def conv_cotangents(site: ConvSite, cot) -> jax.Array:
    """Output cotangents ``(b, *S, P, C)`` of one convolution (P positions, C features).

    ``cot``: ``(b, *S, *output shape of one example)``, S the model's per-example output
    shape (``()`` for one output).
    """
    lead = cot.shape[: cot.ndim - len(site.out_shape)]
    flat = cot.reshape(-1, *site.out_shape)
    d = _channels_last(flat, site.out_spec)
    return d.reshape(*lead, -1, d.shape[-1])


def conv_kernel_gradients(site: ConvSite, lhs, cot) -> jax.Array:
    """Per-example kernel gradients ``(b, *S, K·C)`` of one convolution.

    ``cot`` may carry the model's output axes S after the example axis (see
    :func:`conv_cotangents`); one output gives ``(b, K·C)``.
    """
    patches, d = conv_patches(site, lhs), conv_cotangents(site, cot)
    lead = d.shape[:-2]
    d = d.reshape(d.shape[0], -1, *d.shape[-2:])  # (b, C_out_model, P, C)
    g = jnp.einsum("bpk,bopc->bokc", patches, d)
    return g.reshape(*lead, -1)


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
        if len(in_alias) < 2 or in_alias[1] is None or in_alias[0] is not None:
            continue
        if eqn.primitive.name == "conv_general_dilated":
            site = _conv_site(eqn, in_alias[1])
            if site is not None:
                candidates[in_alias[1]] = site
            continue
        if eqn.primitive.name != "dot_general":
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


def find_sites(apply_fn, params, x_example, out_shape=()) -> tuple[Any, list]:
    """Trace ``apply_fn`` on one example; return (closed jaxpr, structured sites).

    Sites are :class:`DenseSite` and :class:`ConvSite` objects, in leaf order.
    ``x_example`` has the per-example shape (no batch axis); ``out_shape`` is the model's
    per-example output shape S (``()``: one output). The jaxpr's inputs are the flattened
    parameter leaves followed by the example; its output has shape S.
    """
    leaves, treedef = jax.tree_util.tree_flatten(params)

    def single(leaves, xi):
        out = apply_fn(jax.tree_util.tree_unflatten(treedef, leaves), xi[None])
        return jnp.reshape(out, tuple(out_shape))

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
    """Evaluate ``jaxpr``; at hooked sites record the input and add the perturbation."""
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
            if isinstance(site, DenseSite):
                record[site.leaf] = invals[0][0]
                outvals = [outvals[0] + perturb[site.leaf][None]]
            elif site is not None:  # a convolution keeps its size-1 batch axis
                record[site.leaf] = invals[0]
                outvals = [outvals[0] + perturb[site.leaf]]
        for v, val in zip(eqn.outvars, outvals, strict=True):
            env[v] = val
    return [_read(env, v) for v in jaxpr.outvars]


def structured_feature_fn(apply_fn, params, x_example, out_shape=(), full_layout=False):
    """Per-example NTK factors with dense weights in factored form.

    ``params`` fixes the tree structure, shapes and dtypes (the program is traced with them);
    the values are not captured. ``out_shape`` is the model's per-example output shape S
    (``()``: one output); ``full_layout`` says whether the kernel keeps pairs of outputs
    (decides the form of convolutions, :meth:`ConvSite.factored_for`). Returns
    ``(feature_fn, sites, rest_index)``. ``feature_fn(leaves, x_block)`` takes the flattened
    parameter leaves (``jax.tree_util.tree_leaves(params)`` of any point with those shapes)
    and a block of examples ``(b, ...)``, and returns a dict with

    - ``"a"``: list, per dense site, of layer inputs ``(b, k)``;
    - ``"d"``: list, per dense site, of output cotangents ``(b, *S, m)``, one per output;
    - ``"pa"``, ``"pd"``: lists, per factored convolution, of input patches ``(b, P, K)``
      (or, in input form, the inputs ``(b, U, C_in)``) and output cotangents
      ``(b, *S, P, C)`` (see :class:`ConvSite`); ``feature_fn.gathers`` says which, per
      factored convolution: its :meth:`ConvSite.input_gather` or ``None`` (patches), for the
      kernels' ``gathers=``;
    - ``"j"``: the Jacobian of all other leaves (other convolution kernels from their
      patches, the rest by ``grad``, or ``jacrev`` for several outputs) as column groups
      ``(b, *S, P_g)`` (see :func:`jacobian_columns`).

    ``rest_index`` lists the leaves whose gradients come from ``grad``. For one output, Θ of
    two blocks is ``Σ_dense (A₁A₂ᵀ) ⊙ (D₁D₂ᵀ) + Σ_factored Σ_st (P₁P₂ᵀ ⊙ D₁D₂ᵀ)_st + J₁J₂ᵀ``
    (see :func:`structured_kernel`); with several outputs the products of cotangents and
    Jacobians take the kernel's output layout (``structured_kernel(..., spec=...)``).
    """
    out_shape = tuple(out_shape)
    outputs = math.prod(out_shape)
    closed, sites = find_sites(apply_fn, params, x_example, out_shape)
    dense = [s for s in sites if isinstance(s, DenseSite)]
    convs = [s for s in sites if isinstance(s, ConvSite)]
    num_leaves = len(jax.tree_util.tree_leaves(params))
    structured = {s.leaf for s in sites}
    rest_index = [i for i in range(num_leaves) if i not in structured]
    hooks = {s.eqn_id: s for s in sites}
    ndim = 1 + len(out_shape)
    # per convolution: "gradients", or factored from "patches" or from its "inputs"
    forms = [
        "gradients"
        if not s.factored_for(outputs, full_layout)
        else "inputs"
        if s.input_form
        else "patches"
        for s in convs
    ]

    def one(rest_leaves, perturb, leaves, xi):
        full = list(leaves)
        for i, leaf in zip(rest_index, rest_leaves, strict=True):
            full[i] = leaf
        record: dict = {}
        (out,) = _eval(closed.jaxpr, closed.consts, [*full, xi], hooks, perturb, record)
        return out, record

    # one output: one reverse pass; C outputs: C of them (jacrev's vmap over a basis)
    derivative = jax.jacrev if out_shape else jax.grad
    grad_one = derivative(one, argnums=(0, 1), has_aux=True)

    def passes(leaves, x_block):
        """The per-example forward and backward passes: recorded inputs, cotangents and the
        other leaves' gradients, before any convolution is turned into features."""
        leaves = list(leaves)
        if len(leaves) != num_leaves:
            raise ValueError(f"expected {num_leaves} parameter leaves, got {len(leaves)}.")
        rest = [leaves[i] for i in rest_index]
        dtype = lambda s: leaves[s.leaf].dtype  # noqa: E731
        zeros = {s.leaf: jnp.zeros((s.out_features,), dtype(s)) for s in dense}
        zeros |= {s.leaf: jnp.zeros(s.out_shape, dtype(s)) for s in convs}

        def per_example(xi):
            (g_rest, g_perturb), record = grad_one(rest, zeros, leaves, xi)
            return {
                "a": [record[s.leaf] for s in dense],
                "d": [g_perturb[s.leaf] for s in dense],
                "j": list(g_rest),
                "conv_in": [record[s.leaf] for s in convs],
                "conv_cot": [g_perturb[s.leaf] for s in convs],
            }

        return jax.vmap(per_example)(x_block)

    def feature_fn(leaves, x_block):
        feats = passes(leaves, x_block)
        grads, patches, cots = [], [], []
        for s, form, lhs, cot in zip(
            convs, forms, feats["conv_in"], feats["conv_cot"], strict=True
        ):
            if form == "gradients":
                grads.append(conv_kernel_gradients(s, lhs, cot))
                continue
            if form == "inputs":
                u, c_in = s.input_size
                patches.append(_channels_last(lhs, s.lhs_spec).reshape(lhs.shape[0], u, c_in))
            else:
                patches.append(conv_patches(s, lhs))
            cots.append(conv_cotangents(s, cot))
        return {
            "a": feats["a"],
            "d": feats["d"],
            "pa": patches,
            "pd": cots,
            "j": jacobian_columns(grads + feats["j"], ndim),
        }

    feature_fn.passes = passes  # for profiling the stages (benchmarks/profile_structured.py)
    # per factored convolution: its input positions (input form) or None (patches)
    feature_fn.gathers = [
        s.input_gather() if form == "inputs" else None
        for s, form in zip(convs, forms, strict=True)
        if form != "gradients"
    ]
    return feature_fn, sites, rest_index


# Jacobian leaves smaller than this are concatenated into one column group; larger ones stay
# separate (no copy of the big per-example gradients; one GEMM each).
SMALL_LEAF = 1 << 15


def jacobian_columns(grads: list, ndim: int = 1) -> list:
    """Per-example gradients ``(b, *S, *shape)`` as column groups ``(b, *S, P_g)``.

    ``ndim`` counts the example axis and the output axes S (1: one output). Big leaves are
    reshaped (free), small ones concatenated into a single group, so the Jacobian block is
    never copied into one ``(b, *S, P)`` array; ``J₁J₂ᵀ`` is the sum of one product per
    group (:func:`columns_product`).
    """
    flat = [jnp.reshape(g, (*g.shape[:ndim], -1)) for g in grads]
    big = [g for g in flat if g.shape[-1] >= SMALL_LEAF]
    small = [g for g in flat if 0 < g.shape[-1] < SMALL_LEAF]
    if len(small) > 1:
        small = [jnp.concatenate(small, axis=-1)]
    return big + small


def columns_product(c1: list, c2: list, precision=None) -> jax.Array | None:
    """``Σ_g C1_g C2_gᵀ`` over column groups; ``None`` when there are none."""
    out = None
    for g1, g2 in zip(c1, c2, strict=True):
        t = jnp.matmul(g1, g2.T, precision=precision)
        out = t if out is None else out + t
    return out


def _sum(terms: list) -> jax.Array | None:
    out = None
    for t in terms:
        out = t if out is None else out + t
    return out


def position_gram(p1, p2, gather, precision=None) -> jax.Array:
    """The patch Gram ``(b1·S, b2·S)`` of one factored convolution, from patches
    (``gather=None``) or, in input form, from the inputs ``(b, U, C_in)`` and the ``(W, S)``
    positions of :meth:`ConvSite.input_gather`: W shifted blocks of the inputs' Gram."""
    (b1, u, c), b2 = p1.shape, p2.shape[0]
    r = jnp.matmul(p1.reshape(b1 * u, c), p2.reshape(b2 * u, c).T, precision=precision)
    if gather is None:
        return r
    r = jnp.pad(r.reshape(b1, u, b2, u), ((0, 0), (0, 1), (0, 0), (0, 1)))  # u = U: padding
    g = None
    for index in np.asarray(gather):  # one filter offset: the same shift on both sides
        t = jnp.take(jnp.take(r, index, axis=1), index, axis=3)
        g = t if g is None else g + t
    s = gather.shape[1]
    return g.reshape(b1 * s, b2 * s)


def _gathers(f: dict, gathers) -> list:
    return [None] * len(f["pa"]) if gathers is None else list(gathers)


def structured_kernel(f1: dict, f2: dict, precision=None, gathers=None, spec=None) -> jax.Array:
    """Θ between two blocks of structured features (see :func:`structured_feature_fn`).

    ``gathers``: its ``feature_fn.gathers``, needed when a convolution is in input form.
    ``spec``: ``None`` for one output, ``(b1, b2)``; for several outputs their
    :class:`~raysweep.ntk.multi_output.OutputSpec`, ``(b1, b2, *spec.tail)``. Every term is
    a product of an output-free Gram (layer inputs, patches) and a kernel of the cotangents
    in the output layout, or a Jacobian kernel: for a dense site
    ``Θ_cc'(i, j) = (a_i · a_j)(d_ic · d_jc')``, which traced and diagonal axes reduce like
    any kernel since ``a_i · a_j`` does not depend on the outputs.
    """

    def mm(u, v):
        return jnp.matmul(u, v.T, precision=precision)

    if spec is None:
        tail, outputs_kernel = (), mm
    else:
        tail = spec.tail

        def outputs_kernel(u, v):
            return contract_kernel(u, v, spec.ndim, spec.trace, spec.diagonal, precision)

    def times(g, h):  # (b1, b2) ⊙ (b1, b2, *tail)
        return g.reshape(*g.shape, *(1,) * len(tail)) * h

    dense = [
        times(mm(a1, a2), outputs_kernel(d1, d2))
        for a1, a2, d1, d2 in zip(f1["a"], f2["a"], f1["d"], f2["d"], strict=True)
    ]
    factored = []
    for p1, p2, d1, d2, gather in zip(
        f1["pa"], f2["pa"], f1["pd"], f2["pd"], _gathers(f1, gathers), strict=True
    ):
        b1, s, b2 = d1.shape[0], d1.shape[-2], d2.shape[0]
        g = position_gram(p1, p2, gather, precision)
        h = outputs_kernel(_by_position(d1), _by_position(d2))
        factored.append(times(g, h).reshape(b1, s, b2, s, *tail).sum(axis=(1, 3)))
    jac = [outputs_kernel(g1, g2) for g1, g2 in zip(f1["j"], f2["j"], strict=True)]
    # Each part summed on its own first: accumulating the factored terms onto the Jacobian
    # product made XLA's CPU backend pick a ~10x slower program (measured on ResNet18).
    parts = [_sum(jac), _sum(dense), _sum(factored)]
    out = _sum([p for p in parts if p is not None])
    if out is None:  # a model without parameters cannot reach here (check_params)
        raise ValueError("structured features hold no parameters.")
    return out if spec is None else out / spec.divisor


def _by_position(d):
    """Cotangents ``(b, *S, P, C)`` -> ``(b·P, *S, C)``: positions join the example axis."""
    d = jnp.moveaxis(d, -2, 1)
    return d.reshape(d.shape[0] * d.shape[1], *d.shape[2:])
