"""Network vs linearization on D(u_j) over NAD indices j: Ray Tune trials into the metrics store.

:mod:`raysweep.sweep` trains packs of *labels* ``sign(φ_j)`` on one fixed dataset (an
eigenfunction artifact); here each NAD index j has its own *inputs* (D(u_j), equation (1) of
Appendix C.1), so a trial is one target: (model, NAD index j, optimizer, network |
linearized). Everything else is the eigen sweep's machinery, reused:

- trial ids :func:`raysweep.sweep.trial_id` with ``pack = j`` and dataset ``"nad"``, e.g.
  ``"sgd-lin-pack003-lenet5-nad"``: deterministic, so a re-run replaces a part instead of adding
  rows, and a trial whose part is complete is skipped (``is_complete``);
- the Parquet store (:mod:`raysweep.store`, one part per trial, rewritten atomically after
  every epoch) with the fixed schema; ``eigen_index`` holds the NAD index j, ``dataset`` is
  ``"nad"``, ``target_id`` is ``make_target_id(j, seed)``, ``learning_rate`` the base rate η₀
  of the trial's optimizer and ``axes`` its grid point (model, NAD index j as
  ``train.eigen_index``, optimizer, mode);
- Tune's function trainable with ``tune.with_parameters`` payloads (θ₀ and the NADs of each
  model, put in the object store once), the stale-attempt guard, the persistent JAX compile
  cache, the per-epoch ``tune.report`` (``epoch_report``) and the one-line-per-trial
  :class:`~raysweep.sweep.progress.SweepProgress`.

``backend="local"`` runs the same trials in this process, one after another, without Ray.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from raysweep.config import OPTIMIZERS, TrainConfig
from raysweep.nads.dataset import nad_dataset
from raysweep.store import (
    METRIC_COLUMNS,
    axes_json,
    make_target_id,
    metrics_dir,
    read_metrics,
    read_trial_rows,
    rows_to_table,
    write_trial_table,
)
from raysweep.sweep.plan import trial_id_from_config
from raysweep.sweep.trainable import (
    check_attempt,
    claim_attempt,
    enable_compile_cache,
    epoch_report,
    is_complete,
)

__all__ = [
    "BACKENDS",
    "NAD_DATASET",
    "nad_param_grid",
    "nad_payload",
    "run_nad_sweep",
    "run_nad_trial",
    "train_nad_trial",
]

NAD_DATASET = "nad"
"""The ``dataset`` column of NAD trials."""

BACKENDS = ("tune", "local")


def nad_payload(
    model: str,
    variables: Any,
    directions: Any,
    input_shape: Sequence[int],
    *,
    activation: str = "gelu",
    model_kwargs: dict | None = None,
) -> dict[str, Any]:
    """What the trials of one model need: θ₀, the NADs and how to rebuild the module.

    Args:
      model: model name for :func:`raysweep.models.get_model` (e.g. ``"lenet5"``).
      variables: the initial variables the NADs were computed from.
      directions: ``(k, d)`` NADs (rows of :func:`raysweep.nads.nads`); trial j uses row j.
      input_shape: per-example ``(H, W, C)``.
      activation, model_kwargs: :func:`~raysweep.models.get_model` arguments (e.g.
        ``{"width": 16}`` for a narrow ResNet18).
    """
    dirs = np.ascontiguousarray(directions, dtype=np.float32)
    shape = tuple(int(s) for s in input_shape)
    if dirs.ndim != 2 or dirs.shape[1] != int(np.prod(shape)):
        raise ValueError(
            f"directions must have shape (k, prod(input_shape)) = (k, {int(np.prod(shape))}), got "
            f"{dirs.shape}."
        )
    return {
        "model": model,
        "activation": activation,
        "model_kwargs": dict(model_kwargs or {}),
        "variables": variables,
        "directions": dirs,
        "input_shape": shape,
    }


def nad_param_grid(
    models: Sequence[str],
    indices: Sequence[int],
    optimizers: Sequence[str],
    linearized: Sequence[bool],
) -> list[dict[str, Any]]:
    """The grid points (model × index × optimizer × linearized) as partial trial configs."""
    unknown = [o for o in optimizers if o not in OPTIMIZERS]
    if unknown:
        raise ValueError(f"unknown optimizer(s) {unknown}; choose among {list(OPTIMIZERS)}.")
    if not (models and indices and optimizers and linearized):
        raise ValueError(
            "the NAD grid is empty: give at least one model, index, optimizer and "
            "mode (network and/or linearized)."
        )
    return [
        {
            "artifact": {"key": m, "model": m, "dataset": NAD_DATASET},
            "pack": {"id": int(j), "eigen_indices": [int(j)]},
            "optimizer": o,
            "linearized": bool(lin),
        }
        for m in models
        for j in indices
        for o in optimizers
        for lin in linearized
    ]


def run_nad_trial(
    config: dict[str, Any], payload: dict[str, Any], report: Callable[[dict], Any] | None = None
) -> list[dict[str, Any]]:
    """Train one (model, NAD index, optimizer, mode) on D(u_j) and write its part file.

    ``config`` is one grid point of :func:`nad_param_grid` plus ``sweep_id``, ``store_dir``,
    ``train`` (TrainConfig fields), ``data`` (:func:`~raysweep.nads.nad_dataset` keywords:
    ``num_train``, ``num_test``, ``epsilon``, ``sigma``, ``seed``) and ``seed`` (data order).
    Returns the rows written (none if the part was already complete).
    """
    from raysweep.models import get_model
    from raysweep.training import train_pack_model
    from raysweep.training.optim import base_learning_rate

    start = time.perf_counter()
    j = int(config["pack"]["id"])
    tid = trial_id_from_config(config)
    store_dir = config["store_dir"]
    train = TrainConfig(**{**config["train"], "optimizer": config["optimizer"]})
    seed = int(config["seed"])
    target = make_target_id(j, seed)
    done = read_trial_rows(store_dir, tid)
    if is_complete(done, [target], train.epochs):
        if report is not None:
            last = max((r for r in done.to_pylist()), key=lambda r: r["epoch"])
            report({**epoch_report([last], [target]), "skipped": 1})
        return []
    directions = payload["directions"]
    if not 0 <= j < len(directions):
        raise ValueError(f"NAD index {j} is out of range: {len(directions)} NADs were computed.")
    token = claim_attempt(store_dir, tid)
    x_tr, y_tr, x_te, y_te = nad_dataset(directions[j], payload["input_shape"], **config["data"])
    module = get_model(
        payload["model"], activation=payload["activation"], **payload["model_kwargs"]
    )
    identity = {
        "sweep_id": config["sweep_id"],
        "trial_id": tid,
        "target_id": target,
        "model": config["artifact"]["model"],
        "dataset": NAD_DATASET,
        "optimizer": config["optimizer"],
        "linearized": bool(config["linearized"]),
        "eigen_index": j,
        "seed": seed,
        "learning_rate": base_learning_rate(train),
        "axes": axes_json(
            {
                "model.name": config["artifact"]["model"],
                "train.eigen_index": j,
                "train.linearized": bool(config["linearized"]),
                "train.optimizer": config["optimizer"],
            }
        ),
    }
    rows: list[dict[str, Any]] = []

    def on_epoch(latest: list[dict]) -> None:
        row = latest[0]
        if rows and rows[-1]["epoch"] == row["epoch"]:  # a diverged target repeats its row
            return
        metrics = {k: row[k] for k in METRIC_COLUMNS}
        if metrics["steps_to_threshold"] < 0:  # the training API's -1: not reached (null)
            metrics["steps_to_threshold"] = None
        rows.append({**identity, **metrics, "wall_time": time.perf_counter() - start})
        check_attempt(store_dir, tid, token)
        write_trial_table(store_dir, tid, rows_to_table(rows))
        if report is not None:
            report({**epoch_report(latest, [target]), "skipped": 0})

    try:
        train_pack_model(
            module,
            payload["variables"],
            x_tr,
            y_tr[None],
            x_te,
            y_te[None],
            train=train,
            linearized=bool(config["linearized"]),
            seed=int(config["seed"]),
            on_epoch=on_epoch,
        )
    except Exception:
        if rows and rows[-1]["status"] == "running":
            rows[-1] = {**rows[-1], "status": "error"}
            write_trial_table(store_dir, tid, rows_to_table(rows))
        raise
    return rows


def train_nad_trial(config: dict[str, Any], payloads: dict[str, Any]) -> None:
    """Tune function trainable (module level, so Tune can pickle it)."""
    import ray
    from ray import tune

    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    enable_compile_cache(config.get("compile_cache"))
    run_nad_trial(config, ray.get(payloads[config["artifact"]["key"]]), report=tune.report)


def run_nad_sweep(
    payloads: dict[str, dict[str, Any]],
    out_dir: str | os.PathLike,
    *,
    indices: Sequence[int],
    train: TrainConfig,
    data: dict[str, Any] | None = None,
    optimizers: Sequence[str] = ("sgd",),
    linearized: Sequence[bool] = (False, True),
    sweep_id: str = "nad_sweep",
    backend: str = "tune",
    cpus_per_trial: float = 1.0,
    gpus_per_trial: float = 0.0,
    max_retries: int = 1,
    log: Callable[[str], Any] = print,
) -> pa.Table:
    """Train networks and their linearizations on D(u_j) for every model and NAD index j.

    Args:
      payloads: ``{model: nad_payload(...)}``.
      out_dir: sweep folder: ``metrics/`` (Parquet parts), ``tune/<sweep_id>/``, ``jax_cache/``.
      indices: NAD indices j (rows of each payload's ``directions``).
      train: training hyper-parameters (``optimizer`` is set per trial).
      data: :func:`~raysweep.nads.nad_dataset` keywords (``num_train``, ``num_test``,
        ``epsilon``, ``sigma``, ``seed``); default the paper's (10,000 each, ε = σ = 1).
      optimizers, linearized: grid axes.
      backend: ``"tune"`` (Ray Tune, one trial per grid point) or ``"local"`` (in-process).
      cpus_per_trial, gpus_per_trial, max_retries: Tune resources and retries.

    Returns:
      The whole metrics table of ``out_dir`` (:func:`raysweep.store.read_metrics`).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}; choose one of {list(BACKENDS)}.")
    for model, payload in payloads.items():
        bad = [j for j in indices if not 0 <= int(j) < len(payload["directions"])]
        if bad:
            raise ValueError(
                f"NAD indices {bad} are out of range for {model}: "
                f"{len(payload['directions'])} NADs were computed; lower them or "
                "compute more NADs (k)."
            )
    out_dir = Path(out_dir).resolve()
    metrics_dir(out_dir).mkdir(parents=True, exist_ok=True)
    data = dict(data or {})
    base = {
        "sweep_id": sweep_id,
        "store_dir": str(out_dir),
        "seed": int(train.seed),
        "train": dataclasses.asdict(train),
        "data": data,
        "compile_cache": str(out_dir / "jax_cache"),
    }
    grid = nad_param_grid(list(payloads), indices, optimizers, linearized)
    log(
        f"[nad-sweep] {len(grid)} trials ({backend}): {len(payloads)} model(s) x "
        f"{len(indices)} NAD indices x {len(optimizers)} optimizer(s) x {len(linearized)} "
        f"mode(s), {train.epochs} epochs; metrics in {metrics_dir(out_dir)}"
    )
    if backend == "local":
        for point in grid:
            config = {**base, **point}
            rows = run_nad_trial(config, payloads[point["artifact"]["key"]])
            last = rows[-1] if rows else None
            acc = f"test acc {last['test_accuracy']:.3f}" if last else "already in the store"
            log(f"[nad-sweep] {trial_id_from_config(config)}  {acc}")
        return read_metrics(out_dir)
    _run_tune(
        payloads,
        out_dir,
        base,
        grid,
        train,
        cpus_per_trial,
        gpus_per_trial,
        max_retries,
        sweep_id,
        log,
    )
    return read_metrics(out_dir)


def _run_tune(payloads, out_dir, base, grid, train, cpus, gpus, retries, sweep_id, log) -> None:
    import ray
    from ray import tune

    from raysweep.distributed import ensure_ray
    from raysweep.sweep.progress import SweepProgress
    from raysweep.sweep.tuner import trial_dirname, trial_name

    ensure_ray()
    refs = {key: ray.put(value) for key, value in payloads.items()}
    trainable = tune.with_resources(
        tune.with_parameters(train_nad_trial, payloads=refs), {"cpu": cpus, "gpu": gpus}
    )
    tuner = tune.Tuner(
        trainable,
        param_space={
            **base,  # Tune takes the product of the grid axes, in nad_param_grid's order
            **{
                axis: tune.grid_search(_axis_values(grid, axis))
                for axis in ("artifact", "pack", "optimizer", "linearized")
            },
        },
        tune_config=tune.TuneConfig(
            reuse_actors=True, trial_name_creator=trial_name, trial_dirname_creator=trial_dirname
        ),
        run_config=tune.RunConfig(
            name=sweep_id,
            storage_path=str(out_dir / "tune"),
            failure_config=tune.FailureConfig(max_failures=retries),
            checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=False),
            verbose=0,
            callbacks=[SweepProgress(len(grid), train.epochs, log=log)],
        ),
    )
    tuner.fit()


def _axis_values(grid: list[dict[str, Any]], axis: str) -> list[Any]:
    """The distinct values of one axis of the grid, in first-seen order."""
    seen: list[Any] = []
    for point in grid:
        if point[axis] not in seen:
            seen.append(point[axis])
    return seen
