"""Tests for raysweep.models: shapes, parameter counts, seeding, batch norm modes, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close_f32

from raysweep.models import (
    ACTIVATION_NAMES,
    MLP,
    MODEL_NAMES,
    LeNet5,
    ResNet18,
    count_params,
    create_model,
    get_activation,
    get_model,
    init_variables,
    make_apply_fn,
    make_train_apply_fn,
)

SMALL = (8, 8, 1)
CIFAR = (32, 32, 3)
TINY_RESNET = {"width": 4}


def _batch(shape, n, seed=0, shift=0.0):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.normal(loc=shift, size=(n, *shape)), dtype=jnp.float32)


def _trees_equal(a, b) -> bool:
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    if ta != tb:
        return False
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb, strict=True))


# --- hand-derived parameter counts (independent of the library's own helpers) ---------------


def _mlp_count(h, w, c):
    return (h * w * c * 100 + 100) + (100 * 100 + 100) + (100 + 1)


def _lenet_count(h, w, c):
    hp, wp = (h // 2) // 2, (w // 2) // 2  # SAME convs keep size; two 2x2/2 poolings
    return (
        (5 * 5 * c * 6 + 6)
        + (5 * 5 * 6 * 16 + 16)
        + (hp * wp * 16 * 120 + 120)
        + (120 * 84 + 84)
        + (84 + 1)
    )


def _resnet18_count(c, w=64):
    def conv_bn(k, cin, cout):  # conv without bias + BN scale and bias
        return k * k * cin * cout + 2 * cout

    total = conv_bn(3, c, w)  # stem
    cin = w
    for stage in range(4):
        cout = w * 2**stage
        for block in range(2):
            total += conv_bn(3, cin, cout) + conv_bn(3, cout, cout)
            if stage > 0 and block == 0:
                total += conv_bn(1, cin, cout)  # projection shortcut
            cin = cout
    return total + cin + 1  # Dense(1)


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_resnet():
    module = get_model("resnet18", **TINY_RESNET)
    variables = init_variables(module, SMALL, seed=0)
    return module, variables


@pytest.fixture(scope="module")
def small_models(tiny_resnet):
    out = {}
    for name in ("mlp", "lenet5"):
        module = get_model(name)
        out[name] = (module, init_variables(module, SMALL, seed=0))
    out["resnet18"] = tiny_resnet
    return out


# --- shapes and dtypes -------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_output_shape_small_inputs(small_models, name):
    module, variables = small_models[name]
    apply_fn = make_apply_fn(module, variables)
    y = apply_fn(variables["params"], _batch(SMALL, 3))
    assert y.shape == (3, 1)
    assert y.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(y)))
    leaves = jax.tree_util.tree_leaves(variables)
    assert all(leaf.dtype == jnp.float32 for leaf in leaves)


@pytest.mark.parametrize("name", ["mlp", "lenet5"])
@pytest.mark.parametrize("shape", [CIFAR, (28, 28, 1)])
def test_output_shape_and_counts_large_inputs(name, shape):
    module, variables, apply_fn = create_model(name, shape, seed=0)
    y = apply_fn(variables["params"], _batch(shape, 2))
    assert y.shape == (2, 1) and y.dtype == jnp.float32
    expected = _mlp_count(*shape) if name == "mlp" else _lenet_count(*shape)
    assert count_params(variables["params"]) == expected
    assert "batch_stats" not in variables


def test_resnet18_full_size_cifar():
    module = get_model("resnet18")
    assert module.width == 64
    variables = init_variables(module, CIFAR, seed=0)
    n = count_params(variables["params"])
    assert n == _resnet18_count(3) == 11_169_345
    assert 11_000_000 <= n <= 11_300_000
    assert set(variables) == {"params", "batch_stats"}
    y = jax.jit(make_apply_fn(module, variables))(variables["params"], _batch(CIFAR, 2))
    assert y.shape == (2, 1) and y.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(y)))


# --- parameter counts --------------------------------------------------------------------------


def test_mlp_param_count_cifar_is_papers():
    variables = init_variables(MLP(), CIFAR, seed=0)
    assert count_params(variables["params"]) == 317_501


def test_small_param_counts(small_models):
    assert count_params(small_models["mlp"][1]["params"]) == _mlp_count(*SMALL)
    assert count_params(small_models["lenet5"][1]["params"]) == _lenet_count(*SMALL)
    assert count_params(small_models["resnet18"][1]["params"]) == _resnet18_count(1, w=4)


def test_count_params_rejects_variables_dict(small_models):
    with pytest.raises(ValueError, match=r"variables\['params'\]"):
        count_params(small_models["mlp"][1])


# --- seeding -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mlp", "lenet5"])
def test_same_seed_same_params_different_seed_different(name):
    module = get_model(name)
    a = init_variables(module, SMALL, seed=3)
    b = init_variables(get_model(name), SMALL, seed=3)
    c = init_variables(module, SMALL, seed=4)
    assert _trees_equal(a, b)
    assert not _trees_equal(a, c)


def test_resnet_seeding(tiny_resnet):
    module, variables = tiny_resnet
    other = init_variables(module, SMALL, seed=1)
    assert not _trees_equal(variables["params"], other["params"])
    assert _trees_equal(variables["batch_stats"], other["batch_stats"])  # zeros / ones


# --- batch norm: train vs inference ------------------------------------------------------------


def test_resnet_batch_stats_train_vs_inference(tiny_resnet):
    module, variables = tiny_resnet
    params, stats = variables["params"], variables["batch_stats"]
    x = _batch(SMALL, 4, seed=1, shift=0.5)
    apply_fn = jax.jit(make_apply_fn(module, variables))
    train_fn = jax.jit(make_train_apply_fn(module))

    y_eval = apply_fn(params, x)
    y_train, new_stats = train_fn(params, stats, x)
    assert y_train.shape == (4, 1) and y_train.dtype == jnp.float32
    assert jax.tree_util.tree_structure(new_stats) == jax.tree_util.tree_structure(stats)
    assert not _trees_equal(new_stats, stats)  # running averages moved
    assert not np.allclose(np.asarray(y_eval), np.asarray(y_train))

    # inference mode leaves the stats alone and treats examples independently of the batch
    assert _trees_equal(variables["batch_stats"], stats)
    assert_close_f32(apply_fn(params, x[:1]), y_eval[:1])
    # momentum 0.9: new = 0.9 * old + 0.1 * batch mean of the stem features
    old_mean = np.asarray(stats["bn_init"]["mean"])
    new_mean = np.asarray(new_stats["bn_init"]["mean"])
    assert np.allclose(old_mean, 0.0) and not np.allclose(new_mean, 0.0)


def test_train_apply_without_batch_norm_passes_empty_stats(small_models):
    module, variables = small_models["lenet5"]
    x = _batch(SMALL, 2)
    logits, stats = make_train_apply_fn(module)(variables["params"], {}, x)
    assert stats == {}
    np.testing.assert_allclose(logits, make_apply_fn(module, variables)(variables["params"], x))


def test_train_apply_resnet_requires_batch_stats(tiny_resnet):
    module, variables = tiny_resnet
    with pytest.raises(ValueError, match="batch_stats"):
        make_train_apply_fn(module)(variables["params"], {}, _batch(SMALL, 2))


# --- functional properties: grad, jit, vmap ----------------------------------------------------


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_apply_fn_grad_jit_vmap(small_models, name):
    module, variables = small_models[name]
    params = variables["params"]
    apply_fn = make_apply_fn(module, variables)
    x = _batch(SMALL, 3, seed=2)

    y = apply_fn(params, x)
    assert_close_f32(jax.jit(apply_fn)(params, x), y)
    per_example = jax.jit(jax.vmap(lambda xi: apply_fn(params, xi[None])[0]))(x)
    assert per_example.shape == (3, 1)
    assert_close_f32(per_example, y)

    grads = jax.jit(jax.grad(lambda p: jnp.sum(apply_fn(p, x))))(params)
    leaves = [np.asarray(g) for g in jax.tree_util.tree_leaves(grads)]
    assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(params)
    assert all(np.all(np.isfinite(g)) for g in leaves)
    assert any(np.any(g != 0) for g in leaves)


def test_apply_fn_rejects_bad_x(small_models):
    module, variables = small_models["mlp"]
    apply_fn = make_apply_fn(module, variables)
    with pytest.raises(ValueError, match=r"4-D NHWC"):
        apply_fn(variables["params"], jnp.zeros((3, 64)))
    with pytest.raises(TypeError, match="floating dtype"):
        apply_fn(variables["params"], jnp.zeros((3, 8, 8, 1), dtype=jnp.uint8))


def test_make_apply_fn_requires_params():
    with pytest.raises(ValueError, match="'params'"):
        make_apply_fn(MLP(), {"batch_stats": {}})


# --- activations and registry ------------------------------------------------------------------


def test_activation_names_work_and_differ(small_models):
    x = _batch(SMALL, 2)
    variables = small_models["lenet5"][1]  # parameter shapes do not depend on the activation
    outputs = {}
    for act in ACTIVATION_NAMES:
        module = get_model("lenet5", activation=act)
        assert module.activation == act
        outputs[act] = np.asarray(make_apply_fn(module, variables)(variables["params"], x))
        assert outputs[act].shape == (2, 1) and np.all(np.isfinite(outputs[act]))
    for a in ACTIVATION_NAMES:
        for b in ACTIVATION_NAMES:
            if a < b:
                assert not np.allclose(outputs[a], outputs[b]), (a, b)


def test_gelu_is_exact():
    z = jnp.linspace(-3.0, 3.0, 13)
    exact = z * 0.5 * (1.0 + jax.scipy.special.erf(z / jnp.sqrt(2.0)))
    np.testing.assert_allclose(get_activation("gelu")(z), exact, rtol=1e-6, atol=1e-6)
    assert get_activation("ReLU") is get_activation("relu")


def test_unknown_activation_raises():
    with pytest.raises(ValueError, match=r"unknown activation 'swish'.*relu"):
        get_activation("swish")
    with pytest.raises(ValueError, match="allowed activations"):
        get_model("lenet5", activation="elu")
    with pytest.raises(ValueError, match="allowed activations"):
        ResNet18(activation="leaky_relu")
    with pytest.raises(TypeError, match="string name"):
        get_model("mlp", activation=jax.nn.relu)


def test_registry_names_and_aliases():
    assert MODEL_NAMES == ("mlp", "lenet5", "resnet18")
    assert isinstance(get_model("mlp"), MLP)
    assert isinstance(get_model("lenet"), LeNet5)
    assert isinstance(get_model("LeNet5"), LeNet5)
    model = get_model("resnet18", activation="tanh", width=8)
    assert isinstance(model, ResNet18) and model.width == 8 and model.activation == "tanh"


def test_unknown_model_and_option_raise():
    with pytest.raises(ValueError, match=r"unknown model name 'vgg16'.*resnet18"):
        get_model("vgg16")
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['width'\]"):
        get_model("lenet5", width=8)
    with pytest.raises(ValueError, match=r"ResNet18\.width must be a positive integer .*got 0"):
        get_model("resnet18", width=0)


# --- input shape validation --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "exc", "match"),
    [
        ((32, 32), ValueError, "exactly 3 entries"),
        ((1, 32, 32, 3), ValueError, "exactly 3 entries"),
        ((8, 0, 1), ValueError, "positive"),
        ((8, 8, 1.0), TypeError, r"input_shape C must be a positive integer .*got 1\.0"),
        (64, TypeError, "sequence"),
    ],
)
def test_bad_input_shape_raises(bad, exc, match):
    with pytest.raises(exc, match=match):
        init_variables(MLP(), bad, seed=0)


def test_bad_seed_raises():
    with pytest.raises(TypeError, match="seed must be an int"):
        init_variables(MLP(), SMALL, seed=1.5)


def test_lenet_too_small_input_raises():
    with pytest.raises(ValueError, match="too small"):
        init_variables(LeNet5(), (3, 8, 1), seed=0)
    variables = init_variables(LeNet5(), (4, 4, 1), seed=0)  # 4 -> 2 -> 1 still works
    assert count_params(variables["params"]) == _lenet_count(4, 4, 1)


# --- LeNet5 patch convolutions (im2col) and training_variant -----------------------------------


def _scaled_close(actual, desired, rel=1e-5) -> None:
    """float32 agreement relative to the largest entry of ``desired`` (plus a tiny floor)."""
    actual, desired = np.asarray(actual, np.float64), np.asarray(desired, np.float64)
    scale = float(np.abs(desired).max(initial=0.0))
    np.testing.assert_allclose(actual, desired, rtol=0, atol=rel * scale + 1e-30)


@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("shape", [SMALL, CIFAR, (9, 9, 1)])
def test_lenet_patch_convs_same_outputs_and_grads(activation, shape):
    module = LeNet5(activation=activation)
    patch = LeNet5(activation=activation, patch_convs=True)
    variables = init_variables(module, shape, seed=1)
    # identical parameter names, shapes and initialisation
    assert _trees_equal(init_variables(patch, shape, seed=1), variables)
    params = variables["params"]
    x = _batch(shape, 5, seed=3, shift=0.3)

    y = module.apply(variables, x)
    y_patch = jax.jit(lambda p, x: patch.apply({"params": p}, x))(params, x)
    assert y_patch.shape == y.shape == (5, 1) and y_patch.dtype == jnp.float32
    _scaled_close(y_patch, y)

    def loss(m):
        return lambda p: jnp.sum(jnp.sin(3.0 * m.apply({"params": p}, x)))

    g = jax.grad(loss(module))(params)
    g_patch = jax.jit(jax.grad(loss(patch)))(params)
    assert jax.tree_util.tree_structure(g_patch) == jax.tree_util.tree_structure(g)
    gmax = max(float(np.abs(np.asarray(leaf)).max()) for leaf in jax.tree_util.tree_leaves(g))
    for a, b in zip(jax.tree_util.tree_leaves(g_patch), jax.tree_util.tree_leaves(g), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-5 * gmax + 1e-30)


def test_lenet_patch_convs_under_vmap_over_params():
    """Packed training vmaps over per-target parameters and inputs."""
    shape = SMALL
    module, patch = LeNet5(), LeNet5(patch_convs=True)
    stacked = jax.vmap(lambda k: module.init(k, jnp.zeros((1, *shape)))["params"])(
        jax.random.split(jax.random.PRNGKey(0), 3)
    )
    xs = jnp.stack([_batch(shape, 4, seed=s) for s in range(3)])
    y = jax.vmap(lambda p, x: module.apply({"params": p}, x))(stacked, xs)
    y_patch = jax.jit(jax.vmap(lambda p, x: patch.apply({"params": p}, x)))(stacked, xs)
    _scaled_close(y_patch, y)


def test_lenet_patch_convs_jaxpr():
    variables = init_variables(LeNet5(), SMALL, seed=0)
    x = _batch(SMALL, 2)
    default = str(jax.make_jaxpr(lambda p: LeNet5().apply({"params": p}, x))(variables["params"]))
    patch = str(
        jax.make_jaxpr(lambda p: LeNet5(patch_convs=True).apply({"params": p}, x))(
            variables["params"]
        )
    )
    assert default.count("conv_general_dilated") == 2
    assert "reduce_window" in default  # nn.avg_pool
    assert "conv_general_dilated" not in patch
    assert "reduce_window" not in patch
    assert LeNet5().patch_convs is False


def test_lenet_patch_conv_rejects_unsupported():
    from raysweep.models.lenet import _patch_conv

    lhs, rhs = _batch((8, 8, 2), 2, seed=1), _batch((5, 2, 3), 5, seed=2)  # rhs (5, 5, 2, 3)
    nhwc = ("NHWC", "HWIO", "NHWC")
    pads = [(0, 0), (1, 3)]  # explicit, asymmetric
    out = _patch_conv(lhs, rhs, (1, 1), pads, dimension_numbers=nhwc)
    ref = jax.lax.conv_general_dilated(lhs, rhs, (1, 1), pads, dimension_numbers=nhwc)
    assert out.shape == ref.shape == (2, 4, 8, 3)
    _scaled_close(out, ref)
    bad = [
        {"window_strides": (2, 2)},
        {"padding": "VALID"},
        {"padding": [(-1, 0), (0, 0)]},
        {"rhs_dilation": (2, 1)},
        {"lhs_dilation": (1, 2)},
        {"feature_group_count": 2},
        {"dimension_numbers": ("NCHW", "OIHW", "NCHW")},
        {"dimension_numbers": None},
    ]
    for kwargs in bad:
        args = {"window_strides": (1, 1), "padding": "SAME", "dimension_numbers": nhwc, **kwargs}
        with pytest.raises(NotImplementedError, match="patch_convs"):
            _patch_conv(lhs, rhs, **args)


@pytest.mark.parametrize("backend", ["cpu", "gpu"])
def test_training_variant(monkeypatch, backend):
    from raysweep.models import training_variant

    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    lenet = LeNet5(activation="gelu")
    trained = training_variant(lenet)
    assert isinstance(trained, LeNet5) and trained.activation == "gelu"
    assert lenet.patch_convs is False
    if backend == "cpu":
        assert trained.patch_convs is True
        assert training_variant(trained) is trained
    else:
        assert trained is lenet
    mlp = MLP()
    assert training_variant(mlp) is mlp
    resnet = get_model("resnet18", **TINY_RESNET)
    assert training_variant(resnet) is resnet
