"""raysweep.ntk against brute force (jax.jacobian + ravel_pytree) and neural-tangents fixtures."""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from raysweep.models import get_model, init_variables, make_apply_fn
from raysweep.ntk import (
    NTKEngine,
    alignment,
    block_slices,
    energy_concentration,
    linearize,
    ntk_gram,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from nt_models import load_fixture  # noqa: E402

FIXTURES = sorted((ROOT / "tests" / "fixtures").glob("nt_*.npz"))
METHODS = ("auto", "contraction", "structured", "ntvp")
RTOL = 1e-5


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def brute_jacobian(apply_fn, params, x) -> np.ndarray:
    """(n, P) Jacobian by jax.jacobian of the whole batch, flattened with ravel_pytree."""
    flat, unravel = ravel_pytree(params)
    jac = jax.jacobian(lambda p: apply_fn(unravel(p), x)[:, 0])(flat)
    return np.asarray(jac, np.float64)


def tiny_mlp():
    key1, key2, key3 = jax.random.split(jax.random.PRNGKey(3), 3)
    params = {
        "w1": jax.random.normal(key1, (12, 7)) / np.sqrt(12),
        "b1": 0.1 * jax.random.normal(key2, (7,)),
        "w2": jax.random.normal(key3, (7, 1)) / np.sqrt(7),
    }

    def apply_fn(p, x):
        h = jnp.tanh(x.reshape(x.shape[0], -1) @ p["w1"] + p["b1"])
        return h @ p["w2"]

    return apply_fn, params


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(21, 2, 2, 3)).astype(np.float32), rng.normal(size=(9, 2, 2, 3)).astype(
        np.float32
    )


@pytest.fixture(scope="module", params=["mlp", "lenet5", "resnet18"])
def flax_model(request):
    kwargs = {"width": 4} if request.param == "resnet18" else {}
    module = get_model(request.param, activation="gelu", **kwargs)
    variables = init_variables(module, (8, 8, 1), seed=1)
    apply_fn = make_apply_fn(module, variables)
    x = np.random.default_rng(1).normal(size=(10, 8, 8, 1)).astype(np.float32)
    return request.param, apply_fn, variables["params"], x


@pytest.fixture(scope="module")
def flax_jacobians():
    """Brute-force Jacobians, computed once per Flax model (keyed by model name)."""
    return {}


def flax_jacobian(flax_model, cache) -> np.ndarray:
    name, apply_fn, params, x = flax_model
    if name not in cache:
        cache[name] = brute_jacobian(apply_fn, params, x)
    return cache[name]


# ----------------------------------------------------------------------------- brute force


@pytest.mark.parametrize("method", METHODS)
def test_every_method_matches_brute_force_on_pure_jax_mlp(method, data):
    apply_fn, params = tiny_mlp()
    x1, x2 = data
    j1, j2 = brute_jacobian(apply_fn, params, x1), brute_jacobian(apply_fn, params, x2)
    got_self = ntk_gram(apply_fn, params, x1, method=method, batch_size=8)
    got_cross = ntk_gram(apply_fn, params, x1, x2, method=method, batch_size=8)
    assert got_self.shape == (21, 21) and got_cross.shape == (21, 9)
    assert got_self.dtype == np.float32
    assert rel_err(got_self, j1 @ j1.T) <= RTOL
    assert rel_err(got_cross, j1 @ j2.T) <= RTOL


@pytest.mark.parametrize("method", METHODS)
def test_every_method_matches_brute_force_on_flax_models(method, flax_model, flax_jacobians):
    name, apply_fn, params, x = flax_model
    jac = flax_jacobian(flax_model, flax_jacobians)
    got = ntk_gram(apply_fn, params, x, x[:4], method=method, batch_size=4)
    assert rel_err(got, jac @ jac[:4].T) <= RTOL, name


def test_structured_method_finds_the_dense_layers_of_the_paper_models(flax_model):
    name, apply_fn, params, x = flax_model
    engine = NTKEngine(apply_fn, params, x[:1], method="structured")
    dense_kernels = {"mlp": 3, "lenet5": 3, "resnet18": 1}[name]
    assert len(engine.structured_sites) == dense_kernels
    if name == "mlp":
        assert engine.feature_width < engine.num_params / 5


# ----------------------------------------------------------------------------- neural-tangents


@pytest.mark.skipif(not FIXTURES, reason="no neural-tangents fixtures in tests/fixtures")
@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
@pytest.mark.parametrize("method", METHODS)
def test_gram_matches_neural_tangents_fixture(path, method):
    fx = load_fixture(path)
    got_self = ntk_gram(fx["apply_fn"], fx["params"], fx["x1"], method=method, batch_size=5)
    got_cross = ntk_gram(
        fx["apply_fn"], fx["params"], fx["x1"], fx["x2"], method=method, batch_size=5
    )
    assert rel_err(got_self, fx["gram_self"]) <= RTOL
    assert rel_err(got_cross, fx["gram_cross"]) <= RTOL


@pytest.mark.skipif(not FIXTURES, reason="no neural-tangents fixtures in tests/fixtures")
@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_linearize_matches_neural_tangents_fixture(path):
    fx = load_fixture(path)
    apply_lin = linearize(fx["apply_fn"], fx["params"])
    np.testing.assert_allclose(apply_lin(fx["params"], fx["x1"]), fx["f0_x1"], rtol=1e-5, atol=1e-6)
    assert rel_err(apply_lin(fx["shifted_params"], fx["x1"]), fx["lin_out_shifted"]) <= RTOL


# ----------------------------------------------------------------------------- structure


def test_gram_is_symmetric_psd_and_tiles_assemble(data):
    apply_fn, params = tiny_mlp()
    x1, _ = data
    full = ntk_gram(apply_fn, params, x1, method="contraction")
    assert np.array_equal(full, full.T)
    eig = np.linalg.eigvalsh(full.astype(np.float64))
    assert eig.min() >= -1e-5 * eig.max()

    engine = NTKEngine(apply_fn, params, x1[:1], method="contraction", block_size=6)
    blocks = block_slices(len(x1), 6)
    assert [s.stop - s.start for s in blocks] == [6, 6, 6, 3]
    assembled = np.zeros_like(full)
    for rs in blocks:
        tiles = engine.panel(x1[rs], [x1[cs] for cs in blocks])
        for cs, tile in zip(blocks, tiles, strict=True):
            assembled[rs, cs] = np.asarray(tile)
    assert rel_err(assembled, full) <= RTOL


def test_panel_computes_row_features_once(data, monkeypatch):
    apply_fn, params = tiny_mlp()
    x1, _ = data
    engine = NTKEngine(apply_fn, params, x1[:1], method="contraction", block_size=6)
    calls = []
    original = engine.features
    monkeypatch.setattr(engine, "features", lambda xb: calls.append(len(xb)) or original(xb))
    list(engine.panel(x1[:6], [x1[6:12], x1[12:18], x1[18:]]))
    assert calls == [6, 6, 6, 3]  # rows once, then each column block once


def test_auto_method_selection(flax_model):
    name, apply_fn, params, x = flax_model
    auto = NTKEngine(apply_fn, params, x[:1])
    assert auto.method == ("contraction" if name == "resnet18" else "structured")
    tiny_budget = NTKEngine(apply_fn, params, x[:1], method="auto", memory_budget_mb=1e-3)
    if name == "resnet18":
        assert tiny_budget.method == "ntvp"


# ----------------------------------------------------------------------------- linearize


def test_linearize_value_gradient_and_affinity(data):
    apply_fn, params = tiny_mlp()
    x1, _ = data
    apply_lin = linearize(apply_fn, params)
    np.testing.assert_allclose(apply_lin(params, x1), apply_fn(params, x1), rtol=1e-6)

    rng = np.random.default_rng(5)
    d1 = jax.tree_util.tree_map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
    d2 = jax.tree_util.tree_map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
    shifted = jax.tree_util.tree_map(lambda p, d: p + 0.3 * d, params, d1)

    # The gradient of the linearized model is J(θ₀) at any θ.
    flat_shift, unravel = ravel_pytree(shifted)
    jac_lin = jax.jacobian(lambda p: apply_lin(unravel(p), x1)[:, 0])(flat_shift)
    np.testing.assert_allclose(jac_lin, brute_jacobian(apply_fn, params, x1), atol=1e-5)

    # Affine in θ: f_lin(θ₀ + a d1 + b d2) = f0 + a (f_lin(θ₀+d1) - f0) + b (f_lin(θ₀+d2) - f0).
    def at(a, b):
        p = jax.tree_util.tree_map(lambda p0, u, v: p0 + a * u + b * v, params, d1, d2)
        return np.asarray(apply_lin(p, x1), np.float64)

    f0 = at(0.0, 0.0)
    expected = f0 + 2.0 * (at(1.0, 0.0) - f0) - 0.5 * (at(0.0, 1.0) - f0)
    np.testing.assert_allclose(at(2.0, -0.5), expected, atol=1e-4)
    # ...and differs from the network away from θ₀ (tanh is not linear).
    assert np.max(np.abs(apply_lin(shifted, x1) - apply_fn(shifted, x1))) > 1e-3


def test_linearize_is_trainable_by_the_same_optimizer_code(flax_model):
    import optax

    _, apply_fn, params, x = flax_model
    y = jnp.asarray(np.sign(np.random.default_rng(2).normal(size=(len(x), 1))), jnp.float32)
    for fn in (apply_fn, linearize(apply_fn, params)):
        opt = optax.sgd(0.05, momentum=0.9)
        state = opt.init(params)

        def loss(p, fn=fn):
            return jnp.mean(optax.sigmoid_binary_cross_entropy(fn(p, x), (y + 1) / 2))

        p, losses = params, []
        for _ in range(3):
            value, grads = jax.value_and_grad(loss)(p)
            updates, state = opt.update(grads, state, p)
            p = optax.apply_updates(p, updates)
            losses.append(float(value))
        assert losses[-1] < losses[0]


# ----------------------------------------------------------------------------- alignment


def test_alignment_equals_quadratic_form_of_explicit_gram(flax_model, flax_jacobians):
    _, apply_fn, params, x = flax_model
    targets = np.random.default_rng(3).normal(size=(5, len(x))).astype(np.float32)
    jac = flax_jacobian(flax_model, flax_jacobians)
    expected = np.einsum("mi,ij,mj->m", targets, jac @ jac.T, targets) / len(x) ** 2
    got = alignment(apply_fn, params, x, targets, batch_size=4, target_chunk=2)
    assert got.shape == (5,)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_energy_concentration():
    rng = np.random.default_rng(4)
    q, _ = np.linalg.qr(rng.normal(size=(400, 400)))
    eigvecs = q.T  # unit rows
    assert energy_concentration(eigvecs, eigvecs[3], 10) == pytest.approx(1.0)
    assert energy_concentration(eigvecs, eigvecs[30], 10) == pytest.approx(0.0, abs=1e-12)
    ys = np.sign(rng.normal(size=(200, 400)))
    ratios = energy_concentration(eigvecs, ys, 40)
    assert ratios.shape == (200,)
    assert np.mean(ratios) == pytest.approx(40 / 400, rel=0.1)
    with pytest.raises(ValueError, match="k must be an integer"):
        energy_concentration(eigvecs, ys[0], 401)
    with pytest.raises(ValueError, match="length N = 400"):
        energy_concentration(eigvecs, ys[0, :10], 5)


# ----------------------------------------------------------------------------- bad input


def test_bad_input_raises_clear_errors(data):
    apply_fn, params = tiny_mlp()
    x1, x2 = data
    with pytest.raises(ValueError, match="same per-example shape"):
        ntk_gram(apply_fn, params, x1, x2[:, :1])
    with pytest.raises(ValueError, match="x1 is empty"):
        ntk_gram(apply_fn, params, x1[:0])
    with pytest.raises(ValueError, match="one logit per example"):
        ntk_gram(lambda p, x: jnp.concatenate([apply_fn(p, x)] * 2, axis=1), params, x1)
    bad = dict(params, b1=params["b1"].at[0].set(jnp.nan))
    with pytest.raises(ValueError, match=r"\['b1'\] contains NaN or inf"):
        ntk_gram(apply_fn, bad, x1)
    with pytest.raises(ValueError, match="method='jacobian' is not supported"):
        ntk_gram(apply_fn, params, x1, method="jacobian")
    with pytest.raises(ValueError, match=r"targets must have shape \(m, n\)"):
        alignment(apply_fn, params, x1, np.ones((2, 5)))
    with pytest.raises(ValueError, match="contains NaN or inf"):
        linearize(apply_fn, bad)
