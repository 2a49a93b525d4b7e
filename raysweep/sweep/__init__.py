"""The sweep on Ray Tune: network vs linearization on eigenfunction labels, packed trials.

Typical use (what ``sweeps/eigen_sweep.py`` does after the eigen step)::

    from raysweep.sweep import run_sweep

    summary = run_sweep(config, "results/eigen_sweep")      # artifact: <out_dir>/eigenfunctions
    print(summary)                                           # accuracy by eigen-index, nn vs lin
    summary = run_sweep(config, "results/eigen_sweep", resume=True)   # after an interruption

Modules, one idea each (Ray is imported only here and in ``raysweep.distributed``):

- ``grid``: any config field as an axis (``grid.section.field=v1,v2``), expanded into
  artifact points × program points × packs of in-pack targets; readable ids.
- ``plan``: the grid checked against the loaded artifacts, deterministic trial ids.
- ``trainable``: the Tune function trainable (labels, training, per-epoch store rows and
  ``tune.report``) and the payload it gets through ``tune.with_parameters``.
- ``experiment``: the sweep directory across runs (plan file, completed trials, Tune state).
- ``progress``: one console line per trial (a Tune callback).
- ``tuner``: :func:`run_sweep` (Tuner set-up, resume, summary).
- ``tensorboard``: :func:`write_tensorboard` (one TensorBoard run and HParams row per target,
  from the metrics store; ``<out_dir>/tensorboard``).
"""

from raysweep.sweep.experiment import (
    TUNE_DIR,
    completed_trials,
    experiment_dir,
    previous_run,
    read_plan,
    tune_trial_states,
)
from raysweep.sweep.grid import (
    ArtifactPoint,
    Grid,
    TargetSpec,
    TrialSpec,
    artifact_dir,
    expand_grid,
    gram_dir,
)
from raysweep.sweep.plan import (
    PLAN_FILE,
    ArtifactSpec,
    SweepPlan,
    chunk_indices,
    plan_sweep,
    trial_id,
)
from raysweep.sweep.tensorboard import TENSORBOARD_DIR, tensorboard_dir, write_tensorboard
from raysweep.sweep.trainable import train_eigen_pack
from raysweep.sweep.tuner import SweepSummary, param_space, run_sweep, summarize

__all__ = [
    "PLAN_FILE",
    "ArtifactPoint",
    "Grid",
    "TargetSpec",
    "artifact_dir",
    "expand_grid",
    "gram_dir",
    "TENSORBOARD_DIR",
    "TUNE_DIR",
    "ArtifactSpec",
    "SweepPlan",
    "SweepSummary",
    "TrialSpec",
    "chunk_indices",
    "completed_trials",
    "experiment_dir",
    "param_space",
    "plan_sweep",
    "previous_run",
    "read_plan",
    "run_sweep",
    "summarize",
    "tensorboard_dir",
    "train_eigen_pack",
    "trial_id",
    "tune_trial_states",
    "write_tensorboard",
]
