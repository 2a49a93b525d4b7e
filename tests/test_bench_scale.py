"""benchmarks/bench_scale.py at smoke size (MLP, N = 2,000): the rows it prints are the eigen
step's own figures and plausible ones."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_scale_benchmark_smoke_test(tmp_path):
    out = tmp_path / "bench"
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks/bench_scale.py"),
            "--smoke-test",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "bench_scale.jsonl").read_text().splitlines()]
    assert len(rows) == 1
    row = rows[0]
    assert (row["model"], row["n"], row["k"]) == ("mlp", 2000, 250)  # k = N/8 below 1,000
    assert row["gram_s"] > 0 and row["eigen_s"] > 0 and row["matvecs"] >= row["k"]
    assert row["residual"] < 1e-4  # float32 pairs of the 2,000² Gram
    # the tile store holds the upper triangle of the float32 Gram: between N²/2 and N² · 4 bytes
    assert 2000**2 * 2 <= row["tiles_gb"] * 1e9 <= 2000**2 * 4 * 1.1
    assert 0.1 < row["driver_gb"] < 8 and row["target_epochs_per_s"] > 0
    assert (out / "bench_scale.png").read_bytes()[:4] == b"\x89PNG"
    assert "target-epochs/s" in done.stdout and "    mlp   2,000" in done.stdout
    # the artifact is the main job's: its residuals certify the printed one
    meta = json.loads((out / "mlp-2000" / "eigenfunctions" / "meta.json").read_text())
    assert meta["max_relative_residual"] == row["residual"] and meta["N"] == 2000
