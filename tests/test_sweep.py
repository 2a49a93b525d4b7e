"""raysweep.sweep on a local Ray cluster: rows written, divergence, kill + resume, bad input, CLI.

One local Ray cluster (no dashboard, 4 logical CPUs on what may be a 2-core machine) serves the
module; subprocess drivers join it through RAY_ADDRESS. The eigenfunction artifact is tiny
(digits, 60 train + 30 test images, 8 eigenvectors from a dense eigensolve of the exact Gram) and
built once. Most of the time goes into XLA compiling the packed training programs.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import BASE, make_config

from raysweep.analysis import load_alignment, load_baseline_records, load_energy_records
from raysweep.analysis.findings import VERDICTS, load_findings
from raysweep.config import apply_overrides, get_preset
from raysweep.eigenfunctions import load_artifact
from raysweep.store import list_parts, read_metrics
from raysweep.sweep import completed_trials, plan_sweep, read_plan, run_sweep, trial_id

REPO = Path(__file__).resolve().parents[1]


def keys_of(table):
    cols = ("trial_id", "target_id", "epoch")
    return list(zip(*(table.column(c).to_pylist() for c in cols), strict=True))


# ----------------------------------------------------------------------------- plan, bad input


def test_plan_grid_and_deterministic_ids(artifact):
    config = make_config("sweep.eigen_indices=0,1,2,5,7", "sweep.optimizers=sgd,adam")
    plan = plan_sweep(config, [load_artifact(artifact)])
    assert [t.eigen_indices for t in plan.trials[:3]] == [(0, 1), (2, 5), (7,)]
    assert len(plan.trials) == 3 * 2 * 2 and plan.num_targets == 5 * 2 * 2
    assert plan.trial_ids()[:2] == ["sgd-nn-pack000-mlp-digits", "sgd-nn-pack001-mlp-digits"]
    assert plan.trial_ids()[3] == "sgd-lin-pack000-mlp-digits"
    assert len(set(plan.trial_ids())) == len(plan.trials)
    again = plan_sweep(config, [load_artifact(artifact)])
    assert again.trial_ids() == plan.trial_ids() and again.same_grid(plan.to_dict()) == []
    assert trial_id("adam", True, 12, "lenet5", "cifar10") == "adam-lin-pack012-lenet5-cifar10"


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (
            lambda c, a: (make_config("ntk.num_eigen=32", "sweep.eigen_indices=0,20"), [a]),
            r"eigen-index \[20\] >= 8, the number of eigenvectors in the artifact",
        ),
        (lambda c, a: (c, []), r"the sweep grid is empty: artifacts has no value"),
        (lambda c, a: (c, [a.parent / "nowhere"]), r"artifact .*nowhere is missing"),
        (
            lambda c, a: (_bypass(c, optimizers=("rmsprop",)), [a]),
            r"unknown optimizer\(s\) \['rmsprop'\] in sweep.optimizers; choose among sgd, adam",
        ),
        (
            lambda c, a: (_bypass(c, eigen_indices=()), [a]),
            r"sweep grid is empty: sweep.eigen_indices has no value",
        ),
        (
            lambda c, a: (make_config("sweep.cpus_per_trial=64"), [a]),
            r"no trial could ever be scheduled: a trial asks for 64 CPU and 0 GPU on one node, "
            r"but no node .* \(nodes: .*alive: 4 CPU, 0 GPU",
        ),
    ],
)
def test_bad_input_is_rejected_before_any_trial(ray_cluster, artifact, tmp_path, change, match):
    config, artifacts = change(make_config(), artifact)
    with pytest.raises(ValueError, match=match):
        run_sweep(config, tmp_path / "sweep", artifacts=artifacts, progress=False)
    assert not (tmp_path / "sweep" / "metrics").exists()
    assert not (tmp_path / "sweep" / "tune").exists()


def _bypass(config, **sweep_fields):
    """A config whose sweep section skipped its own validation (e.g. edited after loading)."""
    sweep = dataclasses.replace(config.sweep)
    for name, value in sweep_fields.items():
        object.__setattr__(sweep, name, value)
    out = dataclasses.replace(config)
    object.__setattr__(out, "sweep", sweep)
    return out


def test_main_job_rejects_unknown_optimizer(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("eigen_sweep", REPO / "sweeps/eigen_sweep.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    assert job.main(["--out", str(tmp_path), "sweep.optimizers=sgd,rmsprop"]) == 2
    assert "'rmsprop' is not supported; choose one of sgd, adam" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- sweeps


def test_small_sweep_writes_exactly_the_expected_rows(
    ray_cluster, artifact, jax_cache, tmp_path, capsys
):
    # Two packs of the same size: a reused actor runs the second on the compiled program.
    config = make_config("sweep.eigen_indices=0,1,2,3", "sweep.optimizers=sgd")
    out = tmp_path / "sweep"
    summary = run_sweep(config, out, artifacts=[artifact], progress=False, compile_cache=jax_cache)
    table = read_metrics(out)
    trials, targets, epochs = 2 * 2, 4 * 2, 2  # packs (0,1),(2,3) x nn/lin; 4 indices x 2 modes
    assert table.num_rows == targets * epochs
    assert len(set(keys_of(table))) == table.num_rows
    assert len(list_parts(out)) == trials
    assert summary.ok and summary.trial_counts == {"finished": trials}
    assert summary.tune_counts == {"TERMINATED": trials}
    last = table.filter(np.asarray(table.column("epoch").to_pylist()) == epochs)
    assert set(last.column("status").to_pylist()) == {"finished"}
    assert set(table.column("sweep_id").to_pylist()) == {"eigen_sweep"}
    assert (out / "config.json").exists() and len(read_plan(out)["trials"]) == trials
    text = str(summary)
    assert "final test accuracy, mlp on digits" in text and "sgd nn" in text and "sgd lin" in text
    assert "trials: 4 planned; by status: 4 finished" in text
    assert list((out / "tune" / "eigen_sweep").glob("sgd-nn-pack000-mlp-digits_*/events.out.*"))

    # Running it again changes nothing; another grid in the same folder is refused.
    before = {p.name: p.stat().st_mtime_ns for p in list_parts(out)}
    assert run_sweep(config, out, artifacts=[artifact], progress=False).ok
    assert {p.name: p.stat().st_mtime_ns for p in list_parts(out)} == before
    with pytest.raises(ValueError, match=r"another grid or training setup \(differs in: train\)"):
        run_sweep(
            apply_overrides(config, ["train.epochs=3"]), out, artifacts=[artifact], progress=False
        )
    assert read_metrics(out).num_rows == table.num_rows

    # raysweep status: states from the store and from Tune's experiment state.
    from raysweep.cli import main as cli_main

    capsys.readouterr()
    assert cli_main(["status", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "4/4 trials with rows (4 finished); 0 not started" in shown
    assert "sgd-lin-pack001-mlp-digits" in shown and "TERMINATED" in shown
    assert "tune: 4 TERMINATED" in shown


def test_diverging_trial_is_recorded_while_others_finish(
    ray_cluster, artifact, jax_cache, tmp_path
):
    # SGD with a learning rate of 1e30 overflows in its first epoch; Adam uses its own rate.
    config = make_config(
        "sweep.eigen_indices=0,1",
        "sweep.optimizers=sgd,adam",
        "sweep.linearized=false",
        "train.learning_rate=1e30",
    )
    out = tmp_path / "sweep"
    summary = run_sweep(config, out, artifacts=[artifact], progress=False, compile_cache=jax_cache)
    table = read_metrics(out)
    status = {(r["trial_id"], r["eigen_index"], r["epoch"]): r["status"] for r in table.to_pylist()}
    assert status[("sgd-nn-pack000-mlp-digits", 0, 1)] == "diverged"
    assert status[("sgd-nn-pack000-mlp-digits", 1, 1)] == "diverged"
    assert ("sgd-nn-pack000-mlp-digits", 0, 2) not in status  # nothing after divergence
    assert status[("adam-nn-pack000-mlp-digits", 0, 2)] == "finished"
    assert status[("adam-nn-pack000-mlp-digits", 1, 2)] == "finished"
    assert summary.ok and summary.trial_counts == {"diverged": 1, "finished": 1}
    assert summary.target_counts == {"finished": 2, "diverged": 2}
    assert "div" in summary.accuracy


DRIVER = textwrap.dedent(
    """
    import sys
    from raysweep.config import apply_overrides, get_preset
    from raysweep.sweep import run_sweep

    config = apply_overrides(get_preset("smoke"), sys.argv[4:])
    run_sweep(config, sys.argv[1], artifacts=[sys.argv[2]], resume=True, compile_cache=sys.argv[3])
    """
)


def test_killed_driver_resumes_without_duplicates_or_gaps(
    ray_cluster, artifact, jax_cache, tmp_path
):
    # The shapes of the small sweep above (packs of 2, SGD, 2 epochs): compiled programs reused.
    overrides = [*BASE, "sweep.eigen_indices=0,1,2,3,4,5,6,7", "sweep.optimizers=sgd"]
    config = apply_overrides(get_preset("smoke"), overrides)
    out = tmp_path / "sweep"
    env = {**os.environ, "RAY_ADDRESS": ray_cluster}
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(out), str(artifact), str(jax_cache), *overrides],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    deadline = time.monotonic() + 150
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if len(list_parts(out)) >= 3:
                break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        log = proc.communicate()[0].decode(errors="replace")
    assert proc.returncode == -signal.SIGKILL, log[-3000:]
    parts = list_parts(out)
    assert 3 <= len(parts) < 8, log[-3000:]
    plan = plan_sweep(config, [load_artifact(artifact)])
    done_before = completed_trials(out, plan)
    mtimes = {
        p.name: p.stat().st_mtime_ns
        for p in parts
        if p.name.removesuffix(".parquet") in done_before
    }

    summary = run_sweep(
        config, out, artifacts=[artifact], resume=True, progress=False, compile_cache=jax_cache
    )
    table = read_metrics(out)
    keys = keys_of(table)
    assert Counter(keys).most_common(1)[0][1] == 1  # no duplicate row
    expected = {
        (trial_id("sgd", lin, j // 2, "mlp", "digits"), f"j{j}-seed0", e)
        for j in range(8)
        for lin in (False, True)
        for e in (1, 2)
    }
    assert set(keys) == expected  # no missing row
    assert summary.ok and summary.trial_counts == {"finished": 8}
    # Trials complete before the kill were not trained again.
    assert {n: (out / "metrics" / n).stat().st_mtime_ns for n in mtimes} == mtimes


def test_main_job_smoke_test(ray_cluster, tmp_path):
    """The default run's code path at smoke size: two models, LeNet5's extra seeds and its Adam
    excluded, the companion studies and the findings."""
    env = {**os.environ, "RAY_ADDRESS": ray_cluster}
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "sweeps/eigen_sweep.py"),
            "--smoke-test",
            "--out",
            str(tmp_path / "smoke"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    smoke = tmp_path / "smoke"
    assert "final test accuracy" in out
    assert "trials: 10 planned; by status: 10 finished" in out
    assert f"metrics:         {smoke / 'metrics'}" in out
    table = read_metrics(smoke)
    # mlp: 3 indices x 3 seeds x 2 optimizers, lenet5: 3 indices x seed 0 x SGD (sweep.exclude);
    # x mode x epochs
    assert table.num_rows == (3 * 3 * 2 + 3 * 1 * 1) * 2 * 2
    lenet = [r for r in table.to_pylist() if r["model"] == "lenet5"]
    assert {(r["seed"], r["optimizer"]) for r in lenet} == {(0, "sgd")}
    # the companions wrote their inputs, the findings are printed and saved
    baseline = load_baseline_records(smoke)
    assert {(r["model"], r["optimizer"], r["mode"]) for r in baseline} == {
        (m, o, k)
        for m, o in (("mlp", "sgd"), ("mlp", "adam"), ("lenet5", "sgd"))
        for k in ("network", "linearized")
    }
    assert sorted(r["seed"] for r in baseline if r["model"] == "lenet5") == [0] * 2
    energy = load_energy_records(smoke)
    assert {r["model"] for r in energy} == {"mlp", "lenet5"}
    assert all([p["epoch"] for p in r["curve"]] == [0, 1, 2] for r in energy)
    assert load_alignment(smoke).trained_indices.tolist() == [0, 3, 15]
    found = load_findings(smoke)
    assert [f.claim for f in found] == [1, 2, 3, 4, 5, 6, 7]
    assert "Findings (the paper's claims" in out
    for f in found:
        assert f.verdict in VERDICTS and f"{f.claim:<6}{f.verdict}" in out
    # three indices are too few to test a trend: the smoke run says so rather than guess
    assert found[0].verdict == "not enough data"
    # every report section is filled but the two the default run leaves out, which say why
    page = (smoke / "report" / "report.html").read_text()
    assert "Findings: the paper" in page
    notes = re.findall(r'<div class="note[^"]*">(.*?)</div>', page, re.S)
    assert len(notes) == 2, notes
    assert all("Not in the default run" in n for n in notes), notes
