"""Writes neural-tangents oracle fixtures for the pure-JAX models in tools/nt_models.py.

Runs ONLY in the pinned oracle environment (jax 0.4.23 + neural-tangents 0.6.5, see
tools/README.md)::

    /work/nt-venv/bin/python tools/nt_reference.py --out tests/fixtures

For each model in ``--models`` (default: mlp cnn resnet) it writes
``<out>/nt_<model>.npz`` containing

* ``x1`` (12, 8, 8, 2), ``x2`` (7, 8, 8, 2): float32, ``numpy.random.default_rng(seed)``;
* ``param_0 ...`` (θ₀), ``shifted_param_0 ...`` (θ = θ₀ + 0.1·N(0, 1) per leaf), ``treedef``
  (JSON key paths, see ``nt_models.flatten_params``), ``state_0 ... / state_treedef``
  (frozen BN statistics; none for mlp/cnn);
* ``gram_self`` (n1, n1) and ``gram_cross`` (n1, n2): the empirical NTK
  Θ(x, x') = J(x) J(x')ᵀ, J = ∂f/∂θ at θ₀ (one logit), from
  ``nt.empirical_ntk_fn(apply_fn, trace_axes=(), vmap_axes=0, implementation=1)``
  (JACOBIAN_CONTRACTION). With ``trace_axes=()`` nt returns shape (n1, n2, 1, 1), the
  exact per-logit-pair kernel; it is reshaped to (n1, n2). With a single logit this equals
  the ``trace_axes=(-1,)`` result;
* ``gram_{self,cross}_impl{2,3}``: the same from NTK_VECTOR_PRODUCTS / STRUCTURED_DERIVATIVES
  (checked against implementation 1 to ``--rtol``, default 1e-5, max|Δ| / max|Θ|);
* ``f0_x1`` = f(θ₀, x1), ``f_shifted_x1`` = f(θ, x1), ``lin_out_shifted`` =
  ``nt.linearize(apply_fn, θ₀)(θ, x1)`` — all (n1, 1);
* ``gram_self_f64`` / ``gram_cross_f64``: implementation 1 in float64 (``jax_enable_x64``,
  params / state / inputs cast from the float32 values), unless ``--no-f64``;
* ``model`` (str) and ``meta`` (JSON: versions, seeds, agreement numbers, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import nt_models  # noqa: E402
import numpy as np  # noqa: E402

N1, N2 = 12, 7
INPUT_SHAPE = (8, 8, 2)
PARAM_SEED = 0  # init_fn key: jax.random.PRNGKey(PARAM_SEED)
STATE_SEED = 1000  # init_state key: jax.random.PRNGKey(STATE_SEED)
X_SEED = 1234  # numpy default_rng: x1 then x2
SHIFT_SEED = 4321  # numpy default_rng: shift direction, leaf order of flatten_params
SHIFT_SCALE = 0.1
IMPLS = (1, 2, 3)


def rel_err(a, b) -> float:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def gram(nt, apply_fn, params, x1, x2, impl):
    kfn = nt.empirical_ntk_fn(apply_fn, trace_axes=(), vmap_axes=0, implementation=impl)
    kfn = jax.jit(kfn)
    k = kfn(x1, x2, params)
    n2 = x1.shape[0] if x2 is None else x2.shape[0]
    k = np.asarray(k)
    assert k.shape == (x1.shape[0], n2, 1, 1), k.shape
    return k.reshape(x1.shape[0], n2)


def shifted_params(params):
    rng = np.random.default_rng(SHIFT_SEED)
    leaves, td = nt_models.flatten_params(params)
    new = [
        (leaf + SHIFT_SCALE * rng.standard_normal(leaf.shape)).astype(np.float32) for leaf in leaves
    ]
    return nt_models.unflatten_params(new, td)


def build(nt, name, rtol):
    m = nt_models.MODELS[name]
    params = m.init_fn(jax.random.PRNGKey(PARAM_SEED), INPUT_SHAPE)
    state = m.init_state(jax.random.PRNGKey(STATE_SEED), INPUT_SHAPE)
    apply_fn = m.make_apply_fn(state)
    rng = np.random.default_rng(X_SEED)
    x1 = rng.standard_normal((N1,) + INPUT_SHAPE).astype(np.float32)
    x2 = rng.standard_normal((N2,) + INPUT_SHAPE).astype(np.float32)

    grams = {}
    for impl in IMPLS:
        t = time.perf_counter()
        grams[("self", impl)] = gram(nt, apply_fn, params, x1, None, impl)
        grams[("cross", impl)] = gram(nt, apply_fn, params, x1, x2, impl)
        print(f"  [{name}] implementation {impl}: {time.perf_counter() - t:.2f}s", flush=True)
    agreement = {}
    for kind in ("self", "cross"):
        for impl in IMPLS[1:]:
            e = rel_err(grams[(kind, impl)], grams[(kind, 1)])
            agreement[f"{kind}_impl{impl}_vs_impl1"] = e
            if e > rtol:
                raise AssertionError(
                    f"{name}: {kind} gram impl {impl} vs 1 rel err {e:.3g} > {rtol}"
                )
    g = grams[("self", 1)]
    sym = rel_err(g, g.T)

    theta = shifted_params(params)
    f_lin = nt.linearize(apply_fn, params)
    lin_out = np.asarray(jax.jit(f_lin)(theta, x1))
    f0 = np.asarray(apply_fn(params, x1))
    f_shift = np.asarray(apply_fn(theta, x1))

    leaves, td = nt_models.flatten_params(params)
    sleaves, std = nt_models.flatten_params(theta)
    assert td == std
    out = {
        "model": np.array(name),
        "x1": x1,
        "x2": x2,
        "treedef": np.array(td),
        "gram_self": grams[("self", 1)],
        "gram_cross": grams[("cross", 1)],
        "f0_x1": f0,
        "f_shifted_x1": f_shift,
        "lin_out_shifted": lin_out,
    }
    for impl in IMPLS[1:]:
        out[f"gram_self_impl{impl}"] = grams[("self", impl)]
        out[f"gram_cross_impl{impl}"] = grams[("cross", impl)]
    out.update({f"param_{i}": a for i, a in enumerate(leaves)})
    out.update({f"shifted_param_{i}": a for i, a in enumerate(sleaves)})
    out.update(nt_models.pack_tree(state, "state"))
    meta = {
        "model": name,
        "description": m.description,
        "jax": jax.__version__,
        "jaxlib": getattr(__import__("jaxlib"), "__version__", "?"),
        "neural_tangents": nt.__version__,
        "numpy": np.__version__,
        "implementation": 1,
        "implementation_name": "JACOBIAN_CONTRACTION",
        "empirical_ntk_fn_kwargs": {"trace_axes": [], "vmap_axes": 0},
        "gram_definition": "Theta[i,j] = J(x1_i) . J(x_j), J = d f / d params at params (theta0),"
        " single logit; nt output (n1,n2,1,1) reshaped to (n1,n2)",
        "n1": N1,
        "n2": N2,
        "input_shape": list(INPUT_SHAPE),
        "param_key": f"jax.random.PRNGKey({PARAM_SEED})",
        "state_key": f"jax.random.PRNGKey({STATE_SEED})",
        "x_seed": X_SEED,
        "shift_seed": SHIFT_SEED,
        "shift_scale": SHIFT_SCALE,
        "num_params": nt_models.count_params(params),
        "impl_agreement_rel_max_abs": agreement,
        "gram_self_symmetry_rel": sym,
        "lin_minus_f_shifted_rel": rel_err(lin_out, f_shift),
    }
    return out, meta, (params, state, x1, x2)


def f64_grams(nt, name, params, state, x1, x2):
    """Implementation-1 grams in float64 (call only after jax_enable_x64 is on)."""

    def cast(t):
        return jax.tree_util.tree_map(lambda a: jnp.asarray(np.asarray(a), jnp.float64), t)

    apply64 = nt_models.MODELS[name].make_apply_fn(cast(state))
    p64 = cast(params)
    x1, x2 = np.asarray(x1, np.float64), np.asarray(x2, np.float64)
    gs = gram(nt, apply64, p64, x1, None, 1)
    gc = gram(nt, apply64, p64, x1, x2, 1)
    assert gs.dtype == np.float64, gs.dtype
    return gs, gc


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="tests/fixtures")
    ap.add_argument("--models", nargs="+", default=["mlp", "cnn", "resnet"])
    ap.add_argument("--rtol", type=float, default=1e-5)
    ap.add_argument("--no-f64", action="store_true")
    args = ap.parse_args(argv)

    import neural_tangents as nt

    print(f"jax {jax.__version__}, neural_tangents {nt.__version__}, numpy {np.__version__}")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    results = {}
    for name in args.models:
        results[name] = build(nt, name, args.rtol)

    if not args.no_f64:
        jax.config.update("jax_enable_x64", True)
        for name, (out, meta, (params, state, x1, x2)) in results.items():
            gs, gc = f64_grams(nt, name, params, state, x1, x2)
            out["gram_self_f64"] = gs
            out["gram_cross_f64"] = gc
            meta["f32_vs_f64_rel"] = {
                "self": rel_err(out["gram_self"], gs),
                "cross": rel_err(out["gram_cross"], gc),
            }

    for name, (out, meta, _) in results.items():
        out["meta"] = np.array(json.dumps(meta, sort_keys=True))
        path = out_dir / f"nt_{name}.npz"
        np.savez_compressed(path, **out)
        print(
            f"wrote {path} ({path.stat().st_size / 1024:.1f} KiB, {len(out)} arrays, "
            f"{meta['num_params']} params)"
        )
        print(f"  impl agreement (max|d|/max|K|): {meta['impl_agreement_rel_max_abs']}")
        if "f32_vs_f64_rel" in meta:
            print(f"  float32 vs float64: {meta['f32_vs_f64_rel']}")
        print(f"  |f_lin(theta) - f(theta)| rel: {meta['lin_minus_f_shifted_rel']:.3g}")
        for k in sorted(out):
            if not k.startswith(("param_", "shifted_param_", "state_")):
                v = out[k]
                print(f"    {k:22s} {str(v.dtype):8s} {v.shape}")


if __name__ == "__main__":
    main()
