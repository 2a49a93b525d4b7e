"""Energy concentration of a task's labels on the NTK at initialization and after training.

Table 1 of the paper: train the network on a binary task (CIFAR2; on the offline default the
binary digits task), then for the NTK Gram over (a subset of) its training samples at
initialization Θ₀ and at the end of training Θ_T (final parameters, batch-norm running
statistics frozen), take the top-K eigenvectors Φ_K of each and report

    E = ‖Φ_K y‖² / ‖y‖²     (:func:`raysweep.ntk.energy_concentration`)

for the ±1 training labels y, together with the test accuracy of the trained network.

Work and files under ``<out>/energy/<model>-<dataset>/``: ``trained/`` (final variables and
metric rows, reused by a re-run), ``gram_init/`` and ``gram_final/`` (resumable tile stores of
the distributed Gram), ``result.json``. The record is merged into
``<out>/analysis/energy_concentration.json`` (one record per model, dataset and K), which the
report turns into Table 1.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from raysweep.analysis.inputs import load_energy_records, save_energy_records
from raysweep.argcheck import check_positive_int
from raysweep.config import Config
from raysweep.eigenfunctions import model_of
from raysweep.evolution.common import (
    TrainedCache,
    load_binary_task,
    pm_one,
    train_key,
    trained_networks,
    write_json_atomic,
)
from raysweep.models import init_variables, make_apply_fn
from raysweep.ntk import energy_concentration

__all__ = ["energy_study", "gram_subset", "kernel_energy"]


def gram_subset(n: int, num: int | None, seed: int) -> np.ndarray:
    """Sorted positions of ``num`` of ``n`` training samples (all for ``None``), seeded."""
    if num is None or num >= n:
        return np.arange(n)
    if isinstance(num, bool) or not isinstance(num, int) or num < 2:
        raise ValueError(f"gram_samples must be an integer >= 2 or None, got {num!r}.")
    rng = np.random.default_rng([seed, 7])
    return np.sort(rng.choice(n, size=num, replace=False))


def kernel_energy(
    apply_fn,
    params,
    x: np.ndarray,
    y: np.ndarray,
    k: int,
    *,
    store_dir: str | os.PathLike,
    config: Config,
    model_id: str,
    progress: bool = True,
) -> tuple[float, np.ndarray]:
    """``(‖Φ_k y‖²/‖y‖², top-k eigenvalues)`` of the NTK of ``apply_fn`` at ``params`` on ``x``.

    The Gram is computed by :func:`raysweep.distributed.compute_gram` into ``store_dir``
    (resumable) and decomposed by :func:`raysweep.eigen.top_eigenpairs` with the settings of
    ``config.ntk``.
    """
    from raysweep.eigen import top_eigenpairs
    from raysweep.eigenfunctions import config_gram

    with config_gram(
        config, apply_fn, params, x, store_dir=store_dir, model_id=model_id, progress=progress
    ) as gram:
        pairs = top_eigenpairs(gram, k, method=config.ntk.eigen_method)
    return energy_concentration(pairs.eigvecs, y, k), np.asarray(pairs.eigvals)


def energy_study(
    config: Config,
    out_dir: str | os.PathLike,
    *,
    k: int = 50,
    gram_samples: int | None = None,
    curve_epochs: Sequence[int] = (),
    progress: bool = True,
    log: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """Energy concentration of the binary task's labels at initialization and after training.

    Args:
      config: data (its binary task is used: ``cifar10``/``cifar2`` → ``cifar2``,
        ``digits`` → ``digits2``, ...), model, training (``config.train``: optimizer, epochs;
        the paper trains 200 epochs on CIFAR2) and Gram/eigensolver settings (``config.ntk``).
      out_dir: results folder; the work goes to ``<out_dir>/energy/<model>-<dataset>/`` and
        the record into ``<out_dir>/analysis/energy_concentration.json``.
      k: K, the number of top eigenvectors (the paper: 50).
      gram_samples: training samples the Grams are computed on (the paper: 12,000); ``None``
        uses the whole training split. A seeded subset (``config.data.seed``).
      curve_epochs: also measure the energy with the NTK after these epochs (1-based, below
        ``train.epochs``; the network's variables are kept then), for the curve of energy
        concentration during training; the record's ``curve`` holds epoch 0 (initialization),
        these epochs and the last one.
      progress: progress bars of the Gram computation.
      log: where progress lines go.

    Returns:
      The record ``{"model", "dataset", "k", "energy_init", "energy_final",
      "test_accuracy"[, "curve"]}`` (also saved). Fractions in [0, 1].

    Raises:
      ValueError: before any training, for a dataset without a binary task, ``k`` not below
        the number of Gram samples, or bad ``gram_samples``.
    """
    out_dir = Path(out_dir)
    check_positive_int(k, "k", hint=" (the paper uses 50)")
    ds = load_binary_task(config)
    subset = gram_subset(ds.num_train, gram_samples, config.data.seed)
    if k >= subset.size:
        raise ValueError(
            f"k={k} must be smaller than the number of Gram samples ({subset.size}); lower k "
            "or raise gram_samples / data.num_train."
        )
    y_train, y_test = pm_one(ds.y_train), pm_one(ds.y_test)
    model_name = config.model.name
    folder = out_dir / "energy" / f"{model_name}-{ds.name}"
    module = model_of(config.model)
    variables0 = init_variables(module, ds.input_shape, seed=config.model.seed)
    log(
        f"[energy] {model_name} on {ds.name}: {ds.num_train} train / {ds.num_test} test, "
        f"Gram on {subset.size} training samples, top K={k}"
    )

    (final,), rows = trained_networks(
        folder / "trained",
        train_key(config, task=ds.name, seed=config.train.seed),
        module,
        variables0,
        (ds.x_train, y_train[None], ds.x_test, y_test[None]),
        train=config.train,
        seed=config.train.seed,
        log=log,
        tag="[energy]",
        snapshot_epochs=curve_epochs,
    )
    final_row = rows[0][-1]
    if final_row["status"] == "diverged":
        raise RuntimeError(
            f"the network diverged at epoch {final_row['epoch']} (loss {final_row['train_loss']});"
            " lower train.learning_rate and run again."
        )

    x_gram, y_gram = ds.x_train[subset], y_train[subset]
    energies, spectra = {}, {}
    snapshots = TrainedCache(folder / "trained").snapshots(variables0) if curve_epochs else {}
    kernels = [("init", variables0)]
    kernels += [(f"epoch{e}", snap[0]) for e, snap in sorted(snapshots.items())]
    kernels.append(("final", final))
    for tag, variables in kernels:
        start = time.perf_counter()
        apply_fn = make_apply_fn(module, variables)
        energies[tag], spectra[tag] = kernel_energy(
            apply_fn,
            variables["params"],
            x_gram,
            y_gram,
            k,
            store_dir=folder / f"gram_{tag}",
            config=config,
            model_id=f"{model_name}/{config.model.activation}/seed={config.model.seed}/{tag}/"
            f"jaxpr={_fingerprint(apply_fn, variables['params'], ds.input_shape)}",
            progress=progress,
        )
        log(
            f"[energy] NTK at {tag}: ‖Φ_K y‖²/‖y‖² = {energies[tag]:.3f} "
            f"({time.perf_counter() - start:.1f} s)"
        )

    record = {
        "model": model_name,
        "dataset": ds.name,
        "k": int(k),
        "energy_init": float(np.clip(energies["init"], 0.0, 1.0)),
        "energy_final": float(np.clip(energies["final"], 0.0, 1.0)),
        "test_accuracy": float(final_row["test_accuracy"]),
    }
    if snapshots:
        record["curve"] = [
            {"epoch": 0, "energy": record["energy_init"]},
            *(
                {"epoch": e, "energy": float(np.clip(energies[f"epoch{e}"], 0.0, 1.0))}
                for e in sorted(snapshots)
            ),
            {"epoch": int(final_row["epoch"]), "energy": record["energy_final"]},
        ]
    write_json_atomic(
        folder / "result.json",
        {
            "record": record,
            "gram_samples": int(subset.size),
            "eigvals": {tag: spectra[tag].tolist() for tag, _ in kernels},
            "final_row": final_row,
        },
    )
    merge_energy_record(out_dir, record)
    return record


def merge_energy_record(out_dir: str | os.PathLike, record: dict[str, Any]) -> Path:
    """Add ``record`` to the results' energy records, replacing one of the same model/dataset/K."""
    same = ("model", "dataset", "k")
    records = [
        r
        for r in (load_energy_records(out_dir) or [])
        if tuple(r[f] for f in same) != tuple(record[f] for f in same)
    ]
    return save_energy_records(out_dir, [*records, record])


def _fingerprint(apply_fn, params, input_shape) -> str:
    """The model's jaxpr hash (imported here: :mod:`raysweep.distributed` brings in Ray)."""
    from raysweep.distributed.fingerprint import model_fingerprint

    return model_fingerprint(apply_fn, params, input_shape)
