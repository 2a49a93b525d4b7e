"""raysweep.nads against brute force, Theorem 1 by Monte Carlo, the dataset D(u), bad input.

Brute force: the full mixed derivative M = ∇²_{x,θ} f (P × d) by ``jax.jacfwd`` over x of the
raveled parameter gradient, then ``np.linalg.svd`` in float64. Models are tiny (d = 16 or 36,
P ≤ 500) so the whole file runs in well under a minute on two busy cores.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from raysweep.models import get_model, init_variables, make_apply_fn
from raysweep.nads import MixedDerivative, gaussian_samples, nad_dataset, nads
from raysweep.ntk import alignment

REPO = Path(__file__).resolve().parents[1]
RTOL = 1e-4
CNN_SHAPE = (6, 6, 1)
MLP_SHAPE = (4, 4, 1)


# ---------------------------------------------------------------------------- tiny models


def _conv(x, w):
    return jax.lax.conv_general_dilated(
        x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def cnn_apply(params, x):
    """Pure-JAX GeLU CNN: conv3x3(3) -> gelu -> conv3x3(2) -> gelu -> dense(1); (n, 6, 6, 1)."""
    h = jax.nn.gelu(_conv(x, params["w1"]) + params["b1"], approximate=False)
    h = jax.nn.gelu(_conv(h, params["w2"]) + params["b2"], approximate=False)
    return h.reshape(h.shape[0], -1) @ params["w3"] + params["b3"]


def cnn_params(seed=0):
    keys = jax.random.split(jax.random.key(seed), 6)
    n = jax.random.normal
    return {
        "w1": n(keys[0], (3, 3, 1, 3)) / 3.0,
        "b1": 0.3 * n(keys[1], (3,)),
        "w2": n(keys[2], (3, 3, 3, 2)) / math.sqrt(27),
        "b2": 0.3 * n(keys[3], (2,)),
        "w3": n(keys[4], (72, 1)) / math.sqrt(72),
        "b3": 0.1 * n(keys[5], (1,)),
    }


@pytest.fixture(scope="module")
def cnn():
    """(apply_fn, params, brute-force M at the origin)."""
    params = cnn_params()
    return cnn_apply, params, brute_mixed(cnn_apply, params, np.zeros((1, *CNN_SHAPE)))


@pytest.fixture(scope="module")
def mlp():
    module = get_model("mlp", activation="gelu", hidden_sizes=(12, 12))
    variables = init_variables(module, MLP_SHAPE, seed=0)
    return make_apply_fn(module, variables), variables["params"]


def brute_mixed(apply_fn, params, points) -> np.ndarray:
    """(1/n) Σᵢ ∇²_{x,θ} f(xᵢ) as a float64 (P, d) array, by jacfwd of the raveled gradient."""
    flat, unravel = ravel_pytree(params)

    def grad_theta(x):
        return jax.grad(lambda th: apply_fn(unravel(th), x[None])[0, 0])(flat)

    jac = jax.jit(jax.vmap(jax.jacfwd(grad_theta)))(jnp.asarray(points, jnp.float32))
    n, p = jac.shape[:2]
    return np.asarray(jac, np.float64).reshape(n, p, -1).mean(axis=0)


def assert_matches_svd(result, mixed, k):
    _, s, vt = np.linalg.svd(mixed, full_matrices=False)
    gaps = np.diff(-(s[: k + 1] ** 2)) / s[0] ** 2
    assert np.all(gaps > 1e-3), f"test model has nearly degenerate singular values: {s[: k + 1]}"
    np.testing.assert_allclose(result.eigvals, s[:k] ** 2, rtol=RTOL)
    dirs = np.asarray(result.directions, np.float64)
    signs = np.sign(np.sum(dirs * vt[:k], axis=1))
    np.testing.assert_allclose(dirs, signs[:, None] * vt[:k], atol=RTOL)
    # sign convention: the entry of largest magnitude is positive
    lead = np.argmax(np.abs(dirs), axis=1)
    assert np.all(dirs[np.arange(k), lead] > 0)
    np.testing.assert_allclose(np.linalg.norm(dirs, axis=1), 1.0, atol=1e-6)


# ---------------------------------------------------------------------------- brute force


@pytest.mark.parametrize("method", ["dense", "svds", "gram"])
def test_cnn_origin_matches_brute_force(cnn, method):
    apply_fn, params, mixed = cnn
    k = 4
    result = nads(apply_fn, params, CNN_SHAPE, k, method=method)
    assert result.eigvals.dtype == np.float64 and result.eigvals.shape == (k,)
    assert result.directions.dtype == np.float32 and result.directions.shape == (k, 36)
    assert result.method == method and result.where == "origin" and not result.vanishing
    assert np.all(np.diff(result.eigvals) <= 0)
    assert_matches_svd(result, mixed, k)
    assert result.images().shape == (k, *CNN_SHAPE)


def test_mlp_origin_and_x0_match_brute_force(mlp):
    apply_fn, params = mlp
    zero = nads(apply_fn, params, MLP_SHAPE, 3, method="svds")
    assert_matches_svd(zero, brute_mixed(apply_fn, params, np.zeros((1, *MLP_SHAPE))), 3)
    x0 = gaussian_samples(MLP_SHAPE, 1, seed=3)[0]
    at_x0 = nads(apply_fn, params, MLP_SHAPE, 3, x0=x0, method="svds")
    assert at_x0.where == "x0"
    assert_matches_svd(at_x0, brute_mixed(apply_fn, params, x0[None]), 3)


def test_data_average_and_products_match_brute_force(mlp):
    apply_fn, params = mlp
    samples = gaussian_samples(MLP_SHAPE, 10, seed=1)
    mixed = brute_mixed(apply_fn, params, samples)
    # batch_size 4: three batches, the last one padded with zero-weight points
    result = nads(apply_fn, params, MLP_SHAPE, 3, samples=samples, batch_size=4, method="svds")
    assert result.where == "samples" and result.num_points == 10
    assert_matches_svd(result, mixed, 3)

    op = MixedDerivative(apply_fn, params, samples, batch_size=4)
    rng = np.random.default_rng(0)
    v, w = rng.standard_normal(op.dim), rng.standard_normal(op.num_params)
    np.testing.assert_allclose(op.matvec(v), mixed @ v, rtol=1e-4, atol=1e-5 * np.abs(mixed).max())
    np.testing.assert_allclose(op.rmatvec(w), mixed.T @ w, rtol=1e-4, atol=1e-4)
    # the jvp's primal: the gradient of the mean output
    flat, unravel = ravel_pytree(params)
    mean_out = jax.jit(lambda th: jnp.mean(apply_fn(unravel(th), jnp.asarray(samples))))
    mean_grad = jax.jit(jax.grad(mean_out))(flat)
    np.testing.assert_allclose(op.output_gradient(), mean_grad, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------- Theorem 1


def test_theorem1_stein_identity_monte_carlo(mlp):
    """‖E[∇²_{x,θ} f(x)] u‖² vs the Lemma 1 form ‖E[(uᵀx) ∇θf(x)]‖² on the same samples.

    Both are sample means over the same x ~ N(0, I) of two different per-sample vectors,
    aᵢ = (uᵀxᵢ)∇θf(xᵢ) and bᵢ = ∇²_{x,θ}f(xᵢ)u, with equal expectations m (Stein's lemma). With
    δ = ā − b̄ (mean of the n iid zero-mean dᵢ = aᵢ − bᵢ): ‖ā‖² − ‖b̄‖² = 2⟨δ, b̄⟩ + ‖δ‖², whose
    first-order term has standard deviation 2·sqrt(mᵀ Cov(d) m / n) (delta method) and whose
    second-order term has mean tr Cov(d) / n. The tolerance is 4 such standard deviations plus
    4 times that mean, with Cov(d) and m estimated from the per-sample vectors.
    """
    apply_fn, params = mlp
    n = 20000
    x = gaussian_samples(MLP_SHAPE, n, seed=7)
    xf = x.reshape(n, -1).astype(np.float64)
    top = nads(apply_fn, params, MLP_SHAPE, 1, samples=x, batch_size=5000, method="svds")
    rng = np.random.default_rng(11)
    units = np.concatenate([top.directions, rng.standard_normal((2, xf.shape[1]))])
    units /= np.linalg.norm(units, axis=1, keepdims=True)

    op = MixedDerivative(apply_fn, params, x, batch_size=5000)
    means = [np.asarray(op.matvec(u), np.float64) for u in units]  # b̄ = M̄u
    stein = np.array([np.sum(np.square(b)) for b in means])
    lemma = alignment(apply_fn, params, x, units @ xf.T)  # targets uᵀxᵢ, shape (3, n)
    assert stein[0] == pytest.approx(top.eigvals[0], rel=1e-4)
    assert np.all(stein[0] >= stein[1:])  # the top NAD maximizes the alignment

    flat, unravel = ravel_pytree(params)

    def per_sample(xi, u):
        def grad_theta(xx):
            return jax.grad(lambda th: apply_fn(unravel(th), xx[None])[0, 0])(flat)

        g, mu = jax.jvp(grad_theta, (xi,), (u.reshape(xi.shape),))
        return jnp.dot(u, xi.reshape(-1)) * g - mu  # dᵢ = aᵢ − bᵢ

    diff_fn = jax.jit(jax.vmap(per_sample, in_axes=(0, None)))
    for u, b_mean, s_val, l_val in zip(units, means, stein, lemma, strict=True):
        diffs = np.asarray(diff_fn(jnp.asarray(x), jnp.asarray(u, jnp.float32)), np.float64)
        first = 2 * math.sqrt(np.var(diffs @ b_mean) / n)
        second = np.sum(np.var(diffs, axis=0)) / n
        tol = 4 * first + 4 * second
        assert tol < 0.2 * s_val, "too few samples for a meaningful check"
        assert abs(s_val - l_val) <= tol, (s_val, l_val, tol)


# ---------------------------------------------------------------------------- D(u)


def test_nad_dataset_properties():
    shape = (6, 6, 1)
    u = np.random.default_rng(0).standard_normal(shape) * 3.0  # not unit: normalized inside
    unit = u.reshape(-1) / np.linalg.norm(u)
    x_tr, y_tr, x_te, y_te = nad_dataset(
        u, shape, num_train=4000, num_test=500, epsilon=0.5, sigma=2.0, seed=5
    )
    assert x_tr.shape == (4000, *shape) and x_te.shape == (500, *shape)
    assert x_tr.dtype == np.float32 and y_tr.dtype == np.float32 and y_te.shape == (500,)
    assert set(np.unique(y_tr)) == {-1.0, 1.0}
    proj = x_tr.reshape(4000, -1).astype(np.float64) @ unit
    np.testing.assert_allclose(proj, 0.5 * y_tr, atol=1e-5)  # uᵀx = ±ε
    noise = x_tr.reshape(4000, -1) - 0.5 * y_tr[:, None] * unit[None]
    assert np.max(np.abs(noise @ unit)) < 1e-5  # noise ⟂ u
    # covariance σ(I − uuᵀ): per-coordinate variance σ(1 − u_j²), total σ(d − 1)
    total = np.sum(np.var(noise, axis=0))
    assert total == pytest.approx(2.0 * 35, rel=0.05)
    assert abs(np.mean(y_tr)) < 4 / math.sqrt(4000)  # balanced within 4 standard errors
    for x, y in ((x_tr, y_tr), (x_te, y_te)):
        assert np.all(np.sign(x.reshape(len(x), -1) @ unit) == y)  # sign(uᵀx) is perfect
    again = nad_dataset(u, shape, num_train=4000, num_test=500, epsilon=0.5, sigma=2.0, seed=5)
    for a, b in zip((x_tr, y_tr, x_te, y_te), again, strict=True):
        np.testing.assert_array_equal(a, b)
    other = nad_dataset(u, shape, num_train=4000, num_test=500, seed=6)
    assert not np.array_equal(other[0], x_tr)


def test_nad_dataset_bad_input():
    with pytest.raises(ValueError, match="zero vector"):
        nad_dataset(np.zeros(16), (4, 4, 1))
    with pytest.raises(ValueError, match="entries"):
        nad_dataset(np.ones(15), (4, 4, 1))
    with pytest.raises(ValueError, match="epsilon"):
        nad_dataset(np.ones(16), (4, 4, 1), epsilon=0.0)
    with pytest.raises(TypeError, match="num_train"):
        nad_dataset(np.ones(16), (4, 4, 1), num_train=10.5)


# ---------------------------------------------------------------------------- bad input


def test_k_at_least_d_raises(mlp):
    apply_fn, params = mlp
    with pytest.raises(ValueError, match=r"k must satisfy 1 <= k < d .* 16"):
        nads(apply_fn, params, MLP_SHAPE, 16)
    with pytest.raises(
        ValueError, match=r"k must be a positive integer \(the number of NADs\), got 0"
    ):
        nads(apply_fn, params, MLP_SHAPE, 0)
    with pytest.raises(TypeError, match=r"k must be a positive integer .*got 2\.0 \(float\)"):
        nads(apply_fn, params, MLP_SHAPE, 2.0)


def test_auto_forms_the_dense_gram_when_svds_would_need_more_products():
    """d = 64, above dense_max_dim: one NAD costs svds ~120 products, fewer than the dense
    Gram's 2d = 128, so auto runs svds; two cost ~140, so the dense Gram. Same top NAD."""
    module = get_model("mlp", activation="gelu", hidden_sizes=(8,))
    variables = init_variables(module, (8, 8, 1), seed=0)
    apply_fn, params = make_apply_fn(module, variables), variables["params"]
    one = nads(apply_fn, params, (8, 8, 1), 1, dense_max_dim=16)
    two = nads(apply_fn, params, (8, 8, 1), 2, dense_max_dim=16)
    assert (one.method, two.method) == ("svds", "dense")
    assert two.products == 2 * 64
    np.testing.assert_allclose(one.eigvals[0], two.eigvals[0], rtol=RTOL)
    assert abs(float(one.directions[0] @ two.directions[0])) == pytest.approx(1.0, abs=1e-4)


def test_relu_at_origin_warns():
    module = get_model("mlp", activation="relu", hidden_sizes=(8,))
    variables = init_variables(module, MLP_SHAPE, seed=0)
    apply_fn = make_apply_fn(module, variables)
    with pytest.warns(UserWarning, match="mixed derivative of ReLU at 0 may vanish.*GeLU"):
        result = nads(apply_fn, variables["params"], MLP_SHAPE, 2)
    assert result.vanishing and result.method == "zero"
    np.testing.assert_array_equal(result.eigvals, 0.0)
    with pytest.warns(UserWarning, match="activation='relu'.*GeLU"):
        nads(apply_fn, variables["params"], MLP_SHAPE, 2, activation="relu")


def test_wrong_input_shape_and_points_raise(mlp):
    apply_fn, params = mlp
    with pytest.raises(ValueError, match=r"input_shape=\(5, 5, 1\)"):
        nads(apply_fn, params, (5, 5, 1), 2)
    with pytest.raises(ValueError, match=r"input_shape\[1\] must be a positive integer .*got 0"):
        nads(apply_fn, params, (4, 0, 1), 2)
    with pytest.raises(ValueError, match="x0 must have shape"):
        nads(apply_fn, params, MLP_SHAPE, 2, x0=np.zeros((2, 4, 4, 1)))
    with pytest.raises(ValueError, match="samples must have shape"):
        nads(apply_fn, params, MLP_SHAPE, 2, samples=np.zeros((3, 16)))
    with pytest.raises(ValueError, match="not both"):
        nads(apply_fn, params, MLP_SHAPE, 2, x0=np.zeros(MLP_SHAPE), samples=np.zeros((2, 4, 4, 1)))
    with pytest.raises(ValueError, match="method"):
        nads(apply_fn, params, MLP_SHAPE, 2, method="lanczos")


# ---------------------------------------------------------------------------- sweep script


@pytest.mark.slow
def test_nad_sweep_smoke_test(ray_cluster, tmp_path):
    """``sweeps/nad_sweep.py --smoke-test`` end to end, joined to the module's cluster through
    ``$RAY_ADDRESS``: NADs, the Tune sweep on D(u_j), figures and the accuracy table."""
    from raysweep.store import read_metrics

    out = tmp_path / "nad"
    proc = subprocess.run(
        [sys.executable, str(REPO / "sweeps" / "nad_sweep.py"), "--smoke-test", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
        env={**os.environ, "RAY_ADDRESS": ray_cluster},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"joined the Ray cluster at {ray_cluster}" in proc.stdout
    parts = sorted(p.name for p in (out / "metrics").glob("*.parquet"))
    assert parts == [  # 2 NAD indices (0, 2) x network/linearized, one pack each
        f"sgd-{mode}-pack{p:03d}-lenet5-nad.parquet" for mode in ("lin", "nn") for p in (0, 1)
    ]
    assert (out / "nads" / "lenet5-nad" / "nads.npz").exists()
    assert (out / "figures" / "nads_lenet5-nad.png").exists()
    assert (out / "figures" / "accuracy_vs_nad_index.png").exists()

    table = read_metrics(out)
    last = [r for r in table.to_pylist() if r["epoch"] == 1]  # --smoke-test: 1 epoch
    assert len(last) == 4 and {r["status"] for r in last} == {"finished"}
    assert {r["dataset"] for r in last} == {"nad"}
    # the printed table: one row per NAD index, network and linearized final test accuracy
    lines = proc.stdout.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("final test accuracy"))
    assert lines[head + 1].split() == ["index", "sgd", "nn", "sgd", "lin"]
    for offset, j in enumerate((0, 2), start=2):
        acc = {r["linearized"]: r["test_accuracy"] for r in last if r["eigen_index"] == j}
        assert lines[head + offset].split() == [str(j), f"{acc[False]:.3f}", f"{acc[True]:.3f}"]
