"""Where the structured method's time goes, stage by stage, for one model and n inputs.

    python benchmarks/profile_structured.py                       # ResNet18, 128 inputs
    python benchmarks/profile_structured.py --model lenet --n 1000

Each stage is its own compiled program, timed after a warm-up (best of ``--repeats``):

``per-example passes``
    the forward and backward passes of every example through the jaxpr interpreter
    (``vmap`` of ``grad``): layer inputs, output cotangents and the other leaves' gradients;
``kernel gradients``
    per-example convolution kernel gradients from patches and cotangents (one batched
    product per convolution) and the patches of factored convolutions;
``features``
    both together, what :meth:`NTKEngine.features` runs;
``products``
    Θ from the features: the Jacobian column groups' GEMMs, the dense sites' (A Aᵀ) ⊙ (D Dᵀ)
    and the factored convolutions' position sums, each timed alone too;
``whole``
    ``ntk_gram``'s single program (features and the upper triangle of products).

The float32 GEMM rate of this machine is measured alongside, and each product's GFLOP/s is
given against it (the whole Gram's flops are ``n²·W`` for feature width W, half by symmetry).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from nt_models import get_model  # noqa: E402

from raysweep.ntk import NTKEngine, ntk_gram  # noqa: E402
from raysweep.ntk.structured import (  # noqa: E402
    ConvSite,
    columns_product,
    structured_feature_fn,
    structured_kernel,
)

MODELS = {"resnet18": "paper_resnet18", "lenet": "paper_lenet", "mlp": "paper_mlp"}


def best_of(fn, *args, repeats: int = 3) -> float:
    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - start)
    return best


def gemm_gflops() -> float:
    a = jax.random.normal(jax.random.PRNGKey(0), (2048, 8192), jnp.float32)
    mm = jax.jit(lambda u: jnp.matmul(u, u.T, precision="highest"))
    return 2.0 * 2048 * 2048 * 8192 / best_of(mm, a) / 1e9


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", choices=sorted(MODELS), default="resnet18")
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--budget-mb", type=float, default=4096)
    args = ap.parse_args(argv)

    params, _state, apply_fn = get_model(MODELS[args.model], seed=0, input_shape=(32, 32, 3))
    x = np.random.default_rng(0).standard_normal((args.n, 32, 32, 3)).astype(np.float32)
    engine = NTKEngine(
        apply_fn, params, x[:1], method="structured", memory_budget_mb=args.budget_mb
    )
    n, leaves = args.n, engine.leaves()
    structured_fn = structured_feature_fn(apply_fn, params, x[0])[0]
    feature_fn = jax.jit(structured_fn)
    gathers = structured_fn.gathers
    sites = engine.structured_sites
    convs = [s for s in sites if isinstance(s, ConvSite)]
    print(
        f"{args.model}: n={n}, P={engine.num_params:,}, feature width {engine.feature_width:,}, "
        f"{len(sites)} structured sites ({len(convs)} convolutions, "
        f"{sum(s.factored for s in convs)} factored, "
        f"{sum(s.factored and s.input_form for s in convs)} of them in input form)",
        flush=True,
    )
    gemm = gemm_gflops()
    print(f"float32 GEMM: {gemm:.0f} GFLOP/s", flush=True)
    xs = jnp.asarray(x)
    rows = []

    feats = feature_fn(leaves, xs)
    t_feat = best_of(feature_fn, leaves, xs, repeats=args.repeats)
    rows.append(("features (all)", t_feat, None))

    t_pass = best_of(jax.jit(structured_fn.passes), leaves, xs, repeats=args.repeats)
    rows.append(("per-example passes", t_pass, None))
    rows.append(("kernel gradients and patches (difference)", t_feat - t_pass, None))

    kernel = jax.jit(lambda f1, f2: structured_kernel(f1, f2, "highest", gathers))
    t_prod = best_of(kernel, feats, feats, repeats=args.repeats)
    width = engine.feature_width
    rows.append(("products (full n x n)", t_prod, 2.0 * n * n * width / t_prod / 1e9))
    if feats["j"]:
        cols = jax.jit(lambda a, b: columns_product(a, b, precision="highest"))
        t_j = best_of(cols, feats["j"], feats["j"], repeats=args.repeats)
        w_j = sum(g.shape[1] for g in feats["j"])
        rows.append((f"  Jacobian columns ({w_j:,} wide)", t_j, 2.0 * n * n * w_j / t_j / 1e9))
    if feats["pa"]:
        empty = {"a": [], "d": [], "j": []}
        fac = jax.jit(
            lambda f1, f2: structured_kernel(
                {**empty, "pa": f1["pa"], "pd": f1["pd"]},
                {**empty, "pa": f2["pa"], "pd": f2["pd"]},
                "highest",
                gathers,
            )
        )
        t_f = best_of(fac, feats, feats, repeats=args.repeats)
        rows.append((f"  factored convolutions ({len(feats['pa'])})", t_f, None))
    t_whole = best_of(
        lambda: ntk_gram(apply_fn, params, x, memory_budget_mb=args.budget_mb),
        repeats=args.repeats,
    )
    rows.append(("whole ntk_gram (triangle, mirrored)", t_whole, None))

    print(f"\n{'stage':<44}{'seconds':>9}{'GFLOP/s':>9}{'gemm%':>7}")
    for name, seconds, rate in rows:
        r = f"{rate:9.0f}{100 * rate / gemm:6.0f}%" if rate else ""
        print(f"{name:<44}{seconds:9.3f}{r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
