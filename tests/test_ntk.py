"""raysweep.ntk against brute force (jax.jacobian + ravel_pytree) and neural-tangents fixtures."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close_f32, flat_jacobian
from jax.flatten_util import ravel_pytree

import raysweep.ntk.gram as gram_module
from raysweep.models import get_model, init_variables, make_apply_fn
from raysweep.ntk import (
    NTKEngine,
    alignment,
    block_slices,
    energy_concentration,
    gram_with_engine,
    linearize,
    ntk_gram,
)
from raysweep.ntk.gram import symmetric_product
from raysweep.ntk.structured import (
    ConvSite,
    DenseSite,
    conv_kernel_gradients,
    conv_patches,
    position_gram,
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
    return np.asarray(flat_jacobian(apply_fn, params, x)[:, 0], np.float64)


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


def test_structured_method_finds_the_dense_and_conv_layers_of_the_paper_models(flax_model):
    name, apply_fn, params, x = flax_model
    engine = NTKEngine(apply_fn, params, x[:1], method="structured")
    dense = [s for s in engine.structured_sites if isinstance(s, DenseSite)]
    convs = [s for s in engine.structured_sites if isinstance(s, ConvSite)]
    assert len(dense) == {"mlp": 3, "lenet5": 3, "resnet18": 1}[name]
    # every convolution kernel (the 4-D leaves) is handled from its patches
    assert len(convs) == sum(leaf.ndim == 4 for leaf in jax.tree_util.tree_leaves(params))
    assert len(convs) == {"mlp": 0, "lenet5": 2, "resnet18": 20}[name]
    if name == "mlp":
        assert engine.feature_width < engine.num_params / 5


CONV_CASES = {
    # name: (dimension numbers, kernel shape, stride, padding, lhs_dilation, rhs_dilation)
    "nhwc_same": (("NHWC", "HWIO", "NHWC"), (3, 3, 2, 5), (1, 1), "SAME", None, None),
    "strided_dilated": (
        ("NHWC", "HWIO", "NHWC"),
        (3, 2, 2, 4),
        (2, 1),
        ((1, 0), (2, 1)),
        None,
        (2, 1),
    ),
    "transposed": (("NHWC", "HWIO", "NHWC"), (2, 2, 2, 3), (1, 1), ((1, 1), (0, 1)), (2, 2), None),
    "nchw_oihw": (("NCHW", "OIHW", "NCHW"), (5, 2, 3, 3), (1, 2), "VALID", None, None),
    # 1 x 2 outputs with wide channels: the factored form is cheaper
    "few_positions": (("NHWC", "HWIO", "NHWC"), (5, 3, 2, 40), (3, 3), "VALID", None, None),
}


def conv_model(case):
    """(apply_fn, params, conv, head): apply_fn(p, x) = head(p, conv(p["k"], x))."""
    dn, kshape, stride, padding, lhs_dil, rhs_dil = CONV_CASES[case]
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(7), 3)
    c_out = kshape[dn[1].index("O")]
    params = {
        "k": jax.random.normal(k1, kshape) / np.sqrt(np.prod(kshape) / c_out),
        "b": 0.1 * jax.random.normal(k2, (c_out,)),
    }
    readout = jax.random.normal(k3, (c_out,))

    def conv(kernel, x):
        if dn[0] == "NCHW":
            x = jnp.transpose(x, (0, 3, 1, 2))
        return jax.lax.conv_general_dilated(
            x, kernel, stride, padding, lhs_dil, rhs_dil, dimension_numbers=dn
        )

    def head(p, y):
        if dn[2] == "NCHW":
            y = jnp.transpose(y, (0, 2, 3, 1))
        h = jnp.tanh(y + p["b"])
        return (h * readout).mean(axis=(1, 2)).sum(axis=-1, keepdims=True)

    def apply_fn(p, x):
        return head(p, conv(p["k"], x))

    return apply_fn, params, conv, head


@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_conv_kernel_gradients_from_patches_match_brute_force(case):
    apply_fn, params, conv, head = conv_model(case)
    x = np.random.default_rng(3).normal(size=(6, 7, 8, 2)).astype(np.float32)
    engine = NTKEngine(apply_fn, params, x[:1], method="structured")
    (site,) = engine.structured_sites
    assert isinstance(site, ConvSite) and site.factored == (case == "few_positions")
    jac = brute_jacobian(apply_fn, params, x)
    assert rel_err(ntk_gram(apply_fn, params, x, method="structured"), jac @ jac.T) <= RTOL
    assert rel_err(ntk_gram(apply_fn, params, x, x[:2], method="auto"), jac @ jac[:2].T) <= RTOL

    # the per-example kernel gradients themselves: columns ordered like an HWIO kernel
    def scalar(p, xi):
        return apply_fn(p, xi[None])[0, 0]

    brute = jax.vmap(jax.grad(scalar), in_axes=(None, 0))(params, x)["k"]
    spec = CONV_CASES[case][0][1]
    brute = np.asarray(jnp.transpose(brute, [0, *(1 + spec.index(c) for c in "HWIO")]))
    lhs = jnp.asarray(x)[:, None]  # one example with its batch axis of 1
    if CONV_CASES[case][0][0] == "NCHW":
        lhs = jnp.transpose(lhs, (0, 1, 4, 2, 3))
    outputs = jax.vmap(lambda xi: conv(params["k"], xi[None]))(jnp.asarray(x))
    cot = jax.vmap(jax.grad(lambda y: head(params, y)[0, 0]))(outputs)
    got = np.asarray(conv_kernel_gradients(site, lhs, cot))
    assert got.shape == (len(x), brute[0].size)
    assert rel_err(got, brute.reshape(len(x), -1)) <= RTOL


@pytest.mark.parametrize("case", sorted(c for c in CONV_CASES if c != "transposed"))
def test_patch_gram_from_the_inputs_gram_matches_the_patches(case):
    """W shifted blocks of the inputs' Gram (zero where a patch reads the padding) are the
    patches' Gram, for strides, dilations, uneven padding and channels-first layouts."""
    apply_fn, params, *_ = conv_model(case)
    x = np.random.default_rng(3).normal(size=(2, 7, 8, 2)).astype(np.float32)
    (site,) = NTKEngine(apply_fn, params, x[:1], method="structured").structured_sites
    lhs = jax.random.normal(jax.random.PRNGKey(4), (3, *site.lhs_shape))
    patches = conv_patches(site, lhs)
    u, c_in = site.input_size
    spec = site.lhs_spec  # (batch of 1, features, spatial...) -> (spatial..., features)
    inputs = jnp.transpose(lhs, [0, 1 + spec[0], *(1 + d for d in spec[2:]), 1 + spec[1]])
    inputs = inputs.reshape(3, u, c_in)
    got = position_gram(inputs, inputs, site.input_gather())
    want = np.einsum("isk,jtk->isjt", np.asarray(patches, np.float64), np.asarray(patches))
    assert_close_f32(got, want.reshape(got.shape))


def test_few_positions_many_channels_use_the_input_form():
    """A stride-1 3x3 convolution on 2x2 positions with 32 channels: factored, in input form
    (U²·C_in + W·S² = 656 products per pair instead of S²·K = 4,608); the Gram is exact."""
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(8), 3)
    params = {
        "k1": jax.random.normal(k1, (3, 3, 2, 32)) / np.sqrt(18.0),
        "k2": jax.random.normal(k2, (3, 3, 32, 32)) / np.sqrt(288.0),
        "w": jax.random.normal(k3, (128, 1)) / np.sqrt(128.0),
    }
    dn = ("NHWC", "HWIO", "NHWC")

    def apply_fn(p, x):
        h = jnp.tanh(jax.lax.conv_general_dilated(x, p["k1"], (4, 4), "SAME", dimension_numbers=dn))
        h = jnp.tanh(jax.lax.conv_general_dilated(h, p["k2"], (1, 1), "SAME", dimension_numbers=dn))
        return h.reshape(h.shape[0], -1) @ p["w"]

    x = np.random.default_rng(5).normal(size=(7, 8, 8, 2)).astype(np.float32)
    engine = NTKEngine(apply_fn, params, x[:1], method="structured")
    convs = {s.leaf: s for s in engine.structured_sites if isinstance(s, ConvSite)}
    assert not convs[0].factored and convs[1].factored and convs[1].input_form
    assert convs[1].width == 4 * 32 + 4 * 32  # the inputs and the cotangents
    jac = brute_jacobian(apply_fn, params, x)
    assert rel_err(ntk_gram(apply_fn, params, x, method="structured"), jac @ jac.T) <= RTOL
    tiles = ntk_gram(apply_fn, params, x, x[:3], method="structured", batch_size=4)
    assert rel_err(tiles, jac @ jac[:3].T) <= RTOL


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
    whole_self = ntk_gram(fx["apply_fn"], fx["params"], fx["x1"], method=method)  # one program
    whole_cross = ntk_gram(fx["apply_fn"], fx["params"], fx["x1"], fx["x2"], method=method)
    assert rel_err(whole_self, fx["gram_self"]) <= RTOL
    assert rel_err(whole_cross, fx["gram_cross"]) <= RTOL


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


@pytest.mark.parametrize("num_blocks", [1, 2, 3, 5, 21])
def test_symmetric_product_from_the_upper_triangle(num_blocks):
    rng = np.random.default_rng(num_blocks)
    feats = {"a": jnp.asarray(rng.normal(size=(21, 6))), "d": jnp.asarray(rng.normal(size=(21, 3)))}

    def kernel(f1, f2):
        return (f1["a"] @ f2["a"].T) * (f1["d"] @ f2["d"].T)

    calls = []
    got = np.asarray(
        symmetric_product(lambda f1, f2: calls.append(1) or kernel(f1, f2), feats, num_blocks)
    )
    assert len(calls) == num_blocks * (num_blocks + 1) // 2  # the upper triangle only
    assert np.array_equal(got, got.T)
    assert rel_err(got, kernel(feats, feats)) <= RTOL


@pytest.mark.parametrize("method", ["structured", "contraction"])
def test_whole_gram_with_triangle_blocks_matches_brute_force(method, data, monkeypatch):
    apply_fn, params = tiny_mlp()
    x1, x2 = data
    monkeypatch.setitem(gram_module._TRIANGLE_ROWS, jax.default_backend(), 4)
    assert gram_module.triangle_blocks(len(x1)) == 5
    # features in chunks too (on CPU, for the structured method)
    monkeypatch.setattr(gram_module, "_CHUNK_ROWS", 5)
    monkeypatch.setattr(gram_module, "_CHUNK_MIN_WIDTH", 0)
    engine = NTKEngine(apply_fn, params, x1[:1], method=method)
    assert engine.can_do_whole(len(x1))
    got = gram_with_engine(engine, x1)
    j1, j2 = brute_jacobian(apply_fn, params, x1), brute_jacobian(apply_fn, params, x2)
    assert np.array_equal(got, got.T)
    assert rel_err(got, j1 @ j1.T) <= RTOL
    assert rel_err(gram_with_engine(engine, x1, x2), j1 @ j2.T) <= RTOL
    tiles = gram_with_engine(engine, x1, whole=False)
    assert rel_err(tiles, got) <= RTOL


def test_chunked_features_equal_one_block():
    apply_fn, params = tiny_mlp()
    x = np.random.default_rng(2).normal(size=(13, 2, 2, 3)).astype(np.float32)
    engine = NTKEngine(apply_fn, params, x[:1], method="structured")
    leaves = engine.leaves()
    one = jax.tree_util.tree_leaves(engine._features(leaves, x))
    for k in (2, 3, 13):
        parts = gram_module.chunked_features(engine._features, leaves, x, k)
        for a, b in zip(jax.tree_util.tree_leaves(parts), one, strict=True):
            assert_close_f32(a, b)  # products of other batch shapes


def test_panel_computes_row_features_once(data, monkeypatch):
    apply_fn, params = tiny_mlp()
    x1, _ = data
    engine = NTKEngine(apply_fn, params, x1[:1], method="contraction", block_size=6)
    calls = []
    original = engine._block_features
    monkeypatch.setattr(
        engine, "_block_features", lambda xb, leaves: calls.append(len(xb)) or original(xb, leaves)
    )
    list(engine.panel(x1[:6], [x1[6:12], x1[12:18], x1[18:]]))
    assert calls == [6, 6, 6, 3]  # rows once, then each column block once


def test_auto_method_selection(flax_model):
    name, apply_fn, params, x = flax_model
    auto = NTKEngine(apply_fn, params, x[:1])
    assert auto.method == "structured"  # dense layers factored, convolutions from patches
    tiny_budget = NTKEngine(apply_fn, params, x[:1], method="auto", memory_budget_mb=1e-3)
    if name == "resnet18":
        assert tiny_budget.method == "ntvp"


# ----------------------------------------------------------------------------- recompilation


@contextlib.contextmanager
def count_compiles():
    """Names of the XLA compilations that happen inside the block (JAX's compile event)."""
    compiled: list[str] = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiled.append(kwargs.get("fun_name", "?"))

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield compiled
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def shifted_params(params, seed: int):
    """Another parameter point of the same shapes and dtypes."""
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda p: p * 1.5 + jnp.asarray(0.2 * rng.standard_normal(p.shape), p.dtype), params
    )


def test_compile_counter_sees_compilations():
    v = jnp.ones(7)
    with count_compiles() as compiled:
        jax.jit(lambda v: v * 3.0 + 1.0)(v).block_until_ready()
    assert compiled == ["jit(<lambda>)"]


@pytest.mark.parametrize("method", METHODS)
def test_ntk_gram_with_new_params_does_not_recompile(method, data):
    apply_fn, params = tiny_mlp()
    params2 = shifted_params(params, 7)
    x1, x2 = data
    for batch_size in (None, 8):  # one whole program; tiles
        ntk_gram(apply_fn, params, x1, method=method, batch_size=batch_size)
        ntk_gram(apply_fn, params, x1, x2, method=method, batch_size=batch_size)
        with count_compiles() as compiled:
            got_self = ntk_gram(apply_fn, params2, x1, method=method, batch_size=batch_size)
            got_cross = ntk_gram(apply_fn, params2, x1, x2, method=method, batch_size=batch_size)
        assert compiled == [], (batch_size, compiled)
        j1, j2 = brute_jacobian(apply_fn, params2, x1), brute_jacobian(apply_fn, params2, x2)
        assert rel_err(got_self, j1 @ j1.T) <= RTOL
        assert rel_err(got_cross, j1 @ j2.T) <= RTOL
        # ...and the first point still gives its own answer.
        j0 = brute_jacobian(apply_fn, params, x1)
        assert rel_err(ntk_gram(apply_fn, params, x1, method=method), j0 @ j0.T) <= RTOL


def test_engine_takes_params_as_arguments(flax_model, flax_jacobians):
    name, apply_fn, params, x = flax_model
    params2 = shifted_params(params, 11)
    jac2 = brute_jacobian(apply_fn, params2, x)
    assert rel_err(jac2, flax_jacobian(flax_model, flax_jacobians)) > 1e-2  # a different point
    for method in ("structured", "contraction"):
        engine = NTKEngine(apply_fn, params, x[:1], method=method, block_size=4)
        gram_with_engine(engine, x)  # compiles (tiles)
        gram_with_engine(engine, x[:4])  # compiles (whole)
        with count_compiles() as compiled:
            tiles = gram_with_engine(engine, x, params=params2)
            whole = gram_with_engine(engine, x[:4], params=params2)
            panel = list(engine.panel(x[:4], [x[4:8], x[8:]], params=params2))
        assert compiled == [], (name, method, compiled)
        assert rel_err(tiles, jac2 @ jac2.T) <= RTOL, (name, method)
        assert rel_err(whole, jac2[:4] @ jac2[:4].T) <= RTOL, (name, method)
        assert rel_err(np.hstack([np.asarray(t) for t in panel]), jac2[:4] @ jac2[4:].T) <= RTOL
    with pytest.raises(ValueError, match="shape/dtype"):
        wrong = jax.tree_util.tree_map(lambda p: jnp.zeros((*p.shape, 1), p.dtype), params)
        gram_with_engine(engine, x, params=wrong)
    with pytest.raises(ValueError, match="structure"):
        gram_with_engine(engine, x, params={"other": jnp.zeros(3)})


def array_constants(lowered) -> list[str]:
    """Non-splat array constants of a lowered program (closed-over arrays end up as these)."""
    return [
        line
        for line in lowered.as_text().splitlines()
        if "stablehlo.constant" in line and ("dense<[" in line or 'dense<"0x' in line)
    ]


def test_compiled_programs_hold_no_parameter_constants():
    apply_fn, params = tiny_mlp()
    x = np.ones((4, 2, 2, 3), np.float32)
    # positive control: a closed-over parameter leaf is a constant of the program
    closed = jax.jit(lambda xb: apply_fn(params, xb)).lower(x)
    assert any("tensor<12x7xf32>" in line for line in array_constants(closed))
    for method in ("structured", "contraction", "ntvp"):
        engine = NTKEngine(apply_fn, params, x[:1], method=method, block_size=4)
        leaves = engine.leaves()
        if method == "ntvp":
            programs = [(engine._kernel, (leaves, x, x))]
        else:
            programs = [
                (engine._features, (leaves, x)),
                (engine._whole_self, (leaves, x)),
                (engine._whole_cross, (leaves, x, x)),
            ]
        for fn, args in programs:
            assert array_constants(fn.lower(*args)) == [], method


def test_alignment_with_new_params_does_not_recompile(flax_model):
    name, apply_fn, params, x = flax_model
    params2 = shifted_params(params, 13)
    targets = np.random.default_rng(3).normal(size=(5, len(x))).astype(np.float32)
    alignment(apply_fn, params, x, targets, batch_size=4, target_chunk=2)
    with count_compiles() as compiled:
        got = alignment(apply_fn, params2, x, targets, batch_size=4, target_chunk=2)
    assert compiled == []
    jac2 = brute_jacobian(apply_fn, params2, x)
    expected = np.einsum("mi,ij,mj->m", targets, jac2 @ jac2.T, targets) / len(x) ** 2
    np.testing.assert_allclose(got, expected, rtol=1e-5)


# ----------------------------------------------------------------------------- linearize


def test_linearize_value_gradient_and_affinity(data):
    apply_fn, params = tiny_mlp()
    x1, _ = data
    apply_lin = linearize(apply_fn, params)
    assert_close_f32(apply_lin(params, x1), apply_fn(params, x1), ulps=16)

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
    with pytest.raises(ValueError, match=r"logits of shape \(n, C\).*returned \(1, 1, 2\)"):
        ntk_gram(lambda p, x: jnp.stack([apply_fn(p, x)] * 2, axis=-1), params, x1)
    bad = dict(params, b1=params["b1"].at[0].set(jnp.nan))
    with pytest.raises(ValueError, match=r"\['b1'\] contains NaN or inf"):
        ntk_gram(apply_fn, bad, x1)
    with pytest.raises(ValueError, match="method='jacobian' is not supported"):
        ntk_gram(apply_fn, params, x1, method="jacobian")
    with pytest.raises(ValueError, match=r"targets must have shape \(m, n\)"):
        alignment(apply_fn, params, x1, np.ones((2, 5)))
    with pytest.raises(ValueError, match="contains NaN or inf"):
        linearize(apply_fn, bad)
