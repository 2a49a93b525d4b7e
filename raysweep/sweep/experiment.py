"""A sweep directory across runs: its plan, what is done, and Tune's view of the trials.

Layout of ``out_dir`` (the sweep directory)::

    config.json         resolved Config            (raysweep.store.save_sweep_config)
    sweep_plan.json     the grid (SweepPlan.to_dict), written before the first trial
    metrics/            one Parquet part per trial (raysweep.store), and a hidden
                        .<trial_id>.attempt token per trial (which attempt may write it)
    jax_cache/          JAX's persistent compilation cache shared by the trial processes
    tune/<name>/        Tune's experiment: tuner.pkl, experiment_state-*.json, one folder
                        per trial with result.json, progress.csv and TensorBoard event files
    eigenfunctions/     the artifact (main job), with gram/ beside it; a grid with several
                        artifact points keeps each in artifacts/<key>/{eigenfunctions,gram}

:func:`previous_run` decides what a new call may do with a directory that already holds a
sweep: nothing there → start; the same grid, every trial complete → nothing to run; the same
grid, unfinished → only with ``resume``; another grid → refuse (its results would mix with the
new ones). All of this is decided before any trial starts, and nothing already written is
removed.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from raysweep.atomic import atomic_write_json
from raysweep.store import latest_rows, list_parts, read_metrics, scan_metrics
from raysweep.sweep.plan import PLAN_FILE, SweepPlan, trial_id_from_config

TUNE_DIR = "tune"


def experiment_dir(out_dir: str | os.PathLike, name: str) -> Path:
    """Tune's experiment directory of a sweep: ``<out_dir>/tune/<name>`` (absolute)."""
    return Path(out_dir).resolve() / TUNE_DIR / name


def read_plan(out_dir: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(out_dir) / PLAN_FILE
    return json.loads(path.read_text()) if path.exists() else None


def write_plan(out_dir: str | os.PathLike, plan: SweepPlan) -> Path:
    """Write ``sweep_plan.json`` atomically."""
    return atomic_write_json(Path(out_dir) / PLAN_FILE, plan.to_dict())


def completed_trials(
    out_dir: str | os.PathLike, plan: SweepPlan, table: pa.Table | None = None
) -> set[str]:
    """Trial ids of ``plan`` whose part holds the final row of every target.

    ``table``: the store's rows if already read (default: :func:`read_metrics` of ``out_dir``).
    """
    latest: dict[str, dict[str, dict]] = {}
    table = read_metrics(out_dir) if table is None else table
    for row in latest_rows(table).to_pylist():
        latest.setdefault(row["trial_id"], {})[row["target_id"]] = row
    done = set()
    for spec in plan.trials:
        rows = latest.get(spec.trial_id, {})
        if all(
            t.target_id in rows
            and (
                rows[t.target_id]["status"] == "diverged"
                or (
                    rows[t.target_id]["status"] == "finished"
                    and rows[t.target_id]["epoch"] == spec.epochs
                )
            )
            for t in spec.targets
        ):
            done.add(spec.trial_id)
    return done


@dataclass(frozen=True)
class PreviousRun:
    """What :func:`previous_run` found: ``state`` is ``"none"``, ``"complete"`` or
    ``"unfinished"``; ``done`` the complete trial ids."""

    state: str
    done: frozenset[str]


def previous_run(
    plan: SweepPlan, out_dir: str | os.PathLike, *, resume: bool, log=print
) -> PreviousRun:
    """Check ``out_dir`` against ``plan`` before a sweep starts (see the module docstring).

    The metrics store decides what is done. With ``resume``, damaged parts are moved to
    ``metrics/quarantine/`` (one line each on ``log``) so their trials run again.

    Raises:
      ValueError: the directory holds a sweep of another grid, or an unfinished one and
        ``resume`` is False.
    """
    out_dir = Path(out_dir)
    saved = read_plan(out_dir)
    parts = list_parts(out_dir)
    exp = experiment_dir(out_dir, plan.sweep_id)
    if saved is None and not parts and not exp.exists():
        return PreviousRun("none", frozenset())
    if saved is not None:
        differ = plan.same_grid(saved)
        if differ:
            raise ValueError(
                f"{out_dir} holds a sweep with another grid or training setup (differs in: "
                f"{', '.join(differ)}); its {len(parts)} part file(s) would mix with this one. "
                "Keep the same config to resume it, or write this sweep elsewhere (--out DIR "
                "or sweep.name=NEW)."
            )
    elif parts:
        raise ValueError(
            f"{out_dir / 'metrics'} holds {len(parts)} part file(s) but no {PLAN_FILE}; it was "
            "not written by run_sweep. Use another output directory."
        )
    table, damaged = scan_metrics(out_dir, quarantine=resume)
    for part in damaged:
        action = (
            f"moved to {part.moved_to}; its trial runs again"
            if part.moved_to
            else ("could not be moved aside; its trial runs again and replaces it")
        )
        log(f"[sweep] damaged part {part.path} ({part.reason}): {action}.")
    done = frozenset(completed_trials(out_dir, plan, table))
    if len(done) == len(plan.trials):
        return PreviousRun("complete", done)
    if not resume:
        bad = f"; damaged part(s): {', '.join(str(p.path) for p in damaged)}" if damaged else ""
        raise ValueError(
            f"{out_dir} holds an unfinished sweep of the same grid ({len(done)} of "
            f"{len(plan.trials)} trials complete{bad}). Pass resume=True (--resume) to run "
            "only what is missing, or write this sweep elsewhere (--out DIR or sweep.name=NEW)."
        )
    return PreviousRun("unfinished", done)


def tune_trial_states(out_dir: str | os.PathLike, name: str | None = None) -> list[dict] | None:
    """Tune's view of a sweep's trials (status, failures, last epoch), or None if no state.

    Reads ``<out_dir>/tune/<name>`` through ``ray.tune.ExperimentAnalysis`` (no cluster
    needed). ``name``: the sweep name (default: the only experiment under ``tune/``).
    Returns dicts with ``trial_id`` (ours), ``tune_id``, ``status`` (``PENDING``,
    ``RUNNING``, ``TERMINATED``, ``ERROR``), ``num_failures``, ``epoch`` and
    ``mean_test_accuracy``.
    """
    root = Path(out_dir).resolve() / TUNE_DIR
    if name is None:
        found = sorted(p for p in root.glob("*") if p.is_dir()) if root.is_dir() else []
        if len(found) != 1:
            return None
        exp = found[0]
    else:
        exp = root / name
    if not any(exp.glob("experiment_state-*.json")):
        return None
    from ray.tune import ExperimentAnalysis

    # Trials that have not reported yet have no result file; Tune warns about each of them.
    quiet = logging.getLogger("ray.tune.analysis.experiment_analysis")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        analysis = ExperimentAnalysis(str(exp))
    except Exception:  # a state file being rewritten, or from another Ray version
        return None
    finally:
        quiet.setLevel(level)
    out = []
    for trial in analysis.trials:
        cfg, last = trial.config, trial.last_result or {}
        try:
            ours = trial_id_from_config(cfg)
        except (KeyError, TypeError):
            ours = str(trial.trial_id)
        out.append(
            {
                "trial_id": ours,
                "tune_id": trial.trial_id,
                "status": trial.status,
                "num_failures": trial.run_metadata.num_failures,
                "epoch": last.get("epoch"),
                "mean_test_accuracy": last.get("mean_test_accuracy"),
            }
        )
    return sorted(out, key=lambda d: d["trial_id"])
