"""Data safety of a sweep: the store is the truth on resume, damaged parts, moved folders,
trial faults (retries from checkpoints, killed actors, out of retries, stale attempts).

Trials fail on purpose through ``tests/fault_hook.py``, a Ray ``worker_process_setup_hook``
of this module's own cluster: it wraps the training entry point in every trial process, logs
each epoch an attempt reports and raises (or SIGKILLs its own process) where ``plan.json``
says. All sweeps here share one shape (packs of one index, 4 epochs), so the persistent
compilation cache compiles each program once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import ray
from conftest import BASE, make_config

from raysweep.distributed import ensure_ray
from raysweep.store import list_parts, read_metrics, read_trial_rows, scan_metrics
from raysweep.sweep import read_plan, run_sweep
from raysweep.sweep.trainable import check_attempt, checkpoint_path, claim_attempt

REPO = Path(__file__).resolve().parents[1]
SHAPE = ("train.epochs=4", "sweep.pack_size=1", "sweep.optimizers=sgd", "sweep.checkpoint_every=2")
METRICS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "step")


@pytest.fixture(scope="module")
def faults(tmp_path_factory):
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="module")
def ray_cluster(faults):
    """A local cluster whose worker processes run the fault hook."""
    started = ensure_ray(
        address="local",
        num_cpus=4,
        include_dashboard=False,
        runtime_env={
            "worker_process_setup_hook": "fault_hook.install",
            "env_vars": {
                "RAYSWEEP_TEST_FAULTS": str(faults),
                "PYTHONPATH": os.pathsep.join(
                    [str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]
                ),
            },
        },
    )
    yield ray.get_runtime_context().gcs_address
    if started:
        ray.shutdown()


def set_faults(folder: Path, plan: dict) -> None:
    for path in folder.iterdir():
        path.unlink()
    (folder / "plan.json").write_text(json.dumps(plan))


def attempts(folder: Path, tid: str) -> list[list[int]]:
    """The epochs each attempt of ``tid`` reported, in order of first report."""
    log = folder / "epochs.log"
    lines = log.read_text().split() if log.exists() else []
    by_attempt: dict[str, list[int]] = {}
    for t, _pid, attempt, epoch in zip(*[iter(lines)] * 4, strict=True):
        if t == tid:
            by_attempt.setdefault(attempt, []).append(int(epoch))
    return list(by_attempt.values())


def metric_rows(table, tid=None):
    rows = table.to_pylist()
    return {
        (r["trial_id"], r["eigen_index"], r["epoch"]): tuple(r[k] for k in (*METRICS, "status"))
        for r in rows
        if tid is None or r["trial_id"] == tid
    }


def sweep(config, out, artifact, jax_cache, **kwargs):
    return run_sweep(
        config, out, artifacts=[artifact], progress=False, compile_cache=jax_cache, **kwargs
    )


@pytest.fixture(scope="module")
def reference(ray_cluster, artifact, jax_cache, faults, tmp_path_factory):
    """An uninterrupted sweep: 2 indices x nn/lin, 4 epochs, one index per trial."""
    set_faults(faults, {})
    out = tmp_path_factory.mktemp("reference") / "sweep"
    summary = sweep(make_config(*SHAPE), out, artifact, jax_cache)
    assert summary.ok
    return out


# ----------------------------------------------------------------------------- trial faults


@pytest.mark.parametrize("how", ["raise", "kill"])
def test_failed_trial_is_retried_from_its_checkpoint(
    ray_cluster, artifact, jax_cache, faults, reference, tmp_path, how
):
    tid = "sgd-lin-pack001-mlp-digits"
    set_faults(faults, {tid: {"after_epoch": 3, "how": how, "times": 1}})
    out = tmp_path / "sweep"
    summary = sweep(make_config(*SHAPE, "sweep.max_retries=1"), out, artifact, jax_cache)
    assert summary.ok and summary.trial_counts == {"finished": 4}
    # The first attempt reported epochs 1-3; the retry continued after the epoch-2 checkpoint.
    assert attempts(faults, tid) == [[1, 2, 3], [3, 4]]
    table = read_metrics(out, damaged="raise")
    keys = [(r["trial_id"], r["eigen_index"], r["epoch"]) for r in table.to_pylist()]
    assert max(Counter(keys).values()) == 1 and len(keys) == 4 * 4
    # Identical to the uninterrupted sweep, the retried trial included.
    assert metric_rows(table) == metric_rows(read_metrics(reference))
    assert not checkpoint_path(out, tid).exists()  # removed once the part is complete


def test_trial_out_of_retries_is_error_while_the_rest_finish(
    ray_cluster, artifact, jax_cache, faults, reference, tmp_path
):
    tid = "sgd-nn-pack000-mlp-digits"
    set_faults(faults, {tid: {"after_epoch": 3, "how": "raise", "times": -1}})
    out = tmp_path / "sweep"
    summary = sweep(make_config(*SHAPE, "sweep.max_retries=1"), out, artifact, jax_cache)
    assert not summary.ok and summary.missing == (tid,)
    assert summary.trial_counts == {"error": 1, "finished": 3}
    assert summary.tune_counts == {"ERROR": 1, "TERMINATED": 3}
    assert attempts(faults, tid) == [[1, 2, 3], [3]]  # the first try, one retry from epoch 2
    rows = read_trial_rows(out, tid).to_pylist()
    assert [(r["epoch"], r["status"]) for r in rows if r["eigen_index"] == 0] == [
        (1, "running"),
        (2, "running"),
        (3, "error"),
    ]
    others = {k: v for k, v in metric_rows(read_metrics(out)).items() if k[0] != tid}
    assert others == {k: v for k, v in metric_rows(read_metrics(reference)).items() if k[0] != tid}

    # --resume runs only that trial, from its checkpoint, and completes the sweep.
    set_faults(faults, {})
    resumed = sweep(
        make_config(*SHAPE, "sweep.max_retries=1"), out, artifact, jax_cache, resume=True
    )
    assert resumed.ok and resumed.tune_counts == {"TERMINATED": 1}
    assert attempts(faults, tid) == [[3, 4]]
    assert metric_rows(read_metrics(out)) == metric_rows(read_metrics(reference))


def test_stale_attempt_cannot_write(tmp_path):
    old = claim_attempt(str(tmp_path), "sgd-nn-pack000-mlp-digits")
    new = claim_attempt(str(tmp_path), "sgd-nn-pack000-mlp-digits")
    check_attempt(str(tmp_path), "sgd-nn-pack000-mlp-digits", new)
    with pytest.raises(RuntimeError, match=r"a newer attempt .* owns its part file now"):
        check_attempt(str(tmp_path), "sgd-nn-pack000-mlp-digits", old)


# ----------------------------------------------------------------------------- the store decides


def copy_sweep(src: Path, dst: Path) -> Path:
    subprocess.run(["cp", "-a", str(src), str(dst)], check=True)
    return dst


def test_missing_part_runs_again_on_resume(
    ray_cluster, artifact, jax_cache, faults, reference, tmp_path
):
    out = copy_sweep(reference, tmp_path / "sweep")
    gone = out / "metrics" / "sgd-nn-pack000-mlp-digits.parquet"
    before = {p.name: p.stat().st_mtime_ns for p in list_parts(out) if p != gone}
    gone.unlink()
    set_faults(faults, {})
    # Tune's saved state calls that trial finished; the store decides, and it is missing.
    summary = sweep(make_config(*SHAPE), out, artifact, jax_cache, resume=True)
    assert summary.ok and summary.tune_counts == {"TERMINATED": 1}
    assert attempts(faults, "sgd-nn-pack000-mlp-digits") == [[1, 2, 3, 4]]
    assert metric_rows(read_metrics(out)) == metric_rows(read_metrics(reference))
    assert {p.name: p.stat().st_mtime_ns for p in list_parts(out) if p != gone} == before


def test_truncated_part_is_named_reported_around_and_redone(
    ray_cluster, artifact, jax_cache, faults, reference, tmp_path, capsys
):
    from raysweep.cli import main as cli_main
    from raysweep.report import build_report

    out = copy_sweep(reference, tmp_path / "sweep")
    build_report(out)
    figures = sorted(p.name for p in (out / "report" / "figures").glob("*.png"))
    assert figures
    bad = out / "metrics" / "sgd-lin-pack000-mlp-digits.parquet"
    bad.write_bytes(bad.read_bytes()[:100])

    # Status and report name the file, show the intact parts, and keep the figures.
    capsys.readouterr()
    assert cli_main(["status", str(out), "--no-tune"]) == 0
    shown = capsys.readouterr().out
    assert f"damaged part (not counted; its trial runs again on --resume): {bad}" in shown
    assert "3/4 trials with rows (3 finished)" in shown
    page = build_report(out).read_text()
    assert "No metrics yet" not in page and str(bad) in page
    assert sorted(p.name for p in (out / "report" / "figures").glob("*.png")) == figures
    table, damaged = scan_metrics(out)
    assert [d.path for d in damaged] == [bad] and table.num_rows == 3 * 4

    # Without --resume the sweep is refused, naming the file; with it, quarantined and redone.
    with pytest.raises(ValueError, match=r"damaged part\(s\): .*sgd-lin-pack000-mlp-digits"):
        sweep(make_config(*SHAPE), out, artifact, jax_cache)
    set_faults(faults, {})
    lines = []
    summary = run_sweep(
        make_config(*SHAPE),
        out,
        artifacts=[artifact],
        compile_cache=jax_cache,
        resume=True,
        log=lines.append,
    )
    assert summary.ok and summary.tune_counts == {"TERMINATED": 1}
    assert any(str(bad) in line and "quarantine" in line for line in lines), lines
    assert [p.name.split(".parquet.")[0] for p in (out / "metrics" / "quarantine").iterdir()] == [
        "sgd-lin-pack000-mlp-digits"
    ]
    assert metric_rows(read_metrics(out, damaged="raise")) == metric_rows(read_metrics(reference))


def test_moved_results_folder_resumes(
    ray_cluster, artifact, jax_cache, faults, reference, tmp_path
):
    # The main job's layout: the artifact inside the results folder.
    first = tmp_path / "first"
    first.mkdir()
    copy_sweep(artifact, first / "eigenfunctions")
    config = make_config(*SHAPE, "sweep.eigen_indices=0")
    set_faults(faults, {"sgd-lin-pack000-mlp-digits": {"after_epoch": 1, "how": "raise"}})
    summary = run_sweep(config, first, progress=False, compile_cache=jax_cache)
    assert not summary.ok
    assert read_plan(first)["artifacts"][0]["path"] == "eigenfunctions"  # relative

    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    os.rename(first, moved)
    set_faults(faults, {})
    summary = run_sweep(config, moved, resume=True, progress=False, compile_cache=jax_cache)
    assert summary.ok and summary.tune_counts == {"TERMINATED": 1}
    assert not first.exists()
    expected = {k: v for k, v in metric_rows(read_metrics(reference)).items() if k[1] == 0}
    assert metric_rows(read_metrics(moved)) == expected


def test_two_drivers_on_one_folder_are_refused(ray_cluster, artifact, tmp_path):
    from raysweep.lease import hold_results_dir

    out = tmp_path / "sweep"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from raysweep.lease import hold_results_dir\n"
            "with hold_results_dir(sys.argv[1], purpose='first driver'):\n"
            "    print('held', flush=True)\n"
            "    time.sleep(120)\n",
            str(out),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RuntimeError, match=rf"{out}.*pid {holder.pid}.*first driver"):
            run_sweep(make_config(*SHAPE), out, artifacts=[artifact], progress=False)
        job = subprocess.run(
            [
                sys.executable,
                str(REPO / "sweeps/eigen_sweep.py"),
                "--preset",
                "smoke",
                "--out",
                str(out),
            ]
            + list(BASE),
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "RAY_ADDRESS": ray_cluster},
        )
        assert job.returncode == 2, job.stdout + job.stderr
        assert f"pid {holder.pid}" in job.stderr and len(job.stderr.strip().splitlines()) == 1
        assert not (out / "eigenfunctions").exists() and not (out / "metrics").exists()
    finally:
        holder.kill()
        holder.wait()
    # The holder was killed: its lease is stale at once on this host.
    with hold_results_dir(out, purpose="test") as lease:
        assert lease.held


def test_run_counts_tell_unfinished_from_terminated(artifact, reference, tmp_path):
    from types import SimpleNamespace

    from raysweep.eigenfunctions import load_artifact
    from raysweep.sweep import completed_trials, param_space, plan_sweep
    from raysweep.sweep.tuner import run_counts

    out = copy_sweep(reference, tmp_path / "sweep")
    (out / "metrics" / "sgd-lin-pack001-mlp-digits.parquet").unlink()  # stopped by Ctrl-C
    plan = plan_sweep(make_config(*SHAPE), [load_artifact(artifact)])
    points = param_space(plan)["point"]["grid_search"]
    results = [
        SimpleNamespace(config={"point": p}, error=RuntimeError("x") if i == 0 else None)
        for i, p in enumerate(points)
    ]
    assert [p["trial_id"] for p in points][:2] == [
        "sgd-nn-pack000-mlp-digits",
        "sgd-nn-pack001-mlp-digits",
    ]
    done = completed_trials(out, plan)
    assert run_counts(results, done) == {"ERROR": 1, "TERMINATED": 2, "UNFINISHED": 1}
