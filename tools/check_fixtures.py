"""Checks tests/fixtures/nt_*.npz against brute force in the *project* environment.

    /work/venv/bin/python tools/check_fixtures.py [--fixtures tests/fixtures]

For every fixture: ``apply_fn(params, x1)`` vs ``f0_x1`` (abs 1e-6); brute-force Gram
(``jax.jacobian`` w.r.t. params, per-example flatten, J1 @ J2.T) vs ``gram_self`` /
``gram_cross`` (max|Δ| / max|Θ| <= 1e-5); ``jax.jvp`` linearization vs ``lin_out_shifted``;
and that ``init_fn`` in this JAX version reproduces the stored θ₀ and frozen state exactly.
Exits non-zero on failure. This is a helper, not the pytest suite.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import nt_models  # noqa: E402
import numpy as np  # noqa: E402


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def jac_matrix(apply_fn, params, x):
    jac = jax.jacobian(apply_fn)(params, x)  # leaves: (n, 1, *leaf.shape)
    leaves = jax.tree_util.tree_leaves(jac)
    return jnp.concatenate([leaf.reshape(x.shape[0], -1) for leaf in leaves], axis=1)


def check(path) -> bool:
    fx = nt_models.load_fixture(path)
    f, p = fx["apply_fn"], fx["params"]
    x1, x2 = jnp.asarray(fx["x1"]), jnp.asarray(fx["x2"])
    res = {}
    res["f0_abs"] = float(np.max(np.abs(np.asarray(f(p, x1)) - fx["f0_x1"])))
    j1, j2 = jac_matrix(f, p, x1), jac_matrix(f, p, x2)
    res["gram_self_rel"] = rel(j1 @ j1.T, fx["gram_self"])
    res["gram_cross_rel"] = rel(j1 @ j2.T, fx["gram_cross"])
    if "gram_self_f64" in fx:
        res["gram_self_vs_f64_rel"] = rel(j1 @ j1.T, fx["gram_self_f64"])
    dp = jax.tree_util.tree_map(lambda a, b: a - b, fx["shifted_params"], p)
    y0, dy = jax.jvp(lambda q: f(q, x1), (p,), (dp,))
    res["lin_rel"] = rel(y0 + dy, fx["lin_out_shifted"])
    res["f_shifted_rel"] = rel(f(fx["shifted_params"], x1), fx["f_shifted_x1"])
    m = nt_models.MODELS[fx["model"]]
    meta = fx["meta"]
    p_init = m.init_fn(jax.random.PRNGKey(0), meta["input_shape"])
    s_init = m.init_state(jax.random.PRNGKey(1000), meta["input_shape"])
    same = jax.tree_util.tree_all(
        jax.tree_util.tree_map(lambda a, b: bool(np.array_equal(a, b)), p_init, p)
    ) and jax.tree_util.tree_all(
        jax.tree_util.tree_map(lambda a, b: bool(np.array_equal(a, b)), s_init, fx["state"])
    )
    res["init_reproduces_fixture"] = same
    ok = (
        res["f0_abs"] <= 1e-6
        and res["gram_self_rel"] <= 1e-5
        and res["gram_cross_rel"] <= 1e-5
        and res["lin_rel"] <= 1e-5
        and same
    )
    print(
        f"{Path(path).name} [{'OK' if ok else 'FAIL'}] jax {jax.__version__} "
        f"(fixture: jax {meta['jax']}, nt {meta['neural_tangents']})"
    )
    for k, v in res.items():
        print(f"  {k:26s} {v:.3g}" if isinstance(v, float) else f"  {k:26s} {v}")
    return ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fixtures", default=str(HERE.parent / "tests" / "fixtures"))
    args = ap.parse_args()
    paths = sorted(Path(args.fixtures).glob("nt_*.npz"))
    if not paths:
        sys.exit(f"no nt_*.npz in {args.fixtures}")
    sys.exit(0 if all([check(p) for p in paths]) else 1)


if __name__ == "__main__":
    main()
