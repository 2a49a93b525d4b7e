"""raysweep.evolution: energy concentration, end-of-training alignment, pretrained NTK, baseline.

Checks against closed forms and explicit Gram matrices on tiny models (digits MLP), one small
eigenfunction artifact shared by the module (Ray, 120 + 60 digits, 8 eigenpairs), and the four
scripts' ``--smoke-test`` runs (what CI runs), whose output the report must pick up.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close_f32
from jax.flatten_util import ravel_pytree

from raysweep.analysis import (
    load_alignment,
    load_baseline,
    load_baseline_records,
    load_energy_records,
    load_pretrained,
)
from raysweep.config import Config, DataConfig, ModelConfig, NTKConfig, SweepConfig, TrainConfig
from raysweep.distributed import ensure_ray
from raysweep.evolution import (
    alignment_study,
    binary_task_name,
    centered_linearization,
    energy_study,
    kernel_energy,
    normalized_alignment,
    pretrained_study,
)
from raysweep.evolution.common import TrainedCache, pm_one
from raysweep.models import create_model, make_apply_fn
from raysweep.ntk import energy_concentration, linearize, ntk_gram

SHAPE = (8, 8, 1)


def brute_gram(apply_fn, params, x) -> np.ndarray:
    """Θ = J Jᵀ in float64 from jax.jacobian of the flattened parameters."""
    flat, unravel = ravel_pytree(params)
    jac = jax.jacobian(lambda p: apply_fn(unravel(p), jnp.asarray(x))[:, 0])(flat)
    jac = np.asarray(jac, dtype=np.float64)
    return jac @ jac.T


@pytest.fixture(scope="module")
def tiny():
    module, variables, apply_fn = create_model("mlp", SHAPE, seed=3, hidden_sizes=(12, 12))
    x = np.random.default_rng(1).normal(size=(48, *SHAPE)).astype(np.float32)
    return apply_fn, variables["params"], x


@pytest.fixture(scope="module")
def ray_cluster():
    started = ensure_ray(address="local", num_cpus=2, include_dashboard=False)
    yield
    if started:
        import ray

        ray.shutdown()


CONFIG = Config(
    data=DataConfig(name="digits", num_train=120, num_test=60),
    model=ModelConfig(name="mlp", seed=0),
    train=TrainConfig(epochs=2, batch_size=32),
    ntk=NTKConfig(num_eigen=8, tile_size=64),
    sweep=SweepConfig(eigen_indices=(0, 2), pack_size=2),
)


@pytest.fixture(scope="module")
def results(tmp_path_factory, ray_cluster):
    """A results folder whose eigenfunction artifact the studies reuse."""
    from raysweep.eigenfunctions import compute_eigenfunctions

    out = tmp_path_factory.mktemp("evolution")
    compute_eigenfunctions(CONFIG, out, progress=False, log=lambda *_: None)
    return out


# ----------------------------------------------------------------------------- energy


def test_energy_of_an_eigenvector_is_one_and_of_random_labels_k_over_n(tiny):
    apply_fn, params, x = tiny
    gram = brute_gram(apply_fn, params, x)
    vals, vecs = np.linalg.eigh(gram)
    vecs = vecs[:, ::-1].T  # descending, unit rows
    n, k = len(x), 10
    assert energy_concentration(vecs, vecs[3], k) == pytest.approx(1.0, abs=1e-12)
    assert energy_concentration(vecs, vecs[k + 2], k) == pytest.approx(0.0, abs=1e-12)
    rng = np.random.default_rng(0)
    labels = rng.choice([-1.0, 1.0], size=(4000, n))
    energy = energy_concentration(vecs, labels, k)
    # E[yᵀ P_k y] / n = tr(P_k) / n = k / N for independent ±1 entries.
    assert np.mean(energy) == pytest.approx(k / n, abs=4 * np.std(energy) / np.sqrt(4000))


def test_kernel_energy_on_ray_matches_the_explicit_gram(tiny, tmp_path, ray_cluster):
    apply_fn, params, x = tiny
    gram = brute_gram(apply_fn, params, x)
    vals, vecs = np.linalg.eigh(gram)
    vals, vecs = vals[::-1], vecs[:, ::-1].T
    y = np.sign(np.random.default_rng(2).normal(size=len(x)))
    config = Config(ntk=NTKConfig(tile_size=16, num_workers=2))
    energy, eigvals = kernel_energy(
        apply_fn,
        params,
        x,
        y,
        8,
        store_dir=tmp_path / "g",
        config=config,
        model_id="t",
        progress=False,
    )
    np.testing.assert_allclose(eigvals, vals[:8], rtol=1e-4)
    assert energy == pytest.approx(energy_concentration(vecs, y, 8), abs=1e-4)
    top, _ = kernel_energy(
        apply_fn,
        params,
        x,
        vecs[0],
        8,
        store_dir=tmp_path / "g",
        config=config,
        model_id="t",
        progress=False,
    )
    assert top == pytest.approx(1.0, abs=1e-5)


def test_energy_study_rejects_k_too_large_before_training(tmp_path):
    with pytest.raises(
        ValueError, match=r"k=200 must be smaller than the number of Gram samples \(120\)"
    ):
        energy_study(CONFIG, tmp_path, k=200, progress=False, log=lambda *_: None)
    assert not (tmp_path / "energy").exists()
    with pytest.raises(ValueError, match="gram_samples must be an integer >= 2"):
        energy_study(CONFIG, tmp_path, k=4, gram_samples=1, progress=False)


def test_binary_tasks_and_labels():
    assert binary_task_name("cifar10") == "cifar2"
    assert binary_task_name("digits") == "digits2"
    assert binary_task_name("mnist2") == "mnist2"
    with pytest.raises(ValueError, match="has no binary task"):
        binary_task_name("svhn")
    np.testing.assert_array_equal(pm_one(np.array([0, 1, 1])), [-1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="expected binary 0/1 labels"):
        pm_one(np.array([0, 2]))


# ----------------------------------------------------------------------------- alignment


def test_normalized_alignment_matches_the_explicit_gram(tiny):
    apply_fn, params, x = tiny
    gram = brute_gram(apply_fn, params, x)
    targets = np.random.default_rng(4).normal(size=(5, len(x)))
    targets[1] *= 30.0  # the normalization removes the scale
    want = np.einsum("mi,ij,mj->m", targets, gram, targets) / len(x) ** 2
    want /= np.mean(targets**2, axis=1)
    got = normalized_alignment(apply_fn, params, x, targets, batch_size=16)
    np.testing.assert_allclose(got, want, rtol=1e-4)
    with pytest.raises(ValueError, match=r"targets \[0\] are zero on every sample"):
        normalized_alignment(apply_fn, params, x, np.zeros((1, len(x))))


def test_alignment_study_reproduces_explicit_grams_at_init_and_after_training(results):
    logs = []
    data = alignment_study(CONFIG, results, trained_indices=[0, 2], num_eigen=6, log=logs.append)
    from raysweep.eigenfunctions import load_artifact

    artifact = load_artifact(results / "eigenfunctions")
    module, variables0, apply0 = artifact.model()
    x_all, _ = artifact.dataset().concatenated()
    n_tr = artifact.num_train
    phi = artifact.eigvecs[:6].astype(np.float64)

    def explicit(apply_fn, params):
        out = {}
        for split, cols in (
            ("train", slice(0, n_tr)),
            ("test", slice(n_tr, None)),
            ("all", slice(None)),
        ):
            g = ntk_gram(apply_fn, params, x_all[cols], method="contraction").astype(np.float64)
            t = phi[:, cols]
            out[split] = np.einsum("mi,ij,mj->m", t, g, t) / (t.shape[1] * np.sum(t * t, axis=1))
        return out

    init = explicit(apply0, variables0["params"])
    for split in ("train", "test", "all"):
        np.testing.assert_allclose(data.init[split], init[split], rtol=2e-4)
    finals, rows = TrainedCache(results / "alignment" / "trained").load(
        json.loads(json.dumps(_key(artifact))), variables0
    ) or (None, None)
    assert finals is not None and len(finals) == 2
    for t in range(2):
        want = explicit(make_apply_fn(module, finals[t]), finals[t]["params"])
        for split in ("train", "test", "all"):
            np.testing.assert_allclose(data.alpha[split][t], want[split], rtol=2e-4)
    # Training moved the kernel: the final alignments differ from the initial ones.
    assert not np.allclose(data.alpha["all"][0], data.init["all"], rtol=1e-3)
    saved = load_alignment(results)
    np.testing.assert_array_equal(saved.trained_indices, [0, 2])
    np.testing.assert_allclose(saved.alpha["test"], data.alpha["test"])
    # A second run reuses the trained networks.
    logs.clear()
    alignment_study(CONFIG, results, trained_indices=[0, 2], num_eigen=6, log=logs.append)
    assert any("reusing the trained networks" in line for line in logs)


def _key(artifact):
    from raysweep.evolution.common import train_key
    from raysweep.evolution.trained_alignment import artifact_key

    return train_key(CONFIG, artifact=artifact_key(artifact), indices=[0, 2])


def test_alignment_study_rejects_bad_indices_before_training(results):
    with pytest.raises(ValueError, match=r"index 8 is outside \[0, 8\)"):
        alignment_study(CONFIG, results, trained_indices=[1, 8], log=lambda *_: None)
    with pytest.raises(ValueError, match="num_eigen must be an integer in"):
        alignment_study(CONFIG, results, trained_indices=[1], num_eigen=9, log=lambda *_: None)
    with pytest.raises(ValueError, match="duplicates"):
        alignment_study(CONFIG, results, trained_indices=[1, 1], log=lambda *_: None)


# ----------------------------------------------------------------------------- pretrained


def test_centered_linearization_is_zero_at_its_base_and_affine(tiny):
    apply_fn, params, x = tiny
    base = jax.tree_util.tree_map(lambda p: p + 0.05, params)
    apply_c = centered_linearization(apply_fn, base)
    np.testing.assert_array_equal(np.asarray(apply_c(base, x)), 0.0)
    shifted = jax.tree_util.tree_map(lambda p: p - 0.02 * jnp.sign(p), params)
    want = linearize(apply_fn, base)(shifted, x) - apply_fn(base, x)
    np.testing.assert_allclose(np.asarray(apply_c(shifted, x)), np.asarray(want), atol=1e-5)
    # Its parameter gradient is the Jacobian at the base, wherever it is taken.
    flat, unravel = ravel_pytree(shifted)
    jac_c = jax.jacobian(lambda p: apply_c(unravel(p), x[:4])[:, 0])(flat)
    flat_b, unravel_b = ravel_pytree(base)
    jac_b = jax.jacobian(lambda p: apply_fn(unravel_b(p), x[:4])[:, 0])(flat_b)
    assert_close_f32(jac_c, jac_b)


def test_pretrained_study_trains_three_variants(results):
    records = pretrained_study(CONFIG, results, eigen_indices=[1, 3], log=lambda *_: None)
    variants = [(r["variant"], r["eigen_index"]) for r in records]
    assert variants == [
        (v, j) for v in ("network", "linearized_init", "linearized_pretrained") for j in (1, 3)
    ]
    for rec in records:
        assert len(rec["rows"]) == CONFIG.train.epochs
        assert 0.0 <= rec["test_accuracy"] <= 1.0
        assert rec["test_accuracy"] == rec["rows"][-1]["test_accuracy"]
    saved = load_pretrained(results)
    assert saved["model"] == "mlp" and saved["optimizer"] == "sgd"
    assert [r["variant"] for r in saved["records"]] == [r["variant"] for r in records]
    with pytest.raises(ValueError, match=r"eigen_indices: index 9 is outside \[0, 8\)"):
        pretrained_study(CONFIG, results, eigen_indices=[9], log=lambda *_: None)


# ----------------------------------------------------------------------------- scripts


@pytest.fixture(scope="module")
def smoke_dir(tmp_path_factory, ray_cluster):
    return tmp_path_factory.mktemp("smoke")


@pytest.mark.parametrize(
    "script", ["binary_baseline", "energy_concentration", "kernel_alignment", "pretrained_ntk"]
)
def test_script_smoke_test(script, smoke_dir, capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "sweeps" / f"{script}.py"
    spec = importlib.util.spec_from_file_location(f"sweeps_{script}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--smoke-test", "--quiet", "--out", str(smoke_dir)]) == 0
    out = capsys.readouterr().out
    if script == "binary_baseline":
        dataset, acc = load_baseline(smoke_dir)
        assert dataset == "digits2" and set(acc) == {"mlp"}
        records = load_baseline_records(smoke_dir)
        # every optimizer of the sweep, network and linearized, the one seed of the preset
        assert sorted((r["optimizer"], r["mode"]) for r in records) == [
            ("adam", "linearized"),
            ("adam", "network"),
            ("sgd", "linearized"),
            ("sgd", "network"),
        ]
        for r in records:
            assert f"{r['optimizer']}: network" in out and 0 <= r["test_accuracy"] <= 1
    elif script == "energy_concentration":
        (rec,) = load_energy_records(smoke_dir)
        assert rec["dataset"] == "digits2" and rec["k"] == 50
        # The record is the ratio of the labels' energy: between 0 and 1, not the K/N of noise.
        assert 50 / 200 < rec["energy_init"] <= 1.0
    elif script == "kernel_alignment":
        data = load_alignment(smoke_dir)
        assert list(data.trained_indices) == [0, 3] and data.num_eigen == 16
    else:
        assert len(load_pretrained(smoke_dir)["records"]) == 6


def test_report_shows_the_evolution_results(smoke_dir):
    from raysweep.report import build_report

    if load_pretrained(smoke_dir) is None:
        pytest.skip("needs the script smoke tests of this module")
    html = build_report(smoke_dir).read_text()
    for piece in ("Energy concentration", "Linearization around the trained network"):
        assert piece in html
    figures = smoke_dir / "report" / "figures"
    for name in ("energy_concentration", "alignment", "pretrained_ntk"):
        assert (figures / f"{name}.png").stat().st_size > 1000
    assert "sweeps/pretrained_ntk.py" not in html  # present, so no "how to produce it" note


def test_energy_curve_is_the_energy_of_the_kept_snapshots(tmp_path, ray_cluster):
    """The curve's points are the energy with the NTK of the network after those epochs,
    recomputed here from the kept variables with an explicit float64 Gram."""
    cfg = Config(
        data=DataConfig(name="digits", num_train=120, num_test=60),
        model=ModelConfig(name="mlp", seed=0),
        train=TrainConfig(epochs=3, batch_size=32),
        ntk=NTKConfig(num_eigen=8, tile_size=64),
        sweep=SweepConfig(eigen_indices=(0, 1, 2)),
    )
    rec = energy_study(cfg, tmp_path, k=4, curve_epochs=(1, 2, 7), progress=False, log=str)
    assert [p["epoch"] for p in rec["curve"]] == [0, 1, 2, 3]  # 7 is beyond the run: dropped
    assert rec["curve"][0]["energy"] == rec["energy_init"]
    assert rec["curve"][-1]["energy"] == rec["energy_final"]
    assert load_energy_records(tmp_path)[0]["curve"] == rec["curve"]
    folder = tmp_path / "energy" / "mlp-digits2"
    module, variables0, _ = create_model("mlp", SHAPE, seed=0)
    snaps = TrainedCache(folder / "trained").snapshots(variables0)
    assert sorted(snaps) == [1, 2]
    from raysweep.evolution.common import load_binary_task

    ds = load_binary_task(cfg)
    y = pm_one(ds.y_train)
    for point in rec["curve"][1:3]:
        variables = snaps[point["epoch"]][0]
        gram = brute_gram(make_apply_fn(module, variables), variables["params"], ds.x_train)
        vals, vecs = np.linalg.eigh(gram)
        expected = energy_concentration(vecs[:, ::-1][:, :4].T, y, 4)
        # float32 Gram on Ray workers vs float64 here: the top-4 subspace agrees to ~1e-5
        assert point["energy"] == pytest.approx(expected, abs=1e-3)
    # a later epoch's kernel differs from the initial one (the snapshot is not θ₀)
    assert rec["curve"][1]["energy"] != rec["curve"][0]["energy"]
