"""The main job killed through the command line, then ``--resume``: the same results as no kill.

A driver (``python sweeps/eigen_sweep.py`` in a subprocess of its own session) is stopped in
each of its three phases, which are read from the results folder and the driver's output:

- the Gram: at least one tile is in ``gram/tiles`` but not all of them;
- the eigensolver: the driver printed ``[eigen] Gram ... ready`` (every tile is stored) and
  ``eigenfunctions/`` does not exist yet (it is written atomically at the end of the step).
  The solver takes 0.2-0.5 s here, so the driver stopped there runs it 30 times (same result,
  :data:`SLOW_EIGEN`): a signal reaches it in the solver even when the test process is late;
- the sweep: at least one Parquet part is in ``metrics/``, but not every trial is complete.

SIGKILL: one fresh job per phase, each then finished with ``--resume``. SIGINT (Ctrl-C, sent to
the driver's process group): one job interrupted in the Gram, its ``--resume`` interrupted in
the eigensolver, that one's ``--resume`` in the sweep, then a last ``--resume``. An interrupted
driver must exit within a bounded time, with a non-zero status and the command that finishes
the run, not a traceback. Every last ``--resume`` must give bit for bit the eigenpairs and every
metric (``wall_time`` aside) of one uninterrupted reference run, no row missing or repeated.

One local Ray cluster (4 logical CPUs, no dashboard) serves the module; the drivers join it
through ``RAY_ADDRESS``, and every process of the cluster shares one JAX compilation cache
(``JAX_COMPILATION_CACHE_DIR``), so only the reference run compiles. About 4 minutes on a
2-core CPU, most of it in starting processes (drivers, Gram workers, trials).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import ray

from raysweep.distributed import ensure_ray
from raysweep.eigenfunctions import load_artifact
from raysweep.store import KEY_COLUMNS, list_parts, read_metrics
from raysweep.sweep import trial_id

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
JOB = REPO / "sweeps" / "eigen_sweep.py"

# N = 300 digits cut into 30 blocks of 10: 465 tiles, so that the Gram lasts long enough to be
# hit (about 2 s of tiles). One Gram worker: the sums of a multi-worker matmat depend on which
# worker ended up with which panel, which changes the float64 eigenvalues in their last bits
# from run to run (even without a kill).
NUM_BLOCKS = 30
NUM_TILES = NUM_BLOCKS * (NUM_BLOCKS + 1) // 2
EPOCHS = 2
INDICES = (0, 1, 2, 3)
OVERRIDES = (
    "data.num_train=200",
    "data.num_test=100",
    f"ntk.tile_size={300 // NUM_BLOCKS}",
    "ntk.num_workers=1",
    "ntk.num_eigen=32",
    "ntk.eigen_method=block",  # matmat on the Gram worker: the solver takes long enough to hit
    f"sweep.eigen_indices={','.join(map(str, INDICES))}",
    "sweep.pack_size=2",
    "sweep.optimizers=sgd",
    "sweep.max_retries=0",
    "sweep.cpus_per_trial=2",  # 2 of the 4 trials at a time: a killed sweep has trials left
    f"train.epochs={EPOCHS}",
    "train.batch_size=16",
)
EXPECTED_KEYS = {
    (trial_id("sgd", lin, j // 2, "mlp", "digits"), f"j{j}-seed0", epoch)
    for j in INDICES
    for lin in (False, True)
    for epoch in range(1, EPOCHS + 1)
}
SLOW_EIGEN = textwrap.dedent(
    """
    # python -c SLOW_EIGEN sweeps/eigen_sweep.py ARGS: the main job, whose eigensolver runs 30
    # times (a wider target for a signal), each time on the distributed Gram, same result.
    import os, runpy, sys
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # as the job does
    import raysweep.eigenfunctions as step

    solve = step.top_eigenpairs

    def top_eigenpairs(*args, **kwargs):
        for _ in range(29):
            solve(*args, **kwargs)
        return solve(*args, **kwargs)

    step.top_eigenpairs = top_eigenpairs
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
    """
)
RUN_TIMEOUT_S = 300  # one whole run of the job; about 30 s here
PHASE_TIMEOUT_S = 150  # from the start of a driver to the phase it is killed in
EXIT_TIMEOUT_S = 60  # from SIGINT to the driver's exit


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Environment for drivers joining one local Ray cluster that shares a compilation cache."""
    cache = tmp_path_factory.mktemp("jax_cache")
    with pytest.MonkeyPatch.context() as mp:
        # Ray's processes inherit these from the process that starts the cluster.
        mp.setenv("JAX_COMPILATION_CACHE_DIR", str(cache))
        mp.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
        started = ensure_ray(address="local", num_cpus=4, include_dashboard=False)
        env = {
            **os.environ,
            "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
            "PYTHONUNBUFFERED": "1",  # the driver's lines arrive as they are printed
        }
    yield env
    if started:
        ray.shutdown()


class Driver:
    """The main job in a subprocess of its own session; its output is collected line by line,
    each line stamped with the seconds since the start (signals sent are logged too)."""

    def __init__(self, out: Path, env: dict, *args: str, slow_eigen: bool = False):
        out.parent.mkdir(parents=True, exist_ok=True)
        self.start = time.monotonic()
        python = [sys.executable, "-c", SLOW_EIGEN] if slow_eigen else [sys.executable]
        self.proc = subprocess.Popen(
            [
                *python,
                str(JOB),
                "--preset",
                "smoke",
                "--quiet",
                "--out",
                str(out),
                *args,
                *OVERRIDES,
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=out.parent,
            start_new_session=True,  # a signal to its group reaches it as Ctrl-C would
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._add(line)

    def _add(self, line: str) -> None:
        self.lines.append(f"{time.monotonic() - self.start:7.2f} {line}")

    def printed(self, *words: str) -> bool:
        return any(all(w in line for w in words) for line in list(self.lines))

    def log(self, tail: int = 4000) -> str:
        self._reader.join(timeout=5)
        return "".join(self.lines)[-tail:]

    def wait_for(self, condition, timeout: float) -> None:
        """Poll ``condition()`` every few milliseconds until it holds; fail if the job ends."""
        deadline = time.monotonic() + timeout
        while not condition():
            if self.proc.poll() is not None:
                pytest.fail(f"the job ended (exit {self.proc.returncode}) first:\n{self.log()}")
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"not reached within {timeout} s:\n{self.log()}")
            time.sleep(0.002)

    def signal(self, sig: int) -> None:
        os.killpg(self.proc.pid, sig)
        self._add(f"[test] sent {signal.Signals(sig).name}\n")

    def wait(self, timeout: float) -> int:
        """The exit status; a job still running after ``timeout`` s is killed and fails."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the job did not exit within {timeout} s:\n{self.log()}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.signal(signal.SIGKILL)
            self.proc.wait()


def run_to_completion(out: Path, env: dict, *args: str) -> Driver:
    job = Driver(out, env, *args)
    code = job.wait(RUN_TIMEOUT_S)
    assert code == 0, f"exit {code}:\n{job.log()}"
    return job


def stored_tiles(out: Path) -> int:
    return len(list((out / "gram" / "tiles").glob("tile_*.npy")))


def metric_rows(out: Path) -> dict[str, list]:
    """Every column but ``wall_time``, rows sorted by key; fails on a repeated key."""
    table = read_metrics(out).sort_by([(name, "ascending") for name in KEY_COLUMNS])
    rows = table.drop_columns(["wall_time"]).to_pydict()
    keys = list(zip(*(rows[name] for name in KEY_COLUMNS), strict=True))
    assert len(set(keys)) == len(keys), f"repeated rows in {out / 'metrics'}"
    return rows | {"key": keys}


@pytest.fixture(scope="module")
def reference(cluster, tmp_path_factory):
    """One uninterrupted run with the same overrides: its artifact and its metric rows."""
    out = tmp_path_factory.mktemp("reference") / "run"
    run_to_completion(out, cluster)
    rows = metric_rows(out)
    assert set(rows["key"]) == EXPECTED_KEYS
    assert set(rows["status"]) == {"running", "finished"}
    return load_artifact(out / "eigenfunctions"), rows


def killed_in(phase: str, job: Driver, out: Path) -> None:
    """Return as soon as ``job`` is in ``phase``; fail if it ends or never gets there."""
    if phase == "gram":
        job.wait_for(lambda: stored_tiles(out) >= 1, PHASE_TIMEOUT_S)
    elif phase == "eigen":
        job.wait_for(lambda: job.printed("[eigen] Gram", "ready"), PHASE_TIMEOUT_S)
    else:
        job.wait_for(lambda: len(list_parts(out)) >= 1, PHASE_TIMEOUT_S)


def check_killed_in(phase: str, out: Path, tiles_at_kill: int, log: str) -> None:
    """The folder shows the job was stopped in ``phase``, not after it."""
    artifact = (out / "eigenfunctions").exists()
    if phase == "gram":
        assert 1 <= tiles_at_kill < NUM_TILES and not artifact, f"{tiles_at_kill} tiles\n{log}"
    elif phase == "eigen":
        assert stored_tiles(out) == NUM_TILES and not artifact, log
    else:
        finished = [r for r in read_metrics(out).to_pylist() if r["epoch"] == EPOCHS]
        assert artifact and len(finished) < len(EXPECTED_KEYS) // EPOCHS, log


def stop_in(phase: str, sig: int, out: Path, env: dict, *args: str) -> None:
    """Start the job, send ``sig`` once it is in ``phase``, check how it ended and the folder."""
    job = Driver(out, env, *args, slow_eigen=phase == "eigen")
    killed_in(phase, job, out)
    tiles_at_kill = stored_tiles(out)
    job.signal(sig)
    code = job.wait(EXIT_TIMEOUT_S)
    log = job.log()
    if sig == signal.SIGKILL:
        assert code == -signal.SIGKILL, log
    else:  # a non-zero status and the command that finishes the run, not a traceback
        assert code not in (0, -signal.SIGINT), f"exit {code}:\n{log}"
        resume = ["python", "sweeps/eigen_sweep.py", "--resume", "--out", str(out)]
        resume += ["--preset", "smoke", "--quiet"]
        if phase == "sweep":  # Tune stops the trials and the job prints its summary
            assert "Traceback" not in log and "--resume" in log, log
        else:
            assert "Traceback" not in log and shlex.join([*resume, *OVERRIDES]) in log, log
    check_killed_in(phase, out, tiles_at_kill, log)


def assert_same_results(out: Path, reference, log: str) -> None:
    """Eigenpairs bit for bit, and every metric of every row, as in the reference run."""
    artifact, rows = reference
    got = load_artifact(out / "eigenfunctions")
    np.testing.assert_array_equal(got.eigvals, artifact.eigvals)
    np.testing.assert_array_equal(got.eigvecs, artifact.eigvecs)
    got_rows = metric_rows(out)
    assert got_rows["key"] == rows["key"], log  # none missing, none repeated
    for name, values in rows.items():
        np.testing.assert_array_equal(got_rows[name], values, err_msg=f"column {name}")


@pytest.mark.parametrize("phase", ["gram", "eigen", "sweep"])
def test_killed_job_resumes_to_the_results_of_an_uninterrupted_run(
    cluster, reference, tmp_path, phase
):
    out = tmp_path / "run"
    stop_in(phase, signal.SIGKILL, out, cluster)
    resumed = run_to_completion(out, cluster, "--resume")
    assert_same_results(out, reference, resumed.log())


def test_interrupted_job_says_how_to_resume_and_resumes(cluster, reference, tmp_path):
    # Ctrl-C in the Gram, then in the eigensolver of the resumed job, then in its sweep.
    out = tmp_path / "run"
    stop_in("gram", signal.SIGINT, out, cluster)
    stop_in("eigen", signal.SIGINT, out, cluster, "--resume")
    stop_in("sweep", signal.SIGINT, out, cluster, "--resume")
    resumed = run_to_completion(out, cluster, "--resume")
    assert_same_results(out, reference, resumed.log())
