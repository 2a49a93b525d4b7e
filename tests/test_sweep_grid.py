"""Grid sweeps on a local Ray cluster: packed equals separate, several artifacts in one sweep,
the main job computing every artifact of a grid once, stale models refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_close_f32, make_config

from raysweep.eigen import top_eigenpairs
from raysweep.eigenfunctions import (
    _dataset_for,
    _model_for,
    compute_eigenfunctions,
    load_artifact,
    save_artifact,
)
from raysweep.models import make_apply_fn
from raysweep.ntk import ntk_gram
from raysweep.store import list_parts, read_metrics
from raysweep.sweep import run_sweep
from raysweep.sweep.grid import artifact_dir, expand_grid

REPO = Path(__file__).resolve().parents[1]
FLOATS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "weight_norm")


def by_target(table) -> dict[tuple, dict]:
    """Rows keyed by what a target is (not by which trial ran it)."""
    return {
        (
            r["optimizer"],
            r["linearized"],
            r["eigen_index"],
            r["seed"],
            r["learning_rate"],
            r["epoch"],
        ): r
        for r in table.to_pylist()
    }


def test_packed_seeds_rates_and_indices_equal_one_trial_per_target(
    ray_cluster, artifact, jax_cache, tmp_path
):
    grid = (
        "sweep.eigen_indices=0,3",
        "sweep.optimizers=sgd",
        "sweep.linearized=false,true",
        "grid.train.seed=0,1",
        "grid.train.learning_rate=0.02,0.05",
    )
    packed = make_config(*grid, "sweep.pack_size=8")
    alone = make_config(*grid, "sweep.pack_size=1")
    assert len(expand_grid(packed).trials) == 2 and len(expand_grid(alone).trials) == 16
    for config, name in ((packed, "packed"), (alone, "alone")):
        summary = run_sweep(
            config, tmp_path / name, artifacts=[artifact], progress=False, compile_cache=jax_cache
        )
        assert summary.ok and summary.num_targets == 16
    a, b = (by_target(read_metrics(tmp_path / n)) for n in ("packed", "alone"))
    assert a.keys() == b.keys() and len(a) == 16 * 2  # 16 targets x 2 epochs
    assert {k[3] for k in a} == {0, 1} and {k[4] for k in a} == {0.02, 0.05}
    for key in a:
        assert a[key]["target_id"] == b[key]["target_id"]
        assert a[key]["step"] == b[key]["step"] and a[key]["status"] == b[key]["status"]
        assert a[key]["steps_to_threshold"] == b[key]["steps_to_threshold"]
    for name in FLOATS:
        assert_close_f32([a[k][name] for k in a], [b[k][name] for k in a], ulps=256)
    # the targets differ in what they should differ in: seeds give other batch orders
    j0 = [a[("sgd", False, 0, s, 0.05, 2)]["train_loss"] for s in (0, 1)]
    assert j0[0] != j0[1]
    row = a[("sgd", True, 3, 1, 0.02, 2)]
    assert row["target_id"] == "j3-seed1-lr0.02"
    assert json.loads(row["axes"]) == {
        "train.eigen_index": 3,
        "train.learning_rate": 0.02,
        "train.linearized": True,
        "train.optimizer": "sgd",
        "train.seed": 1,
    }


def _tiny_artifact(config, path: Path) -> Path:
    """The exact-Gram artifact of ``config`` (as conftest's), saved at ``path``."""
    ds = _dataset_for(config)
    module, variables = _model_for(config, ds.input_shape)
    x, _ = ds.concatenated()
    gram = ntk_gram(make_apply_fn(module, variables), variables["params"], x)
    pairs = top_eigenpairs(np.asarray(gram, np.float64), 8, method="dense")
    save_artifact(
        path, config=config, manifest=ds.manifest(), pairs=pairs, variables=variables, meta={}
    )
    return path


def test_two_models_in_one_sweep_give_two_artifacts_and_rows_for_both(
    ray_cluster, jax_cache, tmp_path
):
    config = make_config(
        "grid.model.name=mlp,lenet5", "sweep.optimizers=adam", "sweep.linearized=false"
    )
    grid = expand_grid(config)
    out = tmp_path / "sweep"
    for point in grid.artifacts[:1]:
        _tiny_artifact(point.config, artifact_dir(out, point))
    with pytest.raises(ValueError, match=r"eigenfunction artifact .*lenet5-digits.* is missing"):
        run_sweep(config, out, progress=False)
    assert not (out / "metrics").exists()
    _tiny_artifact(grid.artifacts[1].config, artifact_dir(out, grid.artifacts[1]))

    summary = run_sweep(config, out, progress=False, compile_cache=jax_cache)
    assert summary.ok and summary.num_trials == 2
    table = read_metrics(out)
    assert sorted(set(table.column("trial_id").to_pylist())) == [
        "adam-nn-pack000-lenet5-digits",
        "adam-nn-pack000-mlp-digits",
    ]
    assert sorted(set(table.column("model").to_pylist())) == ["lenet5", "mlp"]
    assert table.num_rows == 2 * 2 * 2  # models x indices x epochs
    assert {json.loads(a)["model.name"] for a in table.column("axes").to_pylist()} == {
        "mlp",
        "lenet5",
    }
    plan = json.loads((out / "sweep_plan.json").read_text())
    assert [a["path"] for a in plan["artifacts"]] == [
        "artifacts/mlp-digits/eigenfunctions",
        "artifacts/lenet5-digits/eigenfunctions",
    ]
    # a single object-store copy per artifact: the payload of each trial is its own artifact's
    assert "lenet5" in summary.accuracy and "mlp" in summary.accuracy


def test_main_job_computes_each_artifact_once_and_a_later_run_reuses_them(ray_cluster, tmp_path):
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        str(REPO / "sweeps/eigen_sweep.py"),
        "--smoke-test",
        "--preset",
        "smoke",
        "--quiet",
        "--out",
        str(out),
        "grid.model.seed=0,1",
        "sweep.eigen_indices=0,3",
        "sweep.optimizers=sgd",
        "sweep.linearized=false",
        "train.epochs=1",
    ]
    env = {**os.environ, "RAY_ADDRESS": ray_cluster}
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    keys = ["mlp-digits-model.seed=0", "mlp-digits-model.seed=1"]
    for key in keys:
        art = load_artifact(out / "artifacts" / key / "eigenfunctions")
        assert art.meta["model_fingerprint"].startswith("sha256:")
        assert (out / "artifacts" / key / "gram" / "manifest.json").exists()
    a0, a1 = (load_artifact(out / "artifacts" / k / "eigenfunctions") for k in keys)
    assert a0.config.model.seed == 0 and a1.config.model.seed == 1
    assert not np.allclose(a0.eigvals, a1.eigvals)  # another θ₀, another kernel
    assert a0.meta["model_fingerprint"] == a1.meta["model_fingerprint"]  # same computation
    table = read_metrics(out)
    assert sorted(set(table.column("trial_id").to_pylist())) == [
        "sgd-nn-pack000-mlp-digits-model.seed=0",
        "sgd-nn-pack000-mlp-digits-model.seed=1",
    ]
    assert "artifact mlp-digits-model.seed=1:" in first.stdout

    parts = {p.name: p.stat().st_mtime_ns for p in list_parts(out)}
    again = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    for key in keys:
        assert f"reusing {out / 'artifacts' / key / 'eigenfunctions'}" in again.stdout
    assert {p.name: p.stat().st_mtime_ns for p in list_parts(out)} == parts  # nothing re-ran


def test_an_artifact_of_edited_model_code_is_not_reused(ray_cluster, tmp_path, monkeypatch):
    import raysweep.eigenfunctions as ef
    from raysweep.models import get_model

    config = make_config("data.num_train=20", "data.num_test=10", "ntk.num_eigen=4")
    compute_eigenfunctions(config, tmp_path, progress=False, log=lambda *a: None)
    # the same config, but the code behind "mlp" now computes something else
    monkeypatch.setattr(
        ef, "get_model", lambda name, activation, **kw: get_model(name, activation="tanh", **kw)
    )
    with pytest.raises(ValueError, match=r"computes something else than when the artifact"):
        compute_eigenfunctions(config, tmp_path, progress=False, log=lambda *a: None)
    # and the tile store refuses the old tiles for the new computation
    (tmp_path / "eigenfunctions").rename(tmp_path / "old")
    with pytest.raises(
        ValueError, match=r"holds a different Gram matrix; mismatched fields: model_id"
    ):
        compute_eigenfunctions(config, tmp_path, progress=False, log=lambda *a: None)
