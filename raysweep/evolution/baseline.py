"""The binary-task baseline: network vs linearization on the dataset's own two-class task.

CIFAR2 (CIFAR-10 classes 0-4 vs 5-9; 200 epochs in the paper) is the baseline line of the
accuracy-vs-eigen-index figures: how well each model does on a natural task, next to how well
it does on the NTK eigenfunctions. On the offline default the binary digits task (0-4 vs 5-9)
plays this role.

Both the network and its linearization at initialization (the usual, uncentered one) train
on the ±1 labels with ``config.train``, for each optimizer asked for, with one or several
batch-order seeds packed in one program. Files: ``<out>/baseline/<model>-<task>.json`` (final
rows and every epoch) and ``<out>/analysis/baseline.json``
(:func:`raysweep.analysis.save_baseline_records`): one record per model, optimizer, mode and
seed, merged with the records of other models on the same task; the report draws the network's
accuracy on the accuracy figure and the findings compare network and linearization (claim 2).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from raysweep.analysis.inputs import load_baseline_records, save_baseline_records
from raysweep.config import Config
from raysweep.eigenfunctions import model_of
from raysweep.evolution.common import epoch_logger, load_binary_task, pm_one, write_json_atomic
from raysweep.models import init_variables
from raysweep.training import train_pack

__all__ = ["baseline_study"]


def baseline_study(
    config: Config,
    out_dir: str | os.PathLike,
    *,
    optimizers: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    log: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """Train the network and its linearization on the binary task of ``config.data``.

    Args:
      config: data (its binary task), model and training (``config.train``).
      out_dir: the results folder.
      optimizers: the optimizers to train with (default: ``config.train.optimizer``); each
        with its own rate (``train.learning_rate`` / ``train.adam_learning_rate``).
      seeds: batch-order seeds (default: ``config.train.seed``), packed in one program per
        optimizer and mode.

    Returns ``{"model", "dataset", "optimizer", "network": final row, "linearized": final
    row, "records": [...]}`` (rows of the first optimizer and seed; records: one per optimizer,
    mode and seed, as saved). Writes the files of the module doc; the records of other models
    on the same task are kept, a task already there for another dataset is replaced (one
    baseline task per results folder), with a log line saying so.
    """
    out_dir = Path(out_dir)
    optimizers = tuple(optimizers or (config.train.optimizer,))
    seeds = [int(s) for s in (seeds if seeds is not None else (config.train.seed,))]
    if not seeds:
        raise ValueError("seeds is empty; give at least one batch-order seed, e.g. (0,).")
    ds = load_binary_task(config)
    y_train, y_test = pm_one(ds.y_train), pm_one(ds.y_test)
    module = model_of(config.model)
    variables0 = init_variables(module, ds.input_shape, seed=config.model.seed)
    log(
        f"[baseline] {config.model.name} on {ds.name}: {ds.num_train} train / {ds.num_test} "
        f"test, {', '.join(optimizers)}, {config.train.epochs} epochs, seeds "
        f"{', '.join(map(str, seeds))}"
    )
    records, rows = [], {}
    for optimizer in optimizers:
        train = dataclasses.replace(config.train, optimizer=optimizer)
        for name, linearized in (("network", False), ("linearized", True)):
            start = time.perf_counter()
            tag = f"[baseline] {optimizer} {name}"
            res = train_pack(
                module,
                variables0,
                ds.x_train,
                np.repeat(y_train[None], len(seeds), axis=0),
                ds.x_test,
                np.repeat(y_test[None], len(seeds), axis=0),
                train=train,
                linearized=linearized,
                seed=seeds if len(seeds) > 1 else seeds[0],
                on_epoch=epoch_logger(log, tag, train.epochs),
            )
            rows[(optimizer, name)] = res.rows
            for seed, target_rows in zip(seeds, res.rows, strict=True):
                final = target_rows[-1]
                records.append(
                    {
                        "model": config.model.name,
                        "optimizer": optimizer,
                        "mode": name,
                        "seed": seed,
                        "test_accuracy": float(final["test_accuracy"]),
                        "train_accuracy": float(final["train_accuracy"]),
                        "epochs": int(final["epoch"]),
                    }
                )
            accs = [r["test_accuracy"] for r in records[-len(seeds) :]]
            log(
                f"{tag}: test accuracy {np.mean(accs):.3f}"
                + (f" ± {np.std(accs, ddof=1):.3f}" if len(accs) > 1 else "")
                + f" ({time.perf_counter() - start:.1f} s)"
            )
    first = rows[(optimizers[0], "network")][0], rows[(optimizers[0], "linearized")][0]
    summary = {
        "model": config.model.name,
        "dataset": ds.name,
        "optimizer": optimizers[0],
        "network": first[0][-1],
        "linearized": first[1][-1],
        "records": records,
    }
    write_json_atomic(
        out_dir / "baseline" / f"{config.model.name}-{ds.name}.json",
        {
            **summary,
            "rows": {f"{o}-{m}": r for (o, m), r in rows.items()},
            "config": config.to_dict(),
        },
    )
    existing = load_baseline_records(out_dir)
    if existing:
        if existing[0]["dataset"] == ds.name:
            ours = {(r["model"], r["optimizer"]) for r in records}
            records = [
                {k: v for k, v in r.items() if k != "dataset"}
                for r in existing
                if (r["model"], r["optimizer"]) not in ours
                and not (r["model"] == config.model.name and r["optimizer"] is None)
            ] + records
        else:
            log(
                f"[baseline] replacing the {existing[0]['dataset']} baseline of {out_dir} "
                f"with {ds.name}"
            )
    save_baseline_records(out_dir, ds.name, records)
    return summary
