"""Your own model and data through the main job: the NNX example end to end (its default path
at smoke size, on the Tune path), and bad models or data refused before any work."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from raysweep.eigenfunctions import load_artifact
from raysweep.store import read_metrics

REPO = Path(__file__).resolve().parents[1]


def test_nnx_example_runs_the_whole_study_on_its_own_model_and_npz(ray_cluster, tmp_path):
    out = tmp_path / "nnx"
    env = {**os.environ, "RAY_ADDRESS": ray_cluster}
    proc = subprocess.run(
        [sys.executable, str(REPO / "sweeps/nnx_example.py"), "--smoke-test", "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    art = load_artifact(out / "eigenfunctions")
    assert art.config.model.name == "nnx_example:SmallCNN"
    assert json.loads(art.config.model.options) == {"features": 8}
    assert art.config.data.name == f"npz:{out.resolve() / 'data' / 'digits.npz'}"
    assert set(art.variables) == {"params", "batch_stats"}  # NNX BatchNorm statistics kept
    table = read_metrics(out)
    assert set(table.column("model").to_pylist()) == {"nnx_example:SmallCNN"}
    assert table.num_rows == 3 * 2 * 2 * 2  # smoke: 3 indices x 2 optimizers x 2 kinds x 2 ep
    assert set(table.column("status").to_pylist()) <= {"running", "finished"}
    assert np.isfinite(table.column("test_loss").to_numpy()).all()
    assert "final test accuracy, nnx_example:SmallCNN" in proc.stdout


def _main_job():
    spec = importlib.util.spec_from_file_location("eigen_sweep", REPO / "sweeps/eigen_sweep.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    return job


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.name=no_such_module_xyz:Net"], "no_such_module_xyz"),
        (["model.name=json:dumps"], "json:dumps"),
        (["data.name=npz:missing.npz"], "missing.npz"),
        (["data.name=no_such_module_xyz:load"], "no_such_module_xyz"),
    ],
)
def test_bad_model_or_data_is_refused_before_any_work(tmp_path, capsys, overrides, message):
    out = tmp_path / "out"
    assert _main_job().main(["--out", str(out), *overrides]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert not out.exists() or list(out.iterdir()) == []
