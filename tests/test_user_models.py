"""Models given by import path (raysweep.models.user): NNX, linen and plain functions behind the
functional boundary — Gram vs brute-force Jacobians, eval/train views, batch-norm statistics in
training and linearization, output selection, errors, hashing and pickling.

The models live in tests/user_models_fixture.py and are named ``user_models_fixture:...``.
"""

from __future__ import annotations

import functools
import os
import pickle
import subprocess
import sys
import textwrap

import cloudpickle
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import user_models_fixture as fx
from conftest import assert_close_f32
from flax import nnx, serialization
from jax.flatten_util import ravel_pytree

from raysweep.config import TrainConfig
from raysweep.models import (
    MODEL_NAMES,
    FunctionModel,
    LinenModel,
    NNXModel,
    UserModel,
    get_model,
    init_variables,
    load_user_model,
    make_apply_fn,
    make_train_apply_fn,
)
from raysweep.ntk import ntk_gram
from raysweep.training import train_pack
from raysweep.training.program import Forward

SHAPE = (6, 6, 1)
NNX = "user_models_fixture:SmallCNN"
LINEN = "user_models_fixture:LinenBN"
FUNC = "user_models_fixture:pure_mlp"

KINDS = {
    "nnx": (NNX, {"features": 3}, {}),
    "nnx_factory": ("user_models_fixture:make_small_cnn", {"features": 2}, {}),
    "linen": (LINEN, {"features": 3}, {}),
    "linen_instance": ("user_models_fixture:linen_instance", {}, {}),
    "linen_no_flag": ("user_models_fixture:LinenNoFlag", {}, {"train_flag": ""}),
    "function": (FUNC, {"hidden": 5}, {}),
}
ADAPTER_TYPES = {
    "nnx": NNXModel,
    "nnx_factory": NNXModel,
    "linen": LinenModel,
    "linen_instance": LinenModel,
    "linen_no_flag": LinenModel,
    "function": FunctionModel,
}


def _batch(n, seed=0, shift=0.0, shape=SHAPE):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.normal(loc=shift, scale=1.5, size=(n, *shape)), jnp.float32)


def _load(kind, seed=0):
    path, options, extra = KINDS[kind]
    module = get_model(path, options=options, **extra)
    variables = init_variables(module, SHAPE, seed=seed)
    return module, variables


def _max_diff(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def _brute_gram(apply_fn, params, x):
    """J Jᵀ from one reverse-mode Jacobian per example (float64 product)."""
    flat0, unravel = ravel_pytree(params)
    jac = jax.jit(jax.jacrev(lambda flat, xi: apply_fn(unravel(flat), xi[None])[0, 0]))
    rows = np.stack([np.asarray(jac(flat0, x[i]), np.float64) for i in range(x.shape[0])])
    assert rows.shape == (x.shape[0], flat0.size)
    return rows @ rows.T


# --- all kinds ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(KINDS))
def test_gram_equals_bruteforce_jacobians(kind):
    module, variables = _load(kind)
    assert isinstance(module, ADAPTER_TYPES[kind])
    apply_fn = make_apply_fn(module, variables)
    x = _batch(5, seed=1, shift=0.5)
    out = apply_fn(variables["params"], x)
    assert out.shape == (5, 1) and out.dtype == jnp.float32
    gram = ntk_gram(apply_fn, variables["params"], x)
    brute = _brute_gram(apply_fn, variables["params"], x)
    assert gram.shape == (5, 5)
    assert np.all(np.diag(brute) > 0)
    assert_close_f32(gram, brute)


@pytest.mark.parametrize("kind", list(KINDS))
def test_variables_are_plain_float32_and_serialize(kind):
    module, variables = _load(kind)
    assert set(variables) <= {"params", "batch_stats"}
    has_bn = kind in ("nnx", "nnx_factory", "linen", "linen_instance")
    assert ("batch_stats" in variables) == has_bn

    def check(tree):
        assert type(tree) is dict and all(isinstance(k, str) for k in tree)
        for v in tree.values():
            if isinstance(v, dict):
                check(v)
            else:
                assert isinstance(v, jax.Array) and v.dtype == jnp.float32

    for coll in variables.values():
        check(coll)
    restored = serialization.msgpack_restore(serialization.to_bytes(variables))
    x = _batch(3, seed=2)
    assert_close_f32(
        make_apply_fn(module, restored)(restored["params"], x),
        make_apply_fn(module, variables)(variables["params"], x),
        ulps=0,
    )
    # Same seed -> same variables; another seed -> other parameters.
    again = init_variables(module, SHAPE, seed=0)
    other = init_variables(module, SHAPE, seed=1)
    same = jax.tree_util.tree_map(lambda a, b: bool(np.array_equal(a, b)), variables, again)
    assert all(jax.tree_util.tree_leaves(same))
    diff = jax.tree_util.tree_map(
        lambda a, b: _max_diff(a, b), variables["params"], other["params"]
    )
    assert max(jax.tree_util.tree_leaves(diff)) > 1e-3


def test_function_params_keep_their_structure():
    module, variables = _load("function")
    # The list/tuple pytree of the function becomes a dict with string keys ...
    assert sorted(variables["params"]) == ["0", "1"]
    assert sorted(variables["params"]["1"]) == ["0", "1"]
    # ... and is handed back to the user's apply_fn in its own structure.
    raw_apply, raw_params = fx.pure_mlp(hidden=5, seed=0, input_shape=SHAPE)
    x = _batch(4, seed=3)
    assert_close_f32(
        make_apply_fn(module, variables)(variables["params"], x), raw_apply(raw_params, x)
    )
    stats = {}
    logits, new = make_train_apply_fn(module)(variables["params"], stats, x)
    assert new is stats and logits.shape == (4, 1)


# --- NNX ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nnx_model():
    module = get_model(NNX, options={"features": 3})
    return module, init_variables(module, SHAPE, seed=3)


def test_nnx_is_built_the_nnx_way(nnx_model):
    module, variables = nnx_model
    eager = fx.SmallCNN(3, rngs=nnx.Rngs(3))
    expected = nnx.to_pure_dict(nnx.state(eager, nnx.Param))
    assert jax.tree_util.tree_structure(expected) == jax.tree_util.tree_structure(
        variables["params"]
    )
    assert_close_f32(ravel_pytree(variables["params"])[0], ravel_pytree(expected)[0], ulps=4)
    assert sorted(variables["batch_stats"]["bn"]) == ["mean", "var"]
    assert np.all(np.asarray(variables["batch_stats"]["bn"]["var"]) == 1.0)
    x = _batch(6, seed=4, shift=1.0)
    # Eval view = model.eval(); train view = batch statistics, dropout off.
    eager.eval()
    assert_close_f32(make_apply_fn(module, variables)(variables["params"], x), eager(x), ulps=16)
    eager.set_attributes(deterministic=True, use_running_average=False)
    want = eager(x)
    logits, new_stats = make_train_apply_fn(module)(
        variables["params"], variables["batch_stats"], x
    )
    assert_close_f32(logits, want, ulps=16)
    assert_close_f32(new_stats["bn"]["mean"], eager.bn.mean[...], ulps=16)
    assert_close_f32(new_stats["bn"]["var"], eager.bn.var[...], ulps=16)
    # RNG streams (the dropout's) are constants of the adapter, not variables.
    flat = jax.tree_util.tree_leaves_with_path(variables)
    assert not any("rngs" in jax.tree_util.keystr(p) for p, _ in flat)


def test_nnx_eval_and_train_views_differ(nnx_model):
    module, variables = nnx_model
    eval_graph, train_graph = module.graphdefs()
    assert eval_graph != train_graph
    x = _batch(8, seed=5, shift=2.0)
    params, stats = variables["params"], variables["batch_stats"]
    y_eval = make_apply_fn(module, variables)(params, x)
    y_train, new_stats = make_train_apply_fn(module)(params, stats, x)
    assert y_eval.shape == y_train.shape == (8, 1)
    assert _max_diff(y_eval, y_train) > 1e-2
    assert _max_diff(new_stats["bn"]["mean"], stats["bn"]["mean"]) > 1e-2
    # Dropout stays off in both views: repeated calls agree exactly.
    assert np.array_equal(make_train_apply_fn(module)(params, stats, x)[0], y_train)
    # Statistics handed in as writable NumPy arrays are not written in place.
    stats_np = jax.tree_util.tree_map(np.array, stats)
    copy = jax.tree_util.tree_map(np.copy, stats_np)
    make_train_apply_fn(module)(params, stats_np, x)
    assert all(jax.tree_util.tree_leaves(jax.tree_util.tree_map(np.array_equal, stats_np, copy)))
    # Missing statistics are refused in both views.
    with pytest.raises(ValueError, match="batch_stats"):
        make_apply_fn(module, {"params": params})
    with pytest.raises(ValueError, match="batch_stats"):
        make_train_apply_fn(module)(params, {}, x)


def test_nnx_gram_of_one_example_ignores_the_batch(nnx_model):
    module, variables = nnx_model
    apply_fn, params = make_apply_fn(module, variables), variables["params"]
    x = _batch(6, seed=6, shift=1.0)
    full = ntk_gram(apply_fn, params, x)
    for i in (0, 4):
        alone = ntk_gram(apply_fn, params, x[i : i + 1])
        assert_close_f32(alone[0, 0], full[i, i])
    others = _batch(3, seed=7, shift=-1.0)
    cross = ntk_gram(apply_fn, params, x[:2], others)
    assert_close_f32(cross, ntk_gram(apply_fn, params, x[:2], jnp.concatenate([others, x]))[:, :3])


def test_nnx_other_state_is_a_constant_of_the_adapter():
    module = get_model("user_models_fixture:WithBuffer")
    x = _batch(3, seed=15)
    v0 = init_variables(module, SHAPE, seed=0)
    assert sorted(v0["params"]) == ["head"] and "batch_stats" not in v0
    eager = fx.WithBuffer(rngs=nnx.Rngs(0))
    assert_close_f32(make_apply_fn(module, v0)(v0["params"], x), eager(x), ulps=16)
    # The offset depends on the seed, but raysweep keeps the seed-0 value: a warning says so.
    with pytest.warns(UserWarning, match=r"offset \(Buffer\).*depends on the seed"):
        v1 = init_variables(module, SHAPE, seed=1)
    y1 = make_apply_fn(module, v1)(v1["params"], x)
    head = x.reshape(3, -1) @ v1["params"]["head"]["kernel"] + v1["params"]["head"]["bias"]
    assert_close_f32(y1, head + eager.offset[...], ulps=16)


def _pack_problem(n_train=32, n_test=16):
    x, xt = _batch(n_train, seed=8, shift=0.5), _batch(n_test, seed=9, shift=0.5)
    w = np.random.default_rng(10).normal(size=int(np.prod(SHAPE)))

    def labels(z):
        return np.where(np.asarray(z).reshape(len(z), -1) @ w >= 0, 1.0, -1.0)[None]

    return x, labels(x), xt, labels(xt)


def test_nnx_linearization_keeps_initial_statistics(nnx_model):
    module, variables = nnx_model
    x, y, xt, yt = _pack_problem()
    train = TrainConfig(batch_size=8, epochs=2, learning_rate=0.05)
    lin = train_pack(module, variables, x, y, xt, yt, train=train, linearized=True)
    rows = lin.rows
    assert len(rows) == 1 and len(rows[0]) == 2 and rows[0][-1]["status"] == "finished"
    assert lin.batch_stats == {}
    params0 = variables["params"]
    params = jax.tree_util.tree_map(lambda a: a[0], lin.params)
    assert _max_diff(ravel_pytree(params)[0], ravel_pytree(params0)[0]) > 1e-4  # it trained
    # f_lin(θ, x) = f(θ₀, x) + J(θ₀, x)(θ − θ₀) with the eval view at the initial statistics.
    apply0 = make_apply_fn(module, variables)
    delta = jax.tree_util.tree_map(jnp.subtract, params, params0)
    f0, jvp = jax.jvp(lambda p: apply0(p, xt), (params0,), (delta,))
    z = (f0 + jvp)[:, 0]
    want = float(jnp.mean(optax.sigmoid_binary_cross_entropy(z, (yt[0] + 1) / 2)))
    np.testing.assert_allclose(rows[0][-1]["test_loss"], want, rtol=1e-5)
    # With batch statistics in f(θ₀, x) the loss would be another number.
    f_batch = make_train_apply_fn(module)(params0, variables["batch_stats"], xt)[0]
    assert _max_diff(f_batch, f0) > 1e-2


def test_nnx_network_training_updates_statistics(nnx_model):
    module, variables = nnx_model
    x, y, xt, yt = _pack_problem()
    train = TrainConfig(batch_size=8, epochs=2, learning_rate=0.05)
    net = train_pack(module, variables, x, y, xt, yt, train=train, linearized=False)
    assert net.rows[0][-1]["status"] == "finished"
    stats = jax.tree_util.tree_map(lambda a: a[0], net.batch_stats)
    assert jax.tree_util.tree_structure(stats) == jax.tree_util.tree_structure(
        variables["batch_stats"]
    )
    moved = jax.tree_util.tree_map(_max_diff, stats, variables["batch_stats"])
    assert min(jax.tree_util.tree_leaves(moved)) > 1e-3
    params = jax.tree_util.tree_map(lambda a: a[0], net.params)
    z = make_apply_fn(module, {"params": params, "batch_stats": stats})(params, xt)[:, 0]
    want = float(jnp.mean(optax.sigmoid_binary_cross_entropy(z, (yt[0] + 1) / 2)))
    np.testing.assert_allclose(net.rows[0][-1]["test_loss"], want, rtol=1e-5)


def test_linen_network_training_updates_statistics():
    module, variables = _load("linen")
    x, y, xt, yt = _pack_problem(n_train=16, n_test=8)
    train = TrainConfig(batch_size=8, epochs=1, learning_rate=0.05)
    net = train_pack(module, variables, x, y, xt, yt, train=train, linearized=False)
    moved = jax.tree_util.tree_map(
        lambda a, b: _max_diff(a[0], b), net.batch_stats, variables["batch_stats"]
    )
    assert min(jax.tree_util.tree_leaves(moved)) > 1e-3


# --- output selection -----------------------------------------------------------------------------


def test_output_index_selects_a_column():
    module = get_model("user_models_fixture:three_outputs", output_index=1)
    variables = init_variables(module, SHAPE, seed=0)
    raw_apply, raw_params = fx.three_outputs(seed=0, input_shape=SHAPE)
    x = _batch(4, seed=11)
    full = raw_apply(raw_params, x)
    assert full.shape == (4, 3)
    got = make_apply_fn(module, variables)(variables["params"], x)
    assert got.shape == (4, 1)
    assert_close_f32(got, full[:, 1:2])
    assert _max_diff(got, full[:, 0:1]) > 1e-4 and _max_diff(got, full[:, 2:3]) > 1e-4
    # NNX with three outputs, column 2, in both views.
    nnx_module = get_model(NNX, options={"outputs": 3}, output_index=2)
    nnx_vars = init_variables(nnx_module, SHAPE, seed=0)
    eager = fx.SmallCNN(outputs=3, rngs=nnx.Rngs(0))
    eager.eval()
    assert_close_f32(
        make_apply_fn(nnx_module, nnx_vars)(nnx_vars["params"], x), eager(x)[:, 2:3], ulps=16
    )
    logits, _ = make_train_apply_fn(nnx_module)(nnx_vars["params"], nnx_vars["batch_stats"], x)
    assert logits.shape == (4, 1)


def test_several_outputs_need_output_index():
    module = get_model("user_models_fixture:three_outputs")
    with pytest.raises(ValueError, match=r"3 outputs.*output_index"):
        init_variables(module, SHAPE, seed=0)
    module = get_model("user_models_fixture:three_outputs", output_index=3)
    with pytest.raises(ValueError, match=r"output_index=3 is out of range.*3 output"):
        init_variables(module, SHAPE, seed=0)
    module = get_model(NNX, options={"outputs": 2})
    with pytest.raises(ValueError, match=r"2 outputs \(shape \(2, 2\)\)"):
        init_variables(module, SHAPE, seed=0)


def test_one_dimensional_output_becomes_a_column():
    module, variables = _load("linen_no_flag")
    x = _batch(3, seed=12)
    raw = module.module().apply(variables, x)
    assert raw.shape == (3,)
    assert_close_f32(make_apply_fn(module, variables)(variables["params"], x), raw[:, None])


# --- errors ---------------------------------------------------------------------------------------


def test_import_errors():
    with pytest.raises(ModuleNotFoundError, match="no module named 'no_such_module_xyz'"):
        get_model("no_such_module_xyz:Model")
    with pytest.raises(AttributeError, match="has no attribute 'NoSuchModel'.*SmallCNN"):
        get_model("user_models_fixture:NoSuchModel")
    with pytest.raises(TypeError, match=r"names int.*accepted are.*nnx\.Module.*linen"):
        get_model("user_models_fixture:NOT_A_MODEL")
    with pytest.raises(TypeError, match="accepted are"):
        get_model("user_models_fixture:PlainClass")
    with pytest.raises(TypeError, match=r"cannot be called with.*bogus"):
        get_model(NNX, options={"bogus": 1})
    with pytest.raises(TypeError, match="takes no options"):
        get_model("user_models_fixture:linen_instance", options={"features": 2})
    with pytest.raises(ValueError, match="not valid JSON"):
        get_model(NNX, options="{features: 2}")


def test_module_next_to_the_working_directory_is_found(tmp_path, monkeypatch):
    (tmp_path / "cwd_model_mod.py").write_text(
        "import jax.numpy as jnp\n"
        "def model(scale=1.0, *, seed):\n"
        "    return (lambda p, x: scale * x.reshape(x.shape[0], -1) @ p['w']), "
        "{'w': jnp.ones((36, 1), jnp.float32)}\n"
    )
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", os.getcwd())])
    monkeypatch.chdir(tmp_path)
    module = get_model("cwd_model_mod:model", options={"scale": 2.0})
    assert isinstance(module, FunctionModel) and module.search_path == (str(tmp_path),)
    variables = init_variables(module, SHAPE, seed=0)
    x = _batch(2, seed=16)
    assert_close_f32(
        make_apply_fn(module, variables)(variables["params"], x),
        2.0 * x.reshape(2, -1).sum(axis=1, keepdims=True),
    )


def test_errors_are_raised_by_init_variables():
    def init(path, **kwargs):
        return init_variables(get_model(path, **kwargs), SHAPE, seed=0)

    with jax.enable_x64(True):
        with pytest.raises(TypeError, match="returned dtype float64; its output must be float32"):
            init("user_models_fixture:float64_output")
    with pytest.raises(TypeError, match="returned dtype bfloat16"):
        init("user_models_fixture:bfloat16_output")
    with pytest.raises(TypeError, match=r"parameter \['w'\] has dtype float64"):
        init("user_models_fixture:float64_params")
    with pytest.raises(TypeError, match="has dtype int32"):
        init("user_models_fixture:IntParamNNX")
    with pytest.raises(ValueError, match="failed in its eval view"):
        init("user_models_fixture:numpy_apply")
    with pytest.raises(TypeError, match=r"must return \(apply_fn, params\)"):
        init("user_models_fixture:wrong_return")
    with pytest.raises(ValueError, match=r"collections \['cache'\]"):
        init("user_models_fixture:LinenSows")
    with pytest.raises(ValueError, match=r"module.init on a batch.*model.train_flag='training'"):
        init(LINEN, train_flag="training")  # not the module's keyword


def test_builtins_keep_their_behaviour():
    assert MODEL_NAMES == ("mlp", "lenet5", "resnet18")
    module = get_model("mlp", options='{"hidden_sizes": [7]}')
    assert module.hidden_sizes == (7,) and hash(module) == hash(get_model("mlp", hidden_sizes=(7,)))
    with pytest.raises(ValueError, match="one output"):
        get_model("mlp", output_index=2)
    with pytest.raises(TypeError, match="given twice"):
        get_model("mlp", options={"hidden_sizes": [7]}, hidden_sizes=(7,))


# --- value semantics, pickling ------------------------------------------------------------------


def test_adapters_hash_and_compare_by_value():
    a = get_model(NNX, options={"features": 3})
    b = load_user_model(NNX, options='{"features":3}')
    assert a == b and hash(a) == hash(b) and isinstance(a, UserModel)
    assert a != get_model(NNX, options={"features": 4})
    assert a != get_model(NNX, options={"features": 3}, output_index=0)
    assert get_model(LINEN) != get_model(LINEN, train_flag="")
    assert Forward(module=a) == Forward(module=b)
    assert hash(Forward(module=a)) == hash(Forward(module=b))
    calls = []

    @functools.lru_cache
    def compiled(module):
        calls.append(module)
        return object()

    assert compiled(a) is compiled(b) and len(calls) == 1


@pytest.mark.parametrize("kind", ["nnx", "linen", "function"])
def test_cloudpickle_round_trip(kind):
    module, variables = _load(kind)
    blob = cloudpickle.dumps(module)
    assert len(blob) < 1000  # the value only: no arrays, graphs or jitted functions
    back = pickle.loads(blob)
    assert back == module and type(back) is type(module)
    x = _batch(3, seed=13)
    assert np.array_equal(
        make_apply_fn(back, variables)(variables["params"], x),
        make_apply_fn(module, variables)(variables["params"], x),
    )


def test_fresh_process_rebuilds_from_adapter_and_saved_variables(nnx_model, tmp_path):
    module, variables = nnx_model
    (tmp_path / "model.pkl").write_bytes(cloudpickle.dumps(module))
    (tmp_path / "vars.msgpack").write_bytes(serialization.to_bytes(variables))
    x = np.asarray(_batch(4, seed=14, shift=1.0))
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(
        """
        import pickle, sys
        import numpy as np
        from flax import serialization
        from raysweep.models import make_apply_fn, make_train_apply_fn
        assert "user_models_fixture" not in sys.modules
        module = pickle.loads(open("model.pkl", "rb").read())
        variables = serialization.msgpack_restore(open("vars.msgpack", "rb").read())
        x = np.load("x.npy")
        y = make_apply_fn(module, variables)(variables["params"], x)
        t, _ = make_train_apply_fn(module)(variables["params"], variables["batch_stats"], x)
        np.save("y.npy", np.asarray(y)); np.save("t.npy", np.asarray(t))
        """
    )
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": repo, "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    y = make_apply_fn(module, variables)(variables["params"], x)
    t, _ = make_train_apply_fn(module)(variables["params"], variables["batch_stats"], x)
    assert_close_f32(np.load(tmp_path / "y.npy"), y, ulps=4)
    assert_close_f32(np.load(tmp_path / "t.npy"), t, ulps=4)
    assert _max_diff(y, t) > 1e-3
