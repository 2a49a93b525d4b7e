"""Running a sweep on Ray Tune: :func:`run_sweep`.

The grid (:mod:`raysweep.sweep.plan`) becomes a Tune ``param_space`` with one
``tune.grid_search`` over the trials still to run (``point``: artifact key, pack, optimizer,
linearized); the trial configs carry only names and indices, no paths, so nothing Tune saves
depends on where the results folder lives. The results folder, the compilation cache and the
large arrays of each artifact (images, eigenvectors of the sweep's indices, θ₀; put in the
object store once) reach the trainable through ``tune.with_parameters``. Other settings, and
the Ray 2.60 behaviour they account for:

- ``tune.with_resources({"cpu": sweep.cpus_per_trial, "gpu": sweep.gpus_per_trial})``; Ray
  sets ``CUDA_VISIBLE_DEVICES`` of a trial to its device, and the JAX memory settings for the
  trial's GPU share (:func:`raysweep.distributed.cluster.gpu_memory_env`: no preallocation and
  a memory cap of 0.9 × the share when trials share a device) go to every trial through
  ``tune.with_parameters`` and are set before it first touches a device;
- the results folder: a local path (a URI such as ``s3://`` is refused), and on a multi-node
  cluster one that every node sees (checked with
  :func:`raysweep.distributed.cluster.check_shared_dir` before any trial starts): trials write
  their parts, and Tune its trial folders, from the node they run on;
- ``FailureConfig(max_failures=sweep.max_retries)``: a failed trial (an exception, a killed
  actor, a lost node) is retried; it continues from its own checkpoint
  (``<out_dir>/checkpoints/<trial_id>.ckpt``, every ``sweep.checkpoint_every`` epochs) and
  rewrites its part file (its id is deterministic), so its rows appear exactly once;
- ``RunConfig(storage_path=<out_dir>/tune (absolute), name=sweep.name)``; no Tune checkpoints
  (the trial's own checkpoint lives in the results folder; Tune's would make its
  experiment-state snapshots a bottleneck);
- ``TuneConfig(reuse_actors=True)``: ~100 ms instead of ~800 ms of overhead per trial, and
  the compiled training program is reused by the next pack of the same shape;
- JAX's persistent compilation cache (``<out_dir>/jax_cache`` unless told otherwise), shared
  by the trial processes;
- ``verbose=0`` plus :class:`~raysweep.sweep.progress.SweepProgress` (one line per trial),
  with ``RAY_AIR_NEW_OUTPUT=0`` while the Tuner is built and runs (:func:`tune_console_env`):
  Ray 2.60's default output engine prints, even at ``verbose=0``, an experiment table and
  "To visualize your results with TensorBoard, run: tensorboard --logdir
  /tmp/ray/session_.../driver_artifacts" (a temporary folder); its legacy engine prints
  nothing at ``verbose=0``, and callbacks such as ``SweepProgress`` are unaffected;
- TensorBoard: after the sweep, :func:`raysweep.sweep.tensorboard.write_tensorboard` writes
  one run per target from the metrics store (``tensorboard --logdir <out_dir>/tensorboard``;
  HParams: one row per target); it never fails a sweep (a one-line warning instead). Tune's
  TBXLogger still writes one run per trial under ``<out_dir>/tune/<name>``.

Resume (``resume=True``): the metrics store is the truth. Damaged parts are moved to
``metrics/quarantine/`` (and named), then every planned trial without a complete part runs in
a new Tuner, whatever Tune's saved state says (``Tuner.restore`` would revive only the trials
Tune saw unfinished, and its saved configs would tie the sweep to one folder). A trial killed
mid-run continues from its checkpoint. Rows are never duplicated: each trial rewrites its
own part. The Tune driver holds ~77 KB per trial: for grids of many thousands of trials
split the sweep into several (e.g. one per artifact or per index range).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from raysweep.config import Config
from raysweep.store import (
    count_target_statuses,
    format_accuracy,
    metrics_dir,
    read_metrics,
    save_sweep_config,
    trial_states,
)
from raysweep.sweep.experiment import (
    completed_trials,
    experiment_dir,
    previous_run,
    write_plan,
)
from raysweep.sweep.grid import TrialSpec, artifact_dir, expand_grid
from raysweep.sweep.plan import SweepPlan, plan_sweep, trial_id_from_config
from raysweep.sweep.progress import SweepProgress
from raysweep.sweep.tensorboard import tensorboard_dir
from raysweep.sweep.trainable import build_payload, train_eigen_pack

COMPILE_CACHE_DIR = "jax_cache"

TUNE_CONSOLE_ENV = {"RAY_AIR_NEW_OUTPUT": "0"}
"""Set while the Tuner is built and runs (:func:`tune_console_env`): Ray's legacy output
engine, which prints nothing at ``verbose=0`` (no experiment table, no "View detailed results
here" / "tensorboard --logdir /tmp/ray/session_.../driver_artifacts" banner)."""


@contextlib.contextmanager
def tune_console_env() -> Iterator[None]:
    """Set :data:`TUNE_CONSOLE_ENV` in this process for the block; restore it after.

    Ray 2.60 reads ``RAY_AIR_NEW_OUTPUT`` in ``Tuner.fit`` (``ray.tune.experimental.output.
    get_air_verbosity``): ``"0"`` selects the legacy console engine, silent at ``verbose=0``;
    the default engine prints the experiment table and a TensorBoard banner pointing at a
    temporary folder whatever the verbosity. Callbacks (:class:`SweepProgress`) still run.
    """
    saved = {name: os.environ.get(name) for name in TUNE_CONSOLE_ENV}
    os.environ.update(TUNE_CONSOLE_ENV)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def write_sweep_tensorboard(out_dir: Path, log=None) -> Path | None:
    """:func:`~raysweep.sweep.tensorboard.write_tensorboard`, never raising: on failure one
    warning line (on ``log``, else the ``raysweep.sweep`` logger) and None."""
    from raysweep.sweep.tensorboard import write_tensorboard

    try:
        return write_tensorboard(out_dir)
    except Exception as err:  # TensorBoard is a view: it must never fail a sweep
        line = (
            f"[sweep] warning: TensorBoard runs not written ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else 'no message'}); the sweep's results "
            f"are intact; retry with: raysweep tensorboard {out_dir}"
        )
        if log is not None:
            log(line)
        else:
            logging.getLogger("raysweep.sweep").warning(line)
        return None


@dataclass(frozen=True)
class SweepSummary:
    """What :func:`run_sweep` returns; ``str(summary)`` is the text it prints.

    ``trial_counts``: trials per store status (finished / diverged / error / running);
    ``target_counts``: targets per status; ``tune_counts``: this run's trials by outcome
    (:func:`run_counts`; empty if nothing ran); ``missing``: planned trials without a
    complete part.
    """

    out_dir: Path
    metrics_dir: Path
    tune_dir: Path
    num_trials: int
    num_targets: int
    num_rows: int
    trial_counts: dict[str, int]
    target_counts: dict[str, int]
    tune_counts: dict[str, int] = field(default_factory=dict)
    missing: tuple[str, ...] = ()
    accuracy: str = ""

    @property
    def ok(self) -> bool:
        """True when every planned trial has a complete part (finished or diverged)."""
        return not self.missing

    def __str__(self) -> str:
        trials = ", ".join(f"{n} {s}" for s, n in self.trial_counts.items()) or "none"
        targets = ", ".join(f"{n} {s}" for s, n in self.target_counts.items()) or "none"
        lines = [
            self.accuracy,
            "",
            f"trials: {self.num_trials} planned; by status: {trials}",
            f"targets: {self.num_targets} planned; by status: {targets}; {self.num_rows} rows",
        ]
        if self.tune_counts:
            lines.append("tune: " + ", ".join(f"{n} {s}" for s, n in self.tune_counts.items()))
        if self.missing:
            lines.append(
                f"incomplete: {len(self.missing)} trial(s), e.g. {self.missing[0]}; run again "
                "with --resume (resume=True) to finish them."
            )
        return "\n".join(lines)


def _load_artifacts(paths: Sequence[str | os.PathLike]):
    from raysweep.eigenfunctions import load_artifact

    loaded = []
    for path in paths:
        if not isinstance(path, str | os.PathLike):  # already loaded (e.g. a NADArtifact)
            loaded.append(path)
            continue
        try:
            loaded.append(load_artifact(Path(path).resolve()))
        except FileNotFoundError as err:
            raise ValueError(
                f"eigenfunction artifact {path} is missing or incomplete ({err}). Expected the "
                "folder written by the eigen step; run python sweeps/eigen_sweep.py (or "
                "raysweep.eigenfunctions.compute_eigenfunctions) first."
            ) from err
    return loaded


def compile_cache_dir(out_dir: Path, compile_cache: bool | str | os.PathLike) -> str | None:
    """The folder of JAX's persistent compilation cache for a sweep (None: no cache)."""
    if compile_cache is True:
        return str(out_dir / COMPILE_CACHE_DIR)
    if not compile_cache:
        return None
    return str(Path(compile_cache).resolve())


def longest_first(trials: Sequence[TrialSpec], config: Config) -> list[TrialSpec]:
    """``trials`` with the longest first, by :mod:`raysweep.sweep.cost`'s model of a trial's
    CPU-seconds (a LeNet5 linearization before an MLP network): Tune starts trials in the
    order of its grid, so the long ones no longer run alone at the end of a sweep. Trials the
    model cannot price (and every trial when the grid cannot be priced) keep their order."""
    from raysweep.sweep import cost

    try:
        grid = expand_grid(config)
        sizes = {a.key: cost.dataset_size(a.config) for a in grid.artifacts}
        seconds = cost.trial_seconds(grid, sizes)
    except Exception:  # noqa: BLE001 - ordering is an optimization, never a failure
        return list(trials)
    modelled = {k: v[1] for k, v in seconds.items() if v is not None}
    order = sorted(range(len(trials)), key=lambda i: -modelled.get(trials[i].trial_id, 0.0))
    return [trials[i] for i in order]


def param_space(plan: SweepPlan, trials: Sequence[TrialSpec] | None = None) -> dict:
    """The Tune search space: one grid point per trial of ``trials`` (default: all of them).

    A trial's config is ``sweep_id`` and ``point``: ``trial_id``, ``artifact`` {key, model,
    dataset}, ``optimizer``, ``linearized``, ``train`` (the TrainConfig fields of its program
    point), ``axes`` (its artifact- and program-level axis values) and ``pack`` {id,
    targets: [{target_id, eigen_index, seed, learning_rate, values}]}: names and numbers only.
    """
    from ray import tune

    arts = {a.key: a for a in plan.artifacts}
    points = [
        {
            "trial_id": t.trial_id,
            "artifact": {
                "key": t.artifact,
                "model": arts[t.artifact].model,
                "dataset": arts[t.artifact].dataset,
            },
            "optimizer": t.optimizer,
            "linearized": t.linearized,
            "train": dataclasses.asdict(t.train),
            "axes": {**arts[t.artifact].values, **dict(t.program)},
            "pack": {
                "id": t.pack,
                "targets": [
                    {
                        "target_id": x.target_id,
                        "eigen_index": x.eigen_index,
                        "seed": x.seed,
                        "learning_rate": x.learning_rate,
                        "values": dict(x.values),
                    }
                    for x in t.targets
                ],
            },
        }
        for t in (plan.trials if trials is None else trials)
    ]
    return {"sweep_id": plan.sweep_id, "point": tune.grid_search(points)}


def run_counts(results, done: set[str]) -> dict[str, int]:
    """This run's trials by outcome: ``ERROR`` (raised, out of retries), ``TERMINATED``
    (in ``done``, the trials complete in the store) or ``UNFINISHED`` (stopped early, e.g. by
    Ctrl-C: Tune returns such trials without an error)."""
    counts: dict[str, int] = {}
    for result in results:
        if result.error:
            state = "ERROR"
        elif not result.config:  # stopped before it reported: Tune kept no config for it
            state = "UNFINISHED"
        else:
            state = "TERMINATED" if trial_id_from_config(result.config) in done else "UNFINISHED"
        counts[state] = counts.get(state, 0) + 1
    return counts


def summarize(plan: SweepPlan, out_dir: Path, results=None) -> SweepSummary:
    """The :class:`SweepSummary` of the store in ``out_dir`` against ``plan``; ``results``:
    Tune's results of this run, if one ran (counted by :func:`run_counts`)."""
    table = read_metrics(out_dir)
    states = trial_states(table)
    counts: dict[str, int] = {}
    for s in states:
        counts[s.status] = counts.get(s.status, 0) + 1
    done = completed_trials(out_dir, plan, table)
    return SweepSummary(
        out_dir=out_dir,
        metrics_dir=metrics_dir(out_dir),
        tune_dir=experiment_dir(out_dir, plan.sweep_id),
        num_trials=len(plan.trials),
        num_targets=plan.num_targets,
        num_rows=table.num_rows,
        trial_counts=counts,
        target_counts=count_target_statuses(table),
        tune_counts=run_counts(results, done) if results is not None else {},
        missing=tuple(t for t in plan.trial_ids() if t not in done),
        accuracy=format_accuracy(table),
    )


def run_sweep(
    config: Config,
    out_dir: str | os.PathLike,
    *,
    artifacts: Sequence[str | os.PathLike] | None = None,
    resume: bool = False,
    progress: bool = True,
    compile_cache: bool | str | os.PathLike = True,
    reuse_actors: bool = True,
    log=print,
) -> SweepSummary:
    """Train the network and its linearization on eigenfunction labels, one Tune trial per pack.

    Args:
      config: resolved config; ``sweep`` gives the grid and resources, ``train`` the training
        (its ``optimizer`` is set per trial).
      out_dir: the sweep directory (``metrics/``, ``tune/``, ``config.json``,
        ``sweep_plan.json``; see :mod:`raysweep.sweep.experiment`).
      artifacts: eigenfunction artifact folders, or artifacts already loaded (an
        :class:`~raysweep.eigenfunctions.EigenArtifact` or the NAD study's
        :class:`~raysweep.studies.nad.NADArtifact`); default: those of the grid's artifact points
        in ``out_dir`` (:func:`~raysweep.sweep.grid.artifact_dir`: ``<out_dir>/eigenfunctions``
        for a single one, else ``<out_dir>/artifacts/<key>/eigenfunctions``), what the main job
        writes. Without artifact-level axes, each folder given is a point of its own.
      resume: finish an interrupted sweep of the same grid in ``out_dir``.
      progress: print one line per trial and the summary.
      compile_cache: share compiled training programs between the sweep's trial processes
        through JAX's persistent cache: ``True`` in ``<out_dir>/jax_cache``, a path to share
        one cache between sweeps, ``False`` for none. Retries, restores and new actors then
        load programs instead of compiling them (XLA compilation dominates short trials).
      reuse_actors: run the next trial in the process of a finished one (keeps its compiled
        programs). ``False``, Tune's default, starts a fresh process per trial; the benchmark
        (``benchmarks/bench_sweep.py``) uses it as the naive baseline.
      log: where progress lines go.

    Returns:
      A :class:`SweepSummary` (``print`` it for accuracy by eigen-index, network vs linearized
      per optimizer, and trial counts by status).

    Raises:
      ValueError / TypeError: before any trial starts and without touching results already
        written: missing artifact, empty grid, unknown optimizer, eigen-index ≥ eigenvectors
        in the artifact, dataset differing from the artifact's manifest, per-trial resources
        the cluster cannot provide, a GPU share JAX cannot be set up for, ``out_dir`` a URI or
        (multi-node) not visible on every node, or ``out_dir`` holding another or an
        unfinished sweep (without ``resume``).
      raysweep.lease.ResultsDirBusy: another driver holds ``out_dir`` (one driver per
        results folder; see :mod:`raysweep.lease`).
    """
    from raysweep.distributed.cluster import check_results_dir
    from raysweep.lease import hold_results_dir

    out_dir = check_results_dir(out_dir)
    with hold_results_dir(out_dir, purpose="raysweep.sweep.run_sweep") as lease:
        return _run_sweep(
            config,
            out_dir,
            lease,
            artifacts=artifacts,
            resume=resume,
            progress=progress,
            compile_cache=compile_cache,
            reuse_actors=reuse_actors,
            log=log,
        )


def _run_sweep(
    config: Config,
    out_dir: Path,
    lease,
    *,
    artifacts,
    resume: bool,
    progress: bool,
    compile_cache,
    reuse_actors: bool,
    log,
) -> SweepSummary:
    from raysweep.distributed.cluster import gpu_memory_env

    trial_env = gpu_memory_env(config.sweep.gpus_per_trial)
    grid = expand_grid(config)
    if artifacts is None:
        paths = [artifact_dir(out_dir, point) for point in grid.artifacts]
    else:
        paths = list(artifacts)
    loaded = _load_artifacts(paths)
    plan = plan_sweep(config, loaded, out_dir=out_dir, grid=grid)
    if progress:
        for note in plan.notes:
            log(f"[sweep] {note}")
    by_path = {str(a.path.resolve()): a for a in loaded}
    previous = previous_run(plan, out_dir, resume=resume, log=log if progress else _quiet)
    if previous.state == "complete":
        summary = summarize(plan, out_dir)
        if progress:
            log(
                f"[sweep] all {len(plan.trials)} trials of {out_dir} are already complete "
                "(nothing to run; another grid needs another --out or sweep.name).\n"
            )
            log(str(summary))
        if not tensorboard_dir(out_dir).exists():
            _tensorboard(out_dir, log if progress else None)
        return summary

    import ray
    from ray import tune

    from raysweep.distributed import ensure_ray
    from raysweep.distributed.capacity import check_trial_resources
    from raysweep.distributed.cluster import check_shared_dir

    payloads = {
        a.key: build_payload(by_path[str(a.resolve(out_dir))], plan, a.key) for a in plan.artifacts
    }
    ensure_ray()
    check_trial_resources(config.sweep.cpus_per_trial, config.sweep.gpus_per_trial)
    check_shared_dir(out_dir)
    refs = {key: ray.put(value) for key, value in payloads.items()}
    del payloads
    lease.check()  # another driver took this folder over: stop before writing
    save_sweep_config(config, out_dir)
    write_plan(out_dir, plan)
    metrics_dir(out_dir).mkdir(parents=True, exist_ok=True)

    trainable = tune.with_resources(
        tune.with_parameters(
            train_eigen_pack,
            payloads=refs,
            env_vars=trial_env,
            store_dir=str(out_dir),
            compile_cache=compile_cache_dir(out_dir, compile_cache),
            checkpoint_every=config.sweep.checkpoint_every,
        ),
        {"cpu": config.sweep.cpus_per_trial, "gpu": config.sweep.gpus_per_trial},
    )
    todo = longest_first([t for t in plan.trials if t.trial_id not in previous.done], config)
    if progress:
        log(
            f"[sweep] {len(plan.trials)} trials ({plan.num_targets} targets, "
            f"{_epochs_text(plan)} epochs): {len(todo)} to run; metrics in "
            f"{metrics_dir(out_dir)}; after the sweep: tensorboard --logdir "
            f"{tensorboard_dir(out_dir)} (HParams: one row per target)"
        )
    with tune_console_env():  # no Tune banner pointing at a temporary TensorBoard folder
        tuner = _new_tuner(
            trainable,
            plan,
            todo,
            config,
            log if progress else _quiet,
            out_dir=out_dir,
            reuse_actors=bool(reuse_actors),
        )
        results = tuner.fit()
    summary = summarize(plan, out_dir, results)
    if progress:
        log(str(summary))
    _tensorboard(out_dir, log if progress else None)
    return summary


def _tensorboard(out_dir: Path, log) -> None:
    """Write the TensorBoard runs of the sweep and say where (``log``: None for silence)."""
    written = write_sweep_tensorboard(out_dir, log)
    if written is not None and log is not None:
        log(f"[sweep] TensorBoard: tensorboard --logdir {written} (HParams: one row per target)")


def _new_tuner(
    trainable,
    plan: SweepPlan,
    trials: Sequence[TrialSpec],
    config: Config,
    log,
    *,
    out_dir: Path,
    reuse_actors: bool = True,
):
    from ray import tune

    exp = experiment_dir(out_dir, plan.sweep_id)
    return tune.Tuner(
        trainable,
        param_space=param_space(plan, trials),
        tune_config=tune.TuneConfig(
            reuse_actors=reuse_actors,
            trial_name_creator=trial_name,
            trial_dirname_creator=trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=plan.sweep_id,
            storage_path=str(exp.parent),
            failure_config=tune.FailureConfig(max_failures=config.sweep.max_retries),
            checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=False),
            verbose=0,
            callbacks=[SweepProgress(len(trials), max(t.epochs for t in trials), log=log)],
        ),
    )


def _epochs_text(plan: SweepPlan) -> str:
    epochs = sorted({t.epochs for t in plan.trials})
    return "/".join(map(str, epochs))


def trial_name(trial) -> str:
    """Tune's display name of a trial: our deterministic trial id."""
    return trial_id_from_config(trial.config)


def trial_dirname(trial) -> str:
    """Trial folder under ``tune/<name>``: our id plus Tune's (unique across restarts)."""
    return f"{trial_id_from_config(trial.config)}_{trial.trial_id}"


def _quiet(*args, **kwargs) -> None:
    """A log function that drops everything (``progress=False``)."""
