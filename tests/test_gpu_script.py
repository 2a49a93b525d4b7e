"""benchmarks/gpu_paper_scale.py at toy size on the CPU: the device run's script works."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_paper_scale.py"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke-test", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "gpu_paper_scale.json").read_text()), proc.stdout


def test_every_section_runs_without_ray(smoke):
    results, stdout = smoke
    assert results["smoke_test"] is True and results["ray_imported"] is False
    for name in ("resnet18_gram", "lenet_gram", "lenet_eigen", "packed_sweep", "packed_resnet18"):
        assert "error" not in results[name] and "skipped" not in results[name], results[name]
        assert f"[{name}]" in stdout


def test_resnet18_gram_extrapolation(smoke):
    r = smoke[0]["resnet18_gram"]
    assert r["method"] == "structured" and [row["n"] for row in r["rows"]] == [16, 32]
    assert all(row["seconds"] > 0 for row in r["rows"])
    (n1, t1), (n2, t2) = [(row["n"], row["seconds"]) for row in r["rows"]]
    b = (t2 / n2 - t1 / n1) / (n2 - n1)  # the a·n + b·n² line through both points
    a = t1 / n1 - b * n1
    if a >= 0 and b >= 0:
        assert r["cifar_minutes_fit"] == pytest.approx((a * 60_000 + b * 60_000**2) / 60)
    else:  # timing noise at toy sizes: no fit rather than a negative time
        assert r["cifar_minutes_fit"] is None
    assert r["cifar_minutes_quadratic"] == pytest.approx(t2 * (60_000 / n2) ** 2 / 60)


def test_lenet_gram_and_its_eigenpairs(smoke):
    results = smoke[0]
    gram, eigen = results["lenet_gram"], results["lenet_eigen"]
    assert gram["n"] == 300 and gram["finite"] and gram["symmetric"]
    assert eigen["n"] == 300 and eigen["k"] == 20
    assert eigen["max_residual_top64"] <= 1e-5  # the block solver's 1e-6 target, with slack
    assert set(eigen["stage_seconds"]) >= {"products", "rayleigh_ritz"}


def test_packed_training_rows(smoke):
    results = smoke[0]
    for name in ("mlp", "lenet5"):
        row = results["packed_sweep"][name]
        assert row["pack"] == 4 and row["train_n"] == 256
        want = 4 * 3600 / (100 * row["epoch_seconds_packed"])
        assert row["targets_per_hour_packed"] == pytest.approx(want)
    packs = results["packed_resnet18"]["rows"]
    assert [p["pack"] for p in packs] == [1, 2]
    assert all(
        p["epoch_seconds"] > 0 and p["fits_quarter_share"] in (None, True, False) for p in packs
    )
