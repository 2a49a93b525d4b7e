"""Tests for raysweep.training: packed training of networks and their linearizations.

Tiny models (an MLP with one hidden layer of 16 on 8x8x1 inputs, a Dense+BatchNorm model) and
64 training examples keep every compiled program to a few seconds on a busy 2-core CPU. The
learning rate, loss threshold, data seed and lr_scale are program arguments, so most tests
share the few compiled programs (T=1 and T=3 network packs). The ResNet18 check is marked slow.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from raysweep.config import TrainConfig
from raysweep.models import get_model, init_variables, make_apply_fn, make_train_apply_fn
from raysweep.ntk import linearize, ntk_gram
from raysweep.training import (
    METRIC_NAMES,
    checkpoint_epoch,
    make_schedule,
    train_pack,
)
from raysweep.training.metrics import example_losses
from raysweep.training.optim import make_optimizer
from raysweep.training.program import epoch_orders, pack_orders, threshold_check_steps

SHAPE = (8, 8, 1)
N_TRAIN, N_TEST, BATCH, EPOCHS = 64, 32, 16, 3
STEPS = N_TRAIN // BATCH
CFG = TrainConfig(optimizer="sgd", learning_rate=0.05, batch_size=BATCH, epochs=EPOCHS)


def _labels(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(T, n) labels sign(x·w_t), learnable by the MLP."""
    return np.where(x.reshape(len(x), -1) @ w.T >= 0, 1.0, -1.0).T.astype(np.float32)


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N_TRAIN, *SHAPE)).astype(np.float32)
    xt = rng.normal(size=(N_TEST, *SHAPE)).astype(np.float32)
    w = rng.normal(size=(3, int(np.prod(SHAPE))))
    module = get_model("mlp", hidden_sizes=(16,))
    variables = init_variables(module, SHAPE, seed=0)
    return {
        "module": module,
        "variables": variables,
        "apply_fn": make_apply_fn(module, variables),
        "params0": variables["params"],
        "x": x,
        "y": _labels(x, w),
        "xt": xt,
        "yt": _labels(xt, w),
    }


def _run(problem, *, T=3, fit=False, **kwargs):
    """The apply_fn form on the first ``T`` targets: the rows, or the PackResult (``fit``)."""
    kwargs.setdefault("train", CFG)
    kwargs.setdefault("linearized", False)
    result = train_pack(
        problem["apply_fn"],
        problem["params0"],
        problem["x"],
        problem["y"][:T],
        problem["xt"],
        problem["yt"][:T],
        **kwargs,
    )
    return result if fit else result.rows


def _assert_rows_close(a, b, rtol=1e-5, atol=1e-6):
    assert len(a) == len(b)
    for ra, rb in zip(a, b, strict=True):
        assert [r["status"] for r in ra] == [r["status"] for r in rb]
        for x, y in zip(ra, rb, strict=True):
            for key in METRIC_NAMES:
                if key == "status":
                    continue
                np.testing.assert_allclose(x[key], y[key], rtol=rtol, atol=atol, err_msg=key)


def test_rows_keys_statuses_and_on_epoch(problem):
    seen = []
    rows = _run(problem, on_epoch=seen.append)
    assert len(rows) == 3 and all(len(r) == EPOCHS for r in rows)
    for target_rows in rows:
        assert [tuple(r) for r in target_rows] == [METRIC_NAMES] * EPOCHS
        assert [r["epoch"] for r in target_rows] == [1, 2, 3]
        assert [r["step"] for r in target_rows] == [STEPS, 2 * STEPS, 3 * STEPS]
        assert [r["status"] for r in target_rows] == ["running", "running", "finished"]
        assert all(np.isfinite(r["train_loss"]) and r["l2_distance"] > 0 for r in target_rows)
    assert len(seen) == EPOCHS and all(len(latest) == 3 for latest in seen)
    assert seen[-1] == [r[-1] for r in rows]
    # Learnable labels: training accuracy improves on the first target.
    assert rows[0][-1]["train_loss"] < rows[0][0]["train_loss"]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_packed_equals_separate_runs(problem, optimizer):
    train = TrainConfig(optimizer=optimizer, batch_size=BATCH, epochs=EPOCHS)
    packed = _run(problem, train=train, seed=3)
    separate = []
    for t in range(3):
        single = train_pack(
            problem["apply_fn"],
            problem["params0"],
            problem["x"],
            problem["y"][t : t + 1],
            problem["xt"],
            problem["yt"][t : t + 1],
            train=train,
            linearized=False,
            seed=3,
        )
        separate.append(single.rows[0])
    _assert_rows_close(packed, separate)


def test_seed_determines_the_data_order(problem):
    a = _run(problem, T=1, seed=0)
    b = _run(problem, T=1, seed=0)
    c = _run(problem, T=1, seed=1)
    assert a == b
    assert a[0][-1]["train_loss"] != c[0][-1]["train_loss"]
    orders = np.asarray(epoch_orders(0, EPOCHS, N_TRAIN, STEPS, BATCH))
    assert orders.shape == (EPOCHS, STEPS, BATCH)
    for e in range(EPOCHS):
        assert len(set(orders[e].ravel().tolist())) == STEPS * BATCH
    assert not np.array_equal(orders[0], orders[1])


def _independent_trace(problem, seed, train):
    """Per-step training-set losses and final params by a plain Python loop (no vmap/scan)."""
    apply_fn, y = problem["apply_fn"], jnp.asarray(problem["y"][0])
    x = jnp.asarray(problem["x"])
    schedule = optax.linear_schedule(train.learning_rate, 0.0, EPOCHS * STEPS)
    tx = optax.sgd(schedule, momentum=train.momentum)

    @jax.jit
    def step(params, opt_state, idx):
        def objective(p):
            z = apply_fn(p, x[idx])[:, 0]
            return jnp.mean(optax.sigmoid_binary_cross_entropy(z, (y[idx] + 1) / 2))

        grads = jax.grad(objective)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        z = apply_fn(params, x)[:, 0]
        return params, opt_state, jnp.mean(optax.sigmoid_binary_cross_entropy(z, (y + 1) / 2))

    params, opt_state, losses = problem["params0"], tx.init(problem["params0"]), []
    for e in range(EPOCHS):
        key = jax.random.fold_in(jax.random.key(seed), e)
        perm = np.asarray(jax.random.permutation(key, N_TRAIN))
        for s in range(STEPS):
            params, opt_state, loss = step(params, opt_state, perm[s * BATCH : (s + 1) * BATCH])
            losses.append(float(loss))
    return np.array(losses), params


def test_steps_to_threshold_matches_independent_trace(problem):
    # losses[k - 1]: the whole training set's loss after step k; with one check per epoch
    # (the default) the threshold is checked at the epoch ends only.
    losses, params = _independent_trace(problem, seed=5, train=CFG)
    ends = losses[STEPS - 1 :: STEPS]
    threshold = float((ends[0] + ends[1]) / 2)  # first reached at the end of epoch 2
    assert ends[0] > threshold > ends[1]
    train = TrainConfig(batch_size=BATCH, epochs=EPOCHS, loss_threshold=threshold)
    result = _run(problem, T=1, fit=True, train=train, seed=5)
    got = [r["steps_to_threshold"] for r in result.rows[0]]
    assert got == [-1] + [2 * STEPS] * (EPOCHS - 1)
    for leaf, ref in zip(
        jax.tree_util.tree_leaves(result.params), jax.tree_util.tree_leaves(params), strict=True
    ):
        np.testing.assert_allclose(leaf[0], ref, rtol=1e-5, atol=1e-6)


def test_linearized_gradient_descent_matches_kernel_regression(problem):
    """Full-batch GD on ½‖f − y‖²/n: f_t = y + (I − ηΘ/n)^t (f₀ − y)."""
    apply_fn, params0, x = problem["apply_fn"], problem["params0"], problem["x"]
    y = problem["y"][:2]
    theta = ntk_gram(apply_fn, params0, x).astype(np.float64)
    eta = N_TRAIN / np.linalg.eigvalsh(theta)[-1]  # ηλ_max/n = 1: fast but stable
    epochs = 4
    train = TrainConfig(learning_rate=float(eta), momentum=0.0, batch_size=128, epochs=epochs)
    result = _run(
        problem, T=2, fit=True, train=train, linearized=True, loss="mse", schedule="constant"
    )
    apply_lin = linearize(apply_fn, params0)
    f0 = np.asarray(apply_fn(params0, x))[:, 0].astype(np.float64)
    step = np.eye(N_TRAIN) - eta * theta / N_TRAIN
    for t in range(2):
        expect = [y[t] + np.linalg.matrix_power(step, k) @ (f0 - y[t]) for k in range(epochs + 1)]
        for k, row in enumerate(result.rows[t], start=1):
            assert row["step"] == k
            np.testing.assert_allclose(
                row["train_loss"], 0.5 * np.mean((expect[k] - y[t]) ** 2), rtol=1e-4
            )
        params_t = jax.tree_util.tree_map(lambda a, t=t: a[t], result.params)
        f_t = np.asarray(apply_lin(params_t, x))[:, 0]
        scale = np.max(np.abs(expect[epochs]))
        np.testing.assert_allclose(f_t, expect[epochs], rtol=1e-4, atol=1e-4 * scale)


def test_network_and_linearization_share_theta0(problem):
    train = TrainConfig(learning_rate=1e-7, batch_size=BATCH, epochs=EPOCHS)
    net = _run(problem, train=train)
    lin = _run(problem, train=train, linearized=True)
    z0 = np.asarray(problem["apply_fn"](problem["params0"], problem["xt"]))[:, 0]
    for t in range(3):
        y = problem["yt"][t]
        loss0 = float(np.mean(optax.sigmoid_binary_cross_entropy(z0, (y + 1) / 2)))
        acc0 = float(np.mean(np.where(z0 >= 0, 1, -1) == y))
        for rn, rl in zip(net[t], lin[t], strict=True):
            for r in (rn, rl):
                np.testing.assert_allclose(r["test_loss"], loss0, rtol=1e-5)
                assert r["test_accuracy"] == pytest.approx(acc0)
                assert r["l2_distance"] < 1e-5 and abs(r["cosine_distance"]) < 1e-6


def test_diverged_target_stops_while_others_finish(problem):
    seen = []
    rows = _run(problem, lr_scale=[1.0, 1e30, 1.0], on_epoch=seen.append)
    assert len(rows[1]) == 1 and rows[1][0]["status"] == "diverged"
    assert not np.isfinite(rows[1][0]["train_loss"])
    for t in (0, 2):
        assert [r["status"] for r in rows[t]] == ["running", "running", "finished"]
        assert all(np.isfinite(r["train_loss"]) for r in rows[t])
    assert len(seen) == EPOCHS and all(latest[1] == rows[1][0] for latest in seen)
    # Every target diverging ends the loop after the first epoch.
    all_bad = _run(problem, lr_scale=[1e30, 1e30, 1e30])
    assert [len(r) for r in all_bad] == [1, 1, 1]


class _TinyBN(nn.Module):
    """Dense -> BatchNorm -> relu -> Dense: the batch-norm semantics at a compile cost of ~s."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Dense(8)(x.reshape((x.shape[0], -1)))
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        return nn.Dense(1)(nn.relu(x))


def _bn_checks(module, problem, T, train):
    variables = init_variables(module, SHAPE, seed=1)
    x, y, xt, yt = problem["x"], problem["y"][:T], problem["xt"], problem["yt"][:T]
    net = train_pack(module, variables, x, y, xt, yt, train=train, linearized=False)
    lin = train_pack(module, variables, x, y, xt, yt, train=train, linearized=True)
    assert lin.batch_stats == {}
    apply_lin = linearize(make_apply_fn(module, variables), variables["params"])

    @jax.jit
    def test_losses(net_params, net_stats, lin_params):
        """Per-target test losses: network with its running statistics, linearization."""

        def one(p, s, q, y):
            z = make_apply_fn(module, {"params": p, "batch_stats": s})(p, xt)[:, 0]
            z_lin = apply_lin(q, xt)[:, 0]
            t = (y + 1) / 2
            bce = optax.sigmoid_binary_cross_entropy
            return jnp.mean(bce(z, t)), jnp.mean(bce(z_lin, t))

        return jax.vmap(one)(net_params, net_stats, lin_params, yt)

    net_loss, lin_loss = test_losses(net.params, net.batch_stats, lin.params)
    for t in range(T):
        moved = jax.tree_util.tree_map(
            lambda a, b, t=t: np.max(np.abs(np.asarray(a[t]) - np.asarray(b))),
            net.batch_stats,
            variables["batch_stats"],
        )
        assert max(jax.tree_util.tree_leaves(moved)) > 1e-3  # running averages updated
        # The network is evaluated with its running statistics; the linearization with the
        # statistics frozen at initialization.
        np.testing.assert_allclose(net.rows[t][-1]["test_loss"], net_loss[t], rtol=1e-5)
        np.testing.assert_allclose(lin.rows[t][-1]["test_loss"], lin_loss[t], rtol=1e-5)
        assert net.rows[t][-1]["status"] == lin.rows[t][-1]["status"] == "finished"
    return variables


def test_batch_norm_network_and_linearization(problem):
    variables = _bn_checks(_TinyBN(), problem, T=2, train=CFG)
    # The function entry point needs an evaluation function for the running statistics.
    module = _TinyBN()
    with pytest.raises(ValueError, match="eval_apply_fn"):
        train_pack(
            make_apply_fn(module, variables),
            variables["params"],
            problem["x"],
            problem["y"],
            problem["xt"],
            problem["yt"],
            train=CFG,
            linearized=False,
            train_apply_fn=make_train_apply_fn(module),
            batch_stats=variables["batch_stats"],
        )


@pytest.mark.slow
def test_resnet18_batch_norm_trains_in_both_modes(problem):
    train = TrainConfig(batch_size=BATCH, epochs=1)
    _bn_checks(get_model("resnet18", width=4), problem, T=1, train=train)


def test_linear_schedule_decays_to_zero():
    schedule = make_schedule(0.05, 10, "linear")
    np.testing.assert_allclose(
        [schedule(k) for k in (0, 5, 9, 10)], [0.05, 0.025, 0.005, 0.0], rtol=1e-6, atol=1e-9
    )
    assert float(make_schedule(0.1, 10, "constant")(7)) == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"y": lambda p: p["y"][0]}, r"shape \(T, 64\).*y\[None\]"),
        ({"y": lambda p: (p["y"] + 1) / 2}, "only -1 and \\+1"),
        ({"yt": lambda p: p["yt"][:2]}, "y_train has 3 targets but y_test has 2"),
        ({"yt": lambda p: p["yt"][:, :5]}, "x_test has 32 examples"),
        ({"xt": lambda p: p["xt"][:, :4]}, "same per-example shape"),
        (
            {"x": lambda p: np.where(np.arange(N_TRAIN)[:, None, None, None] == 3, np.nan, p["x"])},
            "NaN/inf",
        ),
        ({"x": lambda p: p["x"].astype(np.int32)}, "must be floating"),
        ({"kw": {"loss": "hinge"}}, "loss='hinge'"),
        ({"kw": {"schedule": "cosine"}}, "schedule='cosine'"),
        ({"kw": {"lr_scale": [1.0, 2.0]}}, r"lr_scale must have shape \(3,\)"),
        ({"kw": {"seed": -1}}, "seed must be a non-negative int"),
        ({"kw": {"seed": 1.5}}, "seed must be a non-negative int .* or a sequence"),
        ({"kw": {"seed": "012"}}, "seed must be a non-negative int .* or a sequence"),
        ({"kw": {"seed": [0, 1]}}, "seed has 2 entries but the pack has 3 targets"),
        ({"kw": {"seed": []}}, "seed has 0 entries but the pack has 3 targets"),
        ({"kw": {"seed": [0, -1, 2]}}, r"seed\[1\] is -1; every entry of seed must be a non-neg"),
        ({"kw": {"seed": [0, True, 2]}}, r"seed\[1\] is the bool True"),
        ({"kw": {"seed": [0, 1.0, 2]}}, r"seed\[1\] is 1.0 \(float\); every entry of seed"),
        ({"kw": {"seed": np.zeros((3, 1), int)}}, r"1-D sequence .* shape \(3, 1\)"),
        ({"kw": {"train": {"epochs": 1}}}, "TrainConfig"),
        ({"kw": {"linearized": "yes"}}, "linearized must be a bool"),
        ({"kw": {"batch_stats": {"bn": {"mean": np.zeros(2)}}}}, "train_apply_fn is None"),
        ({"kw": {"checkpoint": 3}}, "checkpoint must be None or a file path"),
        ({"kw": {"checkpoint": "c", "checkpoint_every": 0}}, "checkpoint_every must be a pos"),
        ({"kw": {"on_resume": 1}}, "on_resume must be None or a callable"),
    ],
)
def test_bad_inputs_raise_before_compiling(problem, change, match):
    data = {k: problem[k] for k in ("x", "y", "xt", "yt")}
    kwargs = {"train": CFG, "linearized": False}
    for key, value in change.items():
        if key == "kw":
            kwargs.update(value)
        else:
            data[key] = value(problem)
    with pytest.raises((ValueError, TypeError), match=match):
        train_pack(
            problem["apply_fn"],
            problem["params0"],
            data["x"],
            data["y"],
            data["xt"],
            data["yt"],
            **kwargs,
        )


def test_apply_fn_with_wrong_output_shape_is_rejected(problem):
    def two_logits(params, x):
        z = problem["apply_fn"](params, x)
        return jnp.concatenate([z, z], axis=1)

    with pytest.raises(ValueError, match=r"shape \(16, 1\)"):
        train_pack(
            two_logits,
            problem["params0"],
            problem["x"],
            problem["y"],
            problem["xt"],
            problem["yt"],
            train=CFG,
            linearized=False,
        )


# ----------------------------------------------------------------------------- centered


def test_centered_linearization_trains_like_the_explicit_centered_model(problem):
    """linearized=True, centered=True == the network mode of J(θ₀, x)(θ − θ₀) written out."""
    from raysweep.evolution import centered_linearization

    apply_c = centered_linearization(problem["apply_fn"], problem["params0"])
    x = jnp.asarray(problem["x"][:8])
    np.testing.assert_allclose(np.asarray(apply_c(problem["params0"], x)), 0.0, atol=0)
    packed = _run(problem, T=1, linearized=True, centered=True)
    explicit = train_pack(
        apply_c,
        problem["params0"],
        problem["x"],
        problem["y"][:1],
        problem["xt"],
        problem["yt"][:1],
        train=CFG,
        linearized=False,
    ).rows
    _assert_rows_close(packed, explicit)
    # Centering changes the model: the uncentered linearization starts from f(θ₀) ≠ 0.
    plain = _run(problem, T=1, linearized=True)
    assert plain[0][0]["train_loss"] != pytest.approx(packed[0][0]["train_loss"], rel=1e-4)


def test_centered_needs_linearized(problem):
    with pytest.raises(ValueError, match="centered=True .* needs linearized=True"):
        _run(problem, T=1, linearized=False, centered=True)
    with pytest.raises(TypeError, match="centered must be a bool"):
        _run(problem, T=1, linearized=True, centered="yes")


# ----------------------------------------------------------------------------- checkpoints


class _Interrupt(Exception):
    """Raised from on_epoch to simulate a node that disappears after an epoch."""


def _assert_rows_equal(a, b):
    """Bitwise equality of metric rows (NaN equal to NaN)."""
    assert [[r["epoch"] for r in ra] for ra in a] == [[r["epoch"] for r in rb] for rb in b]
    for ra, rb in zip(a, b, strict=True):
        for x, y in zip(ra, rb, strict=True):
            assert tuple(x) == tuple(y)
            for key in METRIC_NAMES:
                np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def _assert_trees_equal(a, b):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _interrupted_then_resumed(fit, path, *, every, stop):
    """``fit(**kw)`` interrupted in on_epoch of epoch ``stop``, then run again on ``path``."""
    seen, resumed = [], []

    def stopping(latest):
        seen.append(latest)
        if latest[0]["epoch"] == stop:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        fit(checkpoint=path, checkpoint_every=every, on_epoch=stopping, on_resume=resumed.append)
    assert resumed == [0] and len(seen) == stop
    saved = checkpoint_epoch(path)
    seen.clear()
    result = fit(
        checkpoint=path, checkpoint_every=every, on_epoch=seen.append, on_resume=resumed.append
    )
    assert resumed[1] == saved
    return result, resumed[1], seen


@pytest.mark.parametrize(
    ("mode", "every", "stop", "expect"),
    [
        # on_epoch of epoch 2 raises before epoch 2 is saved: resume after epoch 1.
        ("network", 1, 2, 1),
        ("linearized", 2, 3, 2),
        ("batch_norm", 1, 3, 2),
    ],
)
def test_resumed_run_equals_uninterrupted_run(problem, tmp_path, mode, every, stop, expect):
    if mode == "batch_norm":
        module = _TinyBN()
        variables = init_variables(module, SHAPE, seed=1)

        def fit(**kw):
            x, y, xt, yt = problem["x"], problem["y"][:2], problem["xt"], problem["yt"][:2]
            return train_pack(
                module, variables, x, y, xt, yt, train=CFG, linearized=False, seed=2, **kw
            )

    else:
        # The network pack has a target that diverges in epoch 1: its final row is restored.
        scale = [1.0, 1e30, 1.0] if mode == "network" else None

        def fit(**kw):
            linearized = mode == "linearized"
            return _run(problem, fit=True, linearized=linearized, seed=4, lr_scale=scale, **kw)

    starts = []
    reference = fit(on_resume=starts.append)
    assert starts == [0] and reference.resumed_epoch == 0
    path = tmp_path / "pack.ckpt"
    result, resumed_at, seen = _interrupted_then_resumed(fit, path, every=every, stop=stop)
    assert resumed_at == result.resumed_epoch == expect
    # on_epoch only for the epochs after the checkpoint; the rows cover all epochs.
    assert [latest[0]["epoch"] for latest in seen] == list(range(expect + 1, EPOCHS + 1))
    for latest in seen:
        assert latest == [rows[min(len(rows), latest[0]["epoch"]) - 1] for rows in result.rows]
    _assert_rows_equal(result.rows, reference.rows)
    _assert_trees_equal(result.params, reference.params)
    _assert_trees_equal(result.opt_state, reference.opt_state)
    _assert_trees_equal(result.batch_stats, reference.batch_stats)
    if mode == "network":
        assert [r["status"] for r in result.rows[1]] == ["diverged"]
        assert all(latest[1] == result.rows[1][0] for latest in seen)
    if mode == "batch_norm":
        assert jax.tree_util.tree_leaves(result.batch_stats)


def test_checkpoint_of_other_work_is_ignored(problem, tmp_path):
    path = tmp_path / "pack.ckpt"
    _run(problem, checkpoint=path, checkpoint_every=1, seed=4)
    assert checkpoint_epoch(path) == EPOCHS - 1  # none after the last epoch
    for change in ({"labels": True}, {"seed": 5}):
        y, yt = problem["y"][:3], problem["yt"][:3]
        if "labels" in change:
            y, yt = -y, -yt
        seed = change.get("seed", 4)
        kwargs = {"train": CFG, "linearized": False, "seed": seed}
        args = (problem["apply_fn"], problem["params0"], problem["x"], y, problem["xt"], yt)
        fresh = train_pack(*args, **kwargs)
        starts = []
        with pytest.warns(UserWarning, match=f"ignoring checkpoint {path}.*other work"):
            result = train_pack(
                *args, **kwargs, checkpoint=path, checkpoint_every=1, on_resume=starts.append
            )
        assert starts == [0] and result.resumed_epoch == 0
        _assert_rows_equal(result.rows, fresh.rows)
        _assert_trees_equal(result.params, fresh.params)


def test_damaged_checkpoint_is_ignored_with_a_warning(problem, tmp_path):
    path = tmp_path / "pack.ckpt"
    fresh = _run(problem, fit=True, seed=4)
    _run(problem, checkpoint=path, checkpoint_every=1, seed=4)
    data = path.read_bytes()
    for damaged in (data[: len(data) // 2], b"", b"not a checkpoint"):
        path.write_bytes(damaged)
        assert checkpoint_epoch(path) is None
        starts = []
        with pytest.warns(UserWarning, match=f"ignoring damaged checkpoint {path}"):
            result = _run(
                problem,
                fit=True,
                seed=4,
                checkpoint=path,
                checkpoint_every=1,
                on_resume=starts.append,
            )
        assert starts == [0] and result.resumed_epoch == 0
        _assert_rows_equal(result.rows, fresh.rows)
        assert checkpoint_epoch(path) == EPOCHS - 1  # rewritten by the new run
    assert checkpoint_epoch(tmp_path / "missing.ckpt") is None


# ----------------------------------------------------------------------------- packed trials

_INT_KEYS = ("epoch", "step", "steps_to_threshold")


def _assert_rows_match(a, b, rtol=1e-5):
    """Rows of a pack against rows of separate runs (up to float32 rounding).

    Integers and statuses exactly. A float metric within ``rtol`` of the magnitude it is
    computed from: ``cosine_distance = 1 − cos`` from a cosine of magnitude 1, ``l2_distance =
    ‖θ − θ₀‖`` from parameters of magnitude ``weight_norm``, the others from their own largest
    absolute value over all rows compared.
    """
    assert [[r["status"] for r in ra] for ra in a] == [[r["status"] for r in rb] for rb in b]
    pairs = [(x, y) for ra, rb in zip(a, b, strict=True) for x, y in zip(ra, rb, strict=True)]

    def largest(key):
        return max(max(abs(x[key]), abs(y[key])) for x, y in pairs)

    for key in METRIC_NAMES:
        if key == "status":
            continue
        if key in _INT_KEYS:
            assert [x[key] for x, _ in pairs] == [y[key] for _, y in pairs], key
            continue
        scale = {"cosine_distance": 1.0, "l2_distance": largest("weight_norm")}.get(key)
        atol = rtol * (largest(key) if scale is None else scale)
        np.testing.assert_allclose(
            [x[key] for x, _ in pairs], [y[key] for _, y in pairs], rtol=0, atol=atol, err_msg=key
        )


def _single(problem, t, **kwargs):
    """The rows of target ``t`` trained alone (a pack of 1)."""
    kwargs.setdefault("train", CFG)
    kwargs.setdefault("linearized", False)
    result = train_pack(
        problem["apply_fn"],
        problem["params0"],
        problem["x"],
        problem["y"][t : t + 1],
        problem["xt"],
        problem["yt"][t : t + 1],
        **kwargs,
    )
    return result.rows[0]


def test_pack_orders_per_target_are_the_orders_of_each_seed():
    orders = np.asarray(pack_orders((0, 1, 0), EPOCHS, N_TRAIN, STEPS, BATCH))
    assert orders.shape == (EPOCHS, STEPS, 3, BATCH) and orders.dtype == np.int32
    for t, seed in enumerate((0, 1, 0)):
        expected = np.asarray(epoch_orders(seed, EPOCHS, N_TRAIN, STEPS, BATCH))
        np.testing.assert_array_equal(orders[:, :, t], expected)
        for e in range(EPOCHS):
            perm = np.asarray(
                jax.random.permutation(jax.random.fold_in(jax.random.key(seed), e), N_TRAIN)
            )
            np.testing.assert_array_equal(orders[e, :, t].ravel(), perm[: STEPS * BATCH])
    shared = np.asarray(pack_orders(3, EPOCHS, N_TRAIN, STEPS, BATCH))
    assert shared.shape == (EPOCHS, STEPS, BATCH)


@pytest.mark.parametrize("linearized", [False, True])
def test_packed_seeds_equal_separate_runs(problem, linearized):
    # A threshold that some training-set losses cross, so steps_to_threshold is compared too.
    train = TrainConfig(batch_size=BATCH, epochs=EPOCHS, loss_threshold=0.62)
    packed = _run(problem, train=train, linearized=linearized, seed=(0, 1, 2))
    assert any(rows[-1]["steps_to_threshold"] > 0 for rows in packed)
    separate = [_single(problem, t, train=train, linearized=linearized, seed=t) for t in range(3)]
    _assert_rows_match(packed, separate)
    # The targets really saw different orders: the same labels under seeds 0 and 1 differ.
    other = _single(problem, 0, train=train, linearized=linearized, seed=1)
    assert other[0]["train_loss"] != separate[0][0]["train_loss"]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_packed_learning_rates_equal_separate_runs(problem, optimizer):
    def config(rate):
        rates = {"learning_rate": rate} if optimizer == "sgd" else {"adam_learning_rate": rate}
        return TrainConfig(optimizer=optimizer, batch_size=BATCH, epochs=EPOCHS, **rates)

    packed = _run(problem, T=2, train=config(0.05), lr_scale=[1.0, 0.4], seed=3)
    separate = [_single(problem, t, train=config(r), seed=3) for t, r in enumerate((0.05, 0.02))]
    _assert_rows_match(packed, separate)


def test_packed_seeds_and_learning_rates_equal_separate_runs(problem):
    seeds, rates = (5, 7, 5), (0.05, 0.02, 0.02)
    packed = _run(problem, seed=list(seeds), lr_scale=[1.0, 0.4, 0.4])
    separate = [
        _single(problem, t, train=dataclasses.replace(CFG, learning_rate=r), seed=s)
        for t, (s, r) in enumerate(zip(seeds, rates, strict=True))
    ]
    _assert_rows_match(packed, separate)


def test_equal_seeds_are_the_shared_order(problem):
    reference = _run(problem, fit=True, seed=3)
    for seeds in ([3, 3, 3], np.array([3, 3, 3])):
        result = _run(problem, fit=True, seed=seeds)
        _assert_rows_equal(result.rows, reference.rows)
        _assert_trees_equal(result.params, reference.params)
        _assert_trees_equal(result.opt_state, reference.opt_state)


def test_bad_seed_list_raises_for_the_model_entry_point(problem):
    module = get_model("mlp", hidden_sizes=(16,))
    variables = init_variables(module, SHAPE, seed=0)
    args = (module, variables, problem["x"], problem["y"], problem["xt"], problem["yt"])
    with pytest.raises(ValueError, match="seed has 4 entries but the pack has 3 targets"):
        train_pack(*args, train=CFG, linearized=False, seed=[0, 1, 2, 3])
    with pytest.raises(ValueError, match=r"seed\[0\] is the bool False"):
        train_pack(*args, train=CFG, linearized=True, seed=[False, 1, 2])


def test_checkpoint_of_other_seeds_is_ignored(problem, tmp_path):
    def fit(seed, **kw):
        return _run(problem, T=2, fit=True, seed=seed, **kw)

    reference = fit((0, 1))
    path = tmp_path / "pack.ckpt"
    result, resumed_at, _ = _interrupted_then_resumed(
        lambda **kw: fit((0, 1), **kw), path, every=1, stop=2
    )
    assert resumed_at == result.resumed_epoch == 1
    _assert_rows_equal(result.rows, reference.rows)
    _assert_trees_equal(result.params, reference.params)
    _assert_trees_equal(result.opt_state, reference.opt_state)
    assert checkpoint_epoch(path) == EPOCHS - 1
    fresh = fit((0, 2))
    starts = []
    with pytest.warns(UserWarning, match=f"ignoring checkpoint {path}.*other work"):
        other = fit((0, 2), checkpoint=path, checkpoint_every=1, on_resume=starts.append)
    assert starts == [0] and other.resumed_epoch == 0
    _assert_rows_equal(other.rows, fresh.rows)
    _assert_trees_equal(other.params, fresh.params)


# ----------------------------------------------------------------------------- the two forms


@pytest.mark.parametrize("linearized", [False, True])
def test_module_form_equals_apply_fn_form(problem, linearized):
    """train_pack(module, variables) == train_pack(apply_fn, params0) without batch norm."""
    assert "batch_stats" not in problem["variables"]
    kwargs = {"train": CFG, "linearized": linearized, "seed": 3}
    by_function = _run(problem, fit=True, **kwargs)
    by_module = train_pack(
        problem["module"],
        problem["variables"],
        problem["x"],
        problem["y"],
        problem["xt"],
        problem["yt"],
        **kwargs,
    )
    assert by_module.resumed_epoch == by_function.resumed_epoch == 0
    assert by_module.batch_stats == by_function.batch_stats == {}
    # Float32 metrics within 1e-5 of the largest value of each metric; integers exactly.
    _assert_rows_match(by_module.rows, by_function.rows, rtol=1e-5)
    assert jax.tree_util.tree_structure(by_module.params) == jax.tree_util.tree_structure(
        by_function.params
    )
    for a, b in zip(
        jax.tree_util.tree_leaves(by_module.params),
        jax.tree_util.tree_leaves(by_function.params),
        strict=True,
    ):
        assert a.shape[0] == 3
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * float(np.max(np.abs(b))))


@pytest.mark.parametrize(
    "option",
    [
        {"train_apply_fn": lambda p, s, x: (x, s)},
        {"batch_stats": {"bn": {"mean": np.zeros(2)}}},
        {"eval_apply_fn": lambda p, s, x: x},
    ],
)
def test_module_form_rejects_apply_fn_options(problem, option):
    (name,) = option
    with pytest.raises(TypeError, match=rf"{name} given with a MLP model.*apply_fn form"):
        train_pack(
            problem["module"],
            problem["variables"],
            problem["x"],
            problem["y"],
            problem["xt"],
            problem["yt"],
            train=CFG,
            linearized=False,
            **option,
        )


@pytest.mark.parametrize("model", ["mlp", 42, None, {"params": {}}])
def test_first_argument_must_be_a_module_or_a_callable(problem, model):
    with pytest.raises(TypeError, match=r"flax.linen.Module .* or a callable apply_fn"):
        train_pack(
            model,
            problem["params0"],
            problem["x"],
            problem["y"],
            problem["xt"],
            problem["yt"],
            train=CFG,
            linearized=False,
        )


def test_module_form_checks_variables_and_option_names(problem):
    args = (problem["x"], problem["y"], problem["xt"], problem["yt"])
    with pytest.raises(ValueError, match="variables must be the dict .* got \\['batch_stats'\\]"):
        train_pack(problem["module"], {"batch_stats": {}}, *args, train=CFG, linearized=False)
    with pytest.raises(ValueError, match="variables must be the dict .* got list"):
        train_pack(problem["module"], [problem["variables"]], *args, train=CFG, linearized=False)
    with pytest.raises(TypeError, match="unexpected keyword argument 'sed'"):
        train_pack(
            problem["module"], problem["variables"], *args, train=CFG, linearized=False, sed=1
        )


# ----------------------------------------------------------------------------- loss threshold


def _threshold_labels(problem):
    """(T=3, n) training labels for the threshold tests: two learnable targets and one random
    target that fits slowly (its loss stays above the thresholds used below)."""
    noise = np.random.default_rng(1).random(N_TRAIN) < 0.5
    y = np.stack([problem["y"][2], problem["y"][0], np.where(noise, 1.0, -1.0)])
    return y.astype(np.float32)


def _run_threshold(problem, **train_fields):
    """Rows of the three :func:`_threshold_labels` targets, shared data order (seed 0)."""
    train = dataclasses.replace(CFG, **train_fields)
    return train_pack(
        problem["apply_fn"],
        problem["params0"],
        problem["x"],
        _threshold_labels(problem),
        problem["xt"],
        problem["yt"],
        train=train,
        linearized=False,
        seed=0,
    ).rows


@pytest.fixture(scope="module")
def full_loss_trace(problem):
    """``(EPOCHS·STEPS, 3)``: the whole training set's loss of each :func:`_threshold_labels`
    target after every global step (row ``k - 1``: after ``k`` updates), by a plain loop of
    single-target SGD steps (no pack, no scan) in the order of ``epoch_orders(0, ...)``."""
    apply_fn, x = problem["apply_fn"], jnp.asarray(problem["x"])
    tx = make_optimizer(
        "sgd",
        CFG.learning_rate,
        momentum=CFG.momentum,
        total_steps=EPOCHS * STEPS,
        schedule="linear",
    )

    @jax.jit
    def step(params, opt_state, y, idx):
        def objective(p):
            return jnp.mean(example_losses(apply_fn(p, x[idx])[:, 0], y[idx], "bce"))

        updates, opt_state = tx.update(jax.grad(objective)(params), opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, opt_state, jnp.mean(example_losses(apply_fn(params, x)[:, 0], y, "bce"))

    orders = np.asarray(epoch_orders(0, EPOCHS, N_TRAIN, STEPS, BATCH)).reshape(-1, BATCH)
    trace = np.zeros((EPOCHS * STEPS, 3))
    for t, y in enumerate(jnp.asarray(_threshold_labels(problem))):
        params, opt_state = problem["params0"], tx.init(problem["params0"])
        for k, idx in enumerate(orders):
            params, opt_state, loss = step(params, opt_state, y, idx)
            trace[k, t] = float(loss)
    return trace


def _first_check(trace, checks, threshold):
    """Per target: the first global step in ``checks`` (1-based) whose loss is ``≤ threshold``,
    ``-1`` if none; asserts no checked loss is within float32 noise of the threshold."""
    losses = trace[np.asarray(checks) - 1]  # (len(checks), T)
    assert np.min(np.abs(losses - threshold)) > 1e-4 * threshold
    hit = losses <= threshold
    return [int(checks[np.argmax(hit[:, t])]) if hit[:, t].any() else -1 for t in range(3)]


def _assert_steps_per_epoch(rows, first):
    """Every epoch's row reports ``first[t]`` once that step is done, ``-1`` before."""
    for t, target_rows in enumerate(rows):
        got = [r["steps_to_threshold"] for r in target_rows]
        expect = [first[t] if 0 < first[t] <= r["step"] else -1 for r in target_rows]
        assert got == expect, t


def test_steps_to_threshold_is_the_first_epoch_whose_training_loss_reaches_it(problem):
    """One check per epoch: the epoch-end training-set loss of the rows decides."""
    threshold = 0.6125
    rows = _run_threshold(problem, loss_threshold=threshold)
    reached = []
    for target_rows in rows:
        losses = np.array([r["train_loss"] for r in target_rows])
        assert np.min(np.abs(losses - threshold)) > 1e-3  # no float32 coin flip
        epochs = [r["epoch"] for r in target_rows if r["train_loss"] <= threshold]
        reached.append(epochs[0] if epochs else None)
        expect = STEPS * epochs[0] if epochs else -1
        assert target_rows[-1]["steps_to_threshold"] == expect
        _assert_steps_per_epoch([target_rows], [expect])
    assert reached == [2, 3, None]  # mid-run, at the last epoch, never


def test_steps_to_threshold_with_checks_inside_the_epoch_matches_brute_force(
    problem, full_loss_trace
):
    """threshold_checks=3 of S=4 steps: checks after steps 2, 3, 4 of every epoch."""
    checks = np.array([e * STEPS + k for e in range(EPOCHS) for k in (2, 3, 4)])
    # Target 0 first reaches it at the first check of epoch 2 (global step 6), not an epoch
    # end: the threshold is the midpoint between its losses at the check before (step 4) and
    # at step 5, which is not a check, so checking after step 5 (or only at epoch ends) would
    # report another step.
    trace = full_loss_trace
    threshold = float((trace[STEPS - 1, 0] + trace[STEPS, 0]) / 2)
    first = _first_check(trace, checks, threshold)
    assert first[0] == STEPS + 2 and first[0] % STEPS != 0
    rows = _run_threshold(problem, loss_threshold=threshold, threshold_checks=3)
    _assert_steps_per_epoch(rows, first)
    # The chunked epoch trains exactly as the single scan: same rows up to rounding
    # (grad_norm included, so the padded steps are skipped), thresholds at epoch ends only.
    plain = _run_threshold(problem, loss_threshold=threshold)
    _assert_steps_per_epoch(plain, _first_check(trace, checks[2::3], threshold))

    def without_threshold(rows):
        return [[{**r, "steps_to_threshold": 0} for r in target_rows] for target_rows in rows]

    _assert_rows_match(without_threshold(rows), without_threshold(plain))
    np.testing.assert_allclose(
        [[r["train_loss"] for r in target_rows] for target_rows in rows],
        trace[STEPS - 1 :: STEPS].T,
        rtol=1e-5,
    )


def test_threshold_checks_above_steps_per_epoch_check_every_step(problem, full_loss_trace):
    """threshold_checks > S is clamped to S: the loss is checked after every step."""
    trace = full_loss_trace
    threshold = float((trace[STEPS - 1, 0] + trace[STEPS, 0]) / 2)  # reached at step S + 1
    first = _first_check(trace, np.arange(1, EPOCHS * STEPS + 1), threshold)
    assert first[0] == STEPS + 1  # not a check of threshold_checks=1 or 3
    clamped = _run_threshold(problem, loss_threshold=threshold, threshold_checks=100)
    _assert_steps_per_epoch(clamped, first)
    exact = _run_threshold(problem, loss_threshold=threshold, threshold_checks=STEPS)
    _assert_rows_equal(clamped, exact)


def test_threshold_checks_must_be_a_positive_int():
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match=r"train\.threshold_checks"):
            TrainConfig(threshold_checks=bad)
    assert threshold_check_steps(4, 3) == (2, 3, 4)
    assert threshold_check_steps(10, 4) == (3, 5, 8, 10)
    assert threshold_check_steps(4, 1) == (4,)
    with pytest.raises(ValueError, match="checks must be in"):
        threshold_check_steps(4, 5)


def test_on_state_sees_every_epoch_and_the_final_state(problem):
    seen = []
    result = _run(
        problem,
        fit=True,
        train=TrainConfig(batch_size=BATCH, epochs=EPOCHS),
        on_state=lambda epoch, params, stats: seen.append(
            (epoch, jax.tree_util.tree_map(np.asarray, params))
        ),
    )
    assert [e for e, _ in seen] == list(range(1, EPOCHS + 1))
    for got, want in zip(
        jax.tree_util.tree_leaves(seen[-1][1]),
        jax.tree_util.tree_leaves(result.params),
        strict=True,
    ):
        np.testing.assert_array_equal(got, np.asarray(want))
    # an earlier epoch's parameters differ from the final ones
    first = jax.tree_util.tree_leaves(seen[0][1])[0]
    assert not np.array_equal(first, np.asarray(jax.tree_util.tree_leaves(result.params)[0]))


def test_lenet_trains_as_its_im2col_variant_with_the_same_rows():
    """train_pack swaps LeNet5 for training_variant(LeNet5) on CPU: the rows are those of the
    default convolutions (float32 tolerance scaled to each metric's magnitude)."""
    from raysweep.models.lenet import LeNet5

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8, 8, 1)).astype(np.float32)
    y = np.sign(rng.normal(size=(2, 64))).astype(np.float32)
    module = LeNet5()
    variables = init_variables(module, (8, 8, 1), seed=0)
    train = TrainConfig(batch_size=16, epochs=2)
    swapped = train_pack(
        module,
        variables,
        x[:48],
        y[:, :48],
        x[48:],
        y[:, 48:],
        train=train,
        linearized=False,
        seed=0,
    )
    # the default convolutions, through the function form (no swap there)
    plain = train_pack(
        make_apply_fn(module, variables),
        variables["params"],
        x[:48],
        y[:, :48],
        x[48:],
        y[:, 48:],
        train=train,
        linearized=False,
        seed=0,
    )
    for a, b in zip(swapped.rows, plain.rows, strict=True):
        for ra, rb in zip(a, b, strict=True):
            for key in ("train_loss", "test_loss", "l2_distance"):
                assert ra[key] == pytest.approx(rb[key], rel=1e-4, abs=1e-6)
