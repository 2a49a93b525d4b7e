"""Pieces the kernel-evolution studies share: binary tasks, trained states, progress, files.

- :func:`binary_task_name`: the binary task of a dataset (``cifar10`` → ``cifar2``, …).
- :func:`load_binary_task`: that dataset with ``±1`` float32 labels.
- :func:`trained_networks`: the network trained on a pack of label vectors (one compiled
  program, :func:`raysweep.training.train_pack`), or the saved result of an earlier run.
- :func:`artifact_labels`: the ±1 labels sign(φ_j) of an eigenfunction artifact, split.
- :func:`target_variables`: the final Flax variables of one target of a pack (final
  parameters and, for batch-norm models, the final running statistics).
- :class:`TrainedCache`: final variables and metric rows saved next to a study so a re-run
  (after a crash in a later, longer step) reuses them instead of training again.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import flax.serialization
import jax
import numpy as np

from raysweep.atomic import atomic_write_json, replace_dir, temp_name
from raysweep.config import Config, TrainConfig
from raysweep.data import Dataset, load_dataset
from raysweep.training import PackResult, train_pack

BINARY_TASKS = {
    "digits": "digits2",
    "digits2": "digits2",
    "mnist": "mnist2",
    "mnist2": "mnist2",
    "cifar10": "cifar2",
    "cifar2": "cifar2",
}
"""Dataset name → its binary task (classes 0-4 vs 5-9); binary names map to themselves."""


def binary_task_name(name: str) -> str:
    """The binary task of dataset ``name`` (``cifar10`` → ``cifar2``, ``digits`` → ``digits2``)."""
    if name not in BINARY_TASKS:
        raise ValueError(
            f"dataset {name!r} has no binary task; choose one of {', '.join(BINARY_TASKS)}."
        )
    return BINARY_TASKS[name]


def pm_one(labels: np.ndarray) -> np.ndarray:
    """0/1 class labels → float32 ``±1`` (1 → +1, 0 → −1)."""
    labels = np.asarray(labels)
    bad = np.setdiff1d(np.unique(labels), [0, 1])
    if bad.size:
        raise ValueError(f"expected binary 0/1 labels, found the values {bad[:5].tolist()}.")
    return (2.0 * labels - 1.0).astype(np.float32)


def load_binary_task(config: Config) -> Dataset:
    """The binary task of ``config.data`` (same root, sizes and subsampling seed)."""
    return load_dataset(
        binary_task_name(config.data.name),
        config.data.root,
        num_train=config.data.num_train,
        num_test=config.data.num_test,
        seed=config.data.seed,
    )


def epoch_logger(log: Callable[[str], Any], prefix: str, epochs: int, every: int | None = None):
    """``on_epoch`` callback printing train loss and test accuracy of the pack every few epochs."""
    every = every or max(1, epochs // 5)

    def on_epoch(latest: list[dict]) -> None:
        epoch = max(r["epoch"] for r in latest)
        if epoch % every and epoch != epochs:
            return
        loss = np.nanmean([r["train_loss"] for r in latest])
        acc = np.nanmean([r["test_accuracy"] for r in latest])
        log(f"{prefix} epoch {epoch}/{epochs}: train loss {loss:.4f}, test accuracy {acc:.3f}")

    return on_epoch


def trained_networks(
    folder: str | os.PathLike,
    key: Mapping[str, Any],
    module,
    variables0: Mapping[str, Any],
    data: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    *,
    train: TrainConfig,
    seed: int,
    log: Callable[[str], Any] = print,
    tag: str = "[train]",
    snapshot_epochs: Sequence[int] = (),
) -> tuple[list[dict], list[list[dict]]]:
    """The network (batch norm in training mode) trained on each row of the labels.

    ``data = (x_train, y_train, x_test, y_test)`` with ``y_train`` ``(T, n_tr)`` and
    ``y_test`` ``(T, n_te)`` in ``±1``; one packed run of
    :func:`raysweep.training.train_pack`. Returns ``(final variables per target, metric
    rows per target)``. Both are kept in ``folder`` (:class:`TrainedCache`) under ``key`` and
    reused, without training, by a later call with the same key. ``snapshot_epochs``: also
    keep the variables after these epochs (1-based), read back with
    :meth:`TrainedCache.snapshots`.
    """
    snapshot_epochs = sorted({int(e) for e in snapshot_epochs if 0 < int(e) < train.epochs})
    if snapshot_epochs:
        key = {**key, "snapshot_epochs": snapshot_epochs}
    cache = TrainedCache(folder)
    cached = cache.load(key, variables0)
    if cached is not None:
        log(f"{tag} reusing the trained networks in {cache.folder}")
        return cached
    x_train, y_train, x_test, y_test = data
    y_train, y_test = np.atleast_2d(y_train), np.atleast_2d(y_test)
    start = time.perf_counter()
    snapshots: dict[int, list[dict]] = {}

    def on_state(epoch: int, params: Any, batch_stats: Any) -> None:
        if epoch in snapshot_epochs:
            state = PackResult([], params, batch_stats, None, 0)
            snapshots[epoch] = [
                target_variables(state, t, variables0) for t in range(y_train.shape[0])
            ]

    result = train_pack(
        module,
        variables0,
        x_train,
        y_train,
        x_test,
        y_test,
        train=train,
        linearized=False,
        seed=seed,
        on_epoch=epoch_logger(log, f"{tag} network", train.epochs),
        on_state=on_state if snapshot_epochs else None,
    )
    finals = [target_variables(result, t, variables0) for t in range(y_train.shape[0])]
    cache.save(key, finals, result.rows, snapshots)
    log(f"{tag} {y_train.shape[0]} network(s) trained in {time.perf_counter() - start:.1f} s")
    return finals, result.rows


def artifact_labels(artifact, indices: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """``(y_train (T, n_tr), y_test (T, n_te))``: sign(φ_j) of each index, split."""
    labels = [artifact.labels(j) for j in indices]
    return np.stack([lab[0] for lab in labels]), np.stack([lab[1] for lab in labels])


def target_variables(result: PackResult, t: int, variables0: Mapping[str, Any]) -> dict:
    """Final ``{"params", ["batch_stats"]}`` of pack position ``t`` (host NumPy arrays).

    Batch-norm models get their final running statistics (frozen from here on); a
    linearized pack keeps the initial statistics of ``variables0``.
    """
    out = {"params": jax.tree_util.tree_map(lambda a: np.asarray(a[t]), result.params)}
    if result.batch_stats:
        out["batch_stats"] = jax.tree_util.tree_map(lambda a: np.asarray(a[t]), result.batch_stats)
    elif variables0.get("batch_stats"):
        out["batch_stats"] = jax.tree_util.tree_map(np.asarray, variables0["batch_stats"])
    return out


def write_json_atomic(path: Path, payload: Any) -> Path:
    """Write JSON (NaN allowed) atomically (:func:`raysweep.atomic.atomic_write_json`)."""
    return atomic_write_json(path, payload)


class TrainedCache:
    """Final variables and rows of a trained pack, kept in ``folder`` under a key.

    ``folder/trained.json`` holds the key (what was trained: config, labels, seed) and the
    metric rows; ``folder/trained_<t>.msgpack`` the final variables of target ``t``. Both are
    written into a temporary folder that is renamed into place, so a crash leaves either a
    complete cache or none. :meth:`load` returns ``None`` when the key differs.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    def load(self, key: Mapping[str, Any], template: Mapping[str, Any]):
        """``(variables per target, rows)`` saved under ``key``, or ``None``."""
        meta = self.folder / "trained.json"
        if not meta.exists():
            return None
        payload = json.loads(meta.read_text())
        if payload.get("key") != json.loads(json.dumps(key)):
            return None
        variables = []
        for t in range(len(payload["rows"])):
            blob = (self.folder / f"trained_{t}.msgpack").read_bytes()
            restored = flax.serialization.from_bytes(dict(template), blob)
            variables.append(jax.tree_util.tree_map(np.asarray, restored))
        return variables, payload["rows"]

    def snapshots(self, template: Mapping[str, Any]) -> dict[int, list[dict]]:
        """``{epoch: variables per target}`` kept by the last save (``{}`` when none)."""
        meta = self.folder / "trained.json"
        if not meta.exists():
            return {}
        payload = json.loads(meta.read_text())
        out = {}
        for epoch in payload.get("snapshot_epochs", []):
            out[int(epoch)] = [
                jax.tree_util.tree_map(
                    np.asarray,
                    flax.serialization.from_bytes(
                        dict(template),
                        (self.folder / f"epoch{epoch}_{t}.msgpack").read_bytes(),
                    ),
                )
                for t in range(len(payload["rows"]))
            ]
        return out

    def save(
        self,
        key: Mapping[str, Any],
        variables: list[dict],
        rows: list[list[dict]],
        snapshots: Mapping[int, list[dict]] | None = None,
    ) -> None:
        tmp = temp_name(self.folder)
        tmp.mkdir(parents=True)
        for t, var in enumerate(variables):
            (tmp / f"trained_{t}.msgpack").write_bytes(flax.serialization.to_bytes(var))
        for epoch, per_target in (snapshots or {}).items():
            for t, var in enumerate(per_target):
                blob = flax.serialization.to_bytes(var)
                (tmp / f"epoch{epoch}_{t}.msgpack").write_bytes(blob)
        meta = {"key": key, "rows": rows, "snapshot_epochs": sorted(snapshots or {})}
        (tmp / "trained.json").write_text(json.dumps(meta, indent=1))
        replace_dir(tmp, self.folder)


def train_key(config: Config, **extra: Any) -> dict:
    """What a trained state depends on: data, model and training sections plus ``extra``."""
    base = config.to_dict()
    return {"data": base["data"], "model": base["model"], "train": base["train"], **extra}
