"""The binary-task baseline: network vs linearization on the dataset's own two-class task.

CIFAR2 (CIFAR-10 classes 0-4 vs 5-9; 200 epochs in the paper) is the baseline line of the
accuracy-vs-eigen-index figures: how well each model does on a natural task, next to how well
it does on the NTK eigenfunctions. On the offline default the binary digits task (0-4 vs 5-9)
plays this role.

Both the network and its linearization at initialization (the usual, uncentered one) train
on the ±1 labels with ``config.train``. Files: ``<out>/baseline/<model>-<task>.json`` (both
final rows and every epoch) and ``<out>/analysis/baseline.json``
(:func:`raysweep.analysis.save_baseline`): the network's test accuracy keyed by model, merged
with the entries of other models on the same task, which the report draws on the accuracy
figure.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from raysweep.analysis.inputs import load_baseline, save_baseline
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
    log: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """Train the network and its linearization on the binary task of ``config.data``.

    Returns ``{"model", "dataset", "optimizer", "network": final row, "linearized": final
    row}`` (rows are metric dicts, :data:`raysweep.training.METRIC_NAMES`). Writes the files of
    the module doc. A task already in ``baseline.json`` for another dataset is replaced (one
    baseline task per results folder), with a log line saying so.
    """
    out_dir = Path(out_dir)
    ds = load_binary_task(config)
    y_train, y_test = pm_one(ds.y_train)[None], pm_one(ds.y_test)[None]
    module = model_of(config.model)
    variables0 = init_variables(module, ds.input_shape, seed=config.model.seed)
    log(
        f"[baseline] {config.model.name} on {ds.name}: {ds.num_train} train / {ds.num_test} "
        f"test, {config.train.optimizer}, {config.train.epochs} epochs"
    )
    results = {}
    for name, linearized in (("network", False), ("linearized", True)):
        start = time.perf_counter()
        res = train_pack(
            module,
            variables0,
            ds.x_train,
            y_train,
            ds.x_test,
            y_test,
            train=config.train,
            linearized=linearized,
            seed=config.train.seed,
            on_epoch=epoch_logger(log, f"[baseline] {name}", config.train.epochs),
        )
        results[name] = res.rows[0]
        final = res.rows[0][-1]
        log(
            f"[baseline] {name}: test accuracy {final['test_accuracy']:.3f} "
            f"({final['status']}, {time.perf_counter() - start:.1f} s)"
        )
    summary = {
        "model": config.model.name,
        "dataset": ds.name,
        "optimizer": config.train.optimizer,
        "network": results["network"][-1],
        "linearized": results["linearized"][-1],
    }
    write_json_atomic(
        out_dir / "baseline" / f"{config.model.name}-{ds.name}.json",
        {**summary, "rows": results, "config": config.to_dict()},
    )
    accuracy = {config.model.name: float(summary["network"]["test_accuracy"])}
    existing = load_baseline(out_dir)
    if existing is not None:
        if existing[0] == ds.name:
            accuracy = {**existing[1], **accuracy}
        else:
            log(f"[baseline] replacing the {existing[0]} baseline of {out_dir} with {ds.name}")
    save_baseline(out_dir, ds.name, accuracy)
    return summary
