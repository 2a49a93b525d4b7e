"""Plan and cost before launch: ``raysweep plan``, the scripts' ``--dry-run`` and the estimate."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from raysweep.cli import main as cli_main
from raysweep.config import apply_overrides, get_preset, save_config, smoke_config
from raysweep.store import axes_json, write_trial_rows
from raysweep.sweep.cost import (
    ARTIFACT_START_CPU_S,
    LINEARIZED_FACTOR,
    MEASUREMENTS,
    TRIAL_START_CPU_S,
    dataset_size,
    describe_plan,
    estimate_plan,
    forward_macs,
    param_count,
)
from raysweep.sweep.grid import expand_grid

REPO = Path(__file__).resolve().parents[1]

CONFIGS = {
    "default": ("digits", []),
    "grid": ("smoke", ["grid.model.name=mlp,lenet5", "grid.train.seed=0,1,2"]),
    "nad": ("nad", []),
    "cifar10": ("cifar10", []),
}


def _config(preset, overrides):
    return apply_overrides(get_preset(preset), overrides)


def _counts(text: str) -> tuple[int, int, int]:
    """(trials, targets, artifacts) as the plan text prints them."""
    found = []
    for label in ("trials", "targets", "artifacts"):
        match = re.search(rf"^  {label}:\s+([\d,]+)", text, re.M)
        assert match, f"no {label} line in:\n{text}"
        found.append(int(match[1].replace(",", "")))
    return tuple(found)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_counts_equal_the_grid(name):
    config = _config(*CONFIGS[name])
    grid = expand_grid(config)
    plan = estimate_plan(config)
    expected = (len(grid.trials), grid.num_targets, len(grid.artifacts))
    assert (plan.num_trials, plan.num_targets, plan.num_artifacts) == expected
    assert _counts(str(plan)) == expected
    assert plan.trials_preview[0] == (grid.trials[0].trial_id, len(grid.trials[0].targets))
    assert grid.trials[0].trial_id in str(plan)


def test_smoke_test_counts_equal_the_grid():
    config = smoke_config(get_preset("smoke"))
    grid = expand_grid(config)
    assert _counts(describe_plan(config)) == (
        len(grid.trials),
        grid.num_targets,
        len(grid.artifacts),
    )


def test_nad_artifacts_are_nads_with_their_sizes():
    # the measured configuration: GeLU LeNet5, 32x32x1, k = 10 by svds
    plan = estimate_plan(_config("nad", ["nad.k=10", "sweep.eigen_indices=0,4,9"]))
    (art,) = plan.artifacts
    assert art.kind == "NADs" and art.k == 10 and art.n == 2_000
    assert art.size.source == "known"
    assert plan.nad_hours > 0 and plan.gram_cpu_hours == 0 and plan.eigen_hours == 0
    # the preset is the measured configuration (GeLU LeNet5, 32x32x1, k = 10): no scaling
    assert plan.nad_hours * 3600 == pytest.approx(MEASUREMENTS["nad.lenet5"].cpu_seconds)


def _env():
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(REPO)
    return env


def test_dry_run_script_prints_the_plan_and_writes_nothing(tmp_path):
    overrides = ["grid.train.seed=0,1"]
    grid = expand_grid(_config("digits", overrides))
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(REPO / "sweeps" / "eigen_sweep.py"), "--dry-run", *overrides],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    assert _counts(proc.stdout) == (len(grid.trials), grid.num_targets, len(grid.artifacts))
    assert "nothing written, Ray not started" in proc.stdout
    assert "how to launch: python sweeps/eigen_sweep.py grid.train.seed=0,1" in proc.stdout
    assert list(tmp_path.iterdir()) == []  # no results/, no lease, no config.json
    for ray_line in ("[ray]", "Started a local Ray instance", "ray.init", "View the dashboard"):
        assert ray_line not in out
    assert elapsed < 30, f"the dry run took {elapsed:.1f} s"


def test_dry_run_in_process_does_not_touch_ray(tmp_path, monkeypatch, capsys):
    """``run_script`` returns before the folder, the check, the lease and Ray."""
    import raysweep.distributed.cluster as cluster
    from raysweep.script import run_script, script_parser

    def refuse(*args, **kwargs):
        raise AssertionError("the dry run must not reach this")

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(cluster, "connect_or_start", refuse)
    monkeypatch.setattr(cluster, "check_results_dir", refuse)
    args = script_parser("python sweeps/x.py", "x").parse_args(["--dry-run", "train.epochs=2"])
    assert run_script(args, "eigen_sweep", refuse, check=refuse, argv=["--dry-run"]) == 0
    assert "Plan:" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


def test_dry_run_bad_grid_is_one_line(capsys):
    sys.path.insert(0, str(REPO / "sweeps"))
    try:
        import eigen_sweep
    finally:
        sys.path.remove(str(REPO / "sweeps"))
    assert (
        eigen_sweep.main(["--dry-run", "grid.train.learning_rate=0.1,0.2", "sweep.optimizers=adam"])
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


@pytest.mark.parametrize("name", ["default", "grid", "nad"])
def test_raysweep_plan_prints_the_same_counts(name, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    preset, overrides = CONFIGS[name]
    grid = expand_grid(_config(preset, overrides))
    assert cli_main(["plan", "--preset", preset, *overrides]) == 0
    out = capsys.readouterr().out
    assert _counts(out) == (len(grid.trials), grid.num_targets, len(grid.artifacts))
    script = "nad_sweep" if preset == "nad" else "eigen_sweep"
    assert f"how to launch: python sweeps/{script}.py" in out
    assert list(tmp_path.iterdir()) == []


def test_raysweep_plan_bad_override_exits_2_with_one_line(capsys):
    assert cli_main(["plan", "nosuchsection.field=1"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1
    with pytest.raises(SystemExit) as exc:
        cli_main(["plan", "--preset", "nope"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


# ----------------------------------------------------------------------------- scaling


def _plan(*overrides, preset="smoke", **kwargs):
    return estimate_plan(_config(preset, list(overrides)), **kwargs)


def test_doubling_epochs_doubles_training_compute():
    one, two = _plan("train.epochs=5"), _plan("train.epochs=10")
    assert two.train_compute_hours == pytest.approx(2 * one.train_compute_hours, rel=1e-12)
    assert two.trial_start_hours == one.trial_start_hours
    assert two.gram_cpu_hours == one.gram_cpu_hours


def test_training_scales_with_steps_targets_and_mode():
    base = _plan("sweep.linearized=false", "train.batch_size=64", "data.num_train=640")
    assert _plan(
        "sweep.linearized=false", "train.batch_size=64", "data.num_train=1280"
    ).train_compute_hours == pytest.approx(2 * base.train_compute_hours, rel=1e-12)
    lin = _plan("sweep.linearized=true", "train.batch_size=64", "data.num_train=640")
    assert lin.train_compute_hours == pytest.approx(
        LINEARIZED_FACTOR * base.train_compute_hours, rel=1e-12
    )
    seeds = _plan(
        "sweep.linearized=false", "train.batch_size=64", "data.num_train=640", "grid.train.seed=0,1"
    )
    assert seeds.train_compute_hours == pytest.approx(2 * base.train_compute_hours, rel=1e-12)
    # a bigger model costs its MAC ratio per target
    lenet = _plan(
        "sweep.linearized=false", "train.batch_size=64", "data.num_train=640", "model.name=lenet5"
    )
    ratio = forward_macs("lenet5", (8, 8, 1)) / forward_macs("mlp", (8, 8, 1))
    assert lenet.train_compute_hours == pytest.approx(ratio * base.train_compute_hours, rel=1e-12)
    # more trials (smaller packs) cost more start-up, the same compute
    small = _plan(
        "sweep.linearized=false", "train.batch_size=64", "data.num_train=640", "sweep.pack_size=1"
    )
    assert small.train_compute_hours == pytest.approx(base.train_compute_hours, rel=1e-12)
    assert small.trial_start_hours == pytest.approx(
        small.num_trials * TRIAL_START_CPU_S["mlp"] / 3600
    )


def test_doubling_n_quadruples_gram_and_eigen_hours():
    small = _plan("data.name=mnist", "data.num_train=1000", "data.num_test=500")
    big = _plan("data.name=mnist", "data.num_train=2000", "data.num_test=1000")
    assert (small.artifacts[0].n, big.artifacts[0].n) == (1_500, 3_000)
    start = ARTIFACT_START_CPU_S / 3600
    assert big.gram_cpu_hours - start == pytest.approx(4 * (small.gram_cpu_hours - start))
    assert big.eigen_hours == pytest.approx(4 * small.eigen_hours)  # k = 128 both times
    more_k = _plan(
        "data.name=mnist", "data.num_train=1000", "data.num_test=500", "ntk.num_eigen=256"
    )
    assert more_k.eigen_hours == pytest.approx(2 * small.eigen_hours)


def test_gpu_run_uses_the_h200_gram_where_measured():
    plan = _plan(preset="cifar10", launch="python sweeps/eigen_sweep.py --preset cifar10")
    (art,) = plan.artifacts
    assert plan.gpu_run and art.gram_gpu_s > 0
    # the README's figure: LeNet5 0.85 s at 10,000 on an H200, x 36 at N = 60,000
    assert art.gram_gpu_s == pytest.approx(MEASUREMENTS["gpu.gram.lenet5"].seconds * 36)
    text = str(plan)
    assert "training: no GPU measurement; CPU-hours shown" in text
    assert "H200" in text and "README.md" in text
    assert "ray job submit" in text  # how to launch it on a cluster
    mlp = _plan("model.name=mlp", preset="cifar10")
    assert mlp.artifacts[0].gram_gpu_s == 0 and mlp.artifacts[0].gram_cpu_s > 0
    assert "mlp Gram: no GPU measurement; CPU-hours shown" in str(mlp)


def test_nad_hours_follow_the_solvers_products():
    """svds: ~20k + 100 products, so k = 20 costs 500/300 of k = 10; the preset's 512 of
    d = 1,024 NADs take the dense Gram's 2d = 2,048 products whatever k."""
    small = ["sweep.eigen_indices=0,4,9"]
    base = _plan("nad.k=10", *small, preset="nad")
    assert _plan("nad.k=20", *small, preset="nad").nad_hours == pytest.approx(
        base.nad_hours * 500 / 300
    )
    assert _plan(preset="nad").nad_hours == pytest.approx(base.nad_hours * 2048 / 300)
    assert _plan("nad.k=600", preset="nad").nad_hours == pytest.approx(
        _plan(preset="nad").nad_hours
    )


def test_wall_clock_uses_the_resources():
    config = _config("smoke", ["grid.train.seed=0,1,2,3"])
    one = estimate_plan(config, cpus=1)
    many = estimate_plan(config, cpus=64)
    assert many.wall_hours < one.wall_hours
    assert many.wall_hours >= many.longest_trial_hours
    assert "on 1 CPU" in str(estimate_plan(config))


# ----------------------------------------------------------------------------- sizes


def test_param_count_is_the_initialized_models():
    """``param_count`` (``jax.eval_shape`` of the initialization) counts the real variables."""
    from raysweep.models import count_params, create_model
    from raysweep.models.lenet import lenet5_param_count
    from raysweep.models.resnet import resnet18_param_count

    for name, shape, options in (
        ("mlp", (8, 8, 1), None),
        ("mlp", (32, 32, 3), '{"hidden_sizes": [64]}'),
        ("lenet5", (28, 28, 1), None),
        ("lenet5", (32, 32, 3), None),
        ("resnet18", (32, 32, 1), '{"width": 8}'),
    ):
        variables = create_model(name, shape, seed=0, options=options).variables
        assert param_count(name, shape, options) == count_params(variables["params"])
    assert param_count("mlp", (32, 32, 3)) == 317_501  # README, NTK Gram table
    assert param_count("lenet5", (32, 32, 3)) == 136_121 == lenet5_param_count((32, 32, 3))
    for shape in ((32, 32, 3), (8, 8, 1)):  # too big to initialize here: the closed form
        assert param_count("resnet18", shape) == resnet18_param_count(shape[2])


def test_macs_are_xla_counts_and_scale_with_the_input():
    # the MLP: its first layer grows with the input (100 multiply-adds per input value)
    small, big = forward_macs("mlp", (8, 8, 1)), forward_macs("mlp", (32, 32, 3))
    assert big - small == pytest.approx((32 * 32 * 3 - 8 * 8) * 100, abs=1)
    assert small == pytest.approx(64 * 100 + 100 * 100 + 100, rel=0.02)  # + biases, ReLUs
    wide = forward_macs("mlp", (8, 8, 1), {"hidden_sizes": [200, 100]})
    assert wide - small == pytest.approx(64 * 100 + 100 * 100, rel=0.02)
    # SAME convolutions: XLA counts the taps inside the image only, a little under H x W x k^2
    naive = 32 * 32 * 25 * 3 * 6 + 16 * 16 * 25 * 6 * 16 + 8 * 8 * 16 * 120 + 120 * 84 + 84
    assert 0.85 * naive < forward_macs("lenet5", (32, 32, 3)) < naive
    assert 0.45e9 < forward_macs("resnet18", (32, 32, 3)) < 0.56e9  # the familiar 0.56 GMAC
    # the activation's elementwise work counts too: exact GeLU (erf) is dearer than ReLU
    relu = forward_macs("lenet5", (32, 32, 1))
    assert forward_macs("lenet5", (32, 32, 1), activation="gelu") > 1.2 * relu


USER = "user_models_fixture"  # tests/user_models_fixture.py
SAME_DATA = ("sweep.linearized=false", "train.batch_size=64", "data.num_train=640")


@pytest.mark.parametrize("attr", ["SmallCNN", "LinenBN", "pure_mlp"])
def test_your_own_model_is_costed_by_its_own_size(attr):
    from raysweep.models import count_params, create_model

    path = f"{USER}:{attr}"
    params = param_count(path, (8, 8, 1))
    assert params == count_params(create_model(path, (8, 8, 1), seed=0).variables["params"])
    mine, mlp = _plan(f"model.name={path}", *SAME_DATA), _plan(*SAME_DATA)
    ratio = forward_macs(path, (8, 8, 1)) / forward_macs("mlp", (8, 8, 1))
    assert mine.train_compute_hours == pytest.approx(ratio * mlp.train_compute_hours, rel=1e-12)
    # its Gram: LeNet5's measured Gram scaled by N^2 and by its own parameter count
    (art,) = mine.artifacts
    ref = MEASUREMENTS["gram.lenet5"].cpu_seconds * (art.n / 4_000) ** 2
    assert art.gram_cpu_s - ARTIFACT_START_CPU_S == pytest.approx(
        ref * params / param_count("lenet5", (32, 32, 3))
    )
    text = str(mine)
    assert f"{path}: your own model, {params:,} parameters" in text
    assert "costed as LeNet5" not in text


def test_a_model_that_cannot_be_built_is_costed_as_lenet5(tmp_path):
    plan = _plan(f"model.name={USER}:wrong_return", *SAME_DATA)
    lenet = _plan("model.name=lenet5", *SAME_DATA)
    assert plan.train_compute_hours == pytest.approx(lenet.train_compute_hours, rel=1e-12)
    assert f"{USER}:wrong_return: cannot be built here (TypeError: " in str(plan)
    assert "costed as LeNet5" in str(plan)
    # a built-in model the input does not fit is a bad config, as in the real run
    path = tmp_path / "tiny.npz"
    x, y = np.zeros((40, 3, 3)), np.arange(40) % 10
    np.savez(path, x_train=x, y_train=y, x_test=x[:20], y_test=y[:20])
    with pytest.raises(ValueError, match="model lenet5 cannot run on inputs 3x3x1"):
        _plan(f"data.name=npz:{path}", "model.name=lenet5")


def test_npz_sizes_come_from_the_headers(tmp_path):
    path = tmp_path / "mine.npz"
    rng = np.random.default_rng(0)
    np.savez(
        path,
        x_train=rng.random((40, 6, 6)),
        y_train=np.arange(40) % 10,
        x_test=rng.random((20, 6, 6)),
        y_test=np.arange(20) % 10,
    )
    config = _config("smoke", [f"data.name=npz:{path}"])
    size = dataset_size(config)
    assert (size.num_train, size.num_test, size.input_shape) == (40, 20, (6, 6, 1))
    assert size.source == "read" and "headers" in size.how
    missing = dataset_size(_config("smoke", [f"data.name=npz:{tmp_path / 'none.npz'}"]))
    assert missing.source == "unknown" and missing.n is None
    assert "N unknown" in describe_plan(_config("smoke", [f"data.name=npz:{tmp_path}/x.npz"]))


def test_builtin_sizes_are_not_read():
    size = dataset_size(_config("cifar10", ["data.num_train=1000"]))
    assert (size.num_train, size.num_test, size.input_shape) == (1_000, 10_000, (32, 32, 3))
    assert size.source == "known"


# ----------------------------------------------------------------------------- calibration


def _row(trial, target, epoch, wall_time, status):
    return {
        "sweep_id": "s",
        "trial_id": trial.trial_id,
        "target_id": target.target_id,
        "model": "mlp",
        "dataset": "digits",
        "optimizer": trial.optimizer,
        "linearized": trial.linearized,
        "eigen_index": target.eigen_index,
        "seed": target.seed,
        "learning_rate": target.learning_rate,
        "axes": axes_json({"train.eigen_index": target.eigen_index}),
        "epoch": epoch,
        "step": 10 * epoch,
        "train_loss": 0.5,
        "train_accuracy": 0.9,
        "test_loss": 0.6,
        "test_accuracy": 0.8,
        "steps_to_threshold": None,
        "l2_distance": 0.1,
        "cosine_distance": 0.01,
        "weight_norm": 3.0,
        "grad_norm": 0.5,
        "status": status,
        "wall_time": wall_time,
    }


CALIBRATED = ["train.epochs=2", "sweep.eigen_indices=0,1", "sweep.pack_size=2"]


def _finished_sweep(folder: Path, config, factor: float) -> None:
    """A results folder whose trials all finished in ``factor`` x the modelled time."""
    grid = expand_grid(config)
    save_config(config, folder / "config.json")
    per_trial = factor * estimate_plan(config).train_hours * 3600 / len(grid.trials)
    for trial in grid.trials:
        rows = [
            _row(trial, t, e, per_trial * e / 2, "finished" if e == 2 else "running")
            for t in trial.targets
            for e in (1, 2)
        ]
        write_trial_rows(folder, trial.trial_id, rows)


def test_a_finished_sweep_calibrates_the_training_rates(tmp_path):
    config = _config("smoke", CALIBRATED)
    uncalibrated = estimate_plan(config)
    folder = tmp_path / "done"
    _finished_sweep(folder, config, 3.0)
    before = sorted(p.name for p in folder.rglob("*"))
    plan = estimate_plan(config, results=folder)
    assert plan.calibration is not None
    assert plan.calibration.trials == len(expand_grid(config).trials)
    assert plan.train_hours == pytest.approx(3 * uncalibrated.train_hours, rel=1e-6)
    assert "training rates measured in" in str(plan)
    assert sorted(p.name for p in folder.rglob("*")) == before  # only read
    # no folder, or one without finished trials, changes nothing
    assert estimate_plan(config, results=tmp_path / "none").calibration is None
    # a CPU folder does not calibrate a GPU plan
    gpu = estimate_plan(_config("smoke", [*CALIBRATED, "sweep.gpus_per_trial=0.5"]), results=folder)
    assert gpu.calibration is None and "its rates are not used" in str(gpu)


def test_plan_command_and_dry_run_read_out_for_rates(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    folder = tmp_path / "done"
    _finished_sweep(folder, _config("smoke", CALIBRATED), 2.0)
    assert cli_main(["plan", "--out", str(folder), *CALIBRATED]) == 0
    assert "training rates measured in" in capsys.readouterr().out
    assert cli_main(["plan", "--out", str(tmp_path / "empty"), *CALIBRATED]) == 0
    assert "measured in" not in capsys.readouterr().out
    assert not (tmp_path / "empty").exists()
