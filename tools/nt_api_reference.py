"""Writes neural-tangents API fixtures: multi-output kernels, layouts, kwargs, Taylor series.

Runs ONLY in the pinned oracle environment (jax 0.4.23 + neural-tangents 0.6.5, see
tools/README.md)::

    /work/nt-venv/bin/python tools/nt_api_reference.py --out tests/fixtures/nt_api

For each file (``mlp10.npz``, ``cnn10.npz``, ``grid10.npz``; a folder of their own, so
``tests/fixtures/nt_*.npz`` stays the single-output fixtures of tools/nt_reference.py) it
stores ``x1`` (5, 8, 8, 2), ``x2`` (3, 8, 8, 2), θ₀ (``param_i`` + ``treedef``, the leaves of
``init_fn(PRNGKey(0))``, whose dicts hold tuples/lists), θ = θ₀ + 0.1·N(0, 1)
(``shifted_param_i``), the keyword-argument values ``x_shift1`` (5, 128) / ``x_shift2``
(3, 128), and for every configuration in ``FILES[name]``:

* ``<config>__ntk__cross`` / ``__self``: ``nt.empirical_kernel_fn(f, trace_axes,
  diagonal_axes, vmap_axes, implementation=1)(x1, x2 or None, ("nngp", "ntk"), θ₀, **kw)``,
  the NTK part (``__out<i>`` appended for each output of a multi-output model);
* ``<config>__nngp__cross`` / ``__self``: the NNGP part;
* implementations 2 and 3 are computed too and must agree with 1 to ``--rtol``
  (max|Δ| / max|K|); the numbers are in ``meta["agreement_impl_2_3_vs_1"]``. An
  implementation that raises is recorded there as ``"error: ..."`` (neural-tangents'
  NTK_VECTOR_PRODUCTS with batched keyword pairs and ``x2=None`` maps x1 against the x2
  value of the pair and fails; implementation 1, the reference, uses the x1 value for both).

and, per model (``mlp10_heads__`` prefixed in mlp10.npz), ``f0`` = f(θ₀, x1), ``f_shifted``
= f(θ, x1), ``lin`` = ``nt.linearize(f, θ₀)(θ, x1)``, ``taylor<d>`` =
``nt.taylor_expand(f, θ₀, d)(θ, x1)`` for d = 1, 2, 3, and for mlp10 with keyword arguments
``scale=0.5, x_shift=x_shift1``: ``lin_kwargs``, ``taylor2_kwargs``, ``f_shifted_kwargs``.
``meta`` (JSON) lists the configurations (names, axes, ``vmap_axes`` as ``0``, ``null`` or
``"kwargs"`` = ``(0, 0, {"x_shift": 0})``, keyword arguments ``"none"`` or ``"pair"`` =
``scale=0.5, x_shift=(x_shift1, x_shift2)``, which of cross/self), versions and seeds.
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
import nt_models  # noqa: E402
import numpy as np  # noqa: E402

N1, N2 = 5, 3
INPUT_SHAPE = (8, 8, 2)
PARAM_SEED = 0
X_SEED = 2024  # numpy default_rng: x1, x2, x_shift1, x_shift2
SHIFT_SEED = 4321  # numpy default_rng: θ - θ₀, leaf order of flatten_params
SHIFT_SCALE = 0.1
SCALE = 0.5
TAYLOR_DEGREES = (1, 2, 3)


def config(name, model, trace, diagonal, vmap, kwargs="none", sides=("cross", "self")):
    return {
        "name": name,
        "model": model,
        "trace_axes": list(trace),
        "diagonal_axes": list(diagonal),
        "vmap_axes": vmap,
        "kwargs": kwargs,
        "sides": list(sides),
    }


def _logit_configs(model):
    return [
        config("default_vmap0", model, (-1,), (), 0),
        config("default_vmapnone", model, (-1,), (), None),
        config("full_vmap0", model, (), (), 0),
        config("full_vmapnone", model, (), (), None),
        config("diaglogits_vmap0", model, (), (-1,), 0),
        config("diaglogits_vmapnone", model, (), (-1,), None),
        config("diagbatch_vmap0", model, (), (0,), 0, sides=("self",)),
    ]


FILES = {
    "mlp10": _logit_configs("mlp10")
    + [
        config("pair_full_vmapkw", "mlp10", (), (), "kwargs", kwargs="pair"),
        config("pair_default_vmapnone", "mlp10", (-1,), (), None, kwargs="pair"),
        config("heads_vmap0", "mlp10_heads", (-1,), (), 0),
        config("heads_vmapnone", "mlp10_heads", (-1,), (), None),
    ],
    "cnn10": [
        config("default_vmap0", "cnn10", (-1,), (), 0),
        config("default_vmapnone", "cnn10", (-1,), (), None),
        config("full_vmap0", "cnn10", (), (), 0),
        config("diaglogits_vmapnone", "cnn10", (), (-1,), None),
    ],
    "grid10": [  # logits on a 2x2 grid: traced and diagonal axes other than the last
        config("default_vmap0", "grid10", (-1,), (), 0),
        config("traceh_diagc_vmap0", "grid10", (1,), (-1,), 0),
        config("tracehw_vmapnone", "grid10", (1, 2), (), None),
        config("diaghw_vmap0", "grid10", (), (1, 2), 0),
        config("tracew_diagh_vmapnone", "grid10", (-2,), (1,), None),
    ],
}


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def put(out: dict, key: str, tree) -> None:
    """Store an output (an array or a tuple of arrays: ``__out<i>`` suffixes)."""
    if isinstance(tree, tuple | list) and not hasattr(tree, "_fields"):
        for i, leaf in enumerate(tree):
            out[f"{key}__out{i}"] = np.asarray(leaf)
    else:
        out[key] = np.asarray(tree)


def vmap_axes_of(cfg):
    return (0, 0, {"x_shift": 0}) if cfg["vmap_axes"] == "kwargs" else cfg["vmap_axes"]


def kernels(nt, cfg, params, data, impl):
    f = nt_models.MODELS[cfg["model"]].make_apply_fn({})
    kernel_fn = nt.empirical_kernel_fn(
        f, tuple(cfg["trace_axes"]), tuple(cfg["diagonal_axes"]), vmap_axes_of(cfg), impl
    )
    kw = {}
    if cfg["kwargs"] == "pair":
        kw = {"scale": SCALE, "x_shift": (data["x_shift1"], data["x_shift2"])}
    result = {}
    for side in cfg["sides"]:
        x2 = data["x2"] if side == "cross" else None
        result[side] = kernel_fn(data["x1"], x2, ("nngp", "ntk"), params, **kw)
    return result


def ntk_of(k):
    """The NTK of an EmpiricalKernel, or a tuple of them for a multi-output model."""
    return k.ntk if hasattr(k, "ntk") else tuple(x.ntk for x in k)


def nngp_of(k):
    return k.nngp if hasattr(k, "nngp") else tuple(x.nngp for x in k)


def build(nt, name, rtol):
    m = nt_models.MODELS[name]
    params = m.init_fn(jax.random.PRNGKey(PARAM_SEED), INPUT_SHAPE)
    rng = np.random.default_rng(X_SEED)
    data = {
        "x1": rng.standard_normal((N1, *INPUT_SHAPE)).astype(np.float32),
        "x2": rng.standard_normal((N2, *INPUT_SHAPE)).astype(np.float32),
    }
    dim = int(np.prod(INPUT_SHAPE))
    data["x_shift1"] = (0.3 * rng.standard_normal((N1, dim))).astype(np.float32)
    data["x_shift2"] = (0.3 * rng.standard_normal((N2, dim))).astype(np.float32)
    leaves, td = nt_models.flatten_params(params)
    shift_rng = np.random.default_rng(SHIFT_SEED)
    shifted = [
        (a + SHIFT_SCALE * shift_rng.standard_normal(a.shape)).astype(np.float32) for a in leaves
    ]
    theta = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(params), shifted)

    out = dict(data)
    out["treedef"] = np.array(td)
    out.update({f"param_{i}": a for i, a in enumerate(leaves)})
    out.update({f"shifted_param_{i}": a for i, a in enumerate(shifted)})
    agreement = {}
    for cfg in FILES[name]:
        t0 = time.perf_counter()
        ref = kernels(nt, cfg, params, data, 1)
        for impl in (2, 3):
            try:
                other = kernels(nt, cfg, params, data, impl)
            except Exception as err:  # noqa: BLE001 - recorded (see the module docstring)
                agreement[f"{cfg['name']}__impl{impl}"] = f"error: {type(err).__name__}"
                continue
            for side in cfg["sides"]:
                a = jax.tree_util.tree_leaves(ntk_of(other[side]))
                b = jax.tree_util.tree_leaves(ntk_of(ref[side]))
                e = max(rel_err(u, v) for u, v in zip(a, b, strict=True))
                agreement[f"{cfg['name']}__{side}__impl{impl}"] = e
                if e > rtol:
                    raise AssertionError(f"{name}/{cfg['name']} {side}: impl {impl} vs 1: {e:.3g}")
        for side in cfg["sides"]:
            put(out, f"{cfg['name']}__ntk__{side}", ntk_of(ref[side]))
            put(out, f"{cfg['name']}__nngp__{side}", nngp_of(ref[side]))
        print(f"  [{name}] {cfg['name']}: {time.perf_counter() - t0:.1f}s", flush=True)

    models = sorted({cfg["model"] for cfg in FILES[name]})
    for model in models:
        f = nt_models.MODELS[model].make_apply_fn({})
        prefix = "" if model == name else f"{model}__"
        put(out, f"{prefix}f0", f(params, data["x1"]))
        put(out, f"{prefix}f_shifted", f(theta, data["x1"]))
        put(out, f"{prefix}lin", nt.linearize(f, params)(theta, data["x1"]))
        for d in TAYLOR_DEGREES:
            put(out, f"{prefix}taylor{d}", nt.taylor_expand(f, params, d)(theta, data["x1"]))
    if name == "mlp10":
        f = nt_models.MODELS["mlp10"].make_apply_fn({})
        kw = {"scale": SCALE, "x_shift": data["x_shift1"]}
        put(out, "lin_kwargs", nt.linearize(f, params)(theta, data["x1"], **kw))
        put(out, "taylor2_kwargs", nt.taylor_expand(f, params, 2)(theta, data["x1"], **kw))
        put(out, "f_shifted_kwargs", f(theta, data["x1"], **kw))

    meta = {
        "file_model": name,
        "models": models,
        "configs": FILES[name],
        "jax": jax.__version__,
        "neural_tangents": nt.__version__,
        "numpy": np.__version__,
        "implementation": 1,
        "agreement_impl_2_3_vs_1": agreement,
        "param_key": f"jax.random.PRNGKey({PARAM_SEED})",
        "input_shape": list(INPUT_SHAPE),
        "n1": N1,
        "n2": N2,
        "x_seed": X_SEED,
        "shift_seed": SHIFT_SEED,
        "shift_scale": SHIFT_SCALE,
        "scale": SCALE,
        "taylor_degrees": list(TAYLOR_DEGREES),
        "num_params": nt_models.count_params(params),
    }
    out["meta"] = np.array(json.dumps(meta, sort_keys=True))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="tests/fixtures/nt_api")
    ap.add_argument("--files", nargs="+", default=list(FILES))
    ap.add_argument("--rtol", type=float, default=1e-5)
    args = ap.parse_args(argv)

    import neural_tangents as nt

    print(f"jax {jax.__version__}, neural_tangents {nt.__version__}, numpy {np.__version__}")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in args.files:
        out = build(nt, name, args.rtol)
        path = out_dir / f"{name}.npz"
        np.savez_compressed(path, **out)
        print(f"wrote {path} ({path.stat().st_size / 1024:.1f} KiB, {len(out)} arrays)")


if __name__ == "__main__":
    main()
