"""raysweep.distributed.capacity: trial resources against nodes alive, seen and startable.

(Named to run after tests/test_cluster.py, whose multi-node cluster fixture fails when another
local Ray session ran earlier in the same pytest process.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from raysweep.distributed.capacity import autoscaler_node_types, check_trial_resources

REPO = Path(__file__).resolve().parents[1]


def test_gpu_trial_is_refused_on_a_cpu_only_cluster(ray_cluster, tmp_path):
    with pytest.raises(
        ValueError, match=r"asks for 1 CPU and 1 GPU on one node.*alive: 4 CPU, 0 GPU"
    ):
        check_trial_resources(1, 1, bootstrap_config=tmp_path / "none.yaml")
    fitting = check_trial_resources(2, 0, bootstrap_config=tmp_path / "none.yaml")
    assert fitting and all(s.resources["CPU"] >= 2 for s in fitting)
    with pytest.raises(ValueError, match=r"asks for 5 CPU"):  # 4 CPUs on the one node
        check_trial_resources(5, 0, bootstrap_config=tmp_path / "none.yaml")


def test_autoscaler_node_types_are_accepted(ray_cluster, tmp_path):
    # The project's own cluster.yaml: gpu_worker (8 CPU, 1 GPU) starts on demand.
    config = tmp_path / "ray_bootstrap_config.yaml"
    config.write_text((REPO / "cluster.yaml").read_text())
    shapes = {s.name: s.resources for s in autoscaler_node_types(config)}
    assert shapes == {"head_cpu": {"CPU": 0.0}, "gpu_worker": {"CPU": 8.0, "GPU": 1.0}}
    fitting = check_trial_resources(1, 0.25, bootstrap_config=config)
    assert [s.name for s in fitting] == ["gpu_worker"]
    with pytest.raises(ValueError, match=r"gpu_worker \(autoscaler: 8 CPU, 1 GPU\)"):
        check_trial_resources(1, 2, bootstrap_config=config)


def test_node_types_that_cannot_start_or_are_unknown(tmp_path):
    config = tmp_path / "b.yaml"
    config.write_text(
        "head_node_type: head\n"
        "available_node_types:\n"
        "  head: {resources: {CPU: 2}}\n"
        "  off: {max_workers: 0, resources: {CPU: 8, GPU: 8}}\n"
        "  detected: {max_workers: 2, node_config: {InstanceType: g5.xlarge}}\n"
    )
    shapes = {s.name: s for s in autoscaler_node_types(config)}
    assert set(shapes) == {"head", "detected"}  # a type with max_workers 0 never starts
    assert shapes["detected"].resources is None and shapes["detected"].fits(64, 8)
    assert autoscaler_node_types(tmp_path / "missing.yaml") == []


def test_main_job_refuses_gpu_trials_before_any_work(ray_cluster, tmp_path):
    start = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "sweeps/eigen_sweep.py"),
            "--out",
            str(tmp_path / "run"),
            "--gpus-per-trial",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "RAY_ADDRESS": ray_cluster},
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "error: no trial could ever be scheduled" in proc.stderr
    ours = [line for line in proc.stderr.splitlines() if " worker.py:" not in line]
    assert len(ours) == 1, proc.stderr  # one line of ours (Ray logs its connection)
    assert not (tmp_path / "run" / "gram").exists()
    assert time.monotonic() - start < 60
