"""The Tune trainable: one pack of eigenfunction targets, trained and written to the store.

What a trial receives:

- its *config* (small, from the grid of :mod:`raysweep.sweep.tuner`, no paths):
  ``sweep_id`` and ``point``: ``trial_id``, ``artifact`` (key, model, dataset), ``train``
  (the TrainConfig fields of its program point), ``optimizer``, ``linearized``, ``axes`` (its
  artifact- and program-level axis values) and ``pack`` (``{"id": p, "targets": [...]}``, each
  target ``{"target_id", "eigen_index", "seed", "learning_rate", "values"}``);
- through ``tune.with_parameters``: ``payloads`` (put in the object store once): for each
  artifact key an ``ObjectRef`` of :func:`build_payload`'s dict, the large arrays (images,
  the eigenvectors of the sweep's indices, the initial variables); a trial fetches only its
  own artifact's payload. And ``store_dir`` (the results folder, absolute),
  ``compile_cache`` (absolute folder or None) and ``checkpoint_every``.

What it does (:func:`train_eigen_pack`): labels ``sign(φ_j)`` for its targets, one
:func:`raysweep.training.train_pack` call (per-target batch-order seeds; per-target
learning rates as ``lr_scale`` relative to the first target's), and after every epoch (a)
rewrites its part file ``<store_dir>/metrics/<trial_id>.parquet`` with all rows so far
(atomic; a crash keeps the completed epochs) and (b) ``ray.tune.report``\\ s the pack means
plus per-target values (``test_accuracy_<target_id>``, ``train_loss_<target_id>``). A trial
whose part is already complete (every target at its final epoch or diverged) only reports its
last result: a resumed or retried sweep does not train it again. If training raises, the latest
row of each unfinished target is re-marked ``error`` before the exception goes to Tune (which
retries up to
``sweep.max_retries`` times); a retry continues from the trial's checkpoint
(``<store_dir>/checkpoints/<trial_id>.npz``, see :func:`train_eigen_pack`) and rewrites the
rows after it, so every row appears exactly once.

Devices: the trial's GPU share arrives as ``env_vars`` (see :func:`train_eigen_pack`); Ray has
already set ``CUDA_VISIBLE_DEVICES`` to the trial's device. Each report carries the trial's
:func:`placement` (Ray node id, GPU ids, JAX memory cap), which Tune stores with the results.

Compilation: with ``compile_cache`` set, JAX's persistent compilation cache is enabled in the
trial's process (unless it already has one), so a retried, restored or newly started actor
loads the packed program instead of compiling it again (XLA compilation is most of a short
trial's time).

Stale writers: each attempt writes a fresh token to ``metrics/.<trial_id>.attempt`` and
checks it before every write. An attempt orphaned by a killed driver (its actor may outlive the
driver for a moment on a shared cluster) therefore stops instead of overwriting the part of
the attempt that replaced it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from raysweep.atomic import atomic_write_text
from raysweep.config import NAD_DATA, ModelConfig, TrainConfig
from raysweep.eigen import eigen_labels
from raysweep.store import (
    METRIC_COLUMNS,
    metrics_dir,
    read_trial_rows,
    rows_to_table,
    write_trial_table,
)
from raysweep.sweep.plan import SweepPlan, trial_id_from_config

CHECKPOINT_DIR = "checkpoints"


def build_payload(artifact, plan: SweepPlan, key: str | None = None) -> dict[str, Any]:
    """The arrays the trials of one artifact need, checked against the artifact's manifest.

    Only the eigenvectors of the eigen-indices its trials train on travel (rows of
    ``eigvecs``, in ``eigen_indices`` order), not all k of them. ``key``: the artifact's key
    in ``plan`` (default: the only one).
    """
    if key is None:
        (key,) = [a.key for a in plan.artifacts]
    indices = sorted({j for t in plan.trials if t.artifact == key for j in t.eigen_indices})
    if hasattr(artifact, "trial_payload"):  # an artifact that builds its own trials' data (NADs)
        return artifact.trial_payload(indices)
    dataset = artifact.dataset()  # raises ValueError if the data differ from the manifest
    return {
        "x_train": np.ascontiguousarray(dataset.x_train, dtype=np.float32),
        "x_test": np.ascontiguousarray(dataset.x_test, dtype=np.float32),
        "eigen_indices": np.asarray(indices, dtype=np.int64),
        "eigvecs": np.ascontiguousarray(artifact.eigvecs[indices], dtype=np.float32),
        "num_train": int(artifact.num_train),
        "variables": artifact.variables,
        "model": artifact.config.model.name,
        "activation": artifact.config.model.activation,
        "model_config": dataclasses.asdict(artifact.config.model),
    }


def pack_data(payload: dict[str, Any], indices: list[int]) -> tuple[np.ndarray, ...]:
    """A pack's ``(x_train, y_train, x_test, y_test)``, labels ``(T, n)`` in ±1.

    Eigenfunction payloads (:func:`build_payload`): the artifact's images and the labels
    ``sign(φ_j)`` of each target. NAD payloads (``kind == "nad"``): the pack's one NAD index j
    and the data D(u_j) of :func:`raysweep.nads.nad_dataset`, its labels for every target.
    """
    if payload.get("kind") == NAD_DATA:
        return _nad_pack_data(payload, indices)
    y_train, y_test = pack_labels(payload, indices)
    return payload["x_train"], y_train, payload["x_test"], y_test


def _nad_pack_data(payload: dict[str, Any], indices: list[int]) -> tuple[np.ndarray, ...]:
    from raysweep.nads import nad_dataset

    if len(set(indices)) != 1:
        raise ValueError(
            f"a NAD pack trains on one NAD index (its inputs D(u_j) depend on j), got {indices}; "
            "the trial config does not come from raysweep.sweep.grid.expand_grid."
        )
    rows = [int(j) for j in payload["eigen_indices"]]
    if indices[0] not in rows:
        raise ValueError(
            f"NAD index {indices[0]} is not in this sweep's payload ({rows}); the trial config "
            "and the payload come from different plans."
        )
    u = payload["directions"][rows.index(indices[0])]
    x_tr, y_tr, x_te, y_te = nad_dataset(u, payload["input_shape"], **payload["data"])
    t = len(indices)
    return x_tr, np.repeat(y_tr[None], t, 0), x_te, np.repeat(y_te[None], t, 0)


def pack_labels(payload: dict[str, Any], indices: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """``(T, n_train)`` and ``(T, n_test)`` ±1 float32 labels ``sign(φ_j)`` of a pack."""
    row_of = {int(j): r for r, j in enumerate(payload["eigen_indices"])}
    missing = sorted({j for j in indices if j not in row_of})
    if missing:
        raise ValueError(
            f"eigen-indices {missing} are not in this sweep's payload "
            f"({sorted(row_of)}); the trial config and the payload come from different plans."
        )
    y = np.stack([eigen_labels(payload["eigvecs"], row_of[j]) for j in indices])
    n_train = payload["num_train"]
    return y[:, :n_train], y[:, n_train:]


def is_complete(table: pa.Table, targets: list[str], epochs: int) -> bool:
    """Whether a part holds the final row (last epoch, or diverged) of every target id."""
    final = {}
    for row in table.select(["target_id", "epoch", "status"]).to_pylist():
        if row["status"] == "diverged" or (row["status"] == "finished" and row["epoch"] == epochs):
            final[row["target_id"]] = True
    return all(final.get(t, False) for t in targets)


def epoch_report(latest: list[dict], targets: list[str]) -> dict[str, Any]:
    """What a trial reports to Tune after an epoch: pack means and per-target values."""
    alive = [r for r in latest if r["status"] != "diverged"] or latest
    mean = {
        f"mean_{k}": float(np.mean([r[k] for r in alive]))
        for k in ("train_loss", "train_accuracy", "test_loss", "test_accuracy")
    }
    statuses = [r["status"] for r in latest]
    out: dict[str, Any] = {
        "epoch": max(int(r["epoch"]) for r in latest),
        "step": max(int(r["step"]) for r in latest),
        **mean,
        "targets_running": statuses.count("running"),
        "targets_finished": statuses.count("finished"),
        "targets_diverged": statuses.count("diverged"),
    }
    for t, r in zip(targets, latest, strict=True):
        out[f"test_accuracy_{t}"] = float(r["test_accuracy"])
        out[f"train_loss_{t}"] = float(r["train_loss"])
    return out


def _identity(config: dict[str, Any], tid: str) -> dict[str, Any]:
    point = config["point"]
    return {
        "sweep_id": config["sweep_id"],
        "trial_id": tid,
        "model": point["artifact"]["model"],
        "dataset": point["artifact"]["dataset"],
        "optimizer": point["optimizer"],
        "linearized": bool(point["linearized"]),
    }


def _target_identity(point: dict[str, Any], target: dict[str, Any]) -> dict[str, Any]:
    """The store columns of one target: ids, eigen-index, seed, rate and its grid point."""
    axes = {**point.get("axes", {}), **target.get("values", {})}
    return {
        "target_id": target["target_id"],
        "eigen_index": int(target["eigen_index"]),
        "seed": int(target["seed"]),
        "learning_rate": float(target["learning_rate"]),
        "axes": json.dumps(axes, sort_keys=True),
    }


def _last_rows(table: pa.Table, targets: list[str]) -> list[dict]:
    rows = table.to_pylist()
    return [
        max((r for r in rows if r["target_id"] == t), key=lambda r: r["epoch"]) for t in targets
    ]


def claim_attempt(store_dir: str, tid: str) -> str:
    """Make this process the owner of ``tid``'s part; returns its token."""
    token = f"{os.getpid()}-{uuid.uuid4().hex}"
    atomic_write_text(_attempt_path(store_dir, tid), token)
    return token


def check_attempt(store_dir: str, tid: str, token: str) -> None:
    """Raise ``RuntimeError`` if a newer attempt of ``tid`` has claimed its part."""
    try:
        owner = _attempt_path(store_dir, tid).read_text()
    except FileNotFoundError:
        owner = token
    if owner != token:
        raise RuntimeError(
            f"trial {tid}: a newer attempt ({owner}) owns its part file now; this stale "
            f"attempt ({token}) stops without writing."
        )


def _attempt_path(store_dir: str, tid: str) -> Path:
    return metrics_dir(store_dir) / f".{tid}.attempt"


def enable_compile_cache(path: str | None) -> None:
    """Use JAX's persistent compilation cache at ``path`` in this process (if none is set)."""
    import jax

    if not path or jax.config.jax_compilation_cache_dir:
        return
    Path(path).mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def placement() -> dict[str, str]:
    """Where this trial runs, for its Tune results: Ray node id, the GPU ids Ray gave it and
    JAX's memory cap (``XLA_CLIENT_MEM_FRACTION``, empty if unset)."""
    import ray

    return {
        "node_id": ray.get_runtime_context().get_node_id(),
        "gpu_ids": ",".join(str(g) for g in ray.get_gpu_ids()),
        "xla_client_mem_fraction": os.environ.get("XLA_CLIENT_MEM_FRACTION", ""),
    }


def checkpoint_path(store_dir: str | os.PathLike, tid: str) -> Path:
    """Where trial ``tid`` keeps its packed training state: ``checkpoints/<tid>.npz``."""
    return Path(store_dir) / CHECKPOINT_DIR / f"{tid}.npz"


def rows_before(table: pa.Table, targets: list[str], epoch: int) -> list[dict] | None:
    """The part's rows of epochs ``<= epoch`` if they are all there, else None.

    Every target needs its rows of epochs 1..``epoch``, or up to its ``diverged`` row. Rows a
    failed attempt re-marked ``error`` are ``running`` again (the retry continues them).
    """
    rows = [r for r in table.to_pylist() if r["epoch"] <= epoch]
    for t in targets:
        mine = sorted(r["epoch"] for r in rows if r["target_id"] == t)
        diverged = any(r["status"] == "diverged" for r in rows if r["target_id"] == t)
        if mine != list(range(1, len(mine) + 1)) or not (len(mine) == epoch or diverged):
            return None
    return [{**r, "status": "running"} if r["status"] == "error" else r for r in rows]


def pack_training(point: dict[str, Any]) -> tuple[TrainConfig, Any, Any]:
    """The trial's TrainConfig, data-order seed(s) and ``lr_scale`` from its grid point.

    The base rate (``learning_rate`` for SGD, ``adam_learning_rate`` for Adam) is the first
    target's; target ``t`` trains with ``lr_scale[t] = η_t / η_0`` (None when all are equal).
    The seed is an int when all targets share it (one batch order), else one per target.
    """
    targets = point["pack"]["targets"]
    rates = [float(t["learning_rate"]) for t in targets]
    seeds = [int(t["seed"]) for t in targets]
    field = "learning_rate" if point["optimizer"] == "sgd" else "adam_learning_rate"
    train = TrainConfig(
        **{
            **point["train"],
            "optimizer": point["optimizer"],
            "linearized": bool(point["linearized"]),
            field: rates[0],
            "seed": seeds[0],
        }
    )
    scale = None if len(set(rates)) == 1 else np.asarray([r / rates[0] for r in rates], np.float32)
    seed = seeds[0] if len(set(seeds)) == 1 else seeds
    return train, seed, scale


def train_eigen_pack(
    config: dict[str, Any],
    payloads: dict[str, Any],
    env_vars: dict[str, str] | None = None,
    *,
    store_dir: str,
    compile_cache: str | None = None,
    checkpoint_every: int = 0,
) -> None:
    """Tune function trainable (module level, so Tune can pickle and restore it).

    ``env_vars`` (from :func:`raysweep.distributed.cluster.gpu_memory_env` of the trial's GPU
    share) are set before the trial first touches a JAX device: with fractional GPUs several
    trials share a device, so JAX must not preallocate 75 % of it in each of them.

    Checkpoints: with ``checkpoint_every > 0`` the packed state is saved to
    :func:`checkpoint_path` every ``checkpoint_every`` epochs. A retried or resumed attempt
    continues after the checkpoint's epoch when the part holds every row up to it (else it
    starts at epoch 1), keeps those rows and replaces the later ones; the result is identical
    to an uninterrupted trial (batch order from ``fold_in(seed, epoch)``). The checkpoint is
    removed once the trial's part is complete.
    """
    import ray
    from ray import tune

    from raysweep.distributed.cluster import apply_env
    from raysweep.eigenfunctions import model_of
    from raysweep.training import checkpoint_epoch, train_pack

    apply_env(env_vars)  # before anything in this process uses a JAX device
    start = time.perf_counter()
    where = placement()
    point = config["point"]
    targets = point["pack"]["targets"]
    ids = [t["target_id"] for t in targets]
    indices = [int(t["eigen_index"]) for t in targets]
    tid = trial_id_from_config(config)
    train, seed, lr_scale = pack_training(point)
    ckpt = checkpoint_path(store_dir, tid)

    done = read_trial_rows(store_dir, tid, quarantine=True)
    if is_complete(done, ids, train.epochs):
        ckpt.unlink(missing_ok=True)
        tune.report({**epoch_report(_last_rows(done, ids), ids), "skipped": 1, **where})
        return

    token = claim_attempt(store_dir, tid)
    saved = checkpoint_epoch(ckpt) if checkpoint_every else None
    if saved and rows_before(done, ids, saved) is None:
        ckpt.unlink(missing_ok=True)  # its rows are gone (e.g. a quarantined part): start over
    enable_compile_cache(compile_cache)
    payload = ray.get(payloads[point["artifact"]["key"]])
    x_train, y_train, x_test, y_test = pack_data(payload, indices)
    module = model_of(ModelConfig(**payload["model_config"]))
    identity = _identity(config, tid)
    per_target = [_target_identity(point, t) for t in targets]
    rows: list[dict[str, Any]] = []
    tables: list[pa.Table] = []
    seen: set[tuple[str, int]] = set()

    def on_resume(epoch: int) -> None:
        """Keep the part's rows of the epochs the checkpoint restored, drop later ones."""
        kept = rows_before(done, ids, epoch) if epoch else []
        rows.extend(kept)
        seen.update((r["target_id"], r["epoch"]) for r in kept)
        if kept:
            tables.append(rows_to_table(kept))

    def on_epoch(latest: list[dict]) -> None:
        now = time.perf_counter() - start
        new = []
        for target, row in zip(per_target, latest, strict=True):
            if (target["target_id"], int(row["epoch"])) in seen:  # a diverged target repeats
                continue
            seen.add((target["target_id"], int(row["epoch"])))
            metrics = {k: row[k] for k in METRIC_COLUMNS}
            if metrics["steps_to_threshold"] < 0:  # not reached: null in the store
                metrics["steps_to_threshold"] = None
            new.append({**identity, **target, **metrics, "wall_time": now})
        rows.extend(new)
        tables.append(rows_to_table(new))
        check_attempt(store_dir, tid, token)
        write_trial_table(store_dir, tid, pa.concat_tables(tables))
        tune.report({**epoch_report(latest, ids), "skipped": 0, **where})

    try:
        train_pack(
            module,
            payload["variables"],
            x_train,
            y_train,
            x_test,
            y_test,
            train=train,
            linearized=train.linearized,
            seed=seed,
            lr_scale=lr_scale,
            on_epoch=on_epoch,
            checkpoint=ckpt if checkpoint_every else None,
            checkpoint_every=max(int(checkpoint_every), 1),
            on_resume=on_resume,
        )
    except Exception:
        _mark_error(store_dir, tid, rows, token)
        raise
    ckpt.unlink(missing_ok=True)


def _mark_error(store_dir: str, tid: str, rows: list[dict[str, Any]], token: str) -> None:
    """Re-mark the latest row of every still-running target ``error`` (best effort)."""
    if not rows:
        return
    latest: dict[str, dict] = {}
    for row in rows:
        latest[row["target_id"]] = row
    marked = [
        {**r, "status": "error"} if latest[r["target_id"]] is r and r["status"] == "running" else r
        for r in rows
    ]
    with contextlib.suppress(Exception):  # never hide the training error behind a store error
        check_attempt(store_dir, tid, token)
        write_trial_table(store_dir, tid, rows_to_table(marked))
