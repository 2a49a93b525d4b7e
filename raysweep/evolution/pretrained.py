"""Network vs linearization at initialization vs linearization around the trained network.

On the labels sign(φ_j) of an eigenfunction target, three models are trained with the same
optimizer, data order and epochs:

- ``network``: the network f(θ) from θ₀ (batch norm in training mode);
- ``linearized_init``: its linearization at θ₀, centered, ``J(θ₀, x)(θ − θ₀)``;
- ``linearized_pretrained``: the linearization around the network's final parameters θ_T
  (trained on the same target; batch-norm statistics reset to their initial values),
  centered, ``J(θ_T, x)(θ − θ_T)``.

Centering (``f_lin − f(θ_base)``) makes both linearizations start from zero output, so the
comparison measures the kernel alone and not the function θ_T already computes. The paper's
finding: the kernel after training is far better aligned with the target, so the pretrained
linearization learns it faster and generalizes better than the one at initialization.

Files: ``<out>/pretrained/trained/`` (the network's final variables and rows, reused by a
re-run) and ``<out>/analysis/pretrained_ntk.json`` (:func:`raysweep.analysis.save_pretrained`,
format in :mod:`raysweep.analysis.pretrained`): one record per (variant, eigen-index) with the
final metrics and the per-epoch rows.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax

from raysweep.analysis.inputs import save_pretrained
from raysweep.analysis.pretrained import FINAL_FIELDS, VARIANTS
from raysweep.config import Config
from raysweep.evolution.common import (
    artifact_labels,
    epoch_logger,
    train_key,
    trained_networks,
)
from raysweep.evolution.trained_alignment import artifact_key, check_indices
from raysweep.ntk.ntk_checks import check_params
from raysweep.training import train_pack

__all__ = ["VARIANTS", "centered_linearization", "pretrained_study"]


def centered_linearization(apply_fn, params_base):
    """``apply_c(params, x) = J(θ_b, x)(params − θ_b)``: the linearization minus ``f(θ_b, x)``.

    Zero at ``params = θ_b``; its parameter gradient is ``J(θ_b, x)`` everywhere. Same
    signature as ``apply_fn`` (``(params, x) -> (n, 1)``). The training program computes the
    same thing with ``train_pack(..., linearized=True, centered=True)``.
    """
    check_params(params_base)

    def apply_c(params, x):
        delta = jax.tree_util.tree_map(lambda p, p0: p - p0, params, params_base)
        return jax.jvp(lambda p: apply_fn(p, x), (params_base,), (delta,))[1]

    return apply_c


def _record(variant: str, j: int, rows: list[dict]) -> dict[str, Any]:
    final = rows[-1]
    return {
        "variant": variant,
        "eigen_index": int(j),
        "status": final["status"],
        **{f: final[f] for f in FINAL_FIELDS},
        "rows": rows,
    }


def pretrained_study(
    config: Config,
    out_dir: str | os.PathLike,
    *,
    eigen_indices: Sequence[int],
    progress: bool = True,
    log: Callable[[str], Any] = print,
) -> list[dict[str, Any]]:
    """Train the three variants of the module doc on each of ``eigen_indices``.

    Args:
      config: the eigen sweep's config; its artifact ``<out_dir>/eigenfunctions`` is reused
        or computed. ``config.train`` (optimizer, epochs, ...) is used for all three variants.
      out_dir: the eigen sweep's results folder.
      eigen_indices: targets j (0-based, below the artifact's number of eigenvectors).
      progress, log: progress of the eigen step and of training.

    Returns:
      Records ``{"variant", "eigen_index", "status", "test_accuracy", "train_accuracy",
      "train_loss", "steps_to_threshold", "rows"}`` (variants in :data:`VARIANTS` order, then
      by index); saved to ``<out_dir>/analysis/pretrained_ntk.json``.
    """
    from raysweep.eigenfunctions import compute_eigenfunctions

    out_dir = Path(out_dir)
    artifact = compute_eigenfunctions(config, out_dir, progress=progress, log=log)
    indices = check_indices(eigen_indices, artifact.num_eigen, "eigen_indices")
    ds = artifact.dataset()
    module, variables0, _ = artifact.model()
    y_train, y_test = artifact_labels(artifact, indices)
    data = (ds.x_train, y_train, ds.x_test, y_test)
    train = config.train
    seed = config.train.seed
    finals, network_rows = trained_networks(
        out_dir / "pretrained" / "trained",
        train_key(config, artifact=artifact_key(artifact), indices=indices),
        module,
        variables0,
        data,
        train=train,
        seed=seed,
        log=log,
        tag="[pretrained]",
    )

    start = time.perf_counter()
    lin_init = train_pack(
        module,
        variables0,
        *data,
        train=train,
        linearized=True,
        centered=True,
        seed=seed,
        on_epoch=epoch_logger(log, "[pretrained] linearized at init", train.epochs),
    )
    log(f"[pretrained] linearization at init trained in {time.perf_counter() - start:.1f} s")

    stats0 = variables0.get("batch_stats")
    pretrained_rows = []
    for t, j in enumerate(indices):
        start = time.perf_counter()
        base = {"params": finals[t]["params"]}
        if stats0:
            base["batch_stats"] = stats0  # statistics reset to initialization
        res = train_pack(
            module,
            base,
            ds.x_train,
            y_train[t : t + 1],
            ds.x_test,
            y_test[t : t + 1],
            train=train,
            linearized=True,
            centered=True,
            seed=seed,
            on_epoch=epoch_logger(log, f"[pretrained] linearized at θ_T (j={j})", train.epochs),
        )
        pretrained_rows.append(res.rows[0])
        log(f"[pretrained] pretrained linearization j={j} in {time.perf_counter() - start:.1f} s")

    records = [_record("network", j, network_rows[t]) for t, j in enumerate(indices)]
    records += [_record("linearized_init", j, lin_init.rows[t]) for t, j in enumerate(indices)]
    records += [
        _record("linearized_pretrained", j, pretrained_rows[t]) for t, j in enumerate(indices)
    ]
    save_pretrained(
        out_dir,
        records,
        model=config.model.name,
        dataset=artifact.manifest.get("name", config.data.name),
        optimizer=train.optimizer,
    )
    return records
